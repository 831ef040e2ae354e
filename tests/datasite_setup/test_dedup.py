"""Exact duplicates: one copy kept when labels agree, all rejected when they conflict."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import PurePosixPath

import pytest

from datasite_setup.convert.dedup import resolve_duplicates
from datasite_setup.convert.imaging import RejectedImage, standardise
from datasite_setup.convert.quarantine import Reason
from datasite_setup.convert.sources import scan_class_folders


@dataclass(frozen=True)
class Candidate:
    rel_path: str
    label: str
    pixel_sha256: str


def by_path(entries) -> dict[str, Reason]:
    reasons = {e.path: e.reason for e in entries}
    assert len(reasons) == len(entries)
    return reasons


def test_unique_images_are_all_kept_in_input_order() -> None:
    samples = [Candidate("b.png", "cat", "1"), Candidate("a.png", "cat", "2"), Candidate("c.png", "dog", "3")]
    kept, rejected = resolve_duplicates(samples)
    assert kept == samples
    assert rejected == []


def test_empty_input() -> None:
    assert resolve_duplicates([]) == ([], [])


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_agreeing_duplicates_keep_the_smallest_path_whatever_the_order(order) -> None:
    copies = [
        Candidate("cat/b/copy.png", "cat", "same"),
        Candidate("cat/a.png", "cat", "same"),
        Candidate("cat/z.jpg", "cat", "same"),
    ]
    samples = [copies[i] for i in order] + [Candidate("cat/other.png", "cat", "different")]
    kept, rejected = resolve_duplicates(samples)
    assert sorted(k.rel_path for k in kept) == ["cat/a.png", "cat/other.png"]
    assert kept[[k.rel_path for k in kept].index("cat/a.png")] is copies[1]
    assert by_path(rejected) == {"cat/b/copy.png": Reason.DUPLICATE, "cat/z.jpg": Reason.DUPLICATE}
    for entry in rejected:
        assert "cat/a.png" not in entry.message and "a.png" not in entry.message
        assert "2 other input(s)" in entry.message


def test_conflicting_duplicates_are_all_rejected() -> None:
    samples = [
        Candidate("dog/x.png", "dog", "same"),
        Candidate("cat/x.png", "cat", "same"),
        Candidate("cat/y.png", "cat", "same"),
        Candidate("cat/keep.png", "cat", "unique"),
    ]
    kept, rejected = resolve_duplicates(samples)
    assert [k.rel_path for k in kept] == ["cat/keep.png"]
    assert by_path(rejected) == {
        "cat/x.png": Reason.DUPLICATE_CONFLICT,
        "cat/y.png": Reason.DUPLICATE_CONFLICT,
        "dog/x.png": Reason.DUPLICATE_CONFLICT,
    }
    for entry in rejected:
        assert "['cat', 'dog']" in entry.message
        others = {"cat/x.png", "cat/y.png", "dog/x.png"} - {entry.path}
        assert not any(
            other in entry.message or PurePosixPath(other).name in entry.message for other in others
        )


def test_several_duplicate_sets_are_resolved_independently() -> None:
    samples = [
        Candidate("a1.png", "a", "A"),
        Candidate("a2.png", "a", "A"),
        Candidate("b1.png", "a", "B"),
        Candidate("b2.png", "b", "B"),
        Candidate("c1.png", "c", "C"),
    ]
    kept, rejected = resolve_duplicates(samples)
    assert sorted(k.rel_path for k in kept) == ["a1.png", "c1.png"]
    assert by_path(rejected) == {
        "a2.png": Reason.DUPLICATE,
        "b1.png": Reason.DUPLICATE_CONFLICT,
        "b2.png": Reason.DUPLICATE_CONFLICT,
    }
    assert len(kept) + len(rejected) == len(samples)


def test_same_path_and_label_twice_is_still_one_sample() -> None:
    kept, rejected = resolve_duplicates([Candidate("a.png", "cat", "X"), Candidate("a.png", "cat", "X")])
    assert len(kept) == 1 and [e.reason for e in rejected] == [Reason.DUPLICATE]


@dataclass
class Decoded:
    rel_path: str
    label: str
    pixel_sha256: str


def test_bad_corpus_duplicates_end_to_end(bad_corpus) -> None:
    scan = scan_class_folders(bad_corpus.root)
    decoded = []
    for record in scan.records:
        try:
            result = standardise((bad_corpus.root / record.rel_path).read_bytes(), bad_corpus.spec)
        except RejectedImage:
            continue
        decoded.append(Decoded(record.rel_path, record.label, result.pixel_sha256))
    kept, rejected = resolve_duplicates(decoded)
    assert {k.rel_path: k.label for k in kept} == bad_corpus.good
    assert by_path(rejected) == bad_corpus.dedup_rejected
    for entry in rejected:
        for good in bad_corpus.good:
            assert good not in entry.message and PurePosixPath(good).name not in entry.message
