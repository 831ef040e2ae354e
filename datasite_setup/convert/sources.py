"""Finding the inputs: which files are images, and what label and group each has.

Three layouts, each a plain function returning a ``ScanResult``:

* ``scan_class_folders``: ``root/<label>/**/<image>`` (torchvision ImageFolder);
* ``scan_labels_csv``: any files under ``root`` plus a CSV naming path, label,
  and optionally group (patient) and client (site) columns;
* ``scan_label_pattern``: the label is taken from the file name by a regex.

Nothing is decoded here; images are validated later. Every file under the root
ends up either as a ``SourceRecord``, a ``QuarantineEntry`` or a skipped count.
"""

from __future__ import annotations

import csv
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from datasite_setup.convert.quarantine import QuarantineEntry, Reason
from datasite_setup.errors import FedimgError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
SYSTEM_FILE_NAMES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db", "icon\r"})
SYSTEM_DIR_NAMES = frozenset({"__macosx", "$recycle.bin", "system volume information", "@eadir"})


class SkipReason:
    """Keys of ``ScanResult.skipped``: inputs that are not images and are not rejected."""

    HIDDEN_OR_SYSTEM = "hidden_or_system"
    NOT_AN_IMAGE_FILE = "not_an_image_file"
    SYMLINKED_DIRECTORY = "symlinked_directory"
    LABELS_CSV = "labels_csv"


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One candidate image: its path relative to the root (POSIX form) and its metadata."""

    rel_path: str
    label: str
    group_key: str | None = None
    client_key: str | None = None


@dataclass
class ScanResult:
    """Everything found under a source root."""

    records: list[SourceRecord] = field(default_factory=list)
    rejected: list[QuarantineEntry] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)

    @property
    def files_seen(self) -> int:
        return len(self.records) + len(self.rejected) + sum(self.skipped.values())


def is_hidden_or_system(name: str) -> bool:
    """Dot files (``.DS_Store``, ``._x.jpg``) and OS bookkeeping files (``Thumbs.db``)."""
    return name.startswith(".") or name.lower() in SYSTEM_FILE_NAMES


def is_image_name(name: str) -> bool:
    """True when the extension (case-insensitive) is one of ``IMAGE_EXTENSIONS``."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def iter_image_files(root: Path, result: ScanResult, *, skip: frozenset[str] = frozenset()) -> Iterator[str]:
    """Yield the relative POSIX paths of candidate image files under ``root``, in sorted order.

    Hidden/system and non-image files are counted in ``result.skipped``; symlinks
    that resolve outside ``root`` go to ``result.rejected``. Directory symlinks are
    not followed (they would double-count or loop). ``skip`` holds relative paths
    to pass over silently apart from a count (the labels CSV itself).
    """
    resolved_root = root.resolve()
    found: list[str] = []
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(root / rel_dir if rel_dir else root) as scan:
            entries = sorted(scan, key=lambda e: e.name)
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            kind = _classify(entry, rel, resolved_root, result, skip)
            if kind == "dir":
                stack.append(rel)
            elif kind == "image":
                found.append(rel)
    # A depth-first walk yields a directory's files before (or after) its sub-folders'
    # and in reverse; sorting the relative paths gives the order the docstring promises.
    yield from sorted(found)


def _classify(
    entry: os.DirEntry, rel: str, resolved_root: Path, result: ScanResult, skip: frozenset[str]
) -> str:
    if is_hidden_or_system(entry.name) or entry.name.lower() in SYSTEM_DIR_NAMES:
        result.skipped[SkipReason.HIDDEN_OR_SYSTEM] += 1
        return "skip"
    if entry.is_symlink():
        target = Path(entry.path).resolve()
        if not target.is_relative_to(resolved_root):
            result.rejected.append(
                QuarantineEntry(
                    rel, Reason.SYMLINK_OUTSIDE_ROOT, "symbolic link points outside the source folder"
                )
            )
            return "skip"
        if target.is_dir():
            result.skipped[SkipReason.SYMLINKED_DIRECTORY] += 1
            return "skip"
    if entry.is_dir():
        return "dir"
    if rel in skip:
        result.skipped[SkipReason.LABELS_CSV] += 1
        return "skip"
    if not is_image_name(entry.name):
        result.skipped[SkipReason.NOT_AN_IMAGE_FILE] += 1
        return "skip"
    return "image"


def find_classes(root: Path) -> list[str]:
    """Sorted names of the non-hidden class folders directly under ``root``."""
    classes = sorted(
        entry.name
        for entry in os.scandir(root)
        if entry.is_dir()
        and not is_hidden_or_system(entry.name)
        and entry.name.lower() not in SYSTEM_DIR_NAMES
    )
    if not classes:
        raise FedimgError(
            f"{root}: no class folders found; expected {root}/<label>/<image files>, or pass --labels or --label-pattern"
        )
    return classes


def scan_class_folders(root: Path) -> ScanResult:
    """Label = the first folder under ``root``; deeper sub-folders belong to it."""
    find_classes(root)
    result = ScanResult()
    for rel in iter_image_files(root, result):
        label, sep, _ = rel.partition("/")
        if not sep:
            result.rejected.append(
                QuarantineEntry(rel, Reason.NO_LABEL, "image at the top level is in no class folder")
            )
            continue
        result.records.append(SourceRecord(rel, label))
    return result


def scan_label_pattern(root: Path, pattern: str) -> ScanResult:
    """Label = group ``label`` (or group 1) of ``pattern`` searched in the file name.

    Examples: ``--label-pattern '_(?P<label>[a-z]+)\\.'`` labels ``img_cat.jpg`` as ``cat``.
    """
    regex = _compile_label_pattern(pattern)
    result = ScanResult()
    for rel in iter_image_files(root, result):
        match = regex.search(PurePosixPath(rel).name)
        label = (match.group("label") if "label" in regex.groupindex else match.group(1)) if match else None
        if not label:
            result.rejected.append(
                QuarantineEntry(rel, Reason.NO_LABEL, f"file name does not match --label-pattern {pattern!r}")
            )
            continue
        result.records.append(SourceRecord(rel, label))
    return result


def _compile_label_pattern(pattern: str) -> re.Pattern:
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise FedimgError(f"--label-pattern {pattern!r} is not a valid regular expression: {exc}") from exc
    if regex.groups < 1:
        raise FedimgError(
            f"--label-pattern {pattern!r} has no capture group; mark the label with (...) or (?P<label>...)"
        )
    return regex


@dataclass(frozen=True)
class CsvColumns:
    """Column names of a labels CSV; ``group``/``client`` are optional."""

    path: str = "path"
    label: str = "label"
    group: str | None = None
    client: str | None = None

    def required(self) -> list[tuple[str, str]]:
        named = [("--path-column", self.path), ("--label-column", self.label)]
        named += [
            (flag, name)
            for flag, name in (("--group-column", self.group), ("--client-column", self.client))
            if name
        ]
        return named


def scan_labels_csv(root: Path, labels_csv: Path, columns: CsvColumns) -> ScanResult:
    """Files under ``root`` labelled by rows of ``labels_csv`` (paths relative to ``root``)."""
    rows, result = _read_label_rows(labels_csv, columns)
    skip = _relative_skip(root, labels_csv)
    for rel in iter_image_files(root, result, skip=skip):
        record = rows.pop(unicodedata.normalize("NFC", rel), None)
        if record is None:
            result.rejected.append(
                QuarantineEntry(rel, Reason.NO_LABEL, f"no row in {labels_csv.name} names this file")
            )
        elif isinstance(record, QuarantineEntry):
            result.rejected.append(replace(record, path=rel))
        else:
            # The row's path is NFC; the file's own name (maybe NFD) is the one that opens it.
            result.records.append(replace(record, rel_path=rel))
    # Files the walk already rejected (a symlink leaving the root) are reported once, not twice.
    walked_rejected = {unicodedata.normalize("NFC", e.path) for e in result.rejected}
    for rel, record in sorted(rows.items()):
        if rel in walked_rejected:
            continue
        message = f"{labels_csv.name} names this file but it is not an image file under the source folder"
        if isinstance(record, QuarantineEntry):
            message = record.message + "; " + message
        reason = Reason.MISSING_FILE if not (root / rel).exists() else Reason.NOT_AN_IMAGE
        result.rejected.append(QuarantineEntry(rel, reason, message))
    return result


def _relative_skip(root: Path, labels_csv: Path) -> frozenset[str]:
    try:
        return frozenset({labels_csv.resolve().relative_to(root.resolve()).as_posix()})
    except ValueError:
        return frozenset()


def _read_label_rows(labels_csv: Path, columns: CsvColumns) -> tuple[dict, ScanResult]:
    """Map each normalised path to its record, or to a QuarantineEntry when its rows conflict."""
    result = ScanResult()
    rows: dict[str, SourceRecord | QuarantineEntry] = {}
    first_line: dict[str, int] = {}
    try:
        handle = open(labels_csv, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise FedimgError(f"{labels_csv}: cannot be opened ({exc.strerror})") from exc
    with handle:
        try:
            reader = csv.DictReader(handle)
            _check_columns(labels_csv, reader.fieldnames or [], columns)
            for line_number, row in enumerate(reader, start=2):
                _add_row(rows, first_line, result, labels_csv.name, line_number, row, columns)
        except UnicodeDecodeError as exc:
            raise FedimgError(
                f"{labels_csv}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the CSV as UTF-8"
            ) from exc
        except csv.Error as exc:
            raise FedimgError(f"{labels_csv}: not a readable CSV ({exc})") from exc
    return rows, result


def _check_columns(labels_csv: Path, header: list[str], columns: CsvColumns) -> None:
    for flag, name in columns.required():
        if name not in header:
            raise FedimgError(f"{labels_csv}: {flag} {name!r} is not a column; the columns are {header}")


def _add_row(
    rows: dict, first_line: dict, result: ScanResult, csv_name: str, line: int, row: dict, columns: CsvColumns
) -> None:
    raw_path = (row.get(columns.path) or "").strip()
    rel = _normalise_csv_path(raw_path)
    if rel is None:
        where = raw_path or f"{csv_name} line {line}"
        result.rejected.append(
            QuarantineEntry(
                where,
                Reason.OUTSIDE_ROOT,
                f"{csv_name} line {line}: path is empty, absolute or leaves the source folder",
            )
        )
        return
    record = _row_record(rel, row, columns, csv_name, line)
    previous = rows.get(rel)
    if previous is None:
        rows[rel] = record
        first_line[rel] = line
    elif previous == record:
        result.warnings.append(
            f"{csv_name} line {line}: duplicate row for {rel!r} (same as line {first_line[rel]}), ignored"
        )
        result.skipped["duplicate_csv_row"] += 1
    elif not isinstance(previous, QuarantineEntry):
        rows[rel] = QuarantineEntry(
            rel,
            Reason.CONFLICTING_ROWS,
            f"{csv_name} lines {first_line[rel]} and {line} give this file different labels, groups or clients",
        )


def _row_record(
    rel: str, row: dict, columns: CsvColumns, csv_name: str, line: int
) -> SourceRecord | QuarantineEntry:
    label = (row.get(columns.label) or "").strip()
    group = (row.get(columns.group) or "").strip() if columns.group else None
    client = (row.get(columns.client) or "").strip() if columns.client else None
    if not label:
        return QuarantineEntry(rel, Reason.NO_LABEL, f"{csv_name} line {line}: empty {columns.label!r}")
    if columns.group and not group:
        return QuarantineEntry(
            rel,
            Reason.NO_GROUP,
            f"{csv_name} line {line}: empty {columns.group!r}; without a group the sample cannot be kept patient-safe",
        )
    if columns.client and not client:
        return QuarantineEntry(rel, Reason.NO_CLIENT, f"{csv_name} line {line}: empty {columns.client!r}")
    return SourceRecord(rel, label, group, client)


def _normalise_csv_path(raw: str) -> str | None:
    """POSIX path relative to the root, or None when it is empty, absolute or climbs out."""
    if not raw:
        return None
    posix = raw.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        return None
    parts = [p for p in unicodedata.normalize("NFC", posix).split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)
