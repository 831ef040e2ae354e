"""The ``fedimg`` command line: help, sample, and the whole convert/verify/report flow in real processes."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from datasite_setup.convert.partition import SCHEMES
from tests.datasite_setup.test_convert import fedimg_command, run_cli, subprocess_env, write_png


def fedimg(*args, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*fedimg_command(), *map(str, args)],
        env=env or subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_fedimg_help_lists_the_commands() -> None:
    result = fedimg("--help")
    assert result.returncode == 0, result.stderr
    for command in ("convert", "verify", "report", "sample"):
        assert command in result.stdout


def test_fedimg_version() -> None:
    from datasite_setup import __version__

    result = fedimg("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"fedimg {__version__}"


def test_module_entry_point_works_too() -> None:
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "datasite_setup.cli", "--help"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "convert" in result.stdout


def test_convert_help_documents_every_contract_flag() -> None:
    result = fedimg("convert", "--help")
    assert result.returncode == 0, result.stderr
    flags = [
        "--labels",
        "--path-column",
        "--label-column",
        "--group-column",
        "--client-column",
        "--label-pattern",
        "--clients",
        "--client-names",
        "--scheme",
        "--alpha",
        "--min-partition-size",
        "--shards-per-client",
        "--self-balancing",
        "--size",
        "--mode",
        "--resize",
        "--max-pixels",
        "--val-fraction",
        "--seed",
        "--workers",
        "--overwrite",
        "--secret-file",
        "--quiet",
    ]
    for flag in flags:
        assert flag in result.stdout, flag
    for scheme in SCHEMES:
        assert scheme in result.stdout
    assert "SRC" in result.stdout and "OUT" in result.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["convert", "src", "out", "--clients", "2", "--scheme", "federated"],  # unknown scheme
        ["convert", "src", "out", "--clients", "2"],  # --scheme missing
        ["convert", "src", "out", "--clients", "two", "--scheme", "iid"],
        ["convert", "src", "out", "--clients", "2", "--scheme", "iid", "--mode", "CMYK"],
        ["sample", "mnist", "out"],
        ["teleport"],
        [],
    ],
)
def test_usage_errors_exit_2(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli([a if a not in ("src", "out") else tmp_path / a for a in argv])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip()
    assert not (tmp_path / "out").exists()


def test_sample_digits_as_class_folders(tmp_path: Path) -> None:
    code, stdout, err = run_cli(["sample", "digits", tmp_path / "digits"])
    assert code == 0, err
    folders = sorted(p.name for p in (tmp_path / "digits").iterdir())
    assert folders == [str(d) for d in range(10)]
    files = list((tmp_path / "digits").rglob("*.png"))
    assert len(files) == 1797
    assert "digits" in stdout


@pytest.fixture(scope="module")
def digits_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``fedimg sample digits --layout csv``, run once in a real process."""
    out = tmp_path_factory.mktemp("digits") / "digits"
    result = fedimg("sample", "digits", out, "--layout", "csv")
    assert result.returncode == 0, result.stderr
    assert "wrote the digits sample (csv)" in result.stdout
    return out


def test_sample_digits_as_csv_with_patients_and_sites(digits_csv: Path) -> None:
    with open(digits_csv / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1797
    assert set(rows[0]) == {"path", "label", "patient_id", "site"}
    assert {row["label"] for row in rows} == {str(d) for d in range(10)}
    assert {row["site"] for row in rows} == {"hospital_a", "hospital_b", "hospital_c"}
    assert all((digits_csv / row["path"]).is_file() for row in rows)
    assert 1 < len({row["patient_id"] for row in rows}) < len(rows)


def test_sample_digits_in_another_format(tmp_path: Path) -> None:
    code, _, err = run_cli(["sample", "digits", tmp_path / "digits", "--layout", "csv", "--format", "jpg"])
    assert code == 0, err
    assert len(list((tmp_path / "digits" / "images").glob("*.jpg"))) == 1797


def test_the_whole_flow_in_real_processes(digits_csv: Path, tmp_path: Path) -> None:
    src, out = tmp_path / "digits", tmp_path / "fed"
    shutil.copytree(digits_csv, src)
    convert_args = [
        "convert",
        src,
        out,
        "--labels",
        src / "labels.csv",
        "--group-column",
        "patient_id",
        "--client-names",
        "hospital_a,hospital_b,hospital_c",
        "--scheme",
        "dirichlet",
        "--alpha",
        "0.5",
        "--size",
        "8",
        "--mode",
        "L",
        "--seed",
        "7",
    ]

    # 0: converted cleanly, with a summary table.
    result = fedimg(*convert_args)
    assert result.returncode == 0, result.stderr
    assert "1797 images accepted" in result.stdout
    for name in ("hospital_a", "hospital_b", "hospital_c"):
        assert name in result.stdout
    federation = json.loads((out / "federation.json").read_text())
    assert federation["totals"] == {"num_samples": 1797, "num_clients": 3}

    result = fedimg("verify", out)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    result = fedimg("report", out)
    assert result.returncode == 0 and "hospital_b" in result.stdout

    # 2: the output exists and --overwrite was not given; nothing is touched.
    before = (out / "federation.json").read_bytes()
    result = fedimg(*convert_args)
    assert result.returncode == 2
    assert "--overwrite" in result.stderr and str(out) in result.stderr
    assert (out / "federation.json").read_bytes() == before

    # 1: verify finds a tampered image and names it.
    image = next((out / "clients" / "hospital_a" / "images").rglob("*.png"))
    image.write_bytes(image.read_bytes() + b"\0")
    result = fedimg("verify", out)
    assert result.returncode == 1
    assert image.relative_to(out).as_posix() in result.stderr and "altered" in result.stderr

    # 1: a bad input is quarantined, the rest converted (and --overwrite replaces the tampered output).
    (src / "images" / "scan_0000.png").write_bytes(b"not a png")
    result = fedimg(*convert_args, "--overwrite")
    assert result.returncode == 1, result.stderr
    assert "1 inputs rejected" in result.stderr and "quarantine.jsonl" in result.stderr
    entries = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert [(e["path"], e["reason"]) for e in entries] == [("images/scan_0000.png", "not_an_image")]
    assert fedimg("verify", out).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits", "fed"]

    # 2: a configuration error names the setting.
    result = fedimg(
        "convert",
        src,
        tmp_path / "other",
        "--labels",
        src / "labels.csv",
        "--clients",
        "3",
        "--scheme",
        "iid",
        "--alpha",
        "1",
    )
    assert result.returncode == 2 and "--alpha" in result.stderr
    assert not (tmp_path / "other").exists()


def test_secret_file_flag_is_used_and_a_loose_one_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(4):
        write_png(src / ("a" if i % 2 else "b") / f"{i}.png", seed=i)
    secret = tmp_path / "secret"
    secret.write_text("s" * 64 + "\n")
    secret.chmod(0o600)
    env = subprocess_env()
    del env["FEDIMG_SECRET"]
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    result = fedimg(
        "convert",
        src,
        tmp_path / "out",
        "--clients",
        "2",
        "--scheme",
        "iid",
        "--size",
        "8",
        "--secret-file",
        secret,
        "--quiet",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "config" / "fedimg").exists()  # the given file was used, no default secret created
    secret.chmod(0o644)
    result = fedimg(
        "convert",
        src,
        tmp_path / "out2",
        "--clients",
        "2",
        "--scheme",
        "iid",
        "--size",
        "8",
        "--secret-file",
        secret,
        "--quiet",
        env=env,
    )
    assert result.returncode == 2 and str(secret) in result.stderr and "chmod 600" in result.stderr
    assert not (tmp_path / "out2").exists()
