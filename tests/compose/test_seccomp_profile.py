"""compose/seccomp.json: a valid profile, and fedimg's sandbox works under it as an unprivileged user.

There is no Docker engine here, so the container is rebuilt from its parts: a
process without capabilities (a user namespace, its bounding set emptied, as
``cap_drop: [ALL]``), ``no_new_privs`` (``no-new-privileges:true``) and the profile's
rules loaded with libseccomp as runc loads them (``tests/support/docker_seccomp.py``).
That process then starts real sandbox workers through ``WorkerPool``; each confines
itself (Landlock, then its own seccomp filter stacked on the profile's). With the
Landlock calls taken out of the profile — Docker's default before 20.10.18 / 23.0 —
the job is refused (fail closed).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.docker_seccomp import (
    LANDLOCK_SYSCALLS,
    PROFILE,
    allowed_names,
    effective_rules,
    known_to_libseccomp,
    load_profile,
    resolve,
    without,
)

REPO = Path(__file__).resolve().parents[2]
ARCHES = ("x86_64", "aarch64")
# Newer than the libseccomp some hosts (and this machine: 2.5.4) carry; runc skips unknown names.
NEWER_THAN_LIBSECCOMP = {"uretprobe"}
# What the profile must never allow a container: new namespaces, mounts, kernel modules,
# tracing, BPF, keyrings, io_uring, reboot, time, the host's logs.
NEVER = {
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsmount",
    "bpf",
    "perf_event_open",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "keyctl",
    "add_key",
    "request_key",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "userfaultfd",
    "reboot",
    "swapon",
    "swapoff",
    "settimeofday",
    "clock_settime",
    "syslog",
    "acct",
    "quotactl",
    "sethostname",
    "setdomainname",
    "personality",
    "modify_ldt",
    "lookup_dcookie",
    "open_by_handle_at",
    "name_to_handle_at",
    "vmsplice",
    "splice",
}
SANDBOX_NEEDS = {*LANDLOCK_SYSCALLS, "seccomp", "prctl", "socketpair", "sendmsg", "recvmsg", "mmap"}
SITE_NEEDS = {"execve", "vfork", "clone", "setsid", "accept4", "bind", "listen", "connect", "epoll_wait"}
CLONE_NEW_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME


@pytest.fixture(scope="module")
def profile() -> dict:
    return load_profile()


# --- (a) the file -----------------------------------------------------------------------------


def test_profile_is_refuse_by_default_with_64_bit_abis_only(profile: dict) -> None:
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["defaultErrnoRet"] == 1
    assert "architectures" not in profile, "archMap lets Docker pick the host's ABI; not both"
    arches = {entry["architecture"]: entry["subArchitectures"] for entry in profile["archMap"]}
    assert arches == {"SCMP_ARCH_X86_64": [], "SCMP_ARCH_AARCH64": []}, "no 32-bit ABI inside the container"
    assert "Apache License" in " ".join(profile["comment"]), (
        "the profile is derived from Docker's: keep the notice"
    )


def test_every_name_is_a_system_call_libseccomp_knows(profile: dict) -> None:
    seen: set[str] = set()
    for number, entry in enumerate(profile["syscalls"]):
        assert "name" not in entry and entry["names"], f"syscalls[{number}]: use a non-empty 'names'"
        assert entry["action"] in ("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"), (
            f"syscalls[{number}]: {entry['action']}"
        )
        for name in entry["names"]:
            if name in NEWER_THAN_LIBSECCOMP and not known_to_libseccomp(name):
                continue
            numbers = [resolve(name, arch) for arch in ARCHES]
            assert max(numbers) >= 0, f"syscalls[{number}]: {name!r} is no system call of {ARCHES}"
        if not entry.get("args"):
            repeated = seen & set(entry["names"])
            assert not repeated, f"syscalls[{number}] repeats {sorted(repeated)}"
            seen |= set(entry["names"])
    assert not NEWER_THAN_LIBSECCOMP - seen, "the exception list names calls the profile no longer has"


def test_arg_conditions_are_ones_runc_understands(profile: dict) -> None:
    for entry in profile["syscalls"]:
        for arg in entry.get("args") or []:
            assert set(arg) <= {"index", "value", "valueTwo", "op"} and 0 <= arg["index"] <= 5
            assert arg["op"] in {
                "SCMP_CMP_EQ",
                "SCMP_CMP_MASKED_EQ",
                "SCMP_CMP_NE",
                "SCMP_CMP_LT",
                "SCMP_CMP_GT",
            }


def test_no_namespace_mount_trace_or_kernel_surface(profile: dict) -> None:
    for arch in ("amd64", "arm64"):
        for caps in ((), ("CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_MODULE", "CAP_BPF")):
            allowed = allowed_names(profile, arch=arch, caps=caps)
            assert not allowed & NEVER, f"{arch} with {caps or 'no capability'}: {sorted(allowed & NEVER)}"
    rules = effective_rules(profile, arch="amd64")
    (clone,) = [rule for rule in rules if "clone" in rule["names"]]
    assert clone["args"] == [
        {"index": 0, "value": CLONE_NEW_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
    ], "clone only without CLONE_NEW* flags"
    (clone3,) = [rule for rule in rules if "clone3" in rule["names"]]
    assert clone3["action"] == "SCMP_ACT_ERRNO" and clone3["errnoRet"] == 38, (
        "clone3: ENOSYS, glibc falls back"
    )
    families = {rule["args"][0]["value"] for rule in rules if rule["names"] == ["socket"]}
    assert families == {1, 2, 10, 16}, "socket: AF_UNIX, AF_INET, AF_INET6, AF_NETLINK only"


def test_what_the_site_and_its_sandbox_need_is_allowed(profile: dict) -> None:
    for arch in ("amd64", "arm64"):
        allowed = allowed_names(profile, arch=arch)
        missing = (SANDBOX_NEEDS | SITE_NEEDS) - allowed
        assert not missing, f"{arch}: {sorted(missing)}"
    assert "arch_prctl" in allowed_names(profile, arch="amd64")


# --- (b), (c) the sandbox under the profile, as an unprivileged user ---------------------------

JOB = """
def job(train_images, attack, target=""):
    import numpy as np
    if attack == "sum":
        return {"sum": float(np.asarray(train_images, dtype=np.float64).sum())}
    if attack == "read":
        return {"text": open(target).read()}
    if attack == "tcp":
        import socket
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        return {}
    if attack == "fork":
        import os
        return {"pid": os.fork()}
    raise ValueError(attack)
"""

CONTAINED = """
import ctypes, errno, json, os, socket, sys, tempfile
repo, mode, state, source = sys.argv[1:5]
sys.path.insert(0, repo)
libc = ctypes.CDLL(None, use_errno=True)
out = {}
if os.getuid() == 0:
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER: no capability over anything outside from here on
        print(json.dumps({"skip": os.strerror(ctypes.get_errno())}))
        sys.exit(0)
    # cap_drop: [ALL]: empty the bounding set, then the permitted, effective and inheritable sets
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    for cap in range(last + 1):
        assert libc.prctl(24, cap, 0, 0, 0) == 0, os.strerror(ctypes.get_errno())  # PR_CAPBSET_DROP
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    assert libc.capset(header, (ctypes.c_uint32 * 6)()) == 0, os.strerror(ctypes.get_errno())
    libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL

from tests.support.docker_seccomp import LANDLOCK_SYSCALLS, install, load_profile, without
profile = load_profile()
if mode == "no-landlock":
    profile = without(profile, LANDLOCK_SYSCALLS)
out["skipped"] = install(profile)

def status(pid="self"):
    fields = dict(line.split(":\\t", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":\\t" in line)
    return {key: fields[key].strip() for key in ("Uid", "CapEff", "CapPrm", "CapBnd", "NoNewPrivs", "Seccomp", "Seccomp_filters")}

out["site"] = status()
def refused(call):
    try:
        call()
    except OSError as exc:
        return errno.errorcode[exc.errno]
    return "ALLOWED"
def personality():
    if libc.personality(0xFFFFFFFF) == -1:  # a query: answered without the profile
        raise OSError(ctypes.get_errno(), "personality")
# Each of these succeeds (or fails otherwise: EAFNOSUPPORT for AF_ALG here) in the same process
# without the profile: EPERM shows the profile is what refuses them.
out["site_personality"] = refused(personality)
with tempfile.TemporaryDirectory() as folder:
    out["site_mkfifo"] = refused(lambda: os.mkfifo(os.path.join(folder, "fifo")))  # mknodat
out["site_alg_socket"] = refused(lambda: socket.socket(38, socket.SOCK_SEQPACKET))  # AF_ALG
listener = socket.create_server(("127.0.0.1", 0))  # what uvicorn and psycopg need still works
socket.create_connection(listener.getsockname(), timeout=5).close()
listener.close()

from datasite_setup.site.sandbox import landlock
from datasite_setup.site.sandbox.runner import CodeFailed, SandboxUnavailable, WorkerPool, WorkerSettings
from pathlib import Path
out["site_landlock_abi"] = landlock.abi_version()
state = Path(state)
pool = WorkerPool(WorkerSettings(seconds_per_call=60, memory_mb=3072), forbidden=[state])
try:
    worker = pool.worker_for("j", source=source, function="job", assets={"train_images": state / "train_images.npy"})
    out["abi"] = worker.confinement["landlock_abi"]
    out["worker"] = status(worker.process.popen.pid)
    out["sum"] = worker.call({"attack": "sum"})["sum"]
    for attack, target in (("read", str(state / "admin-credentials.json")), ("tcp", ""), ("fork", "")):
        try:
            worker.call({"attack": attack, "target": target})
            out[attack] = "ALLOWED"
        except CodeFailed as exc:
            out[attack] = str(exc)
except SandboxUnavailable as exc:
    out["unavailable"] = str(exc)
finally:
    pool.close()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("state")
    np.save(state / "train_images.npy", np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4))
    (state / "admin-credentials.json").write_text('{"password": "do not read me"}')
    return state


def contained(mode: str, site: Path, tmp_path: Path) -> dict:
    """Run CONTAINED in a fresh process and return its report (skip where no user namespace exists)."""
    script = tmp_path / "contained.py"
    script.write_text(CONTAINED)
    done = subprocess.run(
        [sys.executable, str(script), str(REPO), mode, str(site), JOB],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if "skip" in out:
        pytest.skip(f"no user namespace for an unprivileged test here: {out['skip']}")
    return out


def assert_contained_site(site_status: dict) -> None:
    """The process the profile was loaded on looks like compose's container: no capability, NNP, a filter."""
    assert site_status["Uid"].split()[0] != "0"
    assert (
        int(site_status["CapEff"], 16)
        == int(site_status["CapPrm"], 16)
        == int(site_status["CapBnd"], 16)
        == 0
    )
    assert site_status["NoNewPrivs"] == "1" and site_status["Seccomp"] == "2"
    assert site_status["Seccomp_filters"] == "1"


def test_the_sandbox_runs_a_job_under_the_profile_as_an_unprivileged_user(site: Path, tmp_path: Path) -> None:
    out = contained("profile", site, tmp_path)
    assert "unavailable" not in out, out.get("unavailable")
    assert set(out["skipped"]) <= NEWER_THAN_LIBSECCOMP
    assert_contained_site(out["site"])
    # the profile is in force in the site process (each of these passes without it)
    assert out["site_personality"] == out["site_mkfifo"] == out["site_alg_socket"] == "EPERM"
    assert out["site_landlock_abi"] >= 1
    # the worker confined itself inside it: its own filter stacked on the profile's
    assert out["abi"] == out["site_landlock_abi"]
    assert out["worker"]["Seccomp_filters"] == "2" and out["worker"]["NoNewPrivs"] == "1"
    assert int(out["worker"]["CapEff"], 16) == 0
    assert out["sum"] == float(np.arange(96).sum())
    assert "Permission denied" in out["read"]
    assert "Operation not permitted" in out["tcp"] and "Operation not permitted" in out["fork"]


def test_a_profile_without_landlock_makes_the_site_refuse_the_job(site: Path, tmp_path: Path) -> None:
    """Docker's default profile before 20.10.18 / 23.0 (moby commit af819bf) did not list Landlock."""
    out = contained("no-landlock", site, tmp_path)
    assert_contained_site(out["site"])
    assert out["site_landlock_abi"] == 0
    assert "sum" not in out and "abi" not in out
    assert "landlock ABI 0 is below the required 1" in out["unavailable"]


def test_removing_landlock_from_the_profile_is_what_the_refusal_test_runs(profile: dict) -> None:
    older = without(profile, LANDLOCK_SYSCALLS)
    assert set(LANDLOCK_SYSCALLS) <= allowed_names(profile)
    assert not set(LANDLOCK_SYSCALLS) & allowed_names(older)
    assert allowed_names(profile) - allowed_names(older) == set(LANDLOCK_SYSCALLS)
    assert PROFILE.parent.name == "compose"
