"""Contained execution at real sites over HTTP: approved calls run in sandbox workers (issue 10).

One site with the sandbox on (the default policy, short limits), one with ``[sandbox] mode = "off"``.
Each test is a real code request, a real ``fedimg review`` decision and real calls.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from datasite_setup.site.asset_maps import load_asset_index, verify_asset_maps
from policies import POLICY_FILE
from tests.redteam.conftest import RedTeam, function_from_source, small_job, start_sites, submit_job
from tests.support.datasites import REPO, RunningSite, free_port, sample_federation  # noqa: F401
from tests.support.docker_seccomp import LANDLOCK_SYSCALLS

CONTAINED_POLICY = "[sandbox]\nseconds_per_call = 20\nmemory_mb = 1024\nthreads = 1\n"
UNCONFINED_POLICY = '[sandbox]\nmode = "off"\n'


@pytest.fixture(scope="module")
def sites(tmp_path_factory, sample_federation):  # noqa: F811
    running = start_sites(
        tmp_path_factory,
        sample_federation,
        [("contained", "client_0", CONTAINED_POLICY), ("unconfined", "client_1", UNCONFINED_POLICY)],
    )
    yield {site.name: site for site in running}
    for site in running:
        site.stop()


@pytest.fixture(scope="module")
def contained(sites):
    return RedTeam(sites["client_0"], email="carol@research.example")


@pytest.fixture(scope="module")
def unconfined(sites):
    return RedTeam(sites["client_1"], email="dave@research.example")


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        found |= {int(child) for child in children}
    return found


def test_a_fedavg_job_runs_in_a_sandbox_worker_reading_the_asset_maps(contained) -> None:
    site = contained.site
    log = site.log_path.read_text()
    assert re.search(r"sandbox on \(Landlock ABI \d+, seccomp refusing \d+ system calls", log), log[-2000:]
    index = load_asset_index(site.state_dir)
    assert {entry.asset for entry in index.values()} >= {
        "train_images",
        "train_labels",
        "val_images",
        "val_labels",
    }
    assert verify_asset_maps(site.state_dir) == []

    job = small_job(contained.federation, "contained_job", rounds=1)
    request = submit_job(contained, job)
    contained.approve(request)
    name = job.site_function(contained.federation).name
    weights = job.initial_weights()
    trained = contained.run(name, weights=weights, rnd=0)
    assert set(trained["weights"]) == set(weights)
    assert any(not np.array_equal(trained["weights"][k], weights[k]) for k in weights)
    assert trained["num_samples"] == len(np.load(index_entry(index, "train_labels").private))
    assert 0.0 <= trained["val"]["accuracy"] <= 1.0
    final = contained.run(name, weights=trained["weights"], rnd=1)
    assert "weights" not in final and final["val"]["num_samples"] > 0
    releases = [r for r in contained.audit_records() if r["event"] == "release" and r.get("function") == name]
    assert [r["run"] for r in releases] == [1, 2]
    assert contained.verify_audit() == []


def index_entry(index, asset):
    (entry,) = [entry for entry in index.values() if entry.asset == asset]
    return entry


def test_a_call_past_its_time_limit_is_stopped_refused_and_audited(contained, tmp_path) -> None:
    source = "def spin_forever(train_labels, weights, rnd):\n    while True:\n        pass\n"
    function = function_from_source(source, "spin_forever", tmp_path)
    request = contained.submit(function, limit=1)
    contained.force_approve(request)
    started = time.monotonic()
    entry = contained.refused("spin_forever", r"ran past this site.s limit of 20 s", rnd=0)
    assert time.monotonic() - started < 120
    assert entry["researcher"]
    # the site goes on answering, and no worker of the stopped call is left
    assert contained.site.process.poll() is None
    time.sleep(1)
    workers = _children(contained.site.process.pid)
    assert len(workers) <= 2, workers  # the warm spare (and at most one job worker of another test)


def test_an_unconfined_site_says_so_in_its_log_and_in_every_review_answer(unconfined) -> None:
    log = unconfined.site.log_path.read_text()
    assert "sandbox OFF: approved code runs UNCONFINED" in log
    code, printed = unconfined.fedimg_review("list")
    assert code == 0 and "approved code runs UNCONFINED" in printed, printed
    job = small_job(unconfined.federation, "unconfined_job", rounds=1)
    request = submit_job(unconfined, job)
    code, printed = unconfined.fedimg_review("approve", request)
    assert code == 0 and "UNCONFINED" in printed, printed
    name = job.site_function(unconfined.federation).name
    assert "weights" in unconfined.run(name, weights=job.initial_weights(), rnd=0)
    assert re.search(rf"runs {name} .*UNCONFINED", unconfined.site.log_path.read_text())


def test_a_site_whose_state_dir_workers_could_read_does_not_start(sample_federation) -> None:  # noqa: F811
    state_dir = Path(sys.prefix) / "fedimg-test-state-dir"  # the interpreter's tree: workers read it
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "datasite_setup.cli",
                "datasite",
                "serve",
                "--name",
                "client_0",
                "--data",
                str(sample_federation / "clients" / "client_0"),
                "--port",
                str(free_port()),
                "--state-dir",
                str(state_dir),
                "--quiet",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        subprocess.run(["rm", "-rf", str(state_dir)], check=False)
    assert done.returncode != 0
    assert "the sandbox cannot protect this site" in done.stderr and "move the state dir" in done.stderr


@dataclass
class ProfiledSite(RunningSite):
    """A site started under compose/seccomp.json (as in the compose image), optionally without some calls."""

    without_calls: tuple[str, ...] = ()

    def command(self) -> list[str]:
        wrapper = (
            "import os, sys\n"
            "from tests.support.docker_seccomp import install, load_profile, without\n"
            f"install(without(load_profile(), {list(self.without_calls)!r}))\n"
            "os.execv(sys.executable, sys.argv[1:])\n"
        )
        return [sys.executable, "-c", wrapper, *super().command()]


@pytest.fixture(scope="module")
def profiled_sites(tmp_path_factory, sample_federation):  # noqa: F811
    sites = []
    try:
        for label, client, calls in (
            ("compose-profile", "client_0", ()),
            ("old-docker-profile", "client_1", LANDLOCK_SYSCALLS),
        ):
            state_dir = tmp_path_factory.mktemp(label) / "state"
            state_dir.mkdir(mode=0o700)
            (state_dir / POLICY_FILE).write_text(CONTAINED_POLICY)
            site = ProfiledSite(client, sample_federation / "clients" / client, state_dir, free_port())
            site.without_calls = calls
            sites.append(site.start(wait=False))
        for site in sites:
            site.wait_until_answering()
        yield sites
    finally:
        for site in sites:
            site.stop()


def test_a_site_under_the_compose_seccomp_profile_runs_a_job_in_its_sandbox(profiled_sites) -> None:
    site = profiled_sites[0]
    assert re.search(r"sandbox on \(Landlock ABI \d+", site.log_path.read_text())
    team = RedTeam(site, email="erin@research.example")
    job = small_job(team.federation, "profiled_job", rounds=1)
    team.approve(submit_job(team, job))
    name = job.site_function(team.federation).name
    assert "weights" in team.run(name, weights=job.initial_weights(), rnd=0)


def test_a_site_that_cannot_confine_code_refuses_it_and_says_why(profiled_sites) -> None:
    site = profiled_sites[1]  # Docker's default profile before 20.10.18 refused the Landlock calls
    assert "sandbox UNAVAILABLE: this site refuses to run code" in site.log_path.read_text()
    team = RedTeam(site, email="frank@research.example")
    job = small_job(team.federation, "refused_job", rounds=1)
    team.approve(submit_job(team, job))
    name = job.site_function(team.federation).name
    entry = team.refused(
        name,
        r"this site runs no code: its sandbox could not be established",
        rnd=0,
        weights=job.initial_weights(),
    )
    assert "landlock" in entry["reason"].lower()
    counts = site.state_dir / "executions.json"
    assert not counts.exists() or name not in counts.read_text()  # a refused call is not counted
