"""The sandbox worker, attacked directly: each attempt runs as approved code would, with no review in front.

Real processes, the real kernel's Landlock and seccomp: nothing is mocked.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from datasite_setup.site.contained import device_for
from datasite_setup.site.sandbox.runner import (
    CallAborted,
    CodeFailed,
    SandboxUnavailable,
    WorkerPool,
    WorkerSettings,
)

ATTACKS = """
def job(train_images, attack, target=""):
    import numpy as np
    import torch
    if attack == "sum":
        return {"sum": float(np.asarray(train_images, dtype=np.float64).sum()), "w": torch.ones(3).numpy()}
    if attack == "read":
        return {"text": open(target).read()}
    if attack == "listdir":
        import os
        return {"names": os.listdir(target)}
    if attack == "write":
        open(target, "w").write("written by approved code")
        return {}
    if attack == "tcp":
        import socket
        host, port = target.split(":")
        socket.create_connection((host, int(port)), timeout=2)
        return {}
    if attack == "unix":
        import socket
        s = socket.socket(socket.AF_UNIX)
        return {}
    if attack == "shell":
        import numpy.ma.timer_comparison as t
        t.timeit.timeit("__import__('os').system('touch " + target + "')", number=1)
        return {"ran": True}
    if attack == "fork":
        import os
        return {"pid": os.fork()}
    if attack == "environ":
        import os
        return {"keys": sorted(os.environ)}
    if attack == "modify_input":
        train_images[0, 0, 0, 0] = 7
        return {}
    if attack == "loop":
        while True:
            pass
    if attack == "memory":
        return {"x": np.ones(2**34).sum()}
    if attack == "object":
        return {"x": object()}
    if attack == "pid":
        import os
        return {"pid": os.getpid()}
    if attack == "remember":
        import torch.nn.functional as F
        F.fedimg_left_behind = True
        return {}
    if attack == "recall":
        import torch.nn.functional as F
        return {"left": bool(getattr(F, "fedimg_left_behind", False))}
    if attack == "thread":
        import threading, time
        threading.Thread(target=lambda: time.sleep(3600), daemon=False).start()
        return {}
    raise ValueError(attack)
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("state")
    np.save(state / "train_images.npy", np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4))
    (state / "admin-credentials.json").write_text('{"password": "do not read me"}')
    return state


@pytest.fixture(scope="module")
def pool(site: Path):
    pool = WorkerPool(WorkerSettings(seconds_per_call=4, memory_mb=3072), forbidden=[site])
    yield pool
    pool.close()


def run(pool: WorkerPool, site: Path, attack: str, target: str = "", key: str = "job-1") -> object:
    worker = pool.worker_for(
        key, source=ATTACKS, function="job", assets={"train_images": site / "train_images.npy"}
    )
    return worker.call({"attack": attack, "target": target})


def refused(pool: WorkerPool, site: Path, attack: str, target: str = "") -> str:
    with pytest.raises((CodeFailed, CallAborted)) as caught:
        run(pool, site, attack, target)
    return str(caught.value)


def test_a_call_reads_its_input_through_the_map_and_returns_arrays(pool: WorkerPool, site: Path) -> None:
    result = run(pool, site, "sum")
    assert result["sum"] == float(np.arange(96).sum())
    assert result["w"].dtype == np.float32 and result["w"].tolist() == [1.0, 1.0, 1.0]


def test_no_file_of_the_site_can_be_read(pool: WorkerPool, site: Path) -> None:
    assert "Permission denied" in refused(pool, site, "read", str(site / "admin-credentials.json"))
    assert "Permission denied" in refused(pool, site, "read", str(site / "train_images.npy"))
    assert "Permission denied" in refused(pool, site, "read", "/etc/passwd")
    assert "Permission denied" in refused(pool, site, "listdir", str(site))
    assert "Permission denied" in refused(pool, site, "read", f"/proc/{os.getpid()}/environ")


def test_nothing_can_be_written_outside_its_own_folder(pool: WorkerPool, site: Path) -> None:
    target = site / "planted.txt"
    assert "Permission denied" in refused(pool, site, "write", str(target))
    assert not target.exists()
    # not even its own folder: a worker could fill the disk file by file
    assert "Permission denied" in refused(pool, site, "write", "inside.txt")


def test_no_socket_of_any_family(pool: WorkerPool, site: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        port = listener.getsockname()[1]
        assert "Operation not permitted" in refused(pool, site, "tcp", f"127.0.0.1:{port}")
        listener.settimeout(0.5)
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()
    assert "Operation not permitted" in refused(pool, site, "unix")


def test_no_program_and_no_process_can_be_started(pool: WorkerPool, site: Path, tmp_path: Path) -> None:
    marker = tmp_path / "shell-ran"
    run(pool, site, "shell", str(marker))  # timeit runs the string; os.system cannot fork
    assert not marker.exists()
    assert "Operation not permitted" in refused(pool, site, "fork")


def test_the_environment_is_empty(pool: WorkerPool, site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDIMG_SECRET", "the pseudonymisation key")
    # only what the worker's own interpreter sets: its locale coercion, and torch's cache path (set when the
    # warm-up imports torch._dynamo); nothing of the site's
    assert set(run(pool, site, "environ")["keys"]) <= {"LC_CTYPE", "TORCHINDUCTOR_CACHE_DIR"}


def test_inputs_are_read_only(pool: WorkerPool, site: Path) -> None:
    assert "read-only" in refused(pool, site, "modify_input")
    assert np.load(site / "train_images.npy")[0, 0, 0, 0] == 0


def test_only_numbers_and_json_values_come_back(pool: WorkerPool, site: Path) -> None:
    assert "cannot cross" in refused(pool, site, "object")


def test_a_memory_bomb_fails_inside_the_worker(pool: WorkerPool, site: Path) -> None:
    assert "MemoryError" in refused(pool, site, "memory")
    assert run(pool, site, "sum")["sum"] > 0  # the same worker still answers


def test_a_call_past_its_time_is_killed_and_the_next_call_gets_a_new_worker(
    pool: WorkerPool, site: Path
) -> None:
    before = run(pool, site, "pid")["pid"]
    started = time.monotonic()
    message = refused(pool, site, "loop")
    assert "limit of 4 s" in message and time.monotonic() - started < 30
    with pytest.raises(ProcessLookupError):
        os.kill(before, 0)
    assert run(pool, site, "pid")["pid"] != before


def test_nothing_survives_from_one_job_to_the_next(pool: WorkerPool, site: Path) -> None:
    first = run(pool, site, "pid", key="job-a")["pid"]
    run(pool, site, "remember", key="job-a")
    run(pool, site, "thread", key="job-a")
    assert run(pool, site, "recall", key="job-a")["left"] is True  # within a job, one process
    pool.end_job("job-a")
    with pytest.raises(ProcessLookupError):
        os.kill(first, 0)  # the thread it left running died with it
    assert run(pool, site, "recall", key="job-b")["left"] is False
    assert run(pool, site, "pid", key="job-b")["pid"] != first


def test_a_state_dir_beneath_a_readable_path_is_refused(tmp_path: Path) -> None:
    pool = WorkerPool(WorkerSettings(), forbidden=[tmp_path / "venv" / "state"])
    with pytest.raises(SandboxUnavailable, match="move the state dir"):
        pool.check_readable_paths([tmp_path / "venv"])


def test_without_the_required_landlock_the_worker_refuses_the_job(site: Path) -> None:
    pool = WorkerPool(WorkerSettings(require_landlock_abi=99), forbidden=[site])
    try:
        with pytest.raises(SandboxUnavailable, match="landlock ABI .* below the required 99"):
            run(pool, site, "sum")
    finally:
        pool.close()


UNPRIVILEGED = """
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER: from here on no capability over anything outside
    print(json.dumps({"skip": os.strerror(ctypes.get_errno())}))
    sys.exit(0)
from pathlib import Path
from datasite_setup.site.sandbox.runner import CodeFailed, WorkerPool, WorkerSettings
state = Path(sys.argv[1])
source = sys.argv[2]
pool = WorkerPool(WorkerSettings(seconds_per_call=30, memory_mb=3072), forbidden=[state])
out = {"parent_uid": os.getuid()}
try:
    worker = pool.worker_for("j", source=source, function="job", assets={"train_images": state / "train_images.npy"})
    out["abi"] = worker.confinement["landlock_abi"]
    out["sum"] = worker.call({"attack": "sum", "target": ""})["sum"]
    for attack, target in (("read", str(state / "admin-credentials.json")), ("unix", ""), ("fork", "")):
        try:
            worker.call({"attack": attack, "target": target})
            out[attack] = "ALLOWED"
        except CodeFailed as exc:
            out[attack] = str(exc)
finally:
    pool.close()
print(json.dumps(out))
"""


def test_the_sandbox_holds_for_an_unprivileged_user(site: Path, tmp_path: Path) -> None:
    """As a site in a container runs: not root, no capability (a user namespace here), same confinement."""
    script = tmp_path / "unprivileged.py"
    script.write_text(UNPRIVILEGED)
    done = subprocess.run(
        [sys.executable, str(script), str(site), ATTACKS],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if "skip" in out:
        pytest.skip(f"no user namespace for an unprivileged test here: {out['skip']}")
    assert out["parent_uid"] != 0 and out["abi"] >= 1
    assert out["sum"] == float(np.arange(96).sum())
    assert "Permission denied" in out["read"]
    assert "Operation not permitted" in out["unix"] and "Operation not permitted" in out["fork"]


def test_a_device_file_is_opened_to_workers_only_when_the_site_allows_it(site: Path) -> None:
    """``device = "auto"`` hands a GPU's device files to the workers; without it they cannot write any device."""
    assert "Permission denied" in refused_in(site, WorkerSettings(), "write", "/dev/null")
    assert run_in(site, WorkerSettings(devices=("/dev/null",)), "write", "/dev/null") == {}
    assert device_for("cpu") == ("cpu", ())
    if not torch.cuda.is_available():  # this machine: no GPU, so "auto" trains on the CPU with no device file
        assert device_for("auto") == ("cpu", ())


def run_in(site: Path, settings: WorkerSettings, attack: str, target: str) -> object:
    pool = WorkerPool(settings, forbidden=[site])
    try:
        return run(pool, site, attack, target)
    finally:
        pool.close()


def refused_in(site: Path, settings: WorkerSettings, attack: str, target: str) -> str:
    with pytest.raises((CodeFailed, CallAborted)) as caught:
        run_in(site, settings, attack, target)
    return str(caught.value)
