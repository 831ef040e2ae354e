"""What a new user is told by ``fedimg convert`` and ``verify`` (issue 11, finding 10).

- ``--scheme natural`` prints on the terminal how many patients' images moved between
  sites, per pair of sites (before: only inside ``federation.json``);
- clients below the release minimum (``[release] min_samples``, default
  ``RELEASE_MIN_SAMPLES``) are named with their train/val counts, the minimum and the
  fix (before: ``--clients 150`` on 300 images gave 2-train/0-val clients silently);
- ``metadata.csv`` holds ``source_hmac``, keyed by the federation secret, not a plain
  sha256 of the original file that links each pseudonym to its source for anyone
  holding the originals.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from datasite_setup.convert.federated_format import load_federation, read_metadata_csv
from datasite_setup.convert.pseudonym import Pseudonymiser
from datasite_setup.convert.release_warnings import small_client_warnings
from datasite_setup.convert.verify import verify_federation
from datasite_setup.release_minimum import RELEASE_MIN_SAMPLES
from tests.conftest import TEST_SECRET
from tests.datasite_setup.test_convert import make_csv_dataset, run_cli, write_png


@pytest.fixture(scope="module")
def three_hundred(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 small images in two class folders (no patient ids: each image is its own group)."""
    src = tmp_path_factory.mktemp("three_hundred") / "src"
    for i in range(300):
        write_png(src / ("cat" if i % 2 else "dog") / f"{i}.png", seed=i, size=(8, 8))
    return src


def _convert(src: Path, out: Path, *flags: str | Path) -> tuple[int, str, str]:
    return run_cli(["convert", src, out, "--size", "8", "--mode", "L", "--workers", "1", "--quiet", *flags])


@pytest.fixture(scope="module")
def converted(three_hundred: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """The 300 images as 150 clients and as 2: output folder and the convert's stderr."""
    base = tmp_path_factory.mktemp("converted")
    result = {}
    # Module scope runs outside the autouse secret fixture: set the same secret here.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FEDIMG_SECRET", TEST_SECRET)
        patch.delenv("FEDIMG_SECRET_FILE", raising=False)
        for clients in ("150", "2"):
            out = base / f"clients_{clients}"
            code, _, err = _convert(three_hundred, out, "--clients", clients, "--scheme", "iid")
            assert code == 0, err
            result[clients] = (out, err)
    return result


def test_too_many_clients_are_named_with_their_counts_the_minimum_and_the_fix(converted: dict) -> None:
    _, err = converted["150"]
    warning = next(line for line in err.splitlines() if "release minimum" in line)
    assert "150 of 150 clients have fewer than 20 training or validation samples" in warning
    assert "client_0 (train 2, val 0)" in warning and "and 142 more" in warning
    assert "[release] min_samples" in warning
    assert "Use fewer clients (at most 3 for 300 images with --val-fraction 0.2)" in warning


def test_enough_images_per_client_give_no_warning(converted: dict) -> None:
    out, err = converted["2"]
    assert "release minimum" not in err, err
    assert small_client_warnings(load_federation(out)) == []


def test_a_skewed_split_with_few_clients_suggests_less_skew(tmp_path: Path) -> None:
    federation = {
        "partition": {"val_fraction": 0.2},
        "clients": {
            "a": {"split_counts": {"train": 230, "val": 58}},
            "b": {"split_counts": {"train": 10, "val": 2}},
        },
    }
    (warning,) = small_client_warnings(federation)
    assert "b (train 10, val 2)" in warning and "a (" not in warning
    assert "larger --alpha or --min-partition-size" in warning
    assert small_client_warnings(federation, minimum=2) == []
    assert RELEASE_MIN_SAMPLES == 20


def test_verify_names_the_small_clients_of_an_intact_output(converted: dict) -> None:
    out, _ = converted["150"]
    assert verify_federation(out) == []  # intact: a warning, not a problem
    (warning,) = small_client_warnings(load_federation(out))
    assert "client_149 (" not in warning and "client_0 (train 2, val 0)" in warning


def test_verify_cli_prints_the_small_client_warning(converted: dict) -> None:
    out, _ = converted["150"]
    code, stdout, err = run_cli(["verify", out, "--quiet"])
    assert code == 0 and "OK" in stdout
    assert "client_0 (train 2, val 0)" in err and "release minimum" in err


def test_natural_scheme_prints_the_moves_between_sites(tmp_path: Path) -> None:
    dataset = make_csv_dataset(tmp_path / "src", patients=6)
    # P000 has three images at site_a and one at site_b; P001 two at site_c and one at site_a.
    extra = [("P000", "site_a"), ("P000", "site_a"), ("P000", "site_a"), ("P000", "site_b")]
    extra += [("P001", "site_c"), ("P001", "site_c"), ("P001", "site_a")]
    rows = [row for row in dataset.rows if row["patient_id"] not in ("P000", "P001")]
    for k, (patient, site) in enumerate(extra):
        row = {
            "path": f"scans/{patient}/extra_{k}.png",
            "label": "benign",
            "patient_id": patient,
            "site": site,
        }
        write_png(dataset.root / row["path"], seed=900 + k)
        rows.append(row)
    for patient in ("P000", "P001"):
        for path in (dataset.root / "scans" / patient).glob("img_*"):
            path.unlink()
    with open(dataset.labels_csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "patient_id", "site"])
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "out"
    columns = ["--group-column", "patient_id", "--client-column", "site", "--val-fraction", "0.2"]
    code, _, err = _convert(
        dataset.root, out, "--labels", dataset.labels_csv, "--scheme", "natural", *columns
    )
    assert code == 0, err
    line = next(line for line in err.splitlines() if "--scheme natural moved" in line)
    total = len(rows)
    assert f"--scheme natural moved 2 of {total} images (2 patients with images at more than one site" in line
    assert "site_b -> site_a 1 image (1 patient)" in line
    assert "site_a -> site_c 1 image (1 patient)" in line
    partition = json.loads((out / "federation.json").read_text())["partition"]
    assert sorted((m["from"], m["to"], m["groups"], m["samples"]) for m in partition["reassignments"]) == [
        ("site_a", "site_c", 1, 1),
        ("site_b", "site_a", 1, 1),
    ]


def test_a_scheme_that_moves_nothing_prints_no_move_line(tmp_path: Path) -> None:
    dataset = make_csv_dataset(tmp_path / "src", patients=6)
    labels: list[str | Path] = [
        "--labels",
        dataset.labels_csv,
        "--group-column",
        "patient_id",
        "--client-column",
        "site",
    ]
    code, _, err = _convert(dataset.root, tmp_path / "out", *labels, "--scheme", "natural")
    assert code == 0 and "moved" not in err, err


def test_metadata_links_no_pseudonym_to_its_source_without_the_secret(
    three_hundred: Path, converted: dict
) -> None:
    out, _ = converted["2"]
    plain = {hashlib.sha256(path.read_bytes()).hexdigest() for path in three_hundred.rglob("*.png")}
    rows = [
        row
        for client in (out / "clients").iterdir()
        for row in read_metadata_csv((client / "metadata.csv").read_bytes())
    ]
    assert len(rows) == 300
    # Someone holding the originals but not the secret finds no source hash anywhere in the output.
    for path in out.rglob("*"):
        if path.is_file() and path.suffix != ".png":
            text = path.read_bytes()
            assert not any(digest.encode() in text for digest in plain), path
    # The owner, holding the secret too, still finds each original.
    keyed = Pseudonymiser(TEST_SECRET.encode())
    assert {row.source_hmac for row in rows} == {keyed.source_hmac(digest) for digest in plain}
    federation = load_federation(out)
    assert federation["schema_version"] == 2
    assert "source_hmac" in federation["pseudonyms"]


def test_verify_and_the_metadata_reader_refuse_a_v1_output_with_the_reason(tmp_path: Path) -> None:
    for i in range(6):
        write_png(tmp_path / "src" / ("cat" if i % 2 else "dog") / f"{i}.png", seed=i, size=(8, 8))
    out = tmp_path / "out"
    assert _convert(tmp_path / "src", out, "--clients", "1", "--scheme", "iid")[0] == 0
    manifest = out / "federation.json"
    manifest.write_text(manifest.read_text().replace('"schema_version": 2', '"schema_version": 1'))
    (problem,) = verify_federation(out)
    assert problem.kind == "schema" and "convert the collection again" in problem.message
    assert "source_sha256" in problem.message
    v1_header = b"file_name,label,split,sample_id,group_id,source_sha256\n"
    with pytest.raises(ValueError, match="format v1"):
        read_metadata_csv(v1_header)
