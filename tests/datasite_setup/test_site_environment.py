"""Issue 11 finding 5 and part of 10: what a site started by ``fedimg up`` inherits, logs and reports.

One 2-site federation is started with ``fedimg up`` (the CLI, as an operator runs it) from
an environment holding the federation secret, a cloud key and another hospital's database
URL; the tests read the sites' ``/proc/<pid>/environ``, ``up``'s progress lines and, after
``fedimg down``, the sites' logs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from datasite_setup.site.federation_config import FederationConfig, SiteConfig, load_federation_config
from datasite_setup.site.federation_runner import log_path, output_path, read_run_file
from datasite_setup.site.site_environment import (
    DB_URL_ENV,
    LOG_FILE_ENV,
    PASSED_CREDENTIALS,
    is_allowed,
    site_environment,
)
from tests.support.datasites import REPO, free_port

SECRETS = {
    "FEDIMG_SECRET": "ab" * 32,
    "AWS_SECRET_ACCESS_KEY": "aws-secret-do-not-leak",
    "HOSPITAL_B_DB_URL": "postgresql://hospital_b:pg-secret-do-not-leak@db.example/hospital_b",
}


@dataclass
class Federation:
    config: FederationConfig
    up: subprocess.CompletedProcess
    pids: dict[str, int]


def fedimg(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "datasite_setup.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def operator_environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FEDIMG_ADMIN_")}
    return {**env, **SECRETS, "COLUMNS": "200"}


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory, sample_federation: Path) -> Iterator[Federation]:
    folder = tmp_path_factory.mktemp("operator")
    data = folder / "federated"
    shutil.copytree(sample_federation, data)
    lines = ["[federation]", f'data = "{data}"', 'state_root = "state"', ""]
    for name in ("client_0", "client_1"):
        lines += ["[[site]]", f'name = "{name}"', f"port = {free_port()}", ""]
    lines += ["[[researcher]]", 'email = "ada@university.example"']
    path = folder / "federation.toml"
    path.write_text("\n".join(lines) + "\n")
    config = load_federation_config(path)
    started = fedimg("up", str(path), env=operator_environment())
    try:
        yield Federation(config, started, read_run_file(config))
    finally:
        fedimg("down", str(path), env=operator_environment())


def process_tree(root: int) -> list[int]:
    """``root`` and every process descending from it (the sandbox workers run in their own session)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().split(")")[-1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, frontier = [root], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        tree += children
        frontier = children
    return tree


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(entry.split("=", 1) for entry in raw.decode().split("\0") if entry)


def test_sites_start_from_the_allowlist_only(federation: Federation) -> None:
    assert federation.up.returncode == 0, federation.up.stdout + federation.up.stderr
    assert federation.up.stdout.count("running") == 2 and "fedimg-client_1-" in federation.up.stdout
    assert set(federation.pids) == {"client_0", "client_1"}
    for name, pid in federation.pids.items():
        tree = process_tree(pid)
        assert len(tree) >= 2, f"{name}: no sandbox worker started ({tree})"  # the probe's spare worker
        site_env = environ(pid)
        assert site_env[LOG_FILE_ENV] == str(log_path(federation.config.site(name)))
        assert {key for key in site_env if not is_allowed(key)} == {LOG_FILE_ENV}, name
        for child in tree:
            raw = Path(f"/proc/{child}/environ").read_bytes()
            for variable, value in SECRETS.items():
                assert variable.encode() not in raw and value.encode() not in raw, (name, child, variable)
        for worker in tree[1:]:
            assert environ(worker) == {}, f"{name}: worker {worker} has an environment"


def test_up_reports_each_site_as_it_starts(federation: Federation) -> None:
    for name in federation.pids:
        lines = [line for line in federation.up.stderr.splitlines() if line.startswith(f"{name}: ")]
        phases = [line.split(": ", 1)[1].split()[0].rstrip(",") for line in lines]
        assert phases[0] == "starting" and phases[-1] == "answering", lines
        assert "ingesting" in phases, lines
        assert phases.index("ingesting") < phases.index("answering")
        assert re.fullmatch(rf"{name}: answering, \d+ s", lines[-1]), lines


def test_the_site_log_holds_no_false_alarm_and_a_normal_stop(federation: Federation) -> None:
    down = fedimg("down", str(federation.config.path), env=operator_environment())
    assert down.returncode == 0, down.stderr
    for site in federation.config.sites:
        log = log_path(site).read_text()
        assert oct(log_path(site).stat().st_mode & 0o777) == "0o600"
        assert " CRITICAL " not in log and "Hash of the signing key" not in log, log
        assert f"fedimg.site INFO datasite {site.name} serving http://" in log  # its prints, as records
        assert f"fedimg.site INFO datasite {site.name} stopped" in log, log
        assert "interrupted" not in log + output_path(site).read_text()


def site(name: str, db_url_env: str | None = None) -> SiteConfig:
    return SiteConfig(name, 8081, "127.0.0.1", Path("data"), Path("state"), db_url_env)


def test_the_database_url_comes_only_from_the_sites_own_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSPITAL_A_DB_URL", "postgresql://a:pw-a@db/a")
    monkeypatch.setenv("HOSPITAL_B_DB_URL", "postgresql://b:pw-b@db/b")
    monkeypatch.setenv(DB_URL_ENV, "postgresql://operator:pw-operator@db/x")
    env = site_environment(site("hospital_a", "HOSPITAL_A_DB_URL").db_url())
    assert env[DB_URL_ENV] == "postgresql://a:pw-a@db/a"
    assert "HOSPITAL_A_DB_URL" not in env and "HOSPITAL_B_DB_URL" not in env
    # a site without db_url_env gets no database URL at all, not the operator's FEDIMG_DB_URL
    assert DB_URL_ENV not in site_environment(site("hospital_b").db_url())


def test_only_the_allowlist_and_the_sites_admin_login_pass() -> None:
    operator = {
        "PATH": "/usr/bin",
        "HOME": "/home/op",
        "LC_CTYPE": "C.UTF-8",
        "TZ": "Europe/Berlin",
        "TMPDIR": "/big/tmp",
        "PYTHONPATH": "/elsewhere",
        "SERVER_PRIVATE_KEY": "k",
        "OMP_NUM_THREADS": "8",
        "PGPASSWORD": "pg",
        PASSED_CREDENTIALS[0]: "admin@hospital.example",
        PASSED_CREDENTIALS[1]: "admin-password",
        **SECRETS,
    }
    env = site_environment(None, source=operator)
    assert set(env) == {"PATH", "HOME", "LC_CTYPE", "TZ", "TMPDIR", *PASSED_CREDENTIALS}
