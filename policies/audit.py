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
import os
import time
from dataclasses import dataclass
from pathlib import Path

GENESIS = "0" * 64
EVENTS = ("request", "review", "decision", "execution", "release", "refusal")


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
            One of ``EVENTS``: request, review, decision, execution, release, refusal.
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
            prev, count = self._head()
            record = {"seq": count, "time": round(time.time(), 3), "event": event, **fields, "prev": prev}
            line_hash = _line_hash(record)
            record["hash"] = line_hash
            handle.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            self._write_head(line_hash, count + 1)
        return record

    def records(self) -> list[dict]:
        """Every record, oldest first (none when the log does not exist yet)."""
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def _head(self) -> tuple[str, int]:
        try:
            head = json.loads(self.head_path.read_text())
            return head["hash"], head["count"]
        except FileNotFoundError:
            return GENESIS, 0

    def _write_head(self, last_hash: str, count: int) -> None:
        temporary = self.head_path.with_name(self.head_path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"hash": last_hash, "count": count}, handle)
        os.replace(temporary, self.head_path)


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
        head_hash, head_count = log._head()
    except (ValueError, KeyError, TypeError):
        problems.append(
            AuditProblem(
                len(lines),
                f"the head file {log.head_path.name} is unreadable: the end of the log cannot be checked",
            )
        )
        return problems
    if head_count != len(lines) or (lines and head_hash != prev):
        problems.append(
            AuditProblem(
                len(lines), f"the log ends early or late: {len(lines)} lines, {head_count} were written"
            )
        )
    return problems
