"""An append-only audit trail: one JSON object per line, each chained to the previous line's hash.

Every request, decision, execution and release at a site is appended here. Each
line carries ``prev`` (the previous line's hash) and ``hash`` (sha256 of the
line's canonical JSON without ``hash``), and a ``<log>.head`` file holds the last
hash and line count, so ``verify_audit_log`` detects an edited, removed,
reordered or inserted line, and a truncated tail.

Examples
--------
>>> import tempfile, pathlib
>>> log = AuditLog(pathlib.Path(tempfile.mkdtemp()) / "audit.jsonl")
>>> _ = log.append("request", request_id="r1", requester="ada@university.example")
>>> _ = log.append("decision", request_id="r1", decision="approved", by="owner@hospital.example")
>>> verify_audit_log(log.path)
[]
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
log = logging.getLogger("fedimg.audit")  # every record also in the site's log: approvals, runs, refusals
EVENTS = (
    "request",
    "review",
    "decision",
    "owner",
    "account",
    "started",
    "execution",
    "release",
    "refusal",
    "aborted",
    "refund",
    "login_lockout",
)
RUN_ENDS = ("execution", "release", "refusal", "aborted")
"""The events that end a started run (matched by its ``run_id``)."""


@dataclass(frozen=True)
class AuditProblem:
    """Something wrong in an audit log.

    Parameters
    ----------
    line : int
        The 1-based line it was found at (for the head file, the log's last line).
    message : str
        What is wrong, e.g. ``"edited: its hash does not match its content"``.
    """

    line: int
    message: str


def _line_hash(record: dict) -> str:
    body = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()


class AuditLog:
    """Appends chained records to ``path`` (created 0600); safe across processes (file lock).

    Parameters
    ----------
    path : Path
        The log file; its head file is ``<path>.head``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> log = AuditLog(pathlib.Path(tempfile.mkdtemp()) / "audit.jsonl")
    >>> first = log.append("request", request_id="r1")
    >>> second = log.append("release", request_id="r1", bytes=1024)
    >>> second["seq"], second["prev"] == first["hash"], [r["event"] for r in log.records()]
    (1, True, ['request', 'release'])
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name + ".head")

    def append(self, event: str, **fields: object) -> dict:
        """Append one record, chained to the last one.

        Parameters
        ----------
        event : str
            One of ``EVENTS``: request, review, decision, owner (an owner's login refused on
            the owner channel), account (an account created, changed or deleted: recorded by
            the site, naming who did it),
            started (a run about to touch the data), execution (a failed run), release,
            refusal, aborted (a run the site did not finish), refund (an aborted run's count
            given back), login_lockout (failed logins locked an account or address out).
        **fields : object
            The record's content (JSON-serialisable).

        Returns
        -------
        dict
            The record as written, with ``seq``, ``time``, ``prev`` and ``hash``.

        Raises
        ------
        ValueError
            For an unknown event.
        """
        if event not in EVENTS:
            raise ValueError(f"unknown audit event {event!r}; one of {EVENTS}")
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "r+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            prev, count = self._settled_head(handle)
            record = {"seq": count, "time": round(time.time(), 3), "event": event, **fields, "prev": prev}
            line_hash = _line_hash(record)
            record["hash"] = line_hash
            # the head names the line about to be written: a crash before the head below is written
            # leaves a line the next append (or verify) can tell from one appended by anyone else
            self._write_head(prev, count, pending=line_hash)
            handle.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            self._write_head(line_hash, count + 1)
        log.info("audit %s", describe_record(record).split("  ", 1)[-1])  # the log line has its own time
        return record

    def records(self) -> list[dict]:
        """Every record, oldest first (none when the log does not exist yet)."""
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def _settled_head(self, handle: Any) -> tuple[str, int]:
        """The head, after a crash between writing a line and writing the head (called under the lock).

        A site killed in that gap (its ``started`` record written and fsynced, the head not) left
        the log one record ahead of its head. The head names that record as pending, so it is
        adopted and the next record chains to it; a line appended by anyone else is not (``verify``
        reports it). A pending line cut short by the crash (no newline) is removed.
        """
        prev, count, pending = self._read_head()
        if pending is None:
            return prev, count
        size = handle.seek(0, os.SEEK_END)
        tail = _tail(handle, size)
        if tail and not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n") + 1  # where the torn line starts within the tail
            handle.truncate(size - len(tail) + cut)
            tail = tail[:cut]
        if _is_pending(tail.rstrip(b"\n").rsplit(b"\n", 1)[-1], prev, count, pending):
            prev, count = pending, count + 1
        self._write_head(prev, count)
        return prev, count

    def _read_head(self) -> tuple[str, int, str | None]:
        try:
            head = json.loads(self.head_path.read_text())
            return head["hash"], head["count"], head.get("pending")
        except FileNotFoundError:
            return GENESIS, 0, None

    def _write_head(self, last_hash: str, count: int, pending: str | None = None) -> None:
        temporary = self.head_path.with_name(self.head_path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        head: dict[str, object] = {"hash": last_hash, "count": count}
        if pending is not None:
            head["pending"] = pending
        with os.fdopen(fd, "w") as handle:
            json.dump(head, handle)
        os.replace(temporary, self.head_path)


def _tail(handle: Any, size: int, block: int = 65536) -> bytes:
    """The end of the file, back to (and with) the newline before its last complete line."""
    raw = handle.buffer
    start = size
    data = b""
    while start > 0:
        start = max(0, start - block)
        raw.seek(start)
        data = raw.read(size - start)
        if data.rstrip(b"\n").count(b"\n") >= 1:
            return data[data.rstrip(b"\n").rfind(b"\n") + 1 :]
    return data


def _is_pending(line: bytes, prev: str, count: int, pending: str) -> bool:
    """Whether ``line`` is the record the head named as being written after ``prev``."""
    try:
        record = json.loads(line) if line else None
    except ValueError:
        return False
    return (
        isinstance(record, dict)
        and record.get("seq") == count
        and record.get("prev") == prev
        and record.get("hash") == pending == _line_hash(record)
    )


def verify_audit_log(path: Path) -> list[AuditProblem]:
    """Every problem in the chain, by line number (1-based); empty when intact.

    Parameters
    ----------
    path : Path
        The log file (its head file is read too).

    Returns
    -------
    list of AuditProblem
        Edited, removed, reordered or inserted lines, a truncated tail, an unreadable head file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> log = AuditLog(pathlib.Path(tempfile.mkdtemp()) / "audit.jsonl")
    >>> _ = log.append("request", request_id="r1", requester="ada@university.example")
    >>> _ = log.path.write_text(log.path.read_text().replace("ada@", "eve@"))
    >>> verify_audit_log(log.path)
    [AuditProblem(line=1, message='edited: its hash does not match its content')]
    """
    log = AuditLog(path)
    problems: list[AuditProblem] = []
    prev = GENESIS
    lines = log.path.read_text(encoding="utf-8").splitlines() if log.path.exists() else []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            problems.append(AuditProblem(number, "not JSON"))
            continue
        if not isinstance(record, dict):
            problems.append(AuditProblem(number, "not a JSON object"))
            continue
        if record.get("hash") != _line_hash(record):
            problems.append(AuditProblem(number, "edited: its hash does not match its content"))
        if record.get("prev") != prev:
            problems.append(
                AuditProblem(number, "chain broken: a line before it was removed, inserted or reordered")
            )
        if record.get("seq") != number - 1:
            problems.append(
                AuditProblem(number, f"sequence number {record.get('seq')} where {number - 1} was expected")
            )
        prev = record.get("hash", "")
    try:
        head_hash, head_count, pending = log._read_head()
    except (ValueError, KeyError, TypeError):
        problems.append(
            AuditProblem(
                len(lines),
                f"the head file {log.head_path.name} is unreadable: the end of the log cannot be checked",
            )
        )
        return problems
    if pending is not None and len(lines) == head_count + 1 and prev == pending:
        return problems  # the site stopped between writing its last record and the head: it was written
    if head_count != len(lines) or (lines and head_hash != prev):
        problems.append(
            AuditProblem(
                len(lines), f"the log ends early or late: {len(lines)} lines, {head_count} were written"
            )
        )
    return problems


def open_runs(records: list[dict]) -> list[dict]:
    """The ``started`` records with no end (release, refusal, failed execution, aborted) after them.

    A run in progress is open; so is a run the site's crash interrupted, until the site
    starts again and marks it aborted (``SiteEnforcer.close_interrupted_runs``).

    Parameters
    ----------
    records : list of dict
        An audit log's records (``AuditLog.records()``), oldest first.

    Returns
    -------
    list of dict
        The open ``started`` records, oldest first.

    Examples
    --------
    >>> started = [{"event": "started", "run_id": "a"}, {"event": "started", "run_id": "b"}]
    >>> [record["run_id"] for record in open_runs([*started, {"event": "release", "run_id": "a"}])]
    ['b']
    """
    ended = {record.get("run_id") for record in records if record.get("event") in RUN_ENDS}
    return [
        record for record in records if record.get("event") == "started" and record["run_id"] not in ended
    ]


def select_records(
    records: list[dict],
    *,
    researcher: str | None = None,
    request: str | None = None,
    kind: str | None = None,
    since: float | None = None,
) -> list[dict]:
    """The records that match every filter given (``fedimg audit show``).

    Parameters
    ----------
    records : list of dict
        An audit log's records.
    researcher : str or None
        A researcher's e-mail or verify key, or the start of either; matches the
        ``researcher``, ``researcher_email`` and ``requester`` fields.
    request : str or None
        A request id or code id, or its start.
    kind : str or None
        An event (``decision``, ``started``, ``release``...).
    since : float or None
        A Unix time: keep records written at or after it.

    Returns
    -------
    list of dict
        The matching records, in log order.

    Examples
    --------
    >>> records = [
    ...     {"event": "decision", "request_id": "ab12", "researcher_email": "ada@uni.example", "time": 10.0},
    ...     {"event": "release", "code_id": "cd34", "researcher": "5f1e", "time": 20.0},
    ... ]
    >>> [r["event"] for r in select_records(records, researcher="ada@")]
    ['decision']
    >>> [r["event"] for r in select_records(records, since=15.0)]
    ['release']
    """
    matches = []
    for record in records:
        people = [str(record.get(key, "")) for key in ("researcher", "researcher_email", "requester")]
        ids = [str(record.get(key, "")) for key in ("request_id", "code_id")]
        if researcher and not any(person and person.startswith(researcher) for person in people):
            continue
        if request and not any(value and value.startswith(request) for value in ids):
            continue
        if kind and record.get("event") != kind:
            continue
        if since is not None and float(record.get("time", 0)) < since:
            continue
        matches.append(record)
    return matches


def parse_since(text: str, *, now: float | None = None) -> float:
    """A ``--since`` value as a Unix time: ``30m``, ``2h``, ``7d`` ago, or a local ISO date/time.

    Parameters
    ----------
    text : str
        ``<number>[smhd]`` (ago), or ``2026-12-01`` / ``2026-12-01T14:30`` in local time.
    now : float or None
        The current Unix time (default: now).

    Returns
    -------
    float
        The Unix time.

    Raises
    ------
    ValueError
        For anything else, with the accepted forms.

    Examples
    --------
    >>> parse_since("2h", now=10_000.0)
    2800.0
    >>> parse_since("yesterday")
    Traceback (most recent call last):
    ...
    ValueError: --since 'yesterday': give 30m, 2h, 7d (ago) or a local date/time like 2026-12-01T14:30
    """
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return (time.time() if now is None else now) - float(text[:-1]) * units[text[-1]]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give 30m, 2h, 7d (ago) or a local date/time like 2026-12-01T14:30"
        ) from None


_SHOWN_FIRST = ("request_id", "code_id", "function", "decision", "run", "limit", "reason")
_HIDDEN = {"seq", "time", "event", "prev", "hash"}


def describe_record(record: dict) -> str:
    """One record as one readable line: local time, event, then its fields (ids shortened).

    Parameters
    ----------
    record : dict
        An audit record.

    Returns
    -------
    str
        ``YYYY-MM-DD HH:MM:SS  event  key=value ...``.

    Examples
    --------
    >>> line = describe_record({"seq": 0, "time": 0.0, "event": "refund", "code_id": "0f" * 16, "run": 2})
    >>> line.split("  ", 1)[1]
    'refund     code_id=0f0f0f0f0f0f run=2'
    """
    when = datetime.fromtimestamp(float(record.get("time", 0))).strftime("%Y-%m-%d %H:%M:%S")
    shown = {key for key, value in record.items() if key not in _HIDDEN and value not in (None, "")}
    keys = [key for key in _SHOWN_FIRST if key in shown]
    keys += sorted(shown - set(keys))
    fields = " ".join(f"{key}={_short(key, record[key])}" for key in keys)
    return f"{when}  {record.get('event', '?'):<9}  {fields}".rstrip()


def _short(key: str, value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if key.endswith(("_id", "sha256", "researcher")) and len(text) > 16 and not set(" @") & set(text):
        return text[:12]  # ids and keys are long hex: the start tells them apart (an e-mail stays whole)
    return text
