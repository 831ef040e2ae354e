"""Rejected inputs: reason codes and the ``quarantine.jsonl`` report.

Every input that does not become a sample is accounted for here (or counted as
skipped when it is not an image at all). Entries name the input by its path
relative to the source root so the data owner can find and fix it; the report is
for the owner and is never ingested into a datasite.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    """Why an input was rejected (the ``reason`` field of ``quarantine.jsonl``).

    Examples
    --------
    >>> Reason("truncated") is Reason.TRUNCATED, Reason.TRUNCATED.value
    (True, 'truncated')
    """

    EMPTY_FILE = "empty_file"
    UNREADABLE = "unreadable"
    NOT_AN_IMAGE = "not_an_image"
    TRUNCATED = "truncated"
    CORRUPT = "corrupt"
    DECOMPRESSION_BOMB = "decompression_bomb"
    UNSUPPORTED_MODE = "unsupported_mode"
    SYMLINK_OUTSIDE_ROOT = "symlink_outside_root"
    OUTSIDE_ROOT = "outside_root"
    NO_LABEL = "no_label"
    NO_GROUP = "no_group"
    NO_CLIENT = "no_client"
    MISSING_FILE = "missing_file"
    CONFLICTING_ROWS = "conflicting_rows"
    DUPLICATE = "duplicate"
    DUPLICATE_CONFLICT = "duplicate_conflict"


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """One rejected input.

    Parameters
    ----------
    path : str
        The input, relative to the source folder (so the owner can find it).
    reason : Reason
        Why it was rejected.
    message : str
        What is wrong, in words.

    Examples
    --------
    >>> QuarantineEntry("scans/a.png", Reason.EMPTY_FILE, "the file is empty (0 bytes)").to_json()
    '{"message": "the file is empty (0 bytes)", "path": "scans/a.png", "reason": "empty_file"}'
    """

    path: str
    reason: Reason
    message: str

    def to_json(self) -> str:
        """The entry as one line of ``quarantine.jsonl`` (keys sorted, no newline)."""
        record = {"path": self.path, "reason": self.reason.value, "message": self.message}
        return json.dumps(record, ensure_ascii=False, sort_keys=True)


def quarantine_jsonl(entries: Iterable[QuarantineEntry]) -> bytes:
    """Serialise entries in a stable order (by path, then reason), one JSON object per line.

    Parameters
    ----------
    entries : iterable of QuarantineEntry
        The rejected inputs, in any order.

    Returns
    -------
    bytes
        The content of ``quarantine.jsonl`` (UTF-8); ``read_quarantine`` reads it back.

    Examples
    --------
    >>> entries = [
    ...     QuarantineEntry("b.png", Reason.CORRUPT, "damaged"),
    ...     QuarantineEntry("a.png", Reason.NO_LABEL, "no row names this file"),
    ... ]
    >>> [entry.path for entry in read_quarantine(quarantine_jsonl(entries))]
    ['a.png', 'b.png']
    """
    ordered = sorted(entries, key=lambda e: (e.path, e.reason.value, e.message))
    return "".join(e.to_json() + "\n" for e in ordered).encode("utf-8")


def read_quarantine(data: bytes) -> list[QuarantineEntry]:
    """Parse ``quarantine.jsonl`` content.

    Parameters
    ----------
    data : bytes
        The file's content.

    Returns
    -------
    list of QuarantineEntry
        The entries, in file order.

    Raises
    ------
    ValueError
        On a line that is not JSON or has an unknown reason (``KeyError`` for a missing field).

    Examples
    --------
    >>> read_quarantine(b'{"message": "?", "path": "a.png", "reason": "no_label"}\\n')[0].reason
    <Reason.NO_LABEL: 'no_label'>
    """
    entries = []
    for line in data.decode("utf-8").splitlines():
        record = json.loads(line)
        entries.append(QuarantineEntry(record["path"], Reason(record["reason"]), record["message"]))
    return entries
