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
    """True when the datasite's metadata endpoint answers with JSON."""
    try:
        with urllib.request.urlopen(f"{url}{API_PREFIX}/metadata", timeout=timeout) as response:
            json.loads(response.read())
            return response.status == 200
    except (OSError, urllib.error.URLError, ValueError):
        return False


def login(url: str, credentials: Credentials) -> Any:
    """``sy.login`` without its banner on stdout."""
    import syft as sy

    with contextlib.redirect_stdout(io.StringIO()):
        return sy.login(url=url, email=credentials.email, password=credentials.password)


@dataclass(frozen=True)
class DatasetSummary:
    name: str
    split_counts: dict[str, int]


def dataset_summaries(client: Any) -> list[DatasetSummary]:
    """The fedimg datasets a client can see, with their per-split counts."""
    summaries = []
    for dataset in client.datasets:
        if dataset.name.startswith(DATASET_PREFIX):
            info = (
                parse_dataset_info(
                    dataset.description.text
                    if hasattr(dataset.description, "text")
                    else str(dataset.description)
                )
                or {}
            )
            summaries.append(DatasetSummary(dataset.name, info.get("split_counts", {})))
    return summaries


def ensure_researcher(admin: Any, *, email: str, name: str, password: str) -> bool:
    """Create a DATA_SCIENTIST account unless one with this email exists; True when created."""
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
