"""What an admin does to a running datasite over HTTP: log in, add researchers, read its dataset summary."""

from __future__ import annotations

import contextlib
import io
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from datasite_setup.dataset_contract import DATASET_PREFIX, parse_dataset_info
from datasite_setup.site.credentials import Credentials
from datasite_setup.site.datasite import API_PREFIX


def is_answering(url: str, timeout: float = 2.0) -> bool:
    """Whether a datasite answers: its metadata endpoint returns JSON with status 200.

    Parameters
    ----------
    url : str
        The site's base URL.
    timeout : float, default 2.0
        Seconds to wait for the answer.

    Returns
    -------
    bool
        False for a refused connection, a timeout, an HTTP error or a non-JSON answer.

    Examples
    --------
    >>> is_answering("http://127.0.0.1:1", timeout=0.5)  # nothing listens on port 1
    False
    """
    try:
        with urllib.request.urlopen(f"{url}{API_PREFIX}/metadata", timeout=timeout) as response:
            json.loads(response.read())
            return response.status == 200
    except (OSError, urllib.error.URLError, ValueError):
        return False


def login(url: str, credentials: Credentials) -> Any:
    """Log in to a datasite: ``sy.login`` without its banner on stdout.

    Parameters
    ----------
    url : str
        The site's base URL.
    credentials : Credentials
        The account's e-mail and password.

    Returns
    -------
    syft DatasiteClient
        The logged-in client.
    """
    import syft as sy

    with contextlib.redirect_stdout(io.StringIO()):
        return sy.login(url=url, email=credentials.email, password=credentials.password)


@dataclass(frozen=True)
class DatasetSummary:
    """A fedimg dataset as ``fedimg up`` and ``status`` show it.

    Parameters
    ----------
    name : str
        The dataset's name, ``fedimg-<client>-<version>``.
    split_counts : dict of str to int
        Samples per split (empty if the description holds no dataset info).
    """

    name: str
    split_counts: dict[str, int]


def dataset_summaries(client: Any) -> list[DatasetSummary]:
    """The fedimg datasets a client can see, with their per-split counts.

    Parameters
    ----------
    client : syft DatasiteClient
        A logged-in client (admin or researcher).

    Returns
    -------
    list of DatasetSummary
        The datasets named ``fedimg-…``, in the site's order; others are left out.

    Examples
    --------
    >>> from types import SimpleNamespace as Fake
    >>> from datasite_setup.dataset_contract import describe_dataset
    >>> info = {"client": "a", "image": {"size": 32, "mode": "L"}, "split_counts": {"train": 8, "val": 2}}
    >>> ours = Fake(name="fedimg-a-1", description=describe_dataset(info, ["cat", "dog"]))
    >>> other = Fake(name="someone-else", description="not ours")
    >>> dataset_summaries(Fake(datasets=[ours, other]))
    [DatasetSummary(name='fedimg-a-1', split_counts={'train': 8, 'val': 2})]
    """
    summaries = []
    for dataset in client.datasets:
        if not dataset.name.startswith(DATASET_PREFIX):
            continue
        info = parse_dataset_info(_description_text(dataset)) or {}
        summaries.append(DatasetSummary(dataset.name, info.get("split_counts", {})))
    return summaries


def _description_text(dataset: Any) -> str:
    """A dataset's description as text (syft wraps it in a markdown object with ``text``)."""
    description = dataset.description
    return description.text if hasattr(description, "text") else str(description)


def ensure_researcher(admin: Any, *, email: str, name: str, password: str) -> bool:
    """Create a researcher's (DATA_SCIENTIST) account unless one with this e-mail exists.

    Parameters
    ----------
    admin : syft DatasiteClient
        The site admin's client.
    email, name, password : str
        The account's login, display name and password.

    Returns
    -------
    bool
        True when the account was created, False when it existed (it is left unchanged).
    """
    from syft.service.user.user_roles import ServiceRole

    existing = {user.email for user in admin.users.get_all()}
    if email in existing:
        return False
    with contextlib.redirect_stdout(io.StringIO()):
        admin.users.create(
            name=name,
            email=email,
            password=password,
            password_verify=password,
            role=ServiceRole.DATA_SCIENTIST,
            institution="",
        )
    return True
