"""Reading one client's partition for ingest: arrays, labels, counts, version, and refusal of anything tampered."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasite_setup.convert.client_data import METADATA_TABLE_COLUMNS, ClientPartition, load_client_partition
from datasite_setup.convert.federated_format import (
    CHECKSUMS_FILE,
    FEDERATION_FILE,
    METADATA_FILE,
    SPLITS,
    load_federation,
    read_metadata_csv,
)
from datasite_setup.convert.imaging import ImageSpec
from datasite_setup.convert.pipeline import ConvertOptions, convert
from datasite_setup.convert.sample_data import write_digits
from datasite_setup.convert.sources import CsvColumns
from datasite_setup.errors import FedimgError
from tests.conftest import TEST_SECRET, write_image

CLIENTS = ["client_0", "client_1", "client_2"]


def secret_file(base: Path) -> Path:
    """Module-scoped fixtures run outside the autouse FEDIMG_SECRET fixture: pass the secret as a file."""
    path = base / "secret"
    if not path.exists():
        path.write_text(TEST_SECRET + "\n")
        path.chmod(0o600)
    return path


def convert_digits(base: Path, *, seed: int = 0, mode: str = "L") -> Path:
    """scikit-learn's digits (CSV layout, synthetic patients) as 3 IID clients of 16x16 images."""
    source = base / "digits"
    if not source.exists():
        write_digits(source, layout="csv")
    out = base / f"fed_{mode}_{seed}"
    convert(
        ConvertOptions(
            source=source,
            out=out,
            scheme="iid",
            num_clients=3,
            labels_csv=source / "labels.csv",
            columns=CsvColumns(group="patient_id"),
            spec=ImageSpec(size=16, mode=mode),
            seed=seed,
            workers=1,
            show_progress=False,
            secret_file=secret_file(base),
        )
    )
    return out


def convert_small(base: Path, *, seed: int = 0, mode: str = "RGB", size: int = 8) -> Path:
    """A tiny class-folder collection (2 labels x 12 images) as 2 clients: cheap to copy and tamper with."""
    source = base / "small_src"
    if not source.exists():
        for i in range(24):
            write_image(
                source / ("cat" if i % 2 else "dog") / f"img_{i}.png", size=(12, 10), mode="RGB", seed=100 + i
            )
    out = base / f"small_{mode}_{seed}"
    convert(
        ConvertOptions(
            source=source,
            out=out,
            scheme="iid",
            num_clients=2,
            spec=ImageSpec(size=size, mode=mode),
            seed=seed,
            workers=1,
            show_progress=False,
            secret_file=secret_file(base),
        )
    )
    return out


def shared_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits federation, converted once per test session (worker) and shared read-only.

    ``convert`` renames its output into place only when complete, so an existing
    output is a whole one.
    """
    base = tmp_path_factory.getbasetemp() / "fedimg_digits_federation"
    out = base / "fed_L_0"
    if not out.exists():
        base.mkdir(exist_ok=True)
        convert_digits(base)
    return out


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_digits(tmp_path_factory)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_small(tmp_path_factory.mktemp("client_data_small"))


@pytest.fixture
def small_copy(small: Path, tmp_path: Path) -> Path:
    """A private copy of the small federation to tamper with."""
    return Path(shutil.copytree(small, tmp_path / "fed"))


def metadata_rows(client_dir: Path):
    return read_metadata_csv((client_dir / METADATA_FILE).read_bytes())


def check_against_files(
    partition: ClientPartition, client_dir: Path, federation: dict, channels: int
) -> None:
    label_map = federation["label_map"]
    size = federation["image"]["size"]
    rows = metadata_rows(client_dir)
    summary = federation["clients"][client_dir.name]
    assert partition.name == client_dir.name
    assert (partition.image_size, partition.channels) == (size, channels)
    assert partition.label_names == sorted(label_map, key=label_map.get)
    assert set(partition.splits) == set(SPLITS)
    for split in SPLITS:
        data = partition.splits[split]
        split_rows = [row for row in rows if row.split == split]
        assert data.images.dtype == np.uint8 and data.labels.dtype == np.int64
        assert data.images.shape == (len(split_rows), channels, size, size)
        assert data.labels.shape == (len(split_rows),)
        assert len(split_rows) == summary["split_counts"][split]
        assert data.labels.tolist() == [label_map[row.label] for row in split_rows]
        assert data.sample_ids == [row.sample_id for row in split_rows]
        assert data.group_ids == [row.group_id for row in split_rows]
        for i, row in enumerate(split_rows):
            with Image.open(client_dir / row.file_name) as image:
                pixels = np.asarray(image)
            expected = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
            assert np.array_equal(data.images[i], expected), row.file_name
        expected_counts = [summary["label_counts"][split][label] for label in partition.label_names]
        assert partition.label_counts[split] == expected_counts


def test_grayscale_partition_matches_its_files(digits: Path) -> None:
    federation = load_federation(digits)
    assert federation["image"]["mode"] == "L"
    total = 0
    for name in CLIENTS:
        partition = load_client_partition(digits / "clients" / name)
        check_against_files(partition, digits / "clients" / name, federation, channels=1)
        assert partition.federation == federation
        total += sum(len(data.labels) for data in partition.splits.values())
    assert total == federation["inputs"]["accepted"] > 1000


def test_rgb_partition_is_channels_first(small: Path) -> None:
    federation = load_federation(small)
    for name in federation["clients"]:
        partition = load_client_partition(small / "clients" / name)
        check_against_files(partition, small / "clients" / name, federation, channels=3)
        train = partition.splits["train"].images
        assert train.shape[1:] == (3, 8, 8)
        assert not np.array_equal(train[:, 0], train[:, 1]), "real colour channels, not a copied grey one"


def test_metadata_table_has_no_source_names(digits: Path) -> None:
    partition = load_client_partition(digits / "clients" / "client_0")
    table = partition.metadata_table()
    assert tuple(table) == METADATA_TABLE_COLUMNS
    n = sum(len(data.labels) for data in partition.splits.values())
    assert all(len(column) == n for column in table.values())
    assert table["split"].count("train") == len(partition.splits["train"].labels)
    sources = {row.source_hmac for row in metadata_rows(digits / "clients" / "client_0")}
    text = repr(table)
    assert not any(source in text for source in sources)
    assert "scan_" not in text and "images/" not in text


def test_accepts_relative_paths(digits: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(digits / "clients")
    assert load_client_partition(Path("client_1")).name == "client_1"
    monkeypatch.chdir(digits / "clients" / "client_2")
    assert load_client_partition(Path(".")).name == "client_2"


def test_version_is_stable_and_changes_with_the_partition(small: Path, tmp_path: Path) -> None:
    first = {
        name: load_client_partition(small / "clients" / name).version for name in ("client_0", "client_1")
    }
    assert first["client_0"] != first["client_1"]
    assert load_client_partition(small / "clients" / "client_0").version == first["client_0"]
    same_again = convert_small(tmp_path, seed=0)
    assert load_client_partition(same_again / "clients" / "client_0").version == first["client_0"]
    reseeded = convert_small(tmp_path, seed=1)
    assert load_client_partition(reseeded / "clients" / "client_0").version != first["client_0"]


# --- refusals ------------------------------------------------------------------------------


def load_error(client_dir: Path) -> str:
    with pytest.raises(FedimgError) as info:
        load_client_partition(client_dir)
    return str(info.value)


def first_image(client_dir: Path) -> Path:
    return client_dir / metadata_rows(client_dir)[0].file_name


def test_tampered_image_is_refused(small_copy: Path) -> None:
    client = small_copy / "clients" / "client_0"
    target = first_image(client)
    with Image.open(target) as image:
        pixels = np.asarray(image).copy()
    pixels[0, 0, 0] ^= 0xFF
    Image.fromarray(pixels).save(target)
    message = load_error(client)
    assert str(target) in message and "SHA256SUMS" in message


def test_missing_image_is_refused(small_copy: Path) -> None:
    client = small_copy / "clients" / "client_1"
    target = first_image(client)
    target.unlink()
    message = load_error(client)
    assert str(target) in message and "cannot be read" in message


def test_tampered_metadata_is_refused(small_copy: Path) -> None:
    client = small_copy / "clients" / "client_0"
    path = client / METADATA_FILE
    rows = list(csv.reader(io.StringIO(path.read_text())))
    label_column = rows[0].index("label")
    rows[1][label_column] = "cat" if rows[1][label_column] == "dog" else "dog"  # relabel one sample
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    path.write_text(buffer.getvalue())
    message = load_error(client)
    assert str(path) in message and FEDERATION_FILE in message


@pytest.mark.parametrize("name", [METADATA_FILE, CHECKSUMS_FILE])
def test_tampered_or_missing_manifest_is_refused(small_copy: Path, name: str) -> None:
    client = small_copy / "clients" / "client_0"
    path = client / name
    path.write_bytes(path.read_bytes() + b"\n")
    assert str(path) in load_error(client)
    path.unlink()
    message = load_error(client)
    assert str(path) in message and "cannot be read" in message


def test_a_directory_that_is_not_a_client_is_refused(small_copy: Path, tmp_path: Path) -> None:
    stray = small_copy / "clients" / "client_9"
    shutil.copytree(small_copy / "clients" / "client_0", stray)
    message = load_error(stray)
    assert str(stray) in message and "not a client" in message and "client_0" in message

    message = load_error(small_copy)  # the federation root, not a client
    assert FEDERATION_FILE in message

    outside = Path(shutil.copytree(small_copy / "clients" / "client_0", tmp_path / "loose" / "client_0"))
    assert FEDERATION_FILE in load_error(outside)
