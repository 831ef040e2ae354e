"""Reason codes and the ``quarantine.jsonl`` report."""

from __future__ import annotations

import json
import random

from datasite_setup.convert.quarantine import QuarantineEntry, Reason, quarantine_jsonl, read_quarantine


def test_reason_codes_are_the_documented_strings() -> None:
    assert {r.value for r in Reason} == {
        "empty_file",
        "unreadable",
        "not_an_image",
        "truncated",
        "corrupt",
        "decompression_bomb",
        "unsupported_mode",
        "symlink_outside_root",
        "outside_root",
        "no_label",
        "no_group",
        "no_client",
        "missing_file",
        "conflicting_rows",
        "duplicate",
        "duplicate_conflict",
    }
    assert Reason("duplicate") is Reason.DUPLICATE
    assert Reason.NO_GROUP == "no_group"


def test_entry_json_has_sorted_keys_and_keeps_unicode() -> None:
    entry = QuarantineEntry("cat/é 1.PNG", Reason.TRUNCATED, "the image data cannot be decoded")
    line = entry.to_json()
    assert (
        line
        == '{"message": "the image data cannot be decoded", "path": "cat/é 1.PNG", "reason": "truncated"}'
    )
    assert json.loads(line) == {
        "path": "cat/é 1.PNG",
        "reason": "truncated",
        "message": "the image data cannot be decoded",
    }


ENTRIES = [
    QuarantineEntry("dog/b.png", Reason.DUPLICATE, "identical pixels"),
    QuarantineEntry("cat/z.png", Reason.EMPTY_FILE, "the file is empty (0 bytes)"),
    QuarantineEntry("cat/a.png", Reason.NOT_AN_IMAGE, "not a readable image"),
    QuarantineEntry("cat/a.png", Reason.CORRUPT, "damaged"),
    QuarantineEntry('we"ird\nname\\.png', Reason.NO_LABEL, "line\nbreak"),
    QuarantineEntry("Ünïcode/ß.jpg", Reason.SYMLINK_OUTSIDE_ROOT, "symbolic link points outside"),
]


def test_jsonl_is_sorted_one_object_per_line() -> None:
    data = quarantine_jsonl(ENTRIES)
    assert isinstance(data, bytes)
    lines = data.decode("utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == len(ENTRIES) + 1
    records = [json.loads(line) for line in lines[:-1]]
    assert [(r["path"], r["reason"]) for r in records] == [
        ("cat/a.png", "corrupt"),
        ("cat/a.png", "not_an_image"),
        ("cat/z.png", "empty_file"),
        ("dog/b.png", "duplicate"),
        ('we"ird\nname\\.png', "no_label"),
        ("Ünïcode/ß.jpg", "symlink_outside_root"),  # code-point order: Ü sorts after ASCII
    ]
    assert "Ünïcode".encode() in data


def test_jsonl_does_not_depend_on_input_order() -> None:
    data = quarantine_jsonl(ENTRIES)
    shuffled = list(ENTRIES)
    for seed in range(5):
        random.Random(seed).shuffle(shuffled)
        assert quarantine_jsonl(shuffled) == data


def test_jsonl_round_trip() -> None:
    data = quarantine_jsonl(ENTRIES)
    back = read_quarantine(data)
    assert back == sorted(ENTRIES, key=lambda e: (e.path, e.reason.value, e.message))
    assert all(isinstance(e.reason, Reason) for e in back)
    assert quarantine_jsonl(back) == data


def test_empty_report() -> None:
    assert quarantine_jsonl([]) == b""
    assert read_quarantine(b"") == []
