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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Literal

from datasite_setup.convert.quarantine import QuarantineEntry, Reason
from datasite_setup.errors import FedimgError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
SYSTEM_FILE_NAMES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db", "icon\r"})
SYSTEM_DIR_NAMES = frozenset({"__macosx", "$recycle.bin", "system volume information", "@eadir"})

# What the directory walk does with one entry.
_EntryKind = Literal["dir", "image", "skip"]


class SkipReason:
    """Keys of ``ScanResult.skipped``: inputs that are not images and are not rejected.

    Examples
    --------
    >>> SkipReason.HIDDEN_OR_SYSTEM
    'hidden_or_system'
    """

    HIDDEN_OR_SYSTEM = "hidden_or_system"
    NOT_AN_IMAGE_FILE = "not_an_image_file"
    SYMLINKED_DIRECTORY = "symlinked_directory"
    LABELS_CSV = "labels_csv"


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One candidate image: its path relative to the root (POSIX form) and its metadata.

    Parameters
    ----------
    rel_path : str
        Path relative to the source root, with ``/`` separators.
    label : str
        The image's label, as the layout gives it.
    group_key : str, optional
        The raw group (patient) id from the labels CSV; None when there is no group column.
    client_key : str, optional
        The raw client (site) value from the labels CSV, for ``--scheme natural``.
    """

    rel_path: str
    label: str
    group_key: str | None = None
    client_key: str | None = None


@dataclass
class ScanResult:
    """Everything found under a source root.

    Parameters
    ----------
    records : list of SourceRecord
        Candidate images, to be decoded and validated.
    rejected : list of QuarantineEntry
        Inputs rejected while scanning (no label, a symlink leaving the root, ...).
    skipped : Counter
        Files that are not images, counted by ``SkipReason``.
    warnings : list of str
        Things the owner should know that reject nothing (a repeated CSV row).
    """

    records: list[SourceRecord] = field(default_factory=list)
    rejected: list[QuarantineEntry] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)

    @property
    def files_seen(self) -> int:
        """Every input accounted for: records, rejected and skipped."""
        return len(self.records) + len(self.rejected) + sum(self.skipped.values())


def is_hidden_or_system(name: str) -> bool:
    """Whether a file name is a dot file (``.DS_Store``, ``._x.jpg``) or OS bookkeeping (``Thumbs.db``).

    Parameters
    ----------
    name : str
        A file name (no folder).

    Returns
    -------
    bool
        True when the file is to be skipped silently.

    Examples
    --------
    >>> is_hidden_or_system("._scan.jpg"), is_hidden_or_system("Thumbs.db"), is_hidden_or_system("scan.jpg")
    (True, True, False)
    """
    return name.startswith(".") or name.lower() in SYSTEM_FILE_NAMES


def is_image_name(name: str) -> bool:
    """Whether the extension (case-insensitive) is one of ``IMAGE_EXTENSIONS``.

    Parameters
    ----------
    name : str
        A file name.

    Returns
    -------
    bool
        True for a candidate image (its content is checked later).

    Examples
    --------
    >>> is_image_name("scan.JPEG"), is_image_name("notes.txt")
    (True, False)
    """
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def iter_image_files(root: Path, result: ScanResult, *, skip: frozenset[str] = frozenset()) -> Iterator[str]:
    """Yield the relative POSIX paths of candidate image files under ``root``, in sorted order.

    Hidden/system and non-image files are counted in ``result.skipped``; symlinks
    that resolve outside ``root`` go to ``result.rejected``. Directory symlinks are
    not followed (they would double-count or loop).

    Parameters
    ----------
    root : Path
        The source folder.
    result : ScanResult
        Receives the skipped counts and rejected entries.
    skip : frozenset of str, optional
        Relative paths to pass over silently apart from a count (the labels CSV itself).

    Yields
    ------
    str
        Each candidate image's path relative to ``root``, ``/``-separated.

    Examples
    --------
    >>> from pathlib import Path
    >>> for rel in ("walk/b/1.png", "walk/a.JPG", "walk/notes.txt", "walk/.DS_Store"):
    ...     Path(rel).parent.mkdir(parents=True, exist_ok=True)
    ...     _ = Path(rel).write_bytes(b"")
    >>> result = ScanResult()
    >>> list(iter_image_files(Path("walk"), result)), dict(result.skipped)
    (['a.JPG', 'b/1.png'], {'hidden_or_system': 1, 'not_an_image_file': 1})
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
    entry: os.DirEntry[str], rel: str, resolved_root: Path, result: ScanResult, skip: frozenset[str]
) -> _EntryKind:
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
    """The class folders directly under ``root`` (hidden and system folders are not classes).

    Parameters
    ----------
    root : Path
        The source folder.

    Returns
    -------
    list of str
        The folder names, sorted.

    Raises
    ------
    FedimgError
        When there is no class folder; the message names the other layouts.

    Examples
    --------
    >>> from pathlib import Path
    >>> for folder in ("classes/dog", "classes/cat", "classes/__MACOSX"):
    ...     Path(folder).mkdir(parents=True)
    >>> find_classes(Path("classes"))
    ['cat', 'dog']
    """
    classes = sorted(entry.name for entry in os.scandir(root) if _is_class_folder(entry))
    if not classes:
        raise FedimgError(
            f"{root}: no class folders found; expected {root}/<label>/<image files>, "
            "or pass --labels or --label-pattern"
        )
    return classes


def _is_class_folder(entry: os.DirEntry[str]) -> bool:
    hidden = is_hidden_or_system(entry.name) or entry.name.lower() in SYSTEM_DIR_NAMES
    return entry.is_dir() and not hidden


def scan_class_folders(root: Path) -> ScanResult:
    """Scan the ``root/<label>/**/<image>`` layout: the first folder under ``root`` is the label.

    Deeper sub-folders belong to their first-level folder's label; an image
    directly in ``root`` is rejected (no label).

    Parameters
    ----------
    root : Path
        The source folder.

    Returns
    -------
    ScanResult
        The candidate images with their labels, the rejected and the skipped inputs.

    Raises
    ------
    FedimgError
        When ``root`` holds no class folder.

    Examples
    --------
    >>> from pathlib import Path
    >>> for rel in ("pets/cat/1.png", "pets/dog/old/2.png", "pets/stray.png"):
    ...     Path(rel).parent.mkdir(parents=True, exist_ok=True)
    ...     _ = Path(rel).write_bytes(b"")
    >>> result = scan_class_folders(Path("pets"))
    >>> [(r.rel_path, r.label) for r in result.records], [e.path for e in result.rejected]
    ([('cat/1.png', 'cat'), ('dog/old/2.png', 'dog')], ['stray.png'])
    """
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
    """Scan any files under ``root``, labelled by group ``label`` (or group 1) of ``pattern`` in their name.

    Parameters
    ----------
    root : Path
        The source folder.
    pattern : str
        A regular expression searched in each file name (``--label-pattern``).

    Returns
    -------
    ScanResult
        The candidate images with their labels; names the pattern does not match are rejected.

    Raises
    ------
    FedimgError
        When ``pattern`` is not a regular expression with a capture group.

    Examples
    --------
    >>> from pathlib import Path
    >>> for name in ("img_cat.jpg", "img_dog.jpg", "img42.jpg"):
    ...     Path("flat").mkdir(exist_ok=True)
    ...     _ = (Path("flat") / name).write_bytes(b"")
    >>> result = scan_label_pattern(Path("flat"), r"_(?P<label>[a-z]+)\\.")
    >>> [(r.rel_path, r.label) for r in result.records], [e.path for e in result.rejected]
    ([('img_cat.jpg', 'cat'), ('img_dog.jpg', 'dog')], ['img42.jpg'])
    """
    regex = _compile_label_pattern(pattern)
    result = ScanResult()
    for rel in iter_image_files(root, result):
        label = _label_in_name(regex, PurePosixPath(rel).name)
        if not label:
            result.rejected.append(
                QuarantineEntry(rel, Reason.NO_LABEL, f"file name does not match --label-pattern {pattern!r}")
            )
            continue
        result.records.append(SourceRecord(rel, label))
    return result


def _label_in_name(regex: re.Pattern[str], name: str) -> str | None:
    match = regex.search(name)
    if match is None:
        return None
    return match.group("label") if "label" in regex.groupindex else match.group(1)


def _compile_label_pattern(pattern: str) -> re.Pattern[str]:
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
    """Column names of a labels CSV; ``group``/``client`` are optional.

    Parameters
    ----------
    path : str, default "path"
        The image's path relative to the source folder (``--path-column``).
    label : str, default "label"
        The label (``--label-column``).
    group : str, optional
        The patient (group) id (``--group-column``).
    client : str, optional
        The site that decides the client for ``--scheme natural`` (``--client-column``).

    Examples
    --------
    >>> CsvColumns(group="patient_id").required()
    [('--path-column', 'path'), ('--label-column', 'label'), ('--group-column', 'patient_id')]
    """

    path: str = "path"
    label: str = "label"
    group: str | None = None
    client: str | None = None

    def required(self) -> list[tuple[str, str]]:
        """The ``(flag, column)`` pairs the CSV must have: path, label, and group/client when named."""
        named = [("--path-column", self.path), ("--label-column", self.label)]
        for flag, name in (("--group-column", self.group), ("--client-column", self.client)):
            if name:
                named.append((flag, name))
        return named


def scan_labels_csv(root: Path, labels_csv: Path, columns: CsvColumns) -> ScanResult:
    """Scan any files under ``root``, labelled by the rows of ``labels_csv`` (paths relative to ``root``).

    Paths are compared in Unicode NFC form, with ``\\`` read as ``/``. A file no row
    names, a row naming no image file, and rows that disagree about one file are
    all rejected; a repeated identical row is a warning.

    Parameters
    ----------
    root : Path
        The source folder.
    labels_csv : Path
        The CSV (UTF-8, with a header row); it may lie inside ``root``.
    columns : CsvColumns
        Which columns hold the path, label, group and client.

    Returns
    -------
    ScanResult
        The candidate images with label, group and client; the rejected and skipped inputs.

    Raises
    ------
    FedimgError
        When the CSV cannot be read, is not UTF-8, or lacks a named column.

    Examples
    --------
    >>> from pathlib import Path
    >>> Path("scans").mkdir()
    >>> for name in ("a.png", "b.png", "c.png"):
    ...     _ = (Path("scans") / name).write_bytes(b"")
    >>> _ = Path("labels.csv").write_text("path,label,patient\\na.png,flu,P1\\nb.png,ok,P1\\n")
    >>> result = scan_labels_csv(Path("scans"), Path("labels.csv"), CsvColumns(group="patient"))
    >>> [(r.rel_path, r.label, r.group_key) for r in result.records]
    [('a.png', 'flu', 'P1'), ('b.png', 'ok', 'P1')]
    >>> [(e.path, e.reason.value) for e in result.rejected]
    [('c.png', 'no_label')]
    """
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


# A CSV row's verdict on one file: its record, or why it cannot be used.
_RowVerdict = SourceRecord | QuarantineEntry


def _read_label_rows(labels_csv: Path, columns: CsvColumns) -> tuple[dict[str, _RowVerdict], ScanResult]:
    """Map each normalised path to its record, or to a QuarantineEntry when its rows conflict."""
    result = ScanResult()
    rows: dict[str, _RowVerdict] = {}
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


def _check_columns(labels_csv: Path, header: Sequence[str], columns: CsvColumns) -> None:
    for flag, name in columns.required():
        if name not in header:
            raise FedimgError(f"{labels_csv}: {flag} {name!r} is not a column; the columns are {header}")


def _add_row(
    rows: dict[str, _RowVerdict],
    first_line: dict[str, int],
    result: ScanResult,
    csv_name: str,
    line: int,
    row: dict[str, str | None],
    columns: CsvColumns,
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
        conflict = f"{csv_name} lines {first_line[rel]} and {line}"
        rows[rel] = QuarantineEntry(
            rel,
            Reason.CONFLICTING_ROWS,
            f"{conflict} give this file different labels, groups or clients",
        )


def _row_record(
    rel: str, row: dict[str, str | None], columns: CsvColumns, csv_name: str, line: int
) -> _RowVerdict:
    label = _cell(row, columns.label)
    group = _cell(row, columns.group) if columns.group else None
    client = _cell(row, columns.client) if columns.client else None
    where = f"{csv_name} line {line}"
    if not label:
        return QuarantineEntry(rel, Reason.NO_LABEL, f"{where}: empty {columns.label!r}")
    if columns.group and not group:
        return QuarantineEntry(
            rel,
            Reason.NO_GROUP,
            f"{where}: empty {columns.group!r}; without a group the sample cannot be kept patient-safe",
        )
    if columns.client and not client:
        return QuarantineEntry(rel, Reason.NO_CLIENT, f"{where}: empty {columns.client!r}")
    return SourceRecord(rel, label, group, client)


def _cell(row: dict[str, str | None], column: str) -> str:
    # A short row leaves its missing cells None.
    return (row.get(column) or "").strip()


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
