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
from enum import Enum


class Reason(str, Enum):
    """Why an input was rejected (the ``reason`` field of ``quarantine.jsonl``)."""

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
    """One rejected input."""

    path: str
    reason: Reason
    message: str

    def to_json(self) -> str:
        record = {"path": self.path, "reason": self.reason.value, "message": self.message}
        return json.dumps(record, ensure_ascii=False, sort_keys=True)


def quarantine_jsonl(entries: Iterable[QuarantineEntry]) -> bytes:
    """Serialise entries in a stable order (by path, then reason), one JSON object per line."""
    ordered = sorted(entries, key=lambda e: (e.path, e.reason.value, e.message))
    return "".join(e.to_json() + "\n" for e in ordered).encode("utf-8")


def read_quarantine(data: bytes) -> list[QuarantineEntry]:
    """Parse ``quarantine.jsonl`` content."""
    entries = []
    for line in data.decode("utf-8").splitlines():
        record = json.loads(line)
        entries.append(QuarantineEntry(record["path"], Reason(record["reason"]), record["message"]))
    return entries
