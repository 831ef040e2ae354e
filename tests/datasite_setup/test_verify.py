"""``fedimg verify``: a fresh output verifies clean; every kind of tampering is found and named."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pytest

from datasite_setup.convert.federated_format import (
    canonical_json,
    checksums_file,
    client_summary,
    metadata_csv,
    read_metadata_csv,
    sha256_file,
)
from datasite_setup.convert.pipeline import convert
from datasite_setup.convert.verify import KINDS, Problem, verify_federation
from datasite_setup.errors import FedimgError
from tests.datasite_setup.test_convert import SECRET, csv_options, make_csv_dataset, run_cli


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A converted output (2 clients, patients of 1-4 images), written once; tests tamper with copies."""
    base = tmp_path_factory.mktemp("verify")
    dataset = make_csv_dataset(base / "src", patients=18)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FEDIMG_SECRET", SECRET)
        convert(csv_options(dataset, base / "out", "iid", num_clients=2))
    return base / "out"


@pytest.fixture
def out(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(pristine, copy)
    return copy


def rows_of(out: Path, client: str) -> list:
    return read_metadata_csv((out / "clients" / client / "metadata.csv").read_bytes())


def first_image(out: Path, client: str = "client_0") -> str:
    return f"clients/{client}/{rows_of(out, client)[0].file_name}"


def kinds_by_path(problems: list[Problem]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for problem in problems:
        assert problem.kind in KINDS
        assert problem.message
        found[problem.path].add(problem.kind)
    return dict(found)


def rewrite_client(out: Path, client: str, rows: list) -> None:
    """Rewrite a client's metadata.csv, SHA256SUMS and its federation.json entry consistently (a careful forger)."""
    client_dir = out / "clients" / client
    federation = json.loads((out / "federation.json").read_text())
    metadata = metadata_csv(rows)
    sums = checksums_file({row.file_name: sha256_file(client_dir / row.file_name) for row in rows})
    (client_dir / "metadata.csv").write_bytes(metadata)
    (client_dir / "SHA256SUMS").write_bytes(sums)
    labels = sorted(federation["label_map"], key=federation["label_map"].get)
    federation["clients"][client] = client_summary(rows, labels, metadata, sums)
    federation["totals"]["num_samples"] = sum(c["num_samples"] for c in federation["clients"].values())
    (out / "federation.json").write_bytes(canonical_json(federation))


def edit_federation(out: Path, edit) -> None:
    federation = json.loads((out / "federation.json").read_text())
    edit(federation)
    (out / "federation.json").write_bytes(canonical_json(federation))


# --- clean --------------------------------------------------------------------------------


def test_a_fresh_output_verifies_clean(pristine: Path) -> None:
    assert verify_federation(pristine) == []
    code, stdout, err = run_cli(["verify", pristine, "--quiet"])
    assert code == 0, err
    assert "OK" in stdout and str(pristine) in stdout


def test_the_fixture_has_a_group_with_several_images_in_each_client(pristine: Path) -> None:
    # The leak tests below need a multi-image group; fail loudly if the data stops providing one.
    for client in ("client_0", "client_1"):
        counts = defaultdict(int)
        for row in rows_of(pristine, client):
            counts[row.group_id] += 1
        assert max(counts.values()) >= 2


def test_checksums_are_sha256sum_compatible(pristine: Path) -> None:
    import subprocess

    result = subprocess.run(
        ["sha256sum", "--check", "--quiet", "SHA256SUMS"],
        cwd=pristine / "clients" / "client_0",
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- files: missing, extra, altered -------------------------------------------------------


def test_a_deleted_image_is_missing(out: Path) -> None:
    image = first_image(out)
    (out / image).unlink()
    assert kinds_by_path(verify_federation(out)) == {image: {"missing"}}
    code, _, err = run_cli(["verify", out, "--quiet"])
    assert code == 1
    assert f"missing {image}" in err and "1 problem(s)" in err


@pytest.mark.parametrize(
    "stray",
    ["notes.txt", ".DS_Store", "clients/client_0/images/benign/extra.png", "clients/client_1/cache.db"],
)
def test_a_stray_file_is_extra(out: Path, stray: str) -> None:
    (out / stray).parent.mkdir(parents=True, exist_ok=True)
    (out / stray).write_bytes(b"stray")
    assert kinds_by_path(verify_federation(out)) == {stray: {"extra"}}
    code, _, err = run_cli(["verify", out, "--quiet"])
    assert code == 1 and stray in err


def test_an_unknown_client_folder_is_extra(out: Path) -> None:
    (out / "clients" / "ghost").mkdir()
    assert kinds_by_path(verify_federation(out)) == {"clients/ghost": {"extra"}}


def test_altered_image_bytes_are_found(out: Path) -> None:
    image = first_image(out)
    data = bytearray((out / image).read_bytes())
    data[-20] ^= 0xFF
    (out / image).write_bytes(bytes(data))
    assert kinds_by_path(verify_federation(out)) == {image: {"altered"}}
    code, _, err = run_cli(["verify", out, "--quiet"])
    assert code == 1 and f"altered {image}" in err


def test_two_swapped_images_are_both_altered(out: Path) -> None:
    rows = rows_of(out, "client_0")
    a, b = (
        (out / "clients" / "client_0" / rows[0].file_name),
        (out / "clients" / "client_0" / rows[1].file_name),
    )
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    found = kinds_by_path(verify_federation(out))
    assert found == {
        f"clients/client_0/{rows[0].file_name}": {"altered"},
        f"clients/client_0/{rows[1].file_name}": {"altered"},
    }


def test_an_edited_metadata_csv_is_altered(out: Path) -> None:
    path = out / "clients" / "client_1" / "metadata.csv"
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    lines[1] = (
        lines[1].replace(",train,", ",val,")
        if ",train," in lines[1]
        else lines[1].replace(",val,", ",train,")
    )
    path.write_text("".join(lines))
    found = kinds_by_path(verify_federation(out))
    assert "altered" in found["clients/client_1/metadata.csv"]
    code, _, err = run_cli(["verify", out, "--quiet"])
    assert code == 1 and "altered clients/client_1/metadata.csv" in err


def test_an_edited_sha256sums_is_altered(out: Path) -> None:
    path = out / "clients" / "client_0" / "SHA256SUMS"
    path.write_bytes(path.read_bytes() + b"0" * 64 + b"  images/benign/new.png\n")
    found = kinds_by_path(verify_federation(out))
    assert "altered" in found["clients/client_0/SHA256SUMS"]
    assert "missing" in found["clients/client_0/images/benign/new.png"]


def test_an_edited_quarantine_is_altered(out: Path) -> None:
    (out / "quarantine.jsonl").write_text('{"message": "x", "path": "a.png", "reason": "corrupt"}\n')
    assert kinds_by_path(verify_federation(out)) == {"quarantine.jsonl": {"altered"}}


def test_a_removed_client_directory_is_missing(out: Path) -> None:
    shutil.rmtree(out / "clients" / "client_1")
    found = kinds_by_path(verify_federation(out))
    assert found == {"clients/client_1/metadata.csv": {"missing"}, "clients/client_1/SHA256SUMS": {"missing"}}
    code, _, err = run_cli(["verify", out, "--quiet"])
    assert code == 1 and "clients/client_1" in err


@pytest.mark.parametrize("name", ["report.md", "label_distribution.png", "quarantine.jsonl"])
def test_a_deleted_top_level_file_is_missing(out: Path, name: str) -> None:
    (out / name).unlink()
    assert "missing" in kinds_by_path(verify_federation(out))[name]


# --- federation.json: counts and schema ---------------------------------------------------


def test_edited_client_sample_count_is_a_count_problem(out: Path) -> None:
    edit_federation(
        out,
        lambda f: f["clients"]["client_0"].update(num_samples=f["clients"]["client_0"]["num_samples"] + 1),
    )
    problems = verify_federation(out)
    assert problems and {p.kind for p in problems} <= {"count", "schema"}
    assert all(p.path == "federation.json" for p in problems)
    code, _, err = run_cli(["verify", out, "--quiet"])
    assert code == 1 and "federation.json" in err


def test_edited_total_is_a_count_problem(out: Path) -> None:
    edit_federation(out, lambda f: f["totals"].update(num_samples=1))
    assert kinds_by_path(verify_federation(out)) == {"federation.json": {"count"}}


def test_edited_label_counts_are_a_count_problem(out: Path) -> None:
    def move_one(federation: dict) -> None:
        counts = federation["clients"]["client_0"]["label_counts"]["train"]
        labels = sorted(counts)
        counts[labels[0]] += 1
        counts[labels[1]] -= 1

    edit_federation(out, move_one)
    assert kinds_by_path(verify_federation(out)) == {"clients/client_0/metadata.csv": {"count"}}


def test_edited_group_count_is_a_count_problem(out: Path) -> None:
    edit_federation(
        out, lambda f: f["clients"]["client_1"].update(num_groups=f["clients"]["client_1"]["num_groups"] + 1)
    )
    assert kinds_by_path(verify_federation(out)) == {"clients/client_1/metadata.csv": {"count"}}


@pytest.mark.parametrize(
    "edit",
    [
        lambda f: f.pop("label_map"),
        lambda f: f.update(schema_version=99),
        lambda f: f["clients"]["client_0"].pop("metadata_sha256"),
        lambda f: f.update(label_map={"benign": 0, "malignant": 0, "normal": 5}),
        lambda f: f.update(clients={}),
    ],
    ids=["no label_map", "future schema", "client without hash", "bad label_map", "no clients"],
)
def test_schema_problems_in_federation_json(out: Path, edit) -> None:
    edit_federation(out, edit)
    problems = verify_federation(out)
    assert problems and {p.kind for p in problems} == {"schema"}
    assert {p.path for p in problems} == {"federation.json"}


def test_edited_split_counts_are_a_count_problem(out: Path) -> None:
    def shift(federation: dict) -> None:
        counts = federation["clients"]["client_0"]["split_counts"]
        counts["train"] += 1
        counts["val"] -= 1

    edit_federation(out, shift)
    assert kinds_by_path(verify_federation(out)) == {"clients/client_0/metadata.csv": {"count"}}


@pytest.mark.parametrize(
    "edit",
    [
        lambda f: f["clients"].update(client_0=5),
        lambda f: f.update(totals=[1, 2]),
        lambda f: f["clients"]["client_0"].update(num_samples="12"),
        lambda f: f["clients"]["client_1"].update(label_counts=None),
        lambda f: f["clients"].update({"../escape": f["clients"].pop("client_1")}),
    ],
    ids=[
        "client not an object",
        "totals not an object",
        "count as text",
        "label_counts null",
        "client name with path",
    ],
)
def test_mistyped_federation_json_is_a_schema_problem_not_a_crash(out: Path, edit) -> None:
    edit_federation(out, edit)
    problems = verify_federation(out)
    assert problems and {(p.path, p.kind) for p in problems} == {("federation.json", "schema")}
    code, _, err = run_cli(["verify", out, "--quiet"])
    assert code == 1 and "schema federation.json" in err and "Traceback" not in err


def _forge_metadata(out: Path, client: str, data: bytes) -> None:
    """Replace a client's metadata.csv and record its hash, so only its content is wrong."""
    import hashlib

    (out / "clients" / client / "metadata.csv").write_bytes(data)
    edit_federation(
        out, lambda f: f["clients"][client].update(metadata_sha256=hashlib.sha256(data).hexdigest())
    )


@pytest.mark.parametrize(
    "mangle",
    [
        lambda data: data.replace(b"file_name,", b"filename,", 1),
        lambda data: data + b"a,b,c\n",
        lambda data: data[:-40] + b"\xff\xfe\n",
    ],
    ids=["wrong header", "short row", "not utf-8"],
)
def test_a_malformed_metadata_csv_is_a_schema_problem_of_that_file(out: Path, mangle) -> None:
    path = out / "clients" / "client_0" / "metadata.csv"
    _forge_metadata(out, "client_0", mangle(path.read_bytes()))
    assert kinds_by_path(verify_federation(out)) == {"clients/client_0/metadata.csv": {"schema"}}


def test_a_malformed_sha256sums_is_a_schema_problem_of_that_file(out: Path) -> None:
    import hashlib

    data = b"not a checksum line\n"
    (out / "clients" / "client_1" / "SHA256SUMS").write_bytes(data)
    edit_federation(
        out, lambda f: f["clients"]["client_1"].update(checksums_sha256=hashlib.sha256(data).hexdigest())
    )
    found = kinds_by_path(verify_federation(out))
    assert found.pop("clients/client_1/SHA256SUMS") == {"schema"}
    # With no usable listing, the client's images are unaccounted for.
    assert found and all(
        path.startswith("clients/client_1/images/") and kinds == {"extra"} for path, kinds in found.items()
    )


def test_a_metadata_row_with_a_bad_label_or_pseudonym_is_a_schema_problem(out: Path) -> None:
    rows = rows_of(out, "client_0")
    rows[0] = replace(rows[0], sample_id="SMITH_JOHN")
    _forge_metadata(out, "client_0", metadata_csv(rows))
    found = kinds_by_path(verify_federation(out))
    assert "schema" in found["clients/client_0/metadata.csv"]


def test_a_metadata_csv_with_a_wrong_header_is_a_schema_problem(out: Path) -> None:
    rows = rows_of(out, "client_0")
    rewrite_client(out, "client_0", rows)  # consistent hashes first, then break the header
    path = out / "clients" / "client_0" / "metadata.csv"
    data = path.read_bytes().replace(b"file_name,", b"filename,", 1)
    path.write_bytes(data)
    edit_federation(
        out,
        lambda f: f["clients"]["client_0"].update(
            metadata_sha256=__import__("hashlib").sha256(data).hexdigest()
        ),
    )
    assert kinds_by_path(verify_federation(out)) == {"clients/client_0/metadata.csv": {"schema"}}


def test_corrupt_federation_json_exits_2(out: Path) -> None:
    (out / "federation.json").write_text('{"format": "fedimg-federated", "clients": ')
    with pytest.raises(FedimgError, match="federation.json"):
        verify_federation(out)
    code, _, err = run_cli(["verify", out, "--quiet"])
    assert code == 2 and "federation.json" in err and "JSON" in err


def test_a_folder_that_is_no_federation_exits_2(tmp_path: Path) -> None:
    code, _, err = run_cli(["verify", tmp_path, "--quiet"])
    assert code == 2 and "federation.json" in err and "not found" in err


def test_a_json_that_is_not_a_manifest_exits_2(out: Path) -> None:
    (out / "federation.json").write_text('{"hello": "world"}')
    code, _, err = run_cli(["verify", out, "--quiet"])
    assert code == 2 and "fedimg-federated" in err


# --- leaks: consistent forgeries that break patient safety --------------------------------


def _multi_image_group(rows: list) -> str:
    counts = defaultdict(int)
    for row in rows:
        counts[row.group_id] += 1
    return next(group for group, n in sorted(counts.items()) if n >= 2)


def test_a_group_split_across_train_and_val_is_a_leak(out: Path) -> None:
    rows = rows_of(out, "client_0")
    group = _multi_image_group(rows)
    index = next(i for i, row in enumerate(rows) if row.group_id == group)
    rows[index] = replace(rows[index], split="val" if rows[index].split == "train" else "train")
    rewrite_client(out, "client_0", rows)
    problems = verify_federation(out)
    assert kinds_by_path(problems) == {"clients/client_0/metadata.csv": {"leak"}}
    assert any(group in p.message for p in problems)
    code, _, err = run_cli(["verify", out, "--quiet"])
    assert code == 1 and "leak clients/client_0/metadata.csv" in err


def test_a_group_moved_into_the_other_split_whole_is_no_leak(out: Path) -> None:
    # Moving a whole group keeps it patient-safe: with hashes and counts rewritten, verify is satisfied.
    rows = rows_of(out, "client_0")
    group = _multi_image_group(rows)
    rows = [
        replace(row, split="val" if row.split == "train" else "train") if row.group_id == group else row
        for row in rows
    ]
    rewrite_client(out, "client_0", rows)
    assert verify_federation(out) == []


def test_a_group_spanning_two_clients_is_a_leak(out: Path) -> None:
    source_rows, target_rows = rows_of(out, "client_0"), rows_of(out, "client_1")
    group = _multi_image_group(source_rows)
    moving = next(row for row in source_rows if row.group_id == group)
    target = out / "clients" / "client_1" / moving.file_name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(out / "clients" / "client_0" / moving.file_name, target)
    rewrite_client(out, "client_0", [row for row in source_rows if row is not moving])
    rewrite_client(out, "client_1", target_rows + [moving])
    problems = verify_federation(out)
    assert {p.kind for p in problems} == {"leak"}
    assert any("also in client" in p.message and group in p.message for p in problems)
