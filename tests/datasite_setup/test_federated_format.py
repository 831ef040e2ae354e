"""Federated format v1: the contract of what ``convert`` writes, its helpers, atomic output, reproducibility."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from datasite_setup.convert.federated_format import (
    METADATA_COLUMNS,
    SampleRow,
    atomic_output_dir,
    canonical_json,
    check_client_name,
    check_label_name,
    checksums_file,
    client_summary,
    load_federation,
    metadata_csv,
    read_checksums_file,
    read_metadata_csv,
    sample_file_name,
    sha256_bytes,
)
from datasite_setup.convert.pipeline import convert
from datasite_setup.convert.pseudonym import Pseudonymiser
from datasite_setup.errors import FedimgError
from tests.datasite_setup.test_convert import (
    OTHER_SECRET,
    SECRET,
    csv_options,
    make_csv_dataset,
    read_outputs,
)

# --- helpers of the format ----------------------------------------------------------------


def _row(label: str, sample_id: str, split: str = "train", group_id: str = "g" * 20) -> SampleRow:
    return SampleRow(sample_file_name(label, sample_id), label, split, sample_id, group_id, "0" * 64)


def test_metadata_csv_has_the_contract_columns_and_is_sorted_by_file_name() -> None:
    rows = [_row("b", "2" * 20), _row("a", "9" * 20, "val"), _row("a", "1" * 20)]
    data = metadata_csv(rows)
    lines = data.decode().splitlines()
    assert lines[0] == "file_name,label,split,sample_id,group_id,source_hmac"
    assert tuple(lines[0].split(",")) == METADATA_COLUMNS
    assert [line.split(",")[0] for line in lines[1:]] == [
        f"images/a/{'1' * 20}.png",
        f"images/a/{'9' * 20}.png",
        f"images/b/{'2' * 20}.png",
    ]
    assert data.endswith(b"\n") and b"\r" not in data
    assert read_metadata_csv(data) == sorted(rows, key=lambda r: r.file_name)
    assert metadata_csv(list(reversed(rows))) == data  # input order does not matter


def test_metadata_csv_quotes_awkward_labels_and_reads_them_back() -> None:
    rows = [_row("a, b", "1" * 20), _row('say "hi"', "2" * 20)]
    assert read_metadata_csv(metadata_csv(rows)) == rows


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"path,label\nx,y\n", "header"),
        (b"file_name,label,split,sample_id,group_id,source_hmac\na,b,c\n", "line 2"),
        (b"", "header"),
    ],
)
def test_read_metadata_csv_rejects_a_wrong_schema(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_metadata_csv(data)


def test_checksums_file_round_trips_and_is_sorted() -> None:
    sums = {"images/b/x.png": "b" * 64, "images/a/y.png": "a" * 64}
    data = checksums_file(sums)
    assert data == f"{'a' * 64}  images/a/y.png\n{'b' * 64}  images/b/x.png\n".encode()
    assert read_checksums_file(data) == sums
    with pytest.raises(ValueError, match="line 1"):
        read_checksums_file(b"abc images/a.png\n")


def test_checksums_file_is_accepted_by_sha256sum(tmp_path: Path) -> None:
    (tmp_path / "images" / "a").mkdir(parents=True)
    (tmp_path / "images" / "a" / "x.png").write_bytes(b"pixels")
    (tmp_path / "SHA256SUMS").write_bytes(checksums_file({"images/a/x.png": sha256_bytes(b"pixels")}))
    assert (
        subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True).returncode == 0
    )
    (tmp_path / "images" / "a" / "x.png").write_bytes(b"other")
    assert (
        subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True).returncode != 0
    )


def test_canonical_json_is_sorted_indented_utf8_with_a_final_newline() -> None:
    data = canonical_json({"b": 1, "a": {"é": [2, 1]}})
    assert data == '{\n  "a": {\n    "é": [\n      2,\n      1\n    ]\n  },\n  "b": 1\n}\n'.encode()
    assert canonical_json({"a": {"é": [2, 1]}, "b": 1}) == data


@pytest.mark.parametrize("name", ["client_0", "st-marys", "Royal.Free", "a", "x" * 64])
def test_good_client_names(name: str) -> None:
    assert check_client_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", "_x", "-x", "a/b", "a b", "x" * 65, "ü", "a\x00", "a\n", "\na"]
)
def test_bad_client_names_are_refused_with_advice(name: str) -> None:
    with pytest.raises(FedimgError, match="letters, digits"):
        check_client_name(name)


@pytest.mark.parametrize("label", ["cat", "0", "Ünï label", "a-b_c.d"])
def test_good_labels(label: str) -> None:
    assert check_label_name(label) == label


@pytest.mark.parametrize("label", ["", ".hidden", "a/b", "a\\b", " padded", "padded ", "a\x00b"])
def test_bad_labels_are_refused(label: str) -> None:
    with pytest.raises(FedimgError, match="folder name"):
        check_label_name(label)


def test_a_label_that_is_no_folder_name_stops_convert_before_writing(tmp_path: Path) -> None:
    from datasite_setup.convert.pipeline import ConvertOptions

    src = tmp_path / "src"
    src.mkdir()
    from tests.datasite_setup.test_convert import write_png

    write_png(src / "a.png", seed=1)
    write_png(src / "b.png", seed=2)
    (tmp_path / "labels.csv").write_text("path,label\na.png,.hidden\nb.png,ok\n")
    with pytest.raises(FedimgError, match="'.hidden'"):
        convert(
            ConvertOptions(
                source=src,
                out=tmp_path / "out",
                scheme="iid",
                num_clients=1,
                labels_csv=tmp_path / "labels.csv",
                show_progress=False,
            )
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv", "src"]


def test_client_summary_counts_splits_labels_and_groups() -> None:
    rows = [
        _row("a", "1" * 20, "train", "g1" + "0" * 18),
        _row("a", "2" * 20, "train", "g1" + "0" * 18),
        _row("b", "3" * 20, "val", "g2" + "0" * 18),
    ]
    summary = client_summary(rows, ["a", "b", "c"], b"meta", b"sums")
    assert summary == {
        "num_samples": 3,
        "split_counts": {"train": 2, "val": 1},
        "label_counts": {"train": {"a": 2, "b": 0, "c": 0}, "val": {"a": 0, "b": 1, "c": 0}},
        "num_groups": 2,
        "metadata_sha256": sha256_bytes(b"meta"),
        "checksums_sha256": sha256_bytes(b"sums"),
    }


# --- load_federation ----------------------------------------------------------------------


def test_load_federation_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FedimgError, match="federation.json: not found"):
        load_federation(tmp_path)
    (tmp_path / "federation.json").write_text("{not json")
    with pytest.raises(FedimgError, match="cannot be read as JSON"):
        load_federation(tmp_path)
    (tmp_path / "federation.json").write_text("[1, 2]")
    with pytest.raises(FedimgError, match="not a fedimg federation manifest"):
        load_federation(tmp_path)
    (tmp_path / "federation.json").write_bytes(b"\xff\xfe")
    with pytest.raises(FedimgError, match="federation.json"):
        load_federation(tmp_path)


# --- atomic_output_dir --------------------------------------------------------------------


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_output_dir_appears_only_when_complete(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_output_dir(out, overwrite=False) as partial:
        assert partial.parent == tmp_path and partial.name.startswith(".out.partial-")
        (partial / "file").write_text("x")
        assert not out.exists()
    assert _entries(tmp_path) == ["out"]
    assert (out / "file").read_text() == "x"


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt, SystemExit])
def test_atomic_output_dir_removes_the_partial_dir_on_any_error(
    tmp_path: Path, error: type[BaseException]
) -> None:
    with pytest.raises(error):
        with atomic_output_dir(tmp_path / "out", overwrite=False) as partial:
            (partial / "deep" / "er").mkdir(parents=True)
            raise error()
    assert _entries(tmp_path) == []


def test_atomic_output_dir_refuses_an_existing_output_without_overwrite(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(FedimgError, match="--overwrite"):
        with atomic_output_dir(tmp_path / "out", overwrite=False):
            pytest.fail("must not be entered")
    assert _entries(tmp_path) == ["out"]


def test_atomic_output_dir_overwrite_swaps_whole_folders(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "old").mkdir(parents=True)
    with atomic_output_dir(out, overwrite=True) as partial:
        (partial / "new").write_text("n")
        assert (out / "old").exists()  # the old output stays until the new one is complete
    assert _entries(out) == ["new"]
    assert _entries(tmp_path) == ["out"]
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out, overwrite=True) as partial:
            (partial / "newer").write_text("n")
            raise RuntimeError
    assert _entries(out) == ["new"] and _entries(tmp_path) == ["out"]


@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_atomic_output_dir_overwrite_replaces_a_file_or_symlink_without_leftovers(
    tmp_path: Path, kind: str
) -> None:
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("in the way")
    else:
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "keep").write_text("k")
        out.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with atomic_output_dir(out, overwrite=True) as partial:
        (partial / "new").write_text("n")
    assert out.is_dir() and not out.is_symlink() and _entries(out) == ["new"]
    assert [name for name in _entries(tmp_path) if name.startswith(".")] == []
    if kind == "symlink":
        assert (tmp_path / "elsewhere" / "keep").is_file()  # what the link pointed at is not deleted


@pytest.mark.parametrize("swap", ["exchange", "two renames"])
def test_overwrite_swaps_by_exchange_or_by_two_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap: str
) -> None:
    import datasite_setup.convert.federated_format as federated_format

    if (
        swap == "two renames"
    ):  # where renameat2(RENAME_EXCHANGE) is missing (not Linux, old kernels, some filesystems)
        monkeypatch.setattr(federated_format, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    (out / "old").mkdir(parents=True)
    with atomic_output_dir(out, overwrite=True) as partial:
        (partial / "new").write_text("n")
    assert _entries(out) == ["new"] and _entries(tmp_path) == ["out"]


def test_exchange_swaps_two_folders_in_one_step(tmp_path: Path) -> None:
    from datasite_setup.convert.federated_format import _exchange

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "from_a").write_text("a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "from_b").write_text("b")
    if not _exchange(tmp_path / "a", tmp_path / "b"):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    assert _entries(tmp_path / "a") == ["from_b"] and _entries(tmp_path / "b") == ["from_a"]


def test_a_signal_during_the_two_renames_waits_until_both_are_done() -> None:
    import os
    import signal

    from datasite_setup.convert.federated_format import _signals_deferred

    reached = []
    # Ctrl-C as an interactive process has it, whatever the test worker inherited (pytest-xdist's workers, or a
    # library a previous test loaded, may ignore or block SIGINT)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        with pytest.raises(KeyboardInterrupt):
            with _signals_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                reached.append(
                    "after the signal"
                )  # without the mask, KeyboardInterrupt would land before this line
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    assert reached == ["after the signal"]


def test_atomic_output_dir_creates_missing_parents(tmp_path: Path) -> None:
    with atomic_output_dir(tmp_path / "a" / "b" / "out", overwrite=False) as partial:
        (partial / "x").write_text("x")
    assert (tmp_path / "a" / "b" / "out" / "x").is_file()


# --- a real output against the contract ---------------------------------------------------

N_CLIENTS = 3


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One dataset (>= 64 images, so --workers 2 really uses a pool) converted under varied settings."""
    base = tmp_path_factory.mktemp("repro")
    dataset = make_csv_dataset(base / "src", patients=34, seed=3)
    assert len(dataset.rows) >= 64
    runs = {
        "a": dict(seed=7, workers=1),
        "again": dict(seed=7, workers=1),
        "two_workers": dict(seed=7, workers=2),
        "other_secret": dict(seed=7, workers=1, secret=OTHER_SECRET),
        "other_seed": dict(seed=8, workers=1),
    }
    result = {}
    with pytest.MonkeyPatch.context() as patch:
        for name, run in runs.items():
            patch.setenv("FEDIMG_SECRET", run.pop("secret", SECRET))
            result[name] = base / f"out_{name}"
            convert(
                csv_options(
                    dataset,
                    result[name],
                    "dirichlet",
                    num_clients=N_CLIENTS,
                    alpha=1.0,
                    min_partition_size=5,
                    **run,
                )
            )
    result["_dataset_rows"] = len(dataset.rows)
    result["_source"] = dataset.root
    return result


def _all_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _source_paths(source: Path, secret: str) -> dict[str, str]:
    """source_hmac under ``secret`` -> the source file's path: what an owner holding both can do."""
    keyed = Pseudonymiser(secret.encode())
    return {
        keyed.source_hmac(sha256_bytes(path.read_bytes())): path.relative_to(source).as_posix()
        for path in source.rglob("*.png")
    }


def _placement(outputs: dict, name: str, secret: str = SECRET) -> dict[str, tuple[str, str]]:
    """source path -> (client, split): the partition, independent of pseudonyms."""
    paths = _source_paths(outputs["_source"], secret)
    return {
        paths[row.source_hmac]: (client, row.split)
        for client, rows in read_outputs(outputs[name]).items()
        for row in rows
    }


def test_output_layout_matches_the_contract(outputs: dict) -> None:
    out = outputs["a"]
    assert _entries(out) == [
        "clients",
        "federation.json",
        "label_distribution.png",
        "quarantine.jsonl",
        "report.md",
    ]
    federation = json.loads((out / "federation.json").read_text())
    assert federation["format"] == "fedimg-federated" and federation["schema_version"] == 2
    assert federation["tool"]["name"] == "fedimg" and federation["tool"]["version"]
    assert {"size": 16, "mode": "L", "format": "PNG"}.items() <= federation["image"].items()
    assert federation["label_map"] == {"benign": 0, "malignant": 1, "normal": 2}
    assert federation["partition"]["scheme"] == "dirichlet" and federation["partition"]["seed"] == 7
    assert federation["partition"]["params"]["alpha"] == 1.0
    assert federation["quarantine_sha256"] == sha256_bytes((out / "quarantine.jsonl").read_bytes())
    assert _entries(out / "clients") == [f"client_{i}" for i in range(N_CLIENTS)]
    for name, client in federation["clients"].items():
        client_dir = out / "clients" / name
        assert _entries(client_dir) == ["SHA256SUMS", "images", "metadata.csv"]
        assert client["metadata_sha256"] == sha256_bytes((client_dir / "metadata.csv").read_bytes())
        assert client["checksums_sha256"] == sha256_bytes((client_dir / "SHA256SUMS").read_bytes())
        sums = read_checksums_file((client_dir / "SHA256SUMS").read_bytes())
        for row in read_metadata_csv((client_dir / "metadata.csv").read_bytes()):
            # torchvision ImageFolder layout, Hugging Face imagefolder file_name column
            assert row.file_name == f"images/{row.label}/{row.sample_id}.png"
            assert sums[row.file_name] == sha256_bytes((client_dir / row.file_name).read_bytes())
            with Image.open(client_dir / row.file_name) as image:
                assert (image.format, image.size, image.mode) == ("PNG", (16, 16), "L")


def test_same_inputs_seed_and_secret_give_byte_identical_outputs(outputs: dict) -> None:
    first, again = _all_files(outputs["a"]), _all_files(outputs["again"])
    assert first.keys() == again.keys()
    different = [name for name in first if first[name] != again[name]]
    assert different == []
    for name in (
        "federation.json",
        "quarantine.jsonl",
        "report.md",
        "label_distribution.png",
        "clients/client_0/metadata.csv",
        "clients/client_0/SHA256SUMS",
    ):
        assert name in first


def test_one_worker_and_two_workers_give_byte_identical_outputs(outputs: dict) -> None:
    first, pooled = _all_files(outputs["a"]), _all_files(outputs["two_workers"])
    assert first.keys() == pooled.keys()
    assert [name for name in first if first[name] != pooled[name]] == []


def test_another_secret_changes_pseudonyms_but_not_the_partition(outputs: dict) -> None:
    a, b = outputs["a"], outputs["other_secret"]
    fa, fb = (json.loads((o / "federation.json").read_text()) for o in (a, b))
    assert fa["pseudonyms"]["secret_fingerprint"] != fb["pseudonyms"]["secret_fingerprint"]
    for name in fa["clients"]:
        for key in ("num_samples", "split_counts", "label_counts", "num_groups"):
            assert fa["clients"][name][key] == fb["clients"][name][key]
    assert _placement(outputs, "a") == _placement(outputs, "other_secret", OTHER_SECRET)
    ids_a = {row.sample_id for rows in read_outputs(a).values() for row in rows}
    ids_b = {row.sample_id for rows in read_outputs(b).values() for row in rows}
    assert len(ids_a) == len(ids_b) == outputs["_dataset_rows"]
    assert ids_a.isdisjoint(ids_b)
    groups_a = {row.group_id for rows in read_outputs(a).values() for row in rows}
    groups_b = {row.group_id for rows in read_outputs(b).values() for row in rows}
    assert groups_a.isdisjoint(groups_b)


def test_another_seed_changes_the_partition(outputs: dict) -> None:
    a, b = outputs["a"], outputs["other_seed"]
    assert _placement(outputs, "a").keys() == _placement(outputs, "other_seed").keys()
    assert _placement(outputs, "a") != _placement(outputs, "other_seed")

    # Same secret: the same image keeps its pseudonym wherever it lands.
    def ids(out: Path) -> dict[str, str]:
        return {row.source_hmac: row.sample_id for rows in read_outputs(out).values() for row in rows}

    assert ids(a) == ids(b)
    assert json.loads((b / "federation.json").read_text())["partition"]["seed"] == 8
