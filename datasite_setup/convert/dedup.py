"""Exact duplicates: the same decoded pixels (which includes the same bytes)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol, TypeVar

from datasite_setup.convert.quarantine import QuarantineEntry, Reason


class _Candidate(Protocol):
    rel_path: str
    label: str
    pixel_sha256: str


T = TypeVar("T", bound=_Candidate)


def resolve_duplicates(samples: Sequence[T]) -> tuple[list[T], list[QuarantineEntry]]:
    """Keep one of each set of identical images when their labels agree; reject all when they conflict.

    The kept copy is the one with the smallest relative path, so the result does
    not depend on processing order. Messages never name the kept file (its name
    must not survive in the output).
    """
    by_pixels: dict[str, list[T]] = defaultdict(list)
    for sample in samples:
        by_pixels[sample.pixel_sha256].append(sample)
    kept: list[T] = []
    rejected: list[QuarantineEntry] = []
    for copies in by_pixels.values():
        if len(copies) == 1:
            kept.append(copies[0])
            continue
        copies = sorted(copies, key=lambda s: s.rel_path)
        labels = sorted({c.label for c in copies})
        if len(labels) == 1:
            kept.append(copies[0])
            rejected += [
                QuarantineEntry(
                    c.rel_path,
                    Reason.DUPLICATE,
                    f"identical pixels to {len(copies) - 1} other input(s) with the same label; one copy was kept",
                )
                for c in copies[1:]
            ]
        else:
            rejected += [
                QuarantineEntry(
                    c.rel_path,
                    Reason.DUPLICATE_CONFLICT,
                    f"identical pixels to {len(copies) - 1} other input(s) labelled {labels}; all copies rejected",
                )
                for c in copies
            ]
    return kept, rejected
