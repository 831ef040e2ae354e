"""The bundled sample collection (scikit-learn digits) in both input layouts."""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasite_setup.convert.imaging import ImageSpec, standardise
from datasite_setup.convert.sample_data import (
    SITES,
    load_digit_images,
    patient_sites,
    synthetic_patients,
    write_digits,
)
from datasite_setup.convert.sources import CsvColumns, SkipReason, scan_class_folders, scan_labels_csv

NUM_DIGITS = 1797


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return load_digit_images()


@pytest.fixture(scope="module")
def folders_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_digits(tmp_path_factory.mktemp("digits_folders") / "digits", layout="folders")


@pytest.fixture(scope="module")
def csv_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_digits(tmp_path_factory.mktemp("digits_csv") / "digits", layout="csv")


def read_rows(root: Path) -> list[dict]:
    with open(root / "labels.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_load_digit_images(digits) -> None:
    images, labels = digits
    assert images.shape == (NUM_DIGITS, 8, 8) and images.dtype == np.uint8
    assert labels.shape == (NUM_DIGITS,)
    assert images.min() == 0 and images.max() == 255
    assert sorted(set(labels.tolist())) == list(range(10))
    assert all(150 <= count <= 200 for count in Counter(labels.tolist()).values())


def test_synthetic_patients_have_one_to_four_images_and_are_deterministic() -> None:
    patients = synthetic_patients(NUM_DIGITS, seed=3)
    assert patients.shape == (NUM_DIGITS,)
    counts = Counter(patients.tolist())
    assert set(counts) == set(range(len(counts))), "patient ids are 0..P-1"
    assert set(counts.values()) <= {1, 2, 3, 4} and {1, 4} <= set(counts.values())
    assert np.array_equal(patients, synthetic_patients(NUM_DIGITS, seed=3))
    assert not np.array_equal(patients, synthetic_patients(NUM_DIGITS, seed=4))


def test_patient_sites_one_site_per_patient(digits) -> None:
    _, labels = digits
    patients = synthetic_patients(len(labels))
    sites = patient_sites(labels, patients)
    assert len(sites) == len(labels) and set(sites) == set(SITES)
    site_of = defaultdict(set)
    for patient, site in zip(patients.tolist(), sites, strict=True):
        site_of[patient].add(site)
    assert all(len(s) == 1 for s in site_of.values())
    assert sites == patient_sites(labels, patients)


def test_folders_layout(folders_layout: Path, digits) -> None:
    images, labels = digits
    assert sorted(p.name for p in folders_layout.iterdir()) == [str(d) for d in range(10)]
    files = sorted(folders_layout.rglob("*.png"))
    assert len(files) == NUM_DIGITS
    per_label = Counter(p.parent.name for p in files)
    assert per_label == Counter(str(label) for label in labels.tolist())
    for index in (0, 1, 900, NUM_DIGITS - 1):
        path = folders_layout / str(labels[index]) / f"digit_{index:04d}.png"
        with Image.open(path) as image:
            assert image.mode == "L" and image.size == (8, 8)
            assert np.array_equal(np.asarray(image), images[index])


def test_folders_layout_scans_and_standardises(folders_layout: Path, digits) -> None:
    _, labels = digits
    scan = scan_class_folders(folders_layout)
    assert len(scan.records) == NUM_DIGITS and scan.rejected == [] and sum(scan.skipped.values()) == 0
    assert Counter(r.label for r in scan.records) == Counter(str(label) for label in labels.tolist())
    record = scan.records[0]
    out = standardise((folders_layout / record.rel_path).read_bytes(), ImageSpec(size=32, mode="L"))
    with Image.open(io.BytesIO(out.png)) as image:
        assert image.size == (32, 32) and image.mode == "L"


def test_csv_layout(csv_layout: Path, digits) -> None:
    images, labels = digits
    rows = read_rows(csv_layout)
    assert list(rows[0]) == ["path", "label", "patient_id", "site"]
    assert len(rows) == NUM_DIGITS
    assert sorted(p.name for p in csv_layout.iterdir()) == ["images", "labels.csv"]
    assert len(list((csv_layout / "images").iterdir())) == NUM_DIGITS
    site_of = defaultdict(set)
    for index, row in enumerate(rows):
        assert row["path"] == f"images/scan_{index:04d}.png"
        assert row["label"] == str(labels[index])
        assert row["patient_id"].startswith("P") and len(row["patient_id"]) == 6
        assert row["site"] in SITES
        site_of[row["patient_id"]].add(row["site"])
    assert all(len(sites) == 1 for sites in site_of.values()), "a patient is at one site"
    assert set().union(*site_of.values()) == set(SITES)
    for index in (0, 5, NUM_DIGITS - 1):
        with Image.open(csv_layout / rows[index]["path"]) as image:
            assert image.mode == "L" and np.array_equal(np.asarray(image), images[index])


def test_csv_layout_scans_with_groups_and_sites(csv_layout: Path) -> None:
    rows = read_rows(csv_layout)
    scan = scan_labels_csv(
        csv_layout, csv_layout / "labels.csv", CsvColumns(group="patient_id", client="site")
    )
    assert scan.rejected == [] and scan.warnings == []
    assert scan.skipped == {SkipReason.LABELS_CSV: 1}
    assert len(scan.records) == NUM_DIGITS
    expected = {row["path"]: (row["label"], row["patient_id"], row["site"]) for row in rows}
    assert {r.rel_path: (r.label, r.group_key, r.client_key) for r in scan.records} == expected


def test_csv_layout_is_deterministic_and_seeded(tmp_path: Path, csv_layout: Path) -> None:
    assert (write_digits(tmp_path / "again", layout="csv") / "labels.csv").read_bytes() == (
        csv_layout / "labels.csv"
    ).read_bytes()
    other = read_rows(write_digits(tmp_path / "seeded", layout="csv", seed=1))
    assert [r["patient_id"] for r in other] != [r["patient_id"] for r in read_rows(csv_layout)]


def test_jpeg_format(tmp_path: Path) -> None:
    root = write_digits(tmp_path / "jpg", layout="folders", image_format="jpg")
    files = list(root.rglob("*.jpg"))
    assert len(files) == NUM_DIGITS
    with Image.open(files[0]) as image:
        assert image.format == "JPEG" and image.size == (8, 8)


def test_unknown_layout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="layout"):
        write_digits(tmp_path / "x", layout="flat")
    assert not (tmp_path / "x").exists()
