"""``fedimg convert`` end to end: input layouts, every scheme, bad inputs, up-front errors, atomicity.

Most tests call ``convert`` (or ``cli.main``) in-process on a few dozen tiny
synthetic images; the interruption tests run the CLI in a subprocess and signal it.
The helpers at the top are shared with the other ``test_*`` files of this folder.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from datasite_setup import cli
from datasite_setup.convert.federated_format import read_metadata_csv
from datasite_setup.convert.imaging import ImageSpec
from datasite_setup.convert.pipeline import ConvertOptions, convert
from datasite_setup.convert.pseudonym import Pseudonymiser
from datasite_setup.convert.quarantine import Reason, read_quarantine
from datasite_setup.convert.sources import CsvColumns
from datasite_setup.convert.verify import verify_federation
from datasite_setup.errors import FedimgError

REPO = Path(__file__).resolve().parents[2]
SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0"
OTHER_SECRET = "ffeeddccbbaa9988776655443322110000112233445566778899aabbccddeeff"
SPEC = ImageSpec(size=16, mode="L")


# --- shared helpers ------------------------------------------------------------------------


def write_png(path: Path, seed: int, size: tuple[int, int] = (12, 10), mode: str = "RGB") -> bytes:
    """A small noise image (distinct seeds give distinct pixels); returns the file's bytes."""
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path, format="PNG")
    return path.read_bytes()


def source_hmac(data: bytes) -> str:
    """The ``source_hmac`` column of a source file with these bytes, under the tests' secret."""
    return Pseudonymiser(SECRET.encode()).source_hmac(hashlib.sha256(data).hexdigest())


@dataclass
class CsvDataset:
    """A flat-ish folder of images plus a labels CSV with patient and site columns.

    Every patient has 1-4 images, one label and one site; ``by_source`` maps the
    keyed hash of each source file to its CSV row (the output's ``source_hmac``).
    """

    root: Path
    labels_csv: Path
    rows: list[dict] = field(default_factory=list)
    by_source: dict[str, dict] = field(default_factory=dict)


def make_csv_dataset(
    root: Path,
    *,
    patients: int = 24,
    labels: Sequence[str] = ("benign", "malignant", "normal"),
    sites: Sequence[str] = ("site_a", "site_b", "site_c"),
    seed: int = 0,
    csv_path: Path | None = None,
    header: Sequence[str] = ("path", "label", "patient_id", "site"),
) -> CsvDataset:
    rng = np.random.default_rng(seed)
    dataset = CsvDataset(root, csv_path or root / "labels.csv")
    image_seed = seed * 10_000
    for patient in range(patients):
        label = labels[patient % len(labels)]
        site = sites[int(rng.integers(len(sites)))]
        patient_id = f"P{patient:03d}"
        for k in range(int(rng.integers(1, 5))):
            rel = f"scans/{patient_id}/img_{k}.png"
            image_seed += 1
            data = write_png(root / rel, image_seed)
            row = {"path": rel, "label": label, "patient_id": patient_id, "site": site}
            dataset.rows.append(row)
            dataset.by_source[source_hmac(data)] = row
    dataset.labels_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(dataset.labels_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in dataset.rows:
            writer.writerow([row["path"], row["label"], row["patient_id"], row["site"]])
    return dataset


def read_outputs(out: Path) -> dict[str, list]:
    """client name -> its metadata.csv rows."""
    return {
        d.name: read_metadata_csv((d / "metadata.csv").read_bytes())
        for d in sorted((out / "clients").iterdir())
    }


def federation_of(out: Path) -> dict:
    return json.loads((out / "federation.json").read_text(encoding="utf-8"))


def siblings_left(out: Path) -> list[str]:
    """Temporary siblings of ``out`` (``.OUT.partial-*``, ``.OUT.old-*``) still on disk."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def run_cli(argv: Sequence[str | Path]) -> tuple[int, str, str]:
    """Run ``fedimg`` in-process; returns (exit code, stdout, stderr) rendered without line wrapping."""
    out, err = io.StringIO(), io.StringIO()
    saved = cli.console, cli.error_console
    cli.console = Console(file=out, width=10_000, color_system=None)
    cli.error_console = Console(file=err, width=10_000, color_system=None)
    try:
        code = cli.main([str(a) for a in argv])
    finally:
        cli.console, cli.error_console = saved
    return code, out.getvalue(), err.getvalue()


def fedimg_command() -> list[str]:
    """The installed console script when present, else the module."""
    script = Path(sys.executable).parent / "fedimg"
    return [str(script)] if script.exists() else [sys.executable, "-m", "datasite_setup.cli"]


def _default_signals() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def subprocess_env(secret: str = SECRET, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDIMG_")}
    env.update(FEDIMG_SECRET=secret, COLUMNS="400", PYTHONPATH=str(REPO), **extra)
    return env


def options(source: Path, out: Path, **kwargs) -> ConvertOptions:
    kwargs.setdefault("spec", SPEC)
    kwargs.setdefault("show_progress", False)
    kwargs.setdefault("workers", 1)
    return ConvertOptions(source=source, out=out, **kwargs)


def csv_options(dataset: CsvDataset, out: Path, scheme: str, **kwargs) -> ConvertOptions:
    columns = kwargs.pop(
        "columns", CsvColumns(group="patient_id", client="site" if scheme == "natural" else None)
    )
    if scheme != "natural":
        kwargs.setdefault("num_clients", 3)
    return options(dataset.root, out, scheme=scheme, labels_csv=dataset.labels_csv, columns=columns, **kwargs)


def assert_group_safe(out: Path) -> None:
    """No group_id in two clients or in two splits."""
    where: dict[str, set] = defaultdict(set)
    for client, rows in read_outputs(out).items():
        for row in rows:
            where[row.group_id].add((client, row.split))
    spanning = {group: places for group, places in where.items() if len(places) > 1}
    assert not spanning, f"groups spanning clients or splits: {spanning}"


def assert_counts_add_up(out: Path, accepted: int) -> None:
    federation = federation_of(out)
    outputs = read_outputs(out)
    assert federation["inputs"]["accepted"] == accepted
    assert federation["totals"]["num_samples"] == accepted
    assert sum(c["num_samples"] for c in federation["clients"].values()) == accepted
    assert set(federation["clients"]) == set(outputs)
    for name, client in federation["clients"].items():
        rows = outputs[name]
        assert client["num_samples"] == len(rows) > 0
        assert sum(client["split_counts"].values()) == len(rows)
        for split in ("train", "val"):
            assert client["split_counts"][split] == sum(client["label_counts"][split].values())
            assert client["label_counts"][split] == {
                label: sum(1 for r in rows if r.split == split and r.label == label)
                for label in federation["label_map"]
            }
        assert client["num_groups"] == len({r.group_id for r in rows})
        images = sorted(
            p.relative_to(out / "clients" / name).as_posix()
            for p in (out / "clients" / name / "images").rglob("*.png")
        )
        assert images == sorted(r.file_name for r in rows)


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def csv_dataset(tmp_path_factory: pytest.TempPathFactory) -> CsvDataset:
    return make_csv_dataset(tmp_path_factory.mktemp("csv_dataset") / "src")


@pytest.fixture(scope="module")
def scheme_outputs(csv_dataset: CsvDataset, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The module's dataset converted once with every scheme (3 clients, patient groups)."""
    base = tmp_path_factory.mktemp("schemes")
    extra: dict[str, dict[str, float]] = {
        "iid": {},
        "stratified": {},
        "dirichlet": {"alpha": 1.0, "min_partition_size": 5},
        "quantity": {"alpha": 5.0, "min_partition_size": 5},
        "natural": {},
        "shards": {"shards_per_client": 1},
    }
    outputs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FEDIMG_SECRET", SECRET)
        for scheme, params in extra.items():
            outputs[scheme] = base / scheme
            result = convert(csv_options(csv_dataset, outputs[scheme], scheme, **params))
            assert result.exit_code == 0
    return outputs


# --- input layouts ------------------------------------------------------------------------


def test_class_folders_deeper_subfolders_belong_to_the_first_level_label(tmp_path: Path) -> None:
    src = tmp_path / "src"
    expected = {}
    for i, rel in enumerate(
        ["cat/a.png", "cat/x/b.png", "cat/x/y/z/c.png", "dog/d.png", "dog/cat/e.png", "dog/f.png"]
    ):
        expected[source_hmac(write_png(src / rel, seed=i))] = rel.split("/")[0]
    result = convert(options(src, tmp_path / "out", scheme="iid", num_clients=2))

    assert result.exit_code == 0 and result.quarantined == []
    federation = federation_of(tmp_path / "out")
    assert federation["label_map"] == {"cat": 0, "dog": 1}
    assert federation["inputs"]["layout"] == "class_folders"
    rows = [row for client_rows in read_outputs(tmp_path / "out").values() for row in client_rows]
    assert {row.source_hmac: row.label for row in rows} == expected
    for row in rows:
        assert row.file_name == f"images/{row.label}/{row.sample_id}.png"
    assert_counts_add_up(tmp_path / "out", accepted=6)
    assert verify_federation(tmp_path / "out") == []


def test_labels_csv_with_custom_column_names_outside_the_source(tmp_path: Path) -> None:
    # The CSV lives outside SRC, names its columns its own way, and the folders say nothing about labels.
    dataset = make_csv_dataset(
        tmp_path / "src",
        patients=9,
        csv_path=tmp_path / "meta" / "table.csv",
        header=("file", "diagnosis", "subject", "hospital"),
    )
    out = tmp_path / "out"
    code, _, err = run_cli(
        [
            "convert",
            dataset.root,
            out,
            "--labels",
            dataset.labels_csv,
            "--path-column",
            "file",
            "--label-column",
            "diagnosis",
            "--group-column",
            "subject",
            "--clients",
            "2",
            "--scheme",
            "iid",
            "--size",
            "16",
            "--mode",
            "L",
            "--quiet",
            "--workers",
            "1",
        ]
    )
    assert code == 0, err
    federation = federation_of(out)
    assert federation["inputs"]["layout"] == "labels_csv"
    assert federation["inputs"]["group_column"] is True
    assert federation["inputs"]["skipped"] == {}  # the CSV is not under SRC
    rows = [row for client_rows in read_outputs(out).values() for row in client_rows]
    assert len(rows) == len(dataset.rows)
    group_of_patient: dict[str, set] = defaultdict(set)
    for row in rows:
        source = dataset.by_source[row.source_hmac]
        assert row.label == source["label"]
        group_of_patient[source["patient_id"]].add(row.group_id)
    assert all(len(groups) == 1 for groups in group_of_patient.values())
    assert len({next(iter(g)) for g in group_of_patient.values()}) == len(
        group_of_patient
    )  # distinct patients, distinct groups
    assert_group_safe(out)


def test_labels_csv_inside_the_source_is_skipped_and_counted(
    csv_dataset: CsvDataset, scheme_outputs: dict[str, Path]
) -> None:
    inputs = federation_of(scheme_outputs["iid"])["inputs"]
    assert inputs["skipped"] == {"labels_csv": 1}
    assert inputs["files_seen"] == len(csv_dataset.rows) + 1


def test_natural_scheme_uses_the_client_column_values_as_clients(
    csv_dataset: CsvDataset, scheme_outputs: dict[str, Path]
) -> None:
    out = scheme_outputs["natural"]
    federation = federation_of(out)
    assert sorted(federation["clients"]) == ["site_a", "site_b", "site_c"]
    assert federation["partition"]["reassigned_groups"] == 0
    for client, rows in read_outputs(out).items():
        assert {csv_dataset.by_source[row.source_hmac]["site"] for row in rows} == {client}


def test_natural_scheme_moves_a_patient_seen_at_two_sites_whole(tmp_path: Path) -> None:
    dataset = make_csv_dataset(tmp_path / "src", patients=6)
    # Patient P000 gets three images at site_a and one at site_b.
    rows = [r for r in dataset.rows if r["patient_id"] != "P000"]
    moved = [
        {"path": f"scans/P000/extra_{k}.png", "label": "benign", "patient_id": "P000", "site": site}
        for k, site in enumerate(["site_a", "site_a", "site_a", "site_b"])
    ]
    for k, row in enumerate(moved):
        write_png(dataset.root / row["path"], seed=900 + k)
    for p in (dataset.root / "scans" / "P000").glob("img_*"):
        p.unlink()
    with open(dataset.labels_csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "patient_id", "site"])
        writer.writeheader()
        writer.writerows(rows + moved)
    out = tmp_path / "out"
    result = convert(csv_options(dataset, out, "natural"))
    federation = federation_of(out)
    assert federation["partition"]["reassigned_groups"] == 1
    assert federation["partition"]["reassigned_samples"] == 1
    assert result.exit_code == 0
    assert_group_safe(out)
    assert "1 groups (1 samples) moved" in (out / "report.md").read_text()


def test_label_pattern_takes_the_label_from_the_file_name(tmp_path: Path) -> None:
    src = tmp_path / "src"
    expected = {}
    for i, (rel, label) in enumerate(
        [
            ("a/img_001_cat.png", "cat"),
            ("a/b/img_002_dog.PNG", "dog"),
            ("img_003_cat.png", "cat"),
            ("c/img_004_dog.png", "dog"),
        ]
    ):
        expected[source_hmac(write_png(src / rel, seed=i))] = label
    write_png(src / "a" / "unlabelled.png", seed=99)
    out = tmp_path / "out"
    code, _, err = run_cli(
        [
            "convert",
            src,
            out,
            "--label-pattern",
            r"_(?P<label>[a-z]+)\.",
            "--clients",
            "2",
            "--scheme",
            "iid",
            "--size",
            "16",
            "--quiet",
        ]
    )

    assert code == 1, err  # one file did not match
    rows = [row for client_rows in read_outputs(out).values() for row in client_rows]
    assert {row.source_hmac: row.label for row in rows} == expected
    entries = read_quarantine((out / "quarantine.jsonl").read_bytes())
    assert [(e.path, e.reason) for e in entries] == [("a/unlabelled.png", Reason.NO_LABEL)]
    assert "--label-pattern" in entries[0].message
    assert federation_of(out)["inputs"]["layout"] == "label_pattern"


def test_label_pattern_without_a_named_group_uses_group_one(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i, name in enumerate(["x-LEFT-1.png", "x-RIGHT-2.png", "x-LEFT-3.png"]):
        write_png(src / name, seed=i)
    result = convert(
        options(src, tmp_path / "out", scheme="iid", num_clients=1, label_pattern=r"^x-([A-Z]+)-")
    )
    assert result.exit_code == 0
    assert federation_of(tmp_path / "out")["label_map"] == {"LEFT": 0, "RIGHT": 1}


# --- every scheme -------------------------------------------------------------------------

SCHEMES = ["iid", "stratified", "dirichlet", "quantity", "natural", "shards"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_scheme_is_group_safe_and_its_counts_add_up(
    scheme: str, csv_dataset: CsvDataset, scheme_outputs: dict[str, Path]
) -> None:
    out = scheme_outputs[scheme]
    federation = federation_of(out)
    assert federation["partition"]["scheme"] == scheme
    assert federation["partition"]["group_aware"] is True
    assert federation["totals"]["num_clients"] == 3
    assert_counts_add_up(out, accepted=len(csv_dataset.rows))
    assert_group_safe(out)
    assert verify_federation(out) == []

    rows = [row for client_rows in read_outputs(out).values() for row in client_rows]
    # Every source image appears exactly once, with its CSV label.
    assert sorted(row.source_hmac for row in rows) == sorted(csv_dataset.by_source)
    assert all(row.label == csv_dataset.by_source[row.source_hmac]["label"] for row in rows)
    # One patient, one group_id; different patients, different group_ids.
    groups_of_patient: dict[str, set] = defaultdict(set)
    for row in rows:
        groups_of_patient[csv_dataset.by_source[row.source_hmac]["patient_id"]].add(row.group_id)
    assert all(len(g) == 1 for g in groups_of_patient.values())
    assert len(set().union(*groups_of_patient.values())) == len(groups_of_patient)
    # Validation share close to the requested 0.2 (groups of up to 4 make it approximate).
    val = sum(row.split == "val" for row in rows)
    assert 0.1 <= val / len(rows) <= 0.3, val


def test_scheme_parameters_are_recorded(scheme_outputs: dict[str, Path]) -> None:
    params = {scheme: federation_of(out)["partition"]["params"] for scheme, out in scheme_outputs.items()}
    assert params["iid"] == {} and params["stratified"] == {}
    assert params["dirichlet"]["alpha"] == 1.0 and params["dirichlet"]["min_partition_size"] == 5
    assert params["quantity"]["alpha"] == 5.0
    assert params["shards"] == {"shards_per_client": 1}
    assert params["natural"] == {"client_values": ["site_a", "site_b", "site_c"]}


def test_stratified_clients_share_the_label_mix_and_shards_do_not(scheme_outputs: dict[str, Path]) -> None:
    def labels_per_client(scheme: str) -> dict[str, Counter]:
        return {c: Counter(r.label for r in rows) for c, rows in read_outputs(scheme_outputs[scheme]).items()}

    stratified = labels_per_client("stratified")
    assert all(len(counts) == 3 for counts in stratified.values())
    for label in ("benign", "malignant", "normal"):
        per_client = [counts[label] for counts in stratified.values()]
        assert max(per_client) - min(per_client) <= 4, per_client  # within one patient (1-4 images)
    shards = labels_per_client("shards")  # one label-sorted shard per client: at most 2 labels each
    assert all(len(counts) <= 2 for counts in shards.values()), shards


def test_dirichlet_self_balancing_is_applied_and_recorded(csv_dataset: CsvDataset, tmp_path: Path) -> None:
    convert(
        csv_options(
            csv_dataset, tmp_path / "out", "dirichlet", alpha=1.0, min_partition_size=5, self_balancing=True
        )
    )
    assert federation_of(tmp_path / "out")["partition"]["params"]["self_balancing"] is True
    assert_group_safe(tmp_path / "out")


def test_val_fraction_zero_puts_everything_in_train(csv_dataset: CsvDataset, tmp_path: Path) -> None:
    convert(csv_options(csv_dataset, tmp_path / "out", "iid", val_fraction=0.0))
    federation = federation_of(tmp_path / "out")
    assert all(c["split_counts"]["val"] == 0 for c in federation["clients"].values())
    assert federation["partition"]["val_fraction"] == 0.0


def test_client_names_name_the_client_folders(csv_dataset: CsvDataset, tmp_path: Path) -> None:
    convert(
        csv_options(
            csv_dataset,
            tmp_path / "out",
            "stratified",
            num_clients=None,
            client_names=["st_marys", "royal_free"],
        )
    )
    assert sorted(p.name for p in (tmp_path / "out" / "clients").iterdir()) == ["royal_free", "st_marys"]
    assert set(federation_of(tmp_path / "out")["clients"]) == {"st_marys", "royal_free"}


# --- the bad-input corpus -----------------------------------------------------------------


def test_bad_corpus_is_quarantined_with_reasons_and_the_rest_converted(bad_corpus, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        [
            "convert",
            bad_corpus.root,
            out,
            "--clients",
            "2",
            "--scheme",
            "iid",
            "--size",
            str(bad_corpus.spec.size),
            "--mode",
            bad_corpus.spec.mode,
            "--max-pixels",
            str(bad_corpus.spec.max_pixels),
            "--workers",
            "1",
        ]
    )
    assert code == 1, err
    assert "inputs rejected" in err and "quarantine.jsonl" in err

    entries = read_quarantine((out / "quarantine.jsonl").read_bytes())
    assert {e.path: e.reason for e in entries} == bad_corpus.expected
    assert len(entries) == len(bad_corpus.expected)  # each rejected input once
    assert all(e.message.strip() for e in entries)

    federation = federation_of(out)
    inputs = federation["inputs"]
    assert inputs["accepted"] == len(bad_corpus.good)
    assert inputs["skipped"] == dict(bad_corpus.skipped)
    assert inputs["quarantined"] == dict(Counter(r.value for r in bad_corpus.expected.values()))
    assert inputs["files_seen"] == len(bad_corpus.good) + len(bad_corpus.expected) + sum(
        bad_corpus.skipped.values()
    )
    rows = [row for client_rows in read_outputs(out).values() for row in client_rows]
    good_sources = {
        source_hmac((bad_corpus.root / rel).read_bytes()): label for rel, label in bad_corpus.good.items()
    }
    assert {row.source_hmac: row.label for row in rows} == good_sources

    report = (out / "report.md").read_text(encoding="utf-8")
    for reason, count in bad_corpus.skipped.items():
        assert f"| {reason} | {count} |" in report
    for reason, count in inputs["quarantined"].items():
        assert f"| {reason} | {count} |" in report
    assert f"{sum(bad_corpus.skipped.values())} skipped" in report
    assert verify_federation(out) == []
    # Output images are standardised to the requested spec.
    for png in (out / "clients").rglob("*.png"):
        with Image.open(png) as image:
            assert (image.format, image.size, image.mode) == ("PNG", (16, 16), "RGB")


def test_csv_layout_rejections_reach_the_quarantine(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i, rel in enumerate(
        ["a.png", "b.png", "c.png", "d.png", "unlisted.png", "nogroup.png", "conflict.png"]
    ):
        write_png(src / rel, seed=i)
    (tmp_path / "labels.csv").write_text(
        "path,label,patient\n"
        "a.png,x,p1\nb.png,y,p2\nc.png,x,p3\nd.png,y,p4\n"
        "nogroup.png,x,\n"
        "conflict.png,x,p5\nconflict.png,y,p5\n"
        "missing.png,x,p6\n"
        "../escape.png,x,p7\n",
        encoding="utf-8",
    )
    result = convert(
        options(
            src,
            tmp_path / "out",
            scheme="iid",
            num_clients=2,
            labels_csv=tmp_path / "labels.csv",
            columns=CsvColumns(group="patient"),
        )
    )
    assert result.exit_code == 1
    reasons = {
        e.path: e.reason for e in read_quarantine((tmp_path / "out" / "quarantine.jsonl").read_bytes())
    }
    assert reasons == {
        "unlisted.png": Reason.NO_LABEL,
        "nogroup.png": Reason.NO_GROUP,
        "conflict.png": Reason.CONFLICTING_ROWS,
        "missing.png": Reason.MISSING_FILE,
        "../escape.png": Reason.OUTSIDE_ROOT,
    }
    assert federation_of(tmp_path / "out")["inputs"]["accepted"] == 4


# --- errors before any work ---------------------------------------------------------------


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory: pytest.TempPathFactory) -> CsvDataset:
    """4 patients, 3 labels: small enough that 5 clients are too many."""
    return make_csv_dataset(tmp_path_factory.mktemp("small") / "src", patients=4)


ERROR_CASES = {
    "more clients than groups": (
        ["--group-column", "patient_id", "--clients", "5", "--scheme", "iid"],
        ["5 clients", "groups"],
    ),
    "alpha zero": (["--clients", "2", "--scheme", "dirichlet", "--alpha", "0"], ["--alpha"]),
    "alpha negative": (["--clients", "2", "--scheme", "quantity", "--alpha", "-1"], ["--alpha"]),
    "unknown label column": (
        ["--label-column", "diagnosis", "--clients", "2", "--scheme", "iid"],
        ["--label-column", "'diagnosis'", "labels.csv"],
    ),
    "unknown group column": (
        ["--group-column", "subject", "--clients", "2", "--scheme", "iid"],
        ["--group-column", "'subject'"],
    ),
    "unknown path column": (
        ["--path-column", "file", "--clients", "2", "--scheme", "iid"],
        ["--path-column", "'file'"],
    ),
    "unknown client column": (
        ["--client-column", "hospital", "--scheme", "natural"],
        ["--client-column", "'hospital'"],
    ),
    "alpha with iid": (["--clients", "2", "--scheme", "iid", "--alpha", "0.5"], ["--alpha", "iid"]),
    "shards flag with dirichlet": (
        ["--clients", "2", "--scheme", "dirichlet", "--shards-per-client", "2"],
        ["--shards-per-client"],
    ),
    "dirichlet min partition size infeasible": (
        ["--clients", "2", "--scheme", "dirichlet", "--min-partition-size", "50"],
        ["--min-partition-size"],
    ),
    "quantity min partition size infeasible": (
        ["--clients", "3", "--scheme", "quantity", "--min-partition-size", "5"],
        ["--min-partition-size"],
    ),
    "natural without client column": (["--scheme", "natural"], ["--client-column"]),
    "no client count": (["--scheme", "iid"], ["--clients"]),
    "val fraction one": (["--clients", "2", "--scheme", "iid", "--val-fraction", "1"], ["--val-fraction"]),
    "size zero": (["--clients", "2", "--scheme", "iid", "--size", "0"], ["--size"]),
    "bad client name": (["--client-names", "a/b,c", "--scheme", "iid"], ["'a/b'"]),
    "self balancing with quantity": (
        ["--clients", "2", "--scheme", "quantity", "--self-balancing"],
        ["--self-balancing", "quantity"],
    ),
    "negative workers": (["--clients", "2", "--scheme", "iid", "--workers", "-1"], ["--workers"]),
    "max pixels zero": (["--clients", "2", "--scheme", "iid", "--max-pixels", "0"], ["--max-pixels"]),
    "negative seed": (["--clients", "2", "--scheme", "iid", "--seed", "-1"], ["--seed"]),
    "min partition size zero": (
        ["--clients", "2", "--scheme", "quantity", "--min-partition-size", "0"],
        ["--min-partition-size"],
    ),
    "labels and label pattern": (
        ["--clients", "2", "--scheme", "iid", "--label-pattern", "(x)"],
        ["--labels", "--label-pattern"],
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_configuration_errors_exit_2_naming_the_setting_and_write_nothing(
    case: str, small_csv: CsvDataset, tmp_path: Path
) -> None:
    flags, must_name = ERROR_CASES[case]
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        ["convert", small_csv.root, out, "--labels", small_csv.labels_csv, "--size", "16", "--quiet", *flags]
    )
    assert code == 2, (stdout, err)
    assert err.startswith("error:")
    for word in must_name:
        assert word in err, err
    assert not out.exists()
    assert siblings_left(out) == []


def test_dirichlet_that_cannot_meet_the_minimum_size_in_its_draws_exits_2(
    csv_dataset: CsvDataset, tmp_path: Path
) -> None:
    # Enough samples in total (6 x 5 <= ~60), but at alpha 0.001 each of the 3 labels goes wholly
    # to one client, so at least 3 of the 6 clients stay empty in every draw.
    out = tmp_path / "out"
    code, _, err = run_cli(
        [
            "convert",
            csv_dataset.root,
            out,
            "--labels",
            csv_dataset.labels_csv,
            "--group-column",
            "patient_id",
            "--clients",
            "6",
            "--scheme",
            "dirichlet",
            "--alpha",
            "0.001",
            "--min-partition-size",
            "5",
            "--quiet",
            "--size",
            "16",
        ]
    )
    assert code == 2, err
    assert "draws" in err and "alpha=0.001" in err and "--min-partition-size" in err
    assert not out.exists() and siblings_left(out) == []


def test_missing_source_exits_2_naming_it(tmp_path: Path) -> None:
    code, _, err = run_cli(
        ["convert", tmp_path / "no_such_folder", tmp_path / "out", "--clients", "2", "--scheme", "iid"]
    )
    assert code == 2
    assert "no_such_folder" in err and "not found" in err
    assert not (tmp_path / "out").exists()


def test_missing_labels_csv_exits_2_naming_it(small_csv: CsvDataset, tmp_path: Path) -> None:
    code, _, err = run_cli(
        [
            "convert",
            small_csv.root,
            tmp_path / "out",
            "--labels",
            tmp_path / "nope.csv",
            "--clients",
            "2",
            "--scheme",
            "iid",
        ]
    )
    assert code == 2 and "nope.csv" in err
    assert not (tmp_path / "out").exists()


def test_class_folders_without_any_class_folder_exit_2(tmp_path: Path) -> None:
    write_png(tmp_path / "src" / "loose.png", seed=1)
    code, _, err = run_cli(
        ["convert", tmp_path / "src", tmp_path / "out", "--clients", "1", "--scheme", "iid"]
    )
    assert code == 2 and "class folders" in err and "--labels" in err
    assert not (tmp_path / "out").exists()


def test_existing_output_without_overwrite_exits_2_and_is_left_alone(
    small_csv: CsvDataset, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_cli(
        [
            "convert",
            small_csv.root,
            out,
            "--labels",
            small_csv.labels_csv,
            "--clients",
            "2",
            "--scheme",
            "iid",
        ]
    )
    assert code == 2 and "--overwrite" in err and str(out) in err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_output_inside_the_source_is_refused(small_csv: CsvDataset) -> None:
    out = small_csv.root / "converted"
    code, _, err = run_cli(
        [
            "convert",
            small_csv.root,
            out,
            "--labels",
            small_csv.labels_csv,
            "--clients",
            "2",
            "--scheme",
            "iid",
        ]
    )
    assert code == 2 and "inside the source" in err
    assert not out.exists()


def test_overwriting_the_folder_that_holds_the_source_is_refused(tmp_path: Path) -> None:
    # OUT = the parent of SRC: replacing OUT would delete the source collection.
    holder = tmp_path / "holder"
    write_png(holder / "src" / "cat" / "a.png", seed=1)
    write_png(holder / "src" / "dog" / "b.png", seed=2)
    code, _, err = run_cli(
        ["convert", holder / "src", holder, "--clients", "1", "--scheme", "iid", "--overwrite", "--quiet"]
    )
    assert code == 2, err
    assert "source" in err
    assert (holder / "src" / "cat" / "a.png").is_file() and (holder / "src" / "dog" / "b.png").is_file()


def test_all_inputs_rejected_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "src" / "cat").mkdir(parents=True)
    (tmp_path / "src" / "cat" / "empty.png").write_bytes(b"")
    code, _, err = run_cli(
        ["convert", tmp_path / "src", tmp_path / "out", "--clients", "1", "--scheme", "iid", "--quiet"]
    )
    assert code == 2 and "no image was accepted" in err
    assert not (tmp_path / "out").exists() and siblings_left(tmp_path / "out") == []


def test_convert_raises_fedimg_error_in_process(small_csv: CsvDataset, tmp_path: Path) -> None:
    with pytest.raises(FedimgError, match="--alpha"):
        convert(csv_options(small_csv, tmp_path / "out", "iid", num_clients=2, alpha=0.5))
    assert not (tmp_path / "out").exists()


# --- atomicity ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def many_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 64x64 noise PNGs in two class folders: long enough a run to interrupt."""
    src = tmp_path_factory.mktemp("many") / "src"
    rng = np.random.default_rng(0)
    for i in range(300):
        folder = src / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return src


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_leaves_neither_output_nor_partial_dir(
    sig: int, workers: str, many_images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    process = subprocess.Popen(
        [
            *fedimg_command(),
            "convert",
            str(many_images),
            str(out),
            "--clients",
            "2",
            "--scheme",
            "iid",
            "--size",
            "16",
            "--quiet",
            "--workers",
            workers,
        ],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        # as a terminal would start it: the test worker's own SIGINT disposition or mask (pytest-xdist, or a
        # library a previous test loaded) must not reach the run under test
        preexec_fn=_default_signals,
    )
    deadline = time.monotonic() + 30
    seen_partial = False
    while process.poll() is None and time.monotonic() < deadline:
        if siblings_left(out):
            seen_partial = True
            process.send_signal(sig)  # the main process only, as a service manager would
            break
        time.sleep(0.001)
    try:
        # Orphaned pool workers would hold the pipes open and make this time out.
        _, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail("the interrupted run (or a worker it left behind) did not exit")
    assert seen_partial, "the run finished before its partial directory was seen"
    assert process.returncode == 130, stderr.decode()
    assert "interrupted" in stderr.decode()
    assert not out.exists()
    assert siblings_left(out) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _convert_argv(source: Path, out: Path) -> list[str]:
    return ["convert", str(source), str(out), "--clients", "2", "--scheme", "iid", "--size", "16", "--quiet"]


# The race CI once lost, made certain: SIGTERM comes while the pool starts, and a worker has not
# run yet (the scheduler's choice under load) when the pool is stopped. The worker used to inherit
# the main process's Python handler, which swallowed the pool's SIGTERM: the worker then waited on
# the task queue's lock, held by Pool.terminate, which waited for the worker.
_LATE_WORKER_HARNESS = """
import multiprocessing.pool, os, signal, sys, time
from datasite_setup import cli
from datasite_setup.convert import pipeline

start_pool = multiprocessing.pool.Pool.__init__
def start_then_interrupt(self, *args, **kwargs):
    start_pool(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)
multiprocessing.pool.Pool.__init__ = start_then_interrupt

init_worker = pipeline._init_worker
def late_init_worker(*args):
    time.sleep(1.0)
    init_worker(*args)
pipeline._init_worker = late_init_worker
sys.exit(cli.main(sys.argv[1:]))
"""


def _run_harness(harness: str, source: Path, out: Path, hang: str) -> tuple[int, str]:
    """Run ``harness`` (a patched ``fedimg``) on two workers as a terminal would; its exit code and stderr."""
    process = subprocess.Popen(
        [sys.executable, "-c", harness, *_convert_argv(source, out), "--workers", "2"],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_default_signals,
    )
    try:
        _, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(hang)
    return process.returncode, stderr.decode()


def test_a_run_interrupted_before_its_workers_have_started_exits(many_images: Path, tmp_path: Path) -> None:
    code, stderr = _run_harness(
        _LATE_WORKER_HARNESS,
        many_images,
        tmp_path / "out",
        "the run hung: a worker survived the pool's SIGTERM",
    )
    assert code == 130, stderr
    assert "interrupted: nothing was written" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


_DYING_WORKER_HARNESS = """
import os, signal, sys
from datasite_setup import cli
from datasite_setup.convert import pipeline

process = pipeline._process
def killed_on_image_10(task):
    if task[0] == 10:
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
    return process(task)
pipeline._process = killed_on_image_10
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_worker_killed_mid_run_ends_the_run_with_nothing_written(many_images: Path, tmp_path: Path) -> None:
    # multiprocessing.Pool replaces a dead worker but never returns its images: the run waited forever.
    code, stderr = _run_harness(
        _DYING_WORKER_HARNESS,
        many_images,
        tmp_path / "out",
        "the run waited forever for a dead worker's images",
    )
    assert code == 2, stderr
    assert "worker was killed" in stderr and "nothing was written" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_interrupt_during_the_report_takes_effect_after_it(
    csv_dataset: CsvDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A KeyboardInterrupt raised inside matplotlib's import came out as ImportError or RuntimeError:
    # exit 1 with a traceback instead of 130. The interrupt now waits for the step to end.
    from datasite_setup.convert import federation_report

    steps: list[str] = []
    write_report_files = federation_report.write_report_files

    def interrupted_while_writing(*args, **kwargs):
        steps.append("started")
        os.kill(os.getpid(), signal.SIGTERM)
        write_report_files(*args, **kwargs)
        steps.append("finished")

    monkeypatch.setattr(federation_report, "write_report_files", interrupted_while_writing)
    previous = signal.getsignal(signal.SIGTERM)
    code, _, err = run_cli(
        [*_convert_argv(csv_dataset.root, tmp_path / "out"), "--labels", csv_dataset.labels_csv]
    )
    assert (code, steps) == (130, ["started", "finished"]), err
    assert "interrupted: nothing was written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is previous


def test_a_failure_in_a_late_step_leaves_nothing(
    csv_dataset: CsvDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datasite_setup.convert import federation_report

    def fail(*args, **kwargs):
        raise RuntimeError("disk full while writing the report")

    monkeypatch.setattr(federation_report, "write_report_files", fail)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk full"):
        convert(csv_options(csv_dataset, out, "iid"))
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_ctrl_c_in_process_leaves_nothing(
    csv_dataset: CsvDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasite_setup.convert.pipeline as convert_module

    calls = []
    original = convert_module._write_client

    def interrupt_on_second_client(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(convert_module, "_write_client", interrupt_on_second_client)
    out = tmp_path / "out"
    code, _, err = run_cli(
        [
            "convert",
            csv_dataset.root,
            out,
            "--labels",
            csv_dataset.labels_csv,
            "--clients",
            "3",
            "--scheme",
            "iid",
            "--quiet",
            "--size",
            "16",
        ]
    )
    assert code == 130 and "interrupted" in err
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_overwrite_replaces_the_output_only_once_the_new_one_is_complete(
    csv_dataset: CsvDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    convert(csv_options(csv_dataset, out, "iid"))
    first = (out / "federation.json").read_bytes()
    (out / "stale.txt").write_text("from before")

    # A failing overwrite leaves the old output exactly as it was.
    from datasite_setup.convert import federation_report

    monkeypatch.setattr(
        federation_report, "write_report_files", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom"))
    )
    with pytest.raises(RuntimeError):
        convert(csv_options(csv_dataset, out, "stratified", overwrite=True))
    assert (out / "federation.json").read_bytes() == first and (out / "stale.txt").is_file()
    assert siblings_left(out) == []
    monkeypatch.undo()

    # A successful one swaps the whole folder: nothing of the old one survives.
    code, _, err = run_cli(
        [
            "convert",
            csv_dataset.root,
            out,
            "--labels",
            csv_dataset.labels_csv,
            "--group-column",
            "patient_id",
            "--clients",
            "2",
            "--scheme",
            "stratified",
            "--size",
            "16",
            "--mode",
            "L",
            "--overwrite",
            "--quiet",
        ]
    )
    assert code == 0, err
    federation = federation_of(out)
    assert federation["partition"]["scheme"] == "stratified" and federation["totals"]["num_clients"] == 2
    assert not (out / "stale.txt").exists()
    assert siblings_left(out) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert verify_federation(out) == []


def test_the_secret_never_lands_in_the_output(
    csv_dataset: CsvDataset, scheme_outputs: dict[str, Path]
) -> None:
    for path in scheme_outputs["iid"].rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    fingerprint = federation_of(scheme_outputs["iid"])["pseudonyms"]["secret_fingerprint"]
    assert len(fingerprint) == 20 and fingerprint not in SECRET
