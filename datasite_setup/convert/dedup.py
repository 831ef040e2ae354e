"""Exact duplicates: the same decoded pixels (which includes the same bytes)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol, TypeVar

from datasite_setup.convert.quarantine import QuarantineEntry, Reason


class _Candidate(Protocol):
    # Read-only members, so frozen records satisfy the protocol as well as mutable ones.
    @property
    def rel_path(self) -> str: ...

    @property
    def label(self) -> str: ...

    @property
    def pixel_sha256(self) -> str: ...


T = TypeVar("T", bound=_Candidate)


def resolve_duplicates(samples: Sequence[T]) -> tuple[list[T], list[QuarantineEntry]]:
    """Keep one of each set of identical images when their labels agree; reject all when they conflict.

    The kept copy is the one with the smallest relative path, so the result does
    not depend on processing order. Messages never name the kept file (its name
    must not survive in the output).

    Parameters
    ----------
    samples : sequence
        Accepted images: anything with ``rel_path``, ``label`` and ``pixel_sha256``.

    Returns
    -------
    tuple
        ``(kept, rejected)``: the samples to keep, and a ``QuarantineEntry`` for every
        copy dropped (``duplicate``) or every copy of a conflict (``duplicate_conflict``).

    Examples
    --------
    >>> from collections import namedtuple
    >>> Sample = namedtuple("Sample", "rel_path label pixel_sha256")
    >>> kept, rejected = resolve_duplicates([
    ...     Sample("b/copy.png", "cat", "aa"), Sample("a/scan.png", "cat", "aa"),
    ...     Sample("x.png", "cat", "bb"), Sample("y.png", "dog", "bb"),
    ... ])
    >>> [s.rel_path for s in kept]
    ['a/scan.png']
    >>> [(e.path, e.reason.value) for e in rejected]
    [('b/copy.png', 'duplicate'), ('x.png', 'duplicate_conflict'), ('y.png', 'duplicate_conflict')]
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
        copies = sorted(copies, key=lambda sample: sample.rel_path)
        labels = sorted({sample.label for sample in copies})
        others = len(copies) - 1
        if len(labels) == 1:
            kept.append(copies[0])
            dropped, reason = copies[1:], Reason.DUPLICATE
            message = f"identical pixels to {others} other input(s) with the same label; one copy was kept"
        else:
            dropped, reason = copies, Reason.DUPLICATE_CONFLICT
            message = f"identical pixels to {others} other input(s) labelled {labels}; all copies rejected"
        rejected += [QuarantineEntry(sample.rel_path, reason, message) for sample in dropped]
    return kept, rejected
