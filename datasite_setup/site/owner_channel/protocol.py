"""The owner channel's wire format: one JSON object per line each way, one request per connection.

Never pickle: a request is plain JSON (``json.loads`` builds no objects), capped at
``MAX_REQUEST_BYTES``; an answer is ``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``.

Actions: ``ping``, ``status`` and ``review`` (the owner's CLI); ``owner_login``,
``owner_logout`` and ``console`` (``fedimg console``: an owner signs in once and gets a
site token, then asks for one of ``CONSOLE_WHATS`` with it; ``console_answers``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHANNEL_DIR = "owner-channel"  # 0700, holding only the socket: its mode cannot be raced through the state dir
SOCKET_NAME = "owner.sock"
MAX_REQUEST_BYTES = 64 * 1024  # a review request is a few hundred bytes; a password a few dozen
MAX_ANSWER_BYTES = 64 * 2**20  # ``review show`` of every request prints their code
ACTIONS = ("ping", "status", "review", "owner_login", "owner_logout", "console")
SUN_PATH_BYTES = 107  # a Unix socket's address holds at most this many bytes (Linux: 108 with the NUL)
REVIEW_ACTIONS = ("list", "show", "approve", "deny", "auto")
CONSOLE_WHATS = (
    "requests",
    "decide",
    "jobs",
    "researchers",
    "researcher_add",
    "researcher_disable",
    "dataset",
    "audit",
    "health",
)
"""What ``fedimg console`` may ask a site with ``{"action": "console", "what": ...}``."""
STRING_FIELDS = (
    "request_id",
    "reason",
    "policy_file",
    "owner",
    "password",
    "address",
    "token",
    "decision",
    "email",
    "name",
    "researcher",
    "kind",
)


class ProtocolError(ValueError):
    """A line that is not a channel message: the answer names what is wrong.

    Examples
    --------
    >>> str(ProtocolError("request: not JSON"))
    'request: not JSON'
    """


def socket_path(state_dir: Path) -> Path:
    """Where a site's owner channel listens: ``<state_dir>/owner-channel/owner.sock``.

    Parameters
    ----------
    state_dir : Path
        The site's state dir.

    Returns
    -------
    Path
        The socket's path.

    Examples
    --------
    >>> socket_path(Path("state/hospital_a")).as_posix()
    'state/hospital_a/owner-channel/owner.sock'
    """
    return Path(state_dir) / CHANNEL_DIR / SOCKET_NAME


@contextmanager
def socket_address(path: Path) -> Iterator[str]:
    """An address for ``bind``/``connect`` of the socket at ``path``, however long ``path`` is.

    A state dir deep in a file system (a CI runner's temp dir, a hospital's mount) made the
    path longer than a socket address can hold: the channel was off and every ``fedimg
    review`` fell back to a 20 s PySyft login. A long path is reached through the folder's
    open descriptor instead (``/proc/self/fd/N/owner.sock``: the kernel resolves it to the
    same file), held open for the block.

    Parameters
    ----------
    path : Path
        The socket's path.

    Yields
    ------
    str
        ``path`` itself when it fits, else the short address through the open folder.

    Examples
    --------
    >>> import tempfile
    >>> deep = Path(tempfile.mkdtemp()) / ("x" * 120)
    >>> deep.mkdir()
    >>> with socket_address(deep / "owner.sock") as address:
    ...     address.startswith("/proc/self/fd/") and address.endswith("/owner.sock")
    True
    """
    if len(os.fsencode(str(path))) <= SUN_PATH_BYTES:
        yield str(path)
        return
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{folder}/{path.name}"
    finally:
        os.close(folder)


def encode(message: dict[str, Any]) -> bytes:
    """One message as a JSON line.

    Parameters
    ----------
    message : dict
        JSON-serialisable.

    Returns
    -------
    bytes
        UTF-8 JSON ending in a newline (JSON escapes every newline inside strings).

    Examples
    --------
    >>> encode({"action": "ping"})
    b'{"action": "ping"}\\n'
    """
    return (json.dumps(message) + "\n").encode()


def decode(line: bytes, *, what: str = "request") -> dict[str, Any]:
    """A message from one JSON line.

    Parameters
    ----------
    line : bytes
        The line, with or without its newline.
    what : str, default "request"
        Names the message in errors (``"request"`` or ``"answer"``).

    Returns
    -------
    dict
        The message.

    Raises
    ------
    ProtocolError
        Not UTF-8 JSON, or not a JSON object.

    Examples
    --------
    >>> decode(b'{"action": "ping"}\\n')
    {'action': 'ping'}
    >>> decode(b"[" * 100_000)
    Traceback (most recent call last):
    ...
    datasite_setup.site.owner_channel.protocol.ProtocolError: request: nested too deeply
    >>> decode(b"\\x80(")
    Traceback (most recent call last):
    ...
    datasite_setup.site.owner_channel.protocol.ProtocolError: request: not UTF-8 JSON (one object per line)
    """
    try:
        message = json.loads(line.decode())
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError(f"{what}: not UTF-8 JSON (one object per line)") from None
    except RecursionError:  # a 30,000-deep nesting of [ must be refused, not end in a traceback
        raise ProtocolError(f"{what}: nested too deeply") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"{what}: a JSON object is expected, not {type(message).__name__}")
    return message


def check_request(message: dict[str, Any]) -> str:
    """The request's action, once its fields have the right types.

    Parameters
    ----------
    message : dict
        A decoded request.

    Returns
    -------
    str
        One of ``ACTIONS``.

    Raises
    ------
    ProtocolError
        An unknown action, or a field of the wrong type.

    Examples
    --------
    >>> check_request({"action": "review", "review": "list"})
    'review'
    >>> check_request({"action": "console", "token": "ab" * 32, "what": "jobs"})
    'console'
    >>> try:
    ...     check_request({"action": "reboot"})
    ... except ProtocolError as exc:
    ...     print(exc)
    request: unknown action 'reboot'; one of ping, status, review, owner_login, owner_logout, console
    >>> try:
    ...     check_request({"action": "console", "what": "audit", "limit": "all"})
    ... except ProtocolError as exc:
    ...     print(exc)
    request: limit must be a whole number from 0
    """
    action = message.get("action")
    if action not in ACTIONS:
        raise ProtocolError(f"request: unknown action {action!r}; one of {', '.join(ACTIONS)}")
    if action == "review" and message.get("review") not in REVIEW_ACTIONS:
        raise ProtocolError(
            f"request: review {message.get('review')!r} is not one of {', '.join(REVIEW_ACTIONS)}"
        )
    if action == "console" and message.get("what") not in CONSOLE_WHATS:
        raise ProtocolError(
            f"request: console what {message.get('what')!r} is not one of {', '.join(CONSOLE_WHATS)}"
        )
    for field in STRING_FIELDS:
        if message.get(field) is not None and not isinstance(message[field], str):
            raise ProtocolError(f"request: {field} must be a string")
    if not isinstance(message.get("force", False), bool):
        raise ProtocolError("request: force must be true or false")
    limit = message.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ProtocolError("request: limit must be a whole number from 0")
    return str(action)
