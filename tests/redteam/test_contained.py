"""Red team, force-approved, at sites whose sandbox is on: the review is out of the picture (issue 10).

Every attempt here is approved with ``fedimg review approve --force`` and runs in a sandbox worker. Each must do
no harm: no file outside its inputs read or written, no socket, no process, no state in a later job, no run past
its limits, the site answering other users throughout, and an audit entry naming the researcher for each. Cheap
attempts are batched into one call (``payloads.rt_contained_escapes``) that raises with a summary of what each
got; the summary reaches the site's log, and each assertion below reads its line. See tests/redteam/README.md.

The red team's first run found four attempts that did harm (the worker changed the site's limits through
``prlimit64``, made the state dir's credentials world-readable with ``chmod``, kept a root site's capabilities, and
left a thread running between calls); the sandbox now stops each as a class (see tests/redteam/README.md).
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import secrets
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from datasite_setup.site.site_admin import is_answering
from tests.redteam import payloads
from tests.redteam.conftest import RedTeam, function_from_source, small_job, start_sites, submit_job
from tests.support.datasites import REPO

pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")

SANDBOX = "[sandbox]\nseconds_per_call = 15\nmemory_mb = 1024\nthreads = 1\n"
DP_POLICY = (
    SANDBOX + "[privacy]\nepsilon_per_job = 1.0\ndelta = 1e-5\nmax_grad_norm = 1.0\nbudget_epsilon = 5.0\n"
)
FAILED = r"the approved code failed at \S+; its error is in the owner's log"
X86 = platform.machine() == "x86_64"  # the capability probes use x86_64 system call numbers


@pytest.fixture(scope="module")
def sites(tmp_path_factory, sample_federation):
    running = start_sites(
        tmp_path_factory,
        sample_federation,
        [("contained", "client_0", SANDBOX), ("contained-dp", "client_1", DP_POLICY)],
    )
    yield running
    for site in running:
        site.stop()


@pytest.fixture(scope="module")
def site(sites):
    return sites[0]


@pytest.fixture(scope="module")
def eve(site) -> RedTeam:
    return RedTeam(site, email="eve@attacker.example")


@pytest.fixture(scope="module")
def bob(site) -> RedTeam:
    """Another researcher with a legitimate job at the same site (2 approved runs: train, then evaluate)."""
    team = RedTeam(site, email="bob@research.example")
    job = small_job(team.federation, "bystander", rounds=1)
    team.approve(submit_job(team, job))
    team.job = job  # type: ignore[attr-defined]
    team.job_name = job.site_function(team.federation).name  # type: ignore[attr-defined]
    return team


class Listener:
    """A server socket of the test (TCP on loopback, abstract or path Unix) recording every connection."""

    def __init__(self, family: int, address: Any) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.connections = 0
        self.received = b""
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                connection, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            with connection:
                connection.settimeout(2)
                try:
                    self.received += connection.recv(4096)
                except OSError:
                    pass

    def close(self) -> None:
        self.running = False
        self.thread.join(5)
        self.sock.close()


@pytest.fixture(scope="module")
def listeners(tmp_path_factory):
    folder = tmp_path_factory.mktemp("redteam-listen")
    made = {
        "tcp": Listener(socket.AF_INET, ("127.0.0.1", 0)),
        "abstract": Listener(socket.AF_UNIX, "\0fedimg-redteam-" + secrets.token_hex(4)),
        "unix": Listener(socket.AF_UNIX, str(folder / "listen.sock")),
    }
    yield made
    for listener in made.values():
        listener.close()


def researcher_key(team: RedTeam) -> str:
    return str(team.researcher.client.credentials.verify_key)


def site_children(site) -> set[int]:
    pid = site.process.pid
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(child) for child in (task / "children").read_text().split()}
    return found


def process_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return ""


def cpu_seconds(pids: set[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def failed_run(team: RedTeam, name: str, **inputs: object) -> dict:
    """Run ``name``: the code must fail in its worker; returns the audit's ``execution`` entry (errored)."""
    before = len(team.audit_records())
    with pytest.raises(Exception) as failure:
        output = team.run(name, **inputs)
        raise AssertionError(f"{name}: the site released {str(output)[:300]}")
    assert re.search(FAILED, str(failure.value)), str(failure.value)[:800]
    (entry,) = [
        r for r in team.audit_records()[before:] if r["event"] == "execution" and r.get("function") == name
    ]
    assert entry["errored"] is True and entry["researcher"] == researcher_key(team), entry
    return entry


# --------------------------------------------------------------------------------------------------------------
# The batch: files, network, processes, other processes, the machine, memory — one force-approved call.


@pytest.fixture(scope="module")
def escapes(site, eve, listeners):
    """Run ``rt_contained_escapes`` force-approved; returns each attempt's outcome and what the test saw."""
    marker = f"fedimg-redteam-{secrets.token_hex(4)}"
    credentials = site.state_dir / "admin-credentials.json"
    before = {
        "credentials_mode": stat.S_IMODE(credentials.stat().st_mode),
        "site_core": resource.prlimit(site.process.pid, resource.RLIMIT_CORE),
    }
    cohort = {
        "state_dir": str(site.state_dir),
        "repo": str(REPO),
        "tmp": "/tmp",
        "data": str(site.data),
        "marker": marker,
        "tcp_port": listeners["tcp"].sock.getsockname()[1],
        "site_port": site.port,
        "abstract": listeners["abstract"].sock.getsockname()[1:].decode(),
        "unix_path": listeners["unix"].sock.getsockname(),
    }
    eve.force_approve(eve.submit(payloads.rt_contained_escapes, limit=1))
    started = time.monotonic()
    entry = failed_run(eve, "rt_contained_escapes", rnd=0, cohort=cohort)
    seconds = time.monotonic() - started
    (line,) = [line for line in site.log_path.read_text().splitlines() if payloads.SUMMARY in line][-1:]
    outcomes = json.loads(line.split(payloads.SUMMARY, 1)[1].strip())
    time.sleep(0.5)  # a connection in flight would have arrived by now
    return {
        "outcomes": outcomes,
        "marker": marker,
        "entry": entry,
        "before": before,
        "seconds": seconds,
        "credentials": credentials,
    }


BLOCKED = [
    "read_etc_hostname",
    "read_credentials",
    "read_audit",
    "read_raw_data",
    "read_repo",
    "read_site_environ",
    "torch_os_open",
    "np_fromregex",
    "write_state",
    "write_tmp",
    "write_repo",
    "np_save",
    "np_tofile",
    "np_dump",
    "np_savez",
    "profiler_trace",
    "timeit_shell",
    "subprocess",
    "fork",
    "xpu_ctypes_system",
    "xpu_ctypes_socket",
    "tcp_listener",
    "tcp_site",
    "unix_abstract",
    "unix_path",
    "socketpair",
    "signal_site",
    "memory_bomb",
    "torch_memory_bomb",
]


@pytest.mark.parametrize("name", BLOCKED)
def test_the_sandbox_refuses(escapes, name) -> None:
    """Each attempt of the batch got an error from the sandbox (Landlock, seccomp, the address-space limit)."""
    assert escapes["outcomes"][name].startswith("blocked"), (name, escapes["outcomes"][name])


def test_the_batch_did_no_harm_that_the_test_can_see(escapes, site, listeners) -> None:
    marker = escapes["marker"]
    written = [
        path
        for folder in (site.state_dir, Path("/tmp"), REPO)
        for path in folder.iterdir()
        if path.name.startswith(marker)
    ]
    assert written == []
    for name, listener in listeners.items():
        assert (listener.connections, listener.received) == (0, b""), name
    assert site.process.poll() is None and is_answering(site.url)
    # the refusals cost no time: the whole batch (a worker spawn included) ran well within one call's limit
    assert escapes["seconds"] < 60, escapes["seconds"]
    assert escapes["entry"]["researcher"]


def test_the_worker_cannot_change_the_site_process_limits(escapes, site) -> None:
    assert escapes["outcomes"]["prlimit_site"].startswith("blocked"), escapes["outcomes"]["prlimit_site"]
    assert resource.prlimit(site.process.pid, resource.RLIMIT_CORE) == escapes["before"]["site_core"]


def test_the_worker_cannot_change_files_in_the_state_dir(escapes) -> None:
    assert escapes["outcomes"]["chmod_credentials"].startswith("blocked")
    assert stat.S_IMODE(escapes["credentials"].stat().st_mode) == escapes["before"]["credentials_mode"]


@pytest.mark.skipif(not X86, reason="the probes use x86_64 system call numbers")
@pytest.mark.skipif(os.geteuid() != 0, reason="the worker holds capabilities only when the site runs as root")
@pytest.mark.parametrize("probe", ["reboot_probe", "sethostname_probe"])
def test_the_worker_holds_no_capability(escapes, probe) -> None:
    assert escapes["outcomes"][probe].startswith("blocked"), escapes["outcomes"][probe]


# --------------------------------------------------------------------------------------------------------------
# State left behind: hooks, callbacks, renamed functions, a thread still running after the call.


@pytest.fixture(scope="module")
def left_state(site, eve):
    """Run ``rt_leave_state_behind`` force-approved (2 runs approved, 1 used: its worker stays for the job)."""
    eve.force_approve(eve.submit(payloads.rt_leave_state_behind, limit=2))
    before = len(eve.audit_records())
    try:
        eve.run("rt_leave_state_behind", rnd=0)
        outcome = "released"
    except Exception as exc:  # noqa: BLE001  (refused or failed: either is fine, the audit says which)
        outcome = str(exc)
    # the job's worker (its thread still there) is the site's stopped child; the warm spare that replaced it
    # starts meanwhile and is not the job's
    workers = {pid for pid in site_children(site) if process_state(pid) == "T"}
    start = cpu_seconds(workers)
    time.sleep(3)
    burnt = cpu_seconds(workers) - start
    entries = [r for r in eve.audit_records()[before:] if r.get("function") == "rt_leave_state_behind"]
    return {"outcome": outcome, "entries": entries, "cpu_after_the_call": burnt, "job_workers": workers}


def reference_result(team: RedTeam, weights: dict) -> dict:
    """The bystander's training call computed in this process on the same partition (one torch thread)."""
    import torch

    from datasite_setup.convert.client_data import load_client_partition

    partition = load_client_partition(team.site.data)
    train, val = partition.splits["train"], partition.splits["val"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return team.job.site_function(team.federation).function(  # type: ignore[attr-defined]
            train.images, train.labels, val.images, val.labels, weights, 0
        )
    finally:
        torch.set_num_threads(threads)


def test_no_state_reaches_another_researchers_later_job(left_state, eve, bob) -> None:
    assert left_state["entries"] and all(
        r["researcher"] == researcher_key(eve) for r in left_state["entries"]
    )
    weights = bob.job.initial_weights()
    released = bob.run(bob.job_name, weights=weights, rnd=0)
    expected = reference_result(bob, weights)
    assert released["val"]["loss"] == pytest.approx(expected["val"]["loss"], rel=1e-4)
    np.testing.assert_array_equal(released["val"]["confusion"], expected["val"]["confusion"])
    for name, value in expected["weights"].items():
        np.testing.assert_allclose(released["weights"][name], value, rtol=1e-4, atol=1e-5)
    bob.trained = released["weights"]


def test_a_thread_left_running_stops_with_the_call(left_state) -> None:
    assert len(left_state["job_workers"]) == 1, left_state  # the job's worker, stopped between its calls
    assert left_state["cpu_after_the_call"] < 0.1, left_state["cpu_after_the_call"]


# --------------------------------------------------------------------------------------------------------------
# Limits: a forward that never returns, while another researcher uses the site.


def test_an_infinite_loop_in_forward_is_stopped_while_the_site_serves_others(
    site, eve, bob, tmp_path
) -> None:
    from researcher.job import FedAvgJob

    spec = eve.federation.image_spec
    model = function_from_source("import torch.nn as nn\n\n\n" + payloads.LOOP_MODEL, "Spinner", tmp_path)
    job = FedAvgJob(
        model,  # type: ignore[arg-type]
        name="spinner",
        model_kwargs=dict(channels=spec["channels"], image_size=spec["size"], num_classes=10),
        rounds=1,
        local_epochs=1,
        batch_size=64,
        lr=0.05,
        min_sites=1,
        seed=0,
    )
    # the loop passes every review check (the model is the researcher's part of the template): --force is moot
    eve.force_approve(submit_job(eve, job), checks_fail=False)
    name = job.site_function(eve.federation).name
    stopped: dict = {}

    def attack() -> None:
        started = time.monotonic()
        try:
            stopped["entry"] = eve.refused(
                name, r"ran past this site.s limit of 15 s", weights=job.initial_weights(), rnd=0
            )
        except BaseException as exc:  # reported below, in the test's thread
            stopped["error"] = exc
        stopped["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=attack)
    thread.start()
    time.sleep(4)  # the attack's worker is spinning by now
    assert thread.is_alive(), stopped
    assert is_answering(site.url, timeout=5)
    served = time.monotonic()
    final = bob.run(bob.job_name, weights=getattr(bob, "trained", bob.job.initial_weights()), rnd=1)
    served = time.monotonic() - served
    assert final["val"]["num_samples"] > 0 and "weights" not in final
    thread.join(120)
    assert "error" not in stopped, stopped.get("error")
    assert stopped["entry"]["researcher"] == researcher_key(eve)
    assert stopped["seconds"] < 60
    assert served < stopped["seconds"], (served, stopped["seconds"])  # bob did not wait for the loop to end


# --------------------------------------------------------------------------------------------------------------
# The attempts the non-forced suite only denies, now run.


def test_a_parameter_named_context_gets_nothing_of_the_server(eve) -> None:
    eve.force_approve(eve.submit(payloads.rt_context_parameter))
    before = len(eve.audit_records())
    with pytest.raises(Exception) as stopped:
        output = eve.run("rt_context_parameter", rnd=0)
        raise AssertionError(f"released {str(output)[:300]}")
    assert "server" not in str(stopped.value).lower() or "refused" in str(stopped.value)
    entries = [r for r in eve.audit_records()[before:] if r.get("function") == "rt_context_parameter"]
    assert entries and entries[-1]["researcher"] == researcher_key(eve), entries


def test_images_in_right_shaped_weights_are_released_when_force_approved(eve, bob) -> None:
    """The known limit (README attempt 9): the sandbox has no say on what an output means; only review does."""
    from tests.redteam.test_exfiltration import rt_images_in_right_shaped_weights

    weights = bob.job.initial_weights()
    eve.force_approve(eve.submit(rt_images_in_right_shaped_weights))
    released = eve.run("rt_images_in_right_shaped_weights", weights=weights, rnd=0)
    first = next(iter(weights))
    assert np.asarray(released["weights"][first]).std() > 0  # pixels, not the weights sent
    assert [
        r for r in eve.audit_records() if r["event"] == "release" and r["researcher"] == researcher_key(eve)
    ]


# --------------------------------------------------------------------------------------------------------------
# A DP-SGD site: only the template runs, so the attack is a model inside it.


def test_a_model_at_a_dp_sgd_site_sends_writes_and_switches_off_nothing(sites, listeners, tmp_path) -> None:
    from researcher.job import FedAvgJob

    dp_site = sites[1]
    team = RedTeam(dp_site, email="mallory@attacker.example")
    target = dp_site.state_dir / f"fedimg-redteam-{secrets.token_hex(4)}"
    source = payloads.LEAKY_MODEL.format(port=listeners["tcp"].sock.getsockname()[1], target=str(target))
    spec = team.federation.image_spec
    model = function_from_source(
        "import numpy as np\nimport torch.nn as nn\n\n\n" + source, "Leaky", tmp_path
    )
    job = FedAvgJob(
        model,  # type: ignore[arg-type]
        name="leaky",
        model_kwargs=dict(channels=spec["channels"], image_size=spec["size"], num_classes=10),
        rounds=1,
        local_epochs=1,
        batch_size=64,
        lr=0.05,
        min_sites=1,
        seed=0,
    )
    team.force_approve(submit_job(team, job))
    connections = listeners["tcp"].connections
    weights = job.initial_weights()
    released = team.run(job.site_function(team.federation).name, weights=weights, rnd=0)
    # the job ran (its model swallowed its own errors) and was released under DP-SGD; nothing else happened
    assert released["privacy"]["mechanism"] == "dp-sgd" and released["privacy"]["noise_multiplier"] > 0
    time.sleep(0.5)
    assert listeners["tcp"].connections == connections and not target.exists()
    assert [
        r for r in team.audit_records() if r["event"] == "release" and r["researcher"] == researcher_key(team)
    ]
    assert team.verify_audit() == []


def test_the_audit_logs_are_intact(sites) -> None:
    for running in sites:
        from policies.audit import verify_audit_log
        from policies.enforcement import AUDIT_FILE

        assert verify_audit_log(running.state_dir / AUDIT_FILE) == []
