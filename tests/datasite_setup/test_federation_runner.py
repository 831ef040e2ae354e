"""``fedimg up`` / ``status`` / ``down`` on real background datasites (subprocesses over HTTP)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from datasite_setup.convert.federated_format import METADATA_FILE
from datasite_setup.site.federation_config import load_federation_config
from datasite_setup.site.federation_runner import read_run_file, threads_per_site
from tests.support.datasites import REPO, free_port


def fedimg(*args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FEDIMG_ADMIN_")}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "datasite_setup.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def write_config(folder: Path, data: Path, sites: list[str]) -> Path:
    lines = ["[federation]", f'data = "{data}"', 'state_root = "state"', ""]
    for name in sites:
        lines += ["[[site]]", f'name = "{name}"', f"port = {free_port()}", ""]
    lines += ["[[researcher]]", 'email = "ada@university.example"', 'name = "Ada Lovelace"']
    path = folder / "federation.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def federation_toml(tmp_path: Path, sample_federation: Path):
    data = tmp_path / "federated"
    shutil.copytree(sample_federation, data)
    path = write_config(tmp_path, data, ["client_0", "client_1"])
    yield path
    fedimg("down", str(path))


def test_up_status_down(federation_toml: Path) -> None:
    config = load_federation_config(federation_toml)
    unconfined = config.site("client_1").state_dir
    unconfined.mkdir(parents=True, mode=0o700)
    (unconfined / "policy.toml").write_text('[sandbox]\nmode = "off"\n')
    first = fedimg("up", str(federation_toml))
    assert first.returncode == 0, first.stdout + first.stderr
    for site in config.sites:
        assert site.name in first.stdout and site.url in first.stdout
    assert "running" in first.stdout and "fedimg-client_0-" in first.stdout
    pids = read_run_file(config)
    assert set(pids) == {"client_0", "client_1"}

    researcher_file = config.secrets_dir / "researchers" / "ada@university.example.json"
    assert oct(researcher_file.stat().st_mode & 0o777) == "0o600"
    credentials = json.loads(researcher_file.read_text())
    assert set(credentials["sites"]) == {"client_0", "client_1"}
    for site in config.sites:
        assert (
            credentials["sites"][site.name]["password"]
            not in site.state_dir.joinpath("datasite.log").read_text()
        )
    import syft as sy

    entry = credentials["sites"]["client_1"]
    researcher = sy.login(url=entry["url"], email="ada@university.example", password=entry["password"])
    assert [d.name for d in researcher.datasets][0].startswith("fedimg-client_1-")

    second = fedimg("up", str(federation_toml))
    assert second.returncode == 0
    assert "already running: nothing started" in second.stdout
    assert read_run_file(config) == pids

    status = fedimg("status", str(federation_toml))
    assert status.returncode == 0 and status.stdout.count("running") == 2
    # the sandbox column, and the owner's choice to run code unconfined said in every answer
    assert "OFF (unconfined)" in status.stdout and "client_1" in status.stderr
    assert "approved code runs UNCONFINED" in status.stderr
    # `up` divides the cores among its sites: their workers' torch threads
    threads = str(threads_per_site(2))
    for name, pid in pids.items():
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert arguments[arguments.index(b"--threads") + 1].decode() == threads, name
    log = config.site("client_0").state_dir.joinpath("datasite.log").read_text()
    assert f"{threads} torch thread(s) per worker" in log

    down = fedimg("down", str(federation_toml))
    assert down.returncode == 0
    for pid in pids.values():
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]
        )
    stopped = fedimg("status", str(federation_toml))
    assert stopped.returncode == 1 and stopped.stdout.count("stopped") == 2


def test_a_site_that_fails_is_named_with_its_log_and_the_others_keep_running(federation_toml: Path) -> None:
    config = load_federation_config(federation_toml)
    broken = config.site("client_1").data / METADATA_FILE
    broken.write_text(broken.read_text() + "tampered\n")
    result = fedimg("up", str(federation_toml))
    assert result.returncode == 1
    assert "failed" in result.stdout
    assert "client_1" in result.stderr and "sha256 differs" in result.stderr  # the tail of its log
    assert set(read_run_file(config)) == {"client_0"}
    status = fedimg("status", str(federation_toml))
    assert "running" in status.stdout and "stopped" in status.stdout


def test_config_errors_exit_2_before_starting_anything(tmp_path: Path) -> None:
    path = tmp_path / "federation.toml"
    path.write_text('[[site]]\nname = "a"\nport = 99999\ndata = "x"\n')
    result = fedimg("up", str(path))
    assert result.returncode == 2
    assert "port must be an integer from 1 to 65535" in result.stderr and str(path) in result.stderr
    assert not (tmp_path / "fedimg-state").exists()
