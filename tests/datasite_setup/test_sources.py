"""Scanning a source folder: class folders, label patterns and a labels CSV."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest

from datasite_setup.convert.quarantine import Reason
from datasite_setup.convert.sources import (
    CsvColumns,
    ScanResult,
    SkipReason,
    SourceRecord,
    find_classes,
    is_hidden_or_system,
    is_image_name,
    iter_image_files,
    scan_class_folders,
    scan_label_pattern,
    scan_labels_csv,
)
from datasite_setup.errors import FedimgError


def rel_paths(result: ScanResult) -> list[str]:
    return [r.rel_path for r in result.records]


def rejected_by_path(result: ScanResult) -> dict[str, Reason]:
    reasons = {e.path: e.reason for e in result.rejected}
    assert len(reasons) == len(result.rejected), f"a path is reported twice: {result.rejected}"
    return reasons


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("a.png", True),
        ("A.PNG", True),
        ("scan.JpEg", True),
        ("x.jpe", True),
        ("x.Tif", True),
        ("x.TIFF", True),
        ("x.bmp", True),
        ("x.WEBP", True),
        ("x.gif", True),
        ("é 1.PNG", True),
        ("notes.txt", False),
        ("README", False),
        ("archive.png.zip", False),
        ("png", False),
        ("x.svg", False),
    ],
)
def test_is_image_name_is_case_insensitive_and_extension_based(name: str, expected: bool) -> None:
    assert is_image_name(name) is expected


@pytest.mark.parametrize(
    "name, expected",
    [
        (".DS_Store", True),
        ("._photo.jpg", True),
        (".hidden.png", True),
        ("Thumbs.db", True),
        ("THUMBS.DB", True),
        ("desktop.ini", True),
        ("ehthumbs.db", True),
        ("photo.jpg", False),
        ("thumbs.png", False),
    ],
)
def test_is_hidden_or_system(name: str, expected: bool) -> None:
    assert is_hidden_or_system(name) is expected


# --- class folders ---------------------------------------------------------------------------


def test_find_classes_sorted_and_ignores_hidden_system_dirs_and_files(tmp_path: Path) -> None:
    for name in ("zebra", "Apple", "cat", "10", "2", ".cache", "__MACOSX", "@eaDir"):
        (tmp_path / name).mkdir()
    touch(tmp_path / "stray.png")
    touch(tmp_path / "notes.txt")
    assert find_classes(tmp_path) == ["10", "2", "Apple", "cat", "zebra"]


def test_find_classes_without_folders_is_a_usage_error_naming_the_alternatives(tmp_path: Path) -> None:
    touch(tmp_path / "a.png")
    (tmp_path / ".hidden").mkdir()
    with pytest.raises(FedimgError) as info:
        find_classes(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "--labels" in message and "--label-pattern" in message
    with pytest.raises(FedimgError):
        scan_class_folders(tmp_path)


def test_scan_class_folders_label_is_first_folder_and_deeper_folders_belong_to_it(
    tmp_path: Path, make_image
) -> None:
    make_image(tmp_path / "cat" / "a.png")
    make_image(tmp_path / "cat" / "2019" / "jan" / "b.jpg", seed=1)
    make_image(tmp_path / "dog" / "sub" / "dog" / "c.BMP", seed=2)
    make_image(tmp_path / "dog" / "cat" / "d.gif", mode="P", seed=3)
    result = scan_class_folders(tmp_path)
    assert result.records == [
        SourceRecord("cat/2019/jan/b.jpg", "cat"),
        SourceRecord("cat/a.png", "cat"),
        SourceRecord("dog/cat/d.gif", "dog"),
        SourceRecord("dog/sub/dog/c.BMP", "dog"),
    ]
    assert all(r.group_key is None and r.client_key is None for r in result.records)
    assert result.rejected == []
    assert sum(result.skipped.values()) == 0
    assert result.files_seen == 4


def test_scan_order_is_sorted_by_relative_path_and_repeatable(tmp_path: Path) -> None:
    # Files beside sub-folders, names that sort before and after the folder names.
    names = [
        "b/z.png",
        "b/a.png",
        "b/m/1.png",
        "b/m/0.png",
        "b/0.png",
        "a/x y.png",
        "a/x/y.png",
        "a/x-1.png",
        "a/Z.png",
    ]
    for name in names:
        touch(tmp_path / name)
    first = scan_class_folders(tmp_path)
    second = scan_class_folders(tmp_path)
    assert rel_paths(first) == sorted(names)
    assert first.records == second.records


def test_iter_image_files_yields_sorted_paths(tmp_path: Path) -> None:
    for name in ("c.png", "a.png", "b/b.png", "b/a.png", "ab.png"):
        touch(tmp_path / name)
    result = ScanResult()
    assert list(iter_image_files(tmp_path, result)) == ["a.png", "ab.png", "b/a.png", "b/b.png", "c.png"]


def test_hidden_system_and_non_image_files_are_skipped_and_counted(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "cat" / "ok.png")
    touch(tmp_path / ".DS_Store")
    touch(tmp_path / "cat" / ".DS_Store")
    touch(tmp_path / "cat" / "Thumbs.db")
    touch(tmp_path / "cat" / "desktop.ini")
    make_image(tmp_path / "cat" / ".hidden.png")
    make_image(tmp_path / "cat" / "._ok.png")
    make_image(tmp_path / "cat" / ".cache" / "inside.png")  # a hidden folder counts once; not entered
    make_image(tmp_path / "cat" / "__MACOSX" / "inside.png")
    touch(tmp_path / "cat" / "notes.txt", b"hello")
    touch(tmp_path / "cat" / "scan.dcm", b"DICM")
    touch(tmp_path / "cat" / "README")
    result = scan_class_folders(tmp_path)
    assert rel_paths(result) == ["cat/ok.png"]
    assert result.rejected == []
    assert result.skipped == {SkipReason.HIDDEN_OR_SYSTEM: 8, SkipReason.NOT_AN_IMAGE_FILE: 3}
    assert result.files_seen == 12


def test_top_level_images_have_no_label(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "cat" / "a.png")
    make_image(tmp_path / "stray.png")
    result = scan_class_folders(tmp_path)
    assert rel_paths(result) == ["cat/a.png"]
    assert rejected_by_path(result) == {"stray.png": Reason.NO_LABEL}


def test_symlink_to_a_file_outside_the_root_is_quarantined(tmp_path: Path, make_image) -> None:
    root = tmp_path / "root"
    make_image(root / "cat" / "a.png")
    target = make_image(tmp_path / "elsewhere" / "private.png", seed=5)
    os.symlink(target, root / "cat" / "link.png")
    os.symlink(tmp_path / "elsewhere", root / "cat" / "linkdir")  # a directory outside, too
    os.symlink(Path("..") / ".." / "elsewhere" / "private.png", root / "cat" / "relative.png")
    result = scan_class_folders(root)
    assert rel_paths(result) == ["cat/a.png"]
    assert rejected_by_path(result) == {
        "cat/link.png": Reason.SYMLINK_OUTSIDE_ROOT,
        "cat/linkdir": Reason.SYMLINK_OUTSIDE_ROOT,
        "cat/relative.png": Reason.SYMLINK_OUTSIDE_ROOT,
    }
    assert all(e.message for e in result.rejected)
    assert all("private" not in e.message for e in result.rejected)


def test_symlinks_inside_the_root_files_followed_directories_skipped(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "cat" / "a.png")
    make_image(tmp_path / "dog" / "sub" / "b.png", seed=1)
    os.symlink(tmp_path / "cat" / "a.png", tmp_path / "dog" / "alias.png")
    os.symlink(tmp_path / "dog" / "sub", tmp_path / "cat" / "loop", target_is_directory=True)
    os.symlink(tmp_path / "cat", tmp_path / "cat" / "self", target_is_directory=True)
    result = scan_class_folders(tmp_path)
    assert rel_paths(result) == ["cat/a.png", "dog/alias.png", "dog/sub/b.png"]
    assert result.rejected == []
    assert result.skipped == {SkipReason.SYMLINKED_DIRECTORY: 2}


def test_symlinked_root_is_scanned(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "real" / "cat" / "a.png")
    os.symlink(tmp_path / "real", tmp_path / "alias", target_is_directory=True)
    result = scan_class_folders(tmp_path / "alias")
    assert rel_paths(result) == ["cat/a.png"]
    assert result.rejected == []


def test_unicode_spaces_and_upper_case_extensions(tmp_path: Path, make_image) -> None:
    nfd_name = unicodedata.normalize("NFD", "café 2.png")
    make_image(tmp_path / "Ünïcode label" / "é 1.PNG")
    make_image(tmp_path / "Ünïcode label" / nfd_name, seed=1)
    make_image(tmp_path / "with space" / "IMG 0001.JPEG", seed=2)
    result = scan_class_folders(tmp_path)
    assert {r.rel_path: r.label for r in result.records} == {
        "Ünïcode label/é 1.PNG": "Ünïcode label",
        f"Ünïcode label/{nfd_name}": "Ünïcode label",
        "with space/IMG 0001.JPEG": "with space",
    }
    for record in result.records:  # every record opens as given
        assert (tmp_path / record.rel_path).is_file()


def test_empty_class_folder_gives_no_records(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = scan_class_folders(tmp_path)
    assert result.records == [] and result.rejected == [] and result.files_seen == 0


def test_bad_corpus_scan(bad_corpus) -> None:
    result = scan_class_folders(bad_corpus.root)
    decoded_later = set(bad_corpus.good) | set(bad_corpus.decode_rejected) | set(bad_corpus.dedup_rejected)
    assert rel_paths(result) == sorted(decoded_later)
    assert {r.rel_path: r.label for r in result.records if r.rel_path in bad_corpus.good} == bad_corpus.good
    assert rejected_by_path(result) == bad_corpus.scan_rejected
    assert dict(result.skipped) == bad_corpus.skipped
    assert result.files_seen == len(decoded_later) + len(bad_corpus.scan_rejected) + sum(
        bad_corpus.skipped.values()
    )


# --- label pattern ---------------------------------------------------------------------------


def test_label_pattern_named_group(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "img_cat.jpg")
    make_image(tmp_path / "sub" / "img_dog.png", seed=1)
    make_image(tmp_path / "img_42.png", seed=2)
    result = scan_label_pattern(tmp_path, r"_(?P<label>[a-z]+)\.")
    assert result.records == [SourceRecord("img_cat.jpg", "cat"), SourceRecord("sub/img_dog.png", "dog")]
    assert rejected_by_path(result) == {"img_42.png": Reason.NO_LABEL}
    assert "--label-pattern " + repr(r"_(?P<label>[a-z]+)\.") in result.rejected[0].message


def test_label_pattern_group_one_when_unnamed(tmp_path: Path) -> None:
    touch(tmp_path / "tumour_001.png")
    touch(tmp_path / "normal_002.PNG")
    result = scan_label_pattern(tmp_path, r"^([a-z]+)_\d+")
    assert result.records == [
        SourceRecord("normal_002.PNG", "normal"),
        SourceRecord("tumour_001.png", "tumour"),
    ]


def test_label_pattern_prefers_named_group_over_group_one(tmp_path: Path) -> None:
    touch(tmp_path / "007_cat.png")
    result = scan_label_pattern(tmp_path, r"(\d+)_(?P<label>[a-z]+)")
    assert result.records == [SourceRecord("007_cat.png", "cat")]


def test_label_pattern_is_searched_in_the_file_name_not_the_folders(tmp_path: Path) -> None:
    touch(tmp_path / "img_cat.x" / "photo.png")
    result = scan_label_pattern(tmp_path, r"_(?P<label>[a-z]+)\.")
    assert result.records == []
    assert rejected_by_path(result) == {"img_cat.x/photo.png": Reason.NO_LABEL}


def test_label_pattern_optional_group_that_does_not_take_part_is_no_label(tmp_path: Path) -> None:
    touch(tmp_path / "x_cat.png")
    touch(tmp_path / "x.png")
    result = scan_label_pattern(tmp_path, r"(?:_(?P<label>[a-z]+))?\.png$")
    assert result.records == [SourceRecord("x_cat.png", "cat")]
    assert rejected_by_path(result) == {"x.png": Reason.NO_LABEL}


def test_label_pattern_skips_hidden_and_non_images_and_quarantines_outside_symlinks(
    tmp_path: Path, make_image
) -> None:
    root = tmp_path / "root"
    touch(root / "a_cat.png")
    touch(root / ".b_cat.png")
    touch(root / "c_cat.txt")
    os.symlink(make_image(tmp_path / "x_cat.png"), root / "d_cat.png")
    result = scan_label_pattern(root, r"_(?P<label>[a-z]+)\.")
    assert rel_paths(result) == ["a_cat.png"]
    assert rejected_by_path(result) == {"d_cat.png": Reason.SYMLINK_OUTSIDE_ROOT}
    assert result.skipped == {SkipReason.HIDDEN_OR_SYSTEM: 1, SkipReason.NOT_AN_IMAGE_FILE: 1}


@pytest.mark.parametrize(
    "pattern, fragment", [(r"([a-z", "not a valid regular expression"), (r"_[a-z]+\.", "no capture group")]
)
def test_label_pattern_invalid_is_a_usage_error(tmp_path: Path, pattern: str, fragment: str) -> None:
    touch(tmp_path / "a_cat.png")
    with pytest.raises(FedimgError, match=fragment) as info:
        scan_label_pattern(tmp_path, pattern)
    assert "--label-pattern" in str(info.value)


# --- labels CSV ------------------------------------------------------------------------------


def write_csv(path: Path, text: str, *, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding, newline="")
    return path


def test_csv_basic_labels_groups_clients_and_the_csv_itself_is_skipped(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "images" / "a.png")
    make_image(tmp_path / "images" / "b.jpg", seed=1)
    make_image(tmp_path / "c.TIF", seed=2)
    labels = write_csv(
        tmp_path / "labels.csv",
        "path,label,patient,site\r\nimages/a.png,cat,P1,north\r\nimages/b.jpg, dog ,P2,south\r\nc.TIF,cat,P1,north\r\n",
    )
    result = scan_labels_csv(tmp_path, labels, CsvColumns(group="patient", client="site"))
    assert result.records == [
        SourceRecord("c.TIF", "cat", "P1", "north"),
        SourceRecord("images/a.png", "cat", "P1", "north"),
        SourceRecord("images/b.jpg", "dog", "P2", "south"),
    ]
    assert result.rejected == [] and result.warnings == []
    assert result.skipped == {SkipReason.LABELS_CSV: 1}


def test_csv_outside_the_root_and_custom_columns(tmp_path: Path, make_image) -> None:
    root = tmp_path / "root"
    make_image(root / "x.png")
    labels = write_csv(tmp_path / "meta.csv", "file,diagnosis\nx.png,benign\n")
    result = scan_labels_csv(root, labels, CsvColumns(path="file", label="diagnosis"))
    assert result.records == [SourceRecord("x.png", "benign")]
    assert result.skipped == {}


def test_csv_with_utf8_bom(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "a.png")
    labels = write_csv(tmp_path / "labels.csv", "path,label\na.png,cat\n", encoding="utf-8-sig")
    assert labels.read_bytes().startswith(b"\xef\xbb\xbfpath")
    result = scan_labels_csv(tmp_path, labels, CsvColumns())
    assert result.records == [SourceRecord("a.png", "cat")]


@pytest.mark.parametrize("csv_form, disk_form", [("NFC", "NFD"), ("NFD", "NFC"), ("NFC", "NFC")])
def test_csv_paths_match_files_under_unicode_normalisation(
    tmp_path: Path, make_image, csv_form: str, disk_form: str
) -> None:
    name = "dossier é/café ü.png"
    disk_name = unicodedata.normalize(disk_form, name)
    make_image(tmp_path / disk_name)
    labels = write_csv(
        tmp_path / "labels.csv", f"path,label\n{unicodedata.normalize(csv_form, name)},Ärger\n"
    )
    result = scan_labels_csv(tmp_path, labels, CsvColumns())
    assert result.rejected == []
    assert [r.label for r in result.records] == ["Ärger"]
    (record,) = result.records
    assert (tmp_path / record.rel_path).is_file(), "the record must name the file as it is on disk"
    assert unicodedata.normalize("NFC", record.rel_path) == unicodedata.normalize("NFC", name)


def test_csv_unknown_column_is_a_usage_error_listing_the_columns(tmp_path: Path) -> None:
    labels = write_csv(tmp_path / "labels.csv", "path,label,patient_id\na.png,cat,P1\n")
    with pytest.raises(FedimgError) as info:
        scan_labels_csv(tmp_path, labels, CsvColumns(label="diagnosis"))
    message = str(info.value)
    assert "--label-column 'diagnosis'" in message
    assert "['path', 'label', 'patient_id']" in message
    with pytest.raises(FedimgError, match="--group-column 'patient'"):
        scan_labels_csv(tmp_path, labels, CsvColumns(group="patient"))
    with pytest.raises(FedimgError, match="--client-column 'site'"):
        scan_labels_csv(tmp_path, labels, CsvColumns(client="site"))
    with pytest.raises(FedimgError, match="--path-column 'file'"):
        scan_labels_csv(tmp_path, labels, CsvColumns(path="file"))


def test_csv_missing_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(FedimgError, match="cannot be opened"):
        scan_labels_csv(tmp_path, tmp_path / "nope.csv", CsvColumns())


def test_csv_rows_without_files_and_files_without_rows_are_reported_by_name(
    tmp_path: Path, make_image
) -> None:
    make_image(tmp_path / "a.png")
    make_image(tmp_path / "unlisted.png", seed=1)
    touch(tmp_path / "notes.txt")
    labels = write_csv(
        tmp_path / "labels.csv", "path,label\na.png,cat\ngone.png,dog\nsub/gone2.jpg,dog\nnotes.txt,cat\n"
    )
    result = scan_labels_csv(tmp_path, labels, CsvColumns())
    assert result.records == [SourceRecord("a.png", "cat")]
    assert rejected_by_path(result) == {
        "unlisted.png": Reason.NO_LABEL,
        "gone.png": Reason.MISSING_FILE,
        "sub/gone2.jpg": Reason.MISSING_FILE,
        "notes.txt": Reason.NOT_AN_IMAGE,
    }
    messages = {e.path: e.message for e in result.rejected}
    assert "labels.csv" in messages["unlisted.png"]
    assert "labels.csv" in messages["gone.png"]


def test_csv_duplicate_rows_that_agree_give_a_warning_naming_the_file(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "a.png")
    make_image(tmp_path / "b.png", seed=1)
    labels = write_csv(tmp_path / "labels.csv", "path,label\na.png,cat\nb.png,dog\n./a.png,cat\na.png, cat\n")
    result = scan_labels_csv(tmp_path, labels, CsvColumns())
    assert result.records == [SourceRecord("a.png", "cat"), SourceRecord("b.png", "dog")]
    assert result.rejected == []
    assert len(result.warnings) == 2
    assert (
        "'a.png'" in result.warnings[0] and "line 4" in result.warnings[0] and "line 2" in result.warnings[0]
    )
    assert "line 5" in result.warnings[1]
    assert result.skipped["duplicate_csv_row"] == 2


def test_csv_conflicting_rows_quarantine_the_file(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "a.png")
    make_image(tmp_path / "b.png", seed=1)
    make_image(tmp_path / "c.png", seed=2)
    labels = write_csv(
        tmp_path / "labels.csv",
        "path,label,patient\na.png,cat,P1\na.png,dog,P1\nb.png,cat,P1\nb.png,cat,P2\nc.png,cat,P3\nmissing.png,x,P1\nmissing.png,y,P1\n",
    )
    result = scan_labels_csv(tmp_path, labels, CsvColumns(group="patient"))
    assert result.records == [SourceRecord("c.png", "cat", "P3")]
    assert rejected_by_path(result) == {
        "a.png": Reason.CONFLICTING_ROWS,
        "b.png": Reason.CONFLICTING_ROWS,
        "missing.png": Reason.MISSING_FILE,
    }
    messages = {e.path: e.message for e in result.rejected}
    assert "lines 2 and 3" in messages["a.png"]
    assert "lines 4 and 5" in messages["b.png"]
    assert "lines 7 and 8" in messages["missing.png"]


@pytest.mark.parametrize(
    "bad_path",
    [
        "../escape.png",
        "sub/../../escape.png",
        "/etc/escape.png",
        "C:\\escape.png",
        "c:/escape.png",
        "..\\escape.png",
    ],
)
def test_csv_paths_that_leave_the_root_are_quarantined(tmp_path: Path, make_image, bad_path: str) -> None:
    root = tmp_path / "root"
    make_image(root / "ok.png")
    make_image(tmp_path / "escape.png", seed=1)
    labels = write_csv(tmp_path / "labels.csv", f'path,label\nok.png,cat\n"{bad_path}",dog\n')
    result = scan_labels_csv(root, labels, CsvColumns())
    assert result.records == [SourceRecord("ok.png", "cat")]
    assert rejected_by_path(result) == {bad_path: Reason.OUTSIDE_ROOT}
    assert "line 3" in result.rejected[0].message


def test_csv_empty_path_is_reported_by_line(tmp_path: Path) -> None:
    labels = write_csv(tmp_path / "labels.csv", "path,label\n,cat\n")
    result = scan_labels_csv(tmp_path, labels, CsvColumns())
    assert rejected_by_path(result) == {"labels.csv line 2": Reason.OUTSIDE_ROOT}


def test_csv_path_forms_are_normalised(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "sub" / "dir" / "a.png")
    labels = write_csv(tmp_path / "labels.csv", "path,label\n ./sub\\dir//a.png ,cat\n")
    result = scan_labels_csv(tmp_path, labels, CsvColumns())
    assert result.records == [SourceRecord("sub/dir/a.png", "cat")]
    assert result.rejected == []


def test_csv_empty_label_group_or_client(tmp_path: Path, make_image) -> None:
    for i, name in enumerate(("ok.png", "nolabel.png", "nogroup.png", "noclient.png")):
        make_image(tmp_path / name, seed=i)
    labels = write_csv(
        tmp_path / "labels.csv",
        "path,label,patient,site\nok.png,cat,P1,s1\nnolabel.png,,P2,s1\nnogroup.png,cat, ,s1\nnoclient.png,cat,P3,\n",
    )
    result = scan_labels_csv(tmp_path, labels, CsvColumns(group="patient", client="site"))
    assert result.records == [SourceRecord("ok.png", "cat", "P1", "s1")]
    assert rejected_by_path(result) == {
        "nolabel.png": Reason.NO_LABEL,
        "nogroup.png": Reason.NO_GROUP,
        "noclient.png": Reason.NO_CLIENT,
    }
    messages = {e.path: e.message for e in result.rejected}
    assert "line 4" in messages["nogroup.png"] and "'patient'" in messages["nogroup.png"]


def test_csv_empty_group_is_fine_without_a_group_column(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "a.png")
    labels = write_csv(tmp_path / "labels.csv", "path,label,patient\na.png,cat,\n")
    result = scan_labels_csv(tmp_path, labels, CsvColumns())
    assert result.records == [SourceRecord("a.png", "cat")]


def test_csv_symlink_outside_root_is_reported_once(tmp_path: Path, make_image) -> None:
    root = tmp_path / "root"
    make_image(root / "a.png")
    os.symlink(make_image(tmp_path / "private.png", seed=1), root / "link.png")
    labels = write_csv(root / "labels.csv", "path,label\na.png,cat\nlink.png,dog\n")
    result = scan_labels_csv(root, labels, CsvColumns())
    assert result.records == [SourceRecord("a.png", "cat")]
    assert result.rejected == [result.rejected[0]]
    assert rejected_by_path(result) == {"link.png": Reason.SYMLINK_OUTSIDE_ROOT}


def test_csv_hidden_and_non_image_files_are_skipped(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "a.png")
    touch(tmp_path / ".DS_Store")
    touch(tmp_path / "Thumbs.db")
    touch(tmp_path / "readme.md")
    labels = write_csv(tmp_path / "labels.csv", "path,label\na.png,cat\n")
    result = scan_labels_csv(tmp_path, labels, CsvColumns())
    assert result.records == [SourceRecord("a.png", "cat")]
    assert result.skipped == {
        SkipReason.HIDDEN_OR_SYSTEM: 2,
        SkipReason.NOT_AN_IMAGE_FILE: 1,
        SkipReason.LABELS_CSV: 1,
    }


def test_csv_scan_is_sorted_and_deterministic(tmp_path: Path) -> None:
    names = ["z.png", "a/b.png", "a b.png", "m.png"]
    for name in names:
        touch(tmp_path / name)
    rows = "".join(f"{name},cat\n" for name in reversed(names))
    labels = write_csv(tmp_path / "labels.csv", "path,label\n" + rows)
    first = scan_labels_csv(tmp_path, labels, CsvColumns())
    assert rel_paths(first) == sorted(names)
    assert first.records == scan_labels_csv(tmp_path, labels, CsvColumns()).records
