"""What the owner's CLI asks a running site over its owner channel, without importing PySyft.

Each function answers None when no channel answers (no socket: the site is stopped,
or runs elsewhere; a socket nobody listens on: the site was killed): the caller then
takes the old path (HTTP and a login). Once the site has received a request, its
answer is final: an error is raised, never retried another way (an approval must not
be attempted twice).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasite_setup.errors import FedimgError
from datasite_setup.site.owner_channel.protocol import (
    MAX_ANSWER_BYTES,
    ProtocolError,
    decode,
    encode,
    socket_address,
    socket_path,
)
from datasite_setup.site.owner_channel.site_status import SiteStatus

CONNECT_TIMEOUT_S = 3.0  # a site that does not take the connection this fast is treated as absent
ANSWER_TIMEOUT_S = 300.0  # a review of many requests on a busy site may take this long
Echo = Callable[[str], None]


def ask(
    state_dir: Path, request: dict[str, Any], *, timeout: float = ANSWER_TIMEOUT_S
) -> dict[str, Any] | None:
    """Send one request to the site whose state dir is ``state_dir``; its answer, or None if no channel.

    Parameters
    ----------
    state_dir : Path
        The site's state dir.
    request : dict
        The request (``protocol``): ``{"action": "ping" | "status" | "review", ...}``.
    timeout : float
        Seconds to wait for the answer once the request is sent.

    Returns
    -------
    dict or None
        The site's answer; None when there is no socket or nobody takes the connection.

    Raises
    ------
    FedimgError
        When the site took the request but did not answer in time, or answered garbage.

    Examples
    --------
    >>> import tempfile
    >>> ask(Path(tempfile.mkdtemp()), {"action": "ping"}) is None  # no site there
    True
    """
    path = socket_path(state_dir)
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(CONNECT_TIMEOUT_S)
    try:
        try:
            with socket_address(path) as address:
                connection.connect(address)
        except OSError:  # missing, refused (stale), not ours, or too slow: take the old path
            return None
        connection.settimeout(timeout)
        try:
            connection.sendall(encode(request))
            data = _read_answer(connection)
        except TimeoutError:
            raise FedimgError(
                f"{path}: the site took the request but did not answer within {timeout:g} s; see its log"
            ) from None
        except OSError as exc:
            raise FedimgError(f"{path}: the owner channel broke off ({exc.strerror or exc})") from None
    finally:
        connection.close()
    try:
        return decode(data, what="answer")
    except ProtocolError as exc:
        raise FedimgError(f"{path}: {exc}") from None


def _read_answer(connection: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = connection.recv(2**20)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_ANSWER_BYTES:
            raise FedimgError(f"the site's answer is larger than {MAX_ANSWER_BYTES} bytes")
    return data


def review(
    state_dir: Path,
    site: str,
    action: str,
    *,
    request_id: str | None = None,
    reason: str | None = None,
    force: bool = False,
    policy_file: Path | None = None,
    owner: str | None = None,
    password: str | None = None,
    echo: Echo = print,
) -> int | None:
    """``fedimg review ACTION`` over the site's owner channel; None when no channel answers.

    Parameters
    ----------
    state_dir : Path
        The site's state dir.
    site : str
        The site's name, for messages.
    action : {"list", "show", "approve", "deny", "auto"}
        As for ``review_command.review_with``.
    request_id, reason, force
        As for ``review_command.run_review``.
    policy_file : Path or None
        The policy the site applies to the review (default its ``policy.toml``).
    owner, password : str or None
        Decide as this named owner (the site checks the password); None: the shared admin.
    echo : callable
        Prints each line of the site's answer.

    Returns
    -------
    int or None
        0 once the site has answered; None when no channel answers (take the HTTP path).

    Raises
    ------
    FedimgError
        The site's refusal (its message), after echoing what it printed before it.

    Examples
    --------
    >>> import tempfile
    >>> review(Path(tempfile.mkdtemp()), "hospital_a", "list") is None
    True
    """
    request = {
        "action": "review",
        "review": action,
        "request_id": request_id,
        "reason": reason,
        "force": force,
        "policy_file": str(Path(policy_file).absolute()) if policy_file else None,
        "owner": owner,
        "password": password,
    }
    answer = ask(state_dir, request)
    if answer is None:
        return None
    for line in answer.get("lines", []):
        echo(str(line))
    if not answer.get("ok"):
        raise FedimgError(str(answer.get("error") or f"site {site}: the owner channel refused the request"))
    return 0


def status(name: str, url: str, state_dir: Path) -> SiteStatus | None:
    """A site's status as it reports itself over its owner channel; None when no channel answers.

    Parameters
    ----------
    name, url : str
        The site's name and base URL (from ``federation.toml``).
    state_dir : Path
        The site's state dir.

    Returns
    -------
    SiteStatus or None
        ``"running"`` (its dataset, sandbox and pid as the site says), ``"not answering"``
        when its HTTP side does not answer; None without a channel.

    Raises
    ------
    FedimgError
        When the site took the request but its answer is broken.

    Examples
    --------
    >>> import tempfile
    >>> status("hospital_a", "http://127.0.0.1:8081", Path(tempfile.mkdtemp())) is None
    True
    """
    answer = ask(state_dir, {"action": "status"}, timeout=60.0)
    if answer is None:
        return None
    if not answer.get("ok"):
        return SiteStatus(name, url, "not answering", problem=str(answer.get("error", "")))
    counts = answer.get("split_counts") or {}
    return SiteStatus(
        name,
        url,
        "running" if answer.get("http") else "not answering",
        pid=answer.get("pid"),
        dataset=str(answer.get("dataset") or ""),
        split_counts={str(key): int(value) for key, value in counts.items()},
        problem=str(answer.get("problem") or ("" if answer.get("http") else "its HTTP side does not answer")),
        sandbox=str(answer.get("sandbox") or ""),
        warning=str(answer.get("warning") or ""),
    )
