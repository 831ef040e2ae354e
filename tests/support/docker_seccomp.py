"""Docker-format seccomp profiles, read the way Docker and runc read them, and installed with libseccomp.

Docker (moby's ``profiles/seccomp``) turns a profile into the rules of one container:
it keeps the entries whose ``includes``/``excludes`` match the host architecture,
the container's capability bounding set and the kernel, and runc then hands them to
libseccomp. ``effective_rules`` repeats the first step; ``install`` the second, in
the calling process, so a test can run fedimg's site as it would run in compose/'s
container without a Docker engine. What it leaves out, and why that does not make a
test more permissive than Docker:

- runc answers ``ENOSYS`` (not the default ``EPERM``) for system calls newer than the
  newest one the profile names; here they get the default action (stricter);
- system calls this machine's libseccomp does not know are skipped, as runc does;
- the bad-architecture action stays libseccomp's default (kill), runc's is an errno.

Also a small command line to compare a profile with a Docker release's default::

    python -m tests.support.docker_seccomp compare moby-default.json [compose/seccomp.json]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import errno
import json
import platform
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from datasite_setup.site.sandbox.seccomp import ArgCmp, load_library

__all__ = [
    "LANDLOCK_SYSCALLS",
    "SeccompProfileError",
    "allowed_names",
    "effective_rules",
    "install",
    "known_to_libseccomp",
    "load_profile",
    "resolve",
    "without",
]

LANDLOCK_SYSCALLS = ("landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self")
PROFILE = Path(__file__).resolve().parents[2] / "compose" / "seccomp.json"

# Go's GOARCH names, which Docker profiles use in includes/excludes ``arches``, by uname -m
_GO_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "s390x": "s390x",
    "ppc64le": "ppc64le",
    "riscv64": "riscv64",
}
# libseccomp's names for the SCMP_ARCH_* tokens Docker profiles use in archMap
_SCMP_ARCH = {"SCMP_ARCH_X86_64": b"x86_64", "SCMP_ARCH_AARCH64": b"aarch64", "SCMP_ARCH_X86": b"x86"}
_SCMP_ARCH |= {"SCMP_ARCH_ARM": b"arm", "SCMP_ARCH_X32": b"x32", "SCMP_ARCH_S390X": b"s390x"}
_COMPARE = {  # enum scmp_compare
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}
_ACT_ALLOW = 0x7FFF0000
_ACT_LOG = 0x7FFC0000
_ACT_KILL_PROCESS = 0x80000000
_ACT_KILL_THREAD = 0x00000000
_PR_SET_NO_NEW_PRIVS = 38


class SeccompProfileError(ValueError):
    """A profile this module cannot read or install; the message names the entry and the fix."""


def _libseccomp() -> ctypes.CDLL:
    """The sandbox's libseccomp (its loader and ``ArgCmp``), with the per-architecture calls a profile needs."""
    library = load_library()
    library.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    library.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    library.seccomp_arch_native.restype = ctypes.c_uint32
    library.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    library.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    return library


def load_profile(path: Path = PROFILE) -> dict[str, Any]:
    """Read a Docker-format profile (compose/seccomp.json by default)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def resolve(name: str, arch: str) -> int:
    """The number of system call ``name`` on ``arch`` (libseccomp's name: ``x86_64``, ``aarch64``).

    Returns -1 for a name this libseccomp does not know at all, and another negative
    number for a known call the architecture does not have (e.g. ``_llseek`` on x86_64).
    """
    library = _libseccomp()
    token = library.seccomp_arch_resolve_name(arch.encode())
    if token == 0:
        raise SeccompProfileError(f"libseccomp does not know the architecture {arch!r}")
    return int(library.seccomp_syscall_resolve_name_arch(token, name.encode()))


def known_to_libseccomp(name: str) -> bool:
    """Whether this machine's libseccomp knows ``name`` (on any architecture)."""
    return resolve(name, "x86_64") != -1


def _kernel_at_least(version: str) -> bool:
    def numbers(text: str) -> tuple[int, ...]:
        return tuple(int("".join(c for c in part if c.isdigit()) or 0) for part in text.split(".")[:2])

    return numbers(platform.release()) >= numbers(version)


def effective_rules(
    profile: dict[str, Any], *, arch: str | None = None, caps: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """The profile's entries Docker keeps for one container, as moby's ``setupSeccomp`` selects them.

    Parameters
    ----------
    profile : dict
        A Docker-format profile.
    arch : str, optional
        Go's name of the host architecture (``amd64``, ``arm64``); this machine's by default.
    caps : iterable of str
        The container's capability bounding set (empty with ``cap_drop: [ALL]``).

    Returns
    -------
    list of dict
        The kept entries, each with ``names`` (a ``name`` becomes ``names``).
    """
    arch = arch or _GO_ARCH.get(platform.machine(), platform.machine())
    bounding = set(caps)
    kept = []
    for number, entry in enumerate(profile.get("syscalls", [])):
        if "name" in entry and "names" in entry:
            raise SeccompProfileError(f"syscalls[{number}] has both 'name' and 'names': keep one")
        excludes, includes = entry.get("excludes") or {}, entry.get("includes") or {}
        if arch in (excludes.get("arches") or []) or bounding & set(excludes.get("caps") or []):
            continue
        if excludes.get("minKernel") and _kernel_at_least(excludes["minKernel"]):
            continue
        if includes.get("arches") and arch not in includes["arches"]:
            continue
        if not set(includes.get("caps") or []) <= bounding:
            continue
        if includes.get("minKernel") and not _kernel_at_least(includes["minKernel"]):
            continue
        names = entry.get("names") or [entry["name"]]
        kept.append({**entry, "names": list(names)})
    return kept


def allowed_names(profile: dict[str, Any], *, arch: str | None = None, caps: Iterable[str] = ()) -> set[str]:
    """The system calls a container may make at all (with any argument condition) under ``profile``."""
    return {
        name
        for entry in effective_rules(profile, arch=arch, caps=caps)
        if entry["action"] == "SCMP_ACT_ALLOW"
        for name in entry["names"]
    }


def without(profile: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """A copy of ``profile`` in which no entry names ``names`` (an older Docker's default, say)."""
    dropped = set(names)
    entries = []
    for entry in profile.get("syscalls", []):
        kept = [name for name in entry.get("names") or [entry["name"]] if name not in dropped]
        if kept:
            entries.append({**{k: v for k, v in entry.items() if k != "name"}, "names": kept})
    return {**profile, "syscalls": entries}


def _action(entry: dict[str, Any], default_errno: int) -> int:
    action = entry["action"]
    if action == "SCMP_ACT_ALLOW":
        return _ACT_ALLOW
    if action == "SCMP_ACT_ERRNO":
        return 0x00050000 | (int(entry.get("errnoRet", default_errno)) & 0xFFFF)
    if action == "SCMP_ACT_LOG":
        return _ACT_LOG
    if action in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return _ACT_KILL_THREAD
    if action == "SCMP_ACT_KILL_PROCESS":
        return _ACT_KILL_PROCESS
    raise SeccompProfileError(f"action {action!r} is not supported here: use ALLOW, ERRNO, LOG or KILL")


def _conditions(entry: dict[str, Any]) -> list[list[ArgCmp]]:
    """runc's reading of ``args``: one rule with all conditions (AND), or one rule each (OR) when an
    argument index repeats."""
    conditions = []
    for arg in entry.get("args") or []:
        op = _COMPARE.get(arg["op"])
        if op is None:
            raise SeccompProfileError(f"{entry['names']}: comparison {arg['op']!r} is unknown")
        conditions.append(ArgCmp(int(arg["index"]), op, int(arg["value"]), int(arg.get("valueTwo", 0))))
    indices = [condition.arg for condition in conditions]
    if len(indices) != len(set(indices)):
        return [[condition] for condition in conditions]
    return [conditions]


def install(profile: dict[str, Any], *, caps: Iterable[str] = ()) -> list[str]:
    """Load ``profile`` on this process (and everything it starts from now on) as runc would, for good.

    Sets ``PR_SET_NO_NEW_PRIVS`` first (compose's ``no-new-privileges:true``; the kernel
    requires it of a process without ``CAP_SYS_ADMIN``).

    Parameters
    ----------
    profile : dict
        A Docker-format profile.
    caps : iterable of str
        The capability bounding set the profile's ``includes``/``excludes`` are read against.

    Returns
    -------
    list of str
        The names skipped because this libseccomp does not know them (runc skips them too).
    """
    library = _libseccomp()
    default_errno = int(profile.get("defaultErrnoRet", errno.EPERM))
    default = _action({"action": profile["defaultAction"], "errnoRet": default_errno}, default_errno)
    native = library.seccomp_arch_native()
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    context = library.seccomp_init(default)
    if not context:
        raise SeccompProfileError(f"seccomp_init refused the default action {profile['defaultAction']}")
    skipped: list[str] = []
    try:
        for arch in _sub_architectures(profile, library, native):
            if library.seccomp_arch_add(context, arch) < 0:
                raise SeccompProfileError(f"architecture {arch:#x} was refused")
        for entry in effective_rules(profile, caps=caps):
            action = _action(entry, default_errno)
            if action == default:
                continue  # libseccomp refuses a rule that repeats the default, runc leaves it out
            for name in entry["names"]:
                number = library.seccomp_syscall_resolve_name_arch(native, name.encode())
                if number == -1:
                    skipped.append(name)
                    continue
                if number < 0:
                    continue  # a call this architecture does not have
                for conditions in _conditions(entry):
                    array = (ArgCmp * max(len(conditions), 1))(*conditions)
                    if library.seccomp_rule_add_array(context, action, number, len(conditions), array) < 0:
                        raise SeccompProfileError(f"the rule for {name} ({entry.get('args')}) was refused")
        if library.seccomp_load(context) < 0:
            raise OSError(ctypes.get_errno(), "seccomp_load failed")
    finally:
        library.seccomp_release(context)
    return skipped


def _sub_architectures(profile: dict[str, Any], library: ctypes.CDLL, native: int) -> list[int]:
    """The 32-bit ABIs ``archMap`` lets through on this host (the native one is always in)."""
    for entry in profile.get("archMap") or []:
        token = _SCMP_ARCH.get(entry["architecture"])
        if token is not None and library.seccomp_arch_resolve_name(token) == native:
            return [
                library.seccomp_arch_resolve_name(_SCMP_ARCH[sub])
                for sub in entry.get("subArchitectures") or []
                if sub in _SCMP_ARCH
            ]
    return []


def _compare(docker_default: Path, ours: Path) -> int:
    docker, profile = load_profile(docker_default), load_profile(ours)
    for arch in ("amd64", "arm64"):
        theirs, mine = allowed_names(docker, arch=arch), allowed_names(profile, arch=arch)
        print(f"[{arch}, cap_drop: ALL]")
        missing = [name for name in LANDLOCK_SYSCALLS if name not in theirs]
        print(
            "  Docker's profile allows Landlock: "
            + (
                "yes"
                if not missing
                else f"NO (missing {', '.join(missing)}): the sandbox refuses to run code"
            )
        )
        print(f"  allowed by {ours.name} but not by Docker's: {sorted(mine - theirs) or 'none'}")
        print(f"  allowed by Docker's but not by {ours.name}: {sorted(theirs - mine) or 'none'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``compare DOCKER_DEFAULT_JSON [PROFILE]``: what each profile allows that the other does not."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.docker_seccomp")
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser("compare", help="compare a Docker default profile with ours")
    compare.add_argument("docker_default", type=Path)
    compare.add_argument("profile", type=Path, nargs="?", default=PROFILE)
    args = parser.parse_args(argv)
    return _compare(args.docker_default, args.profile)


if __name__ == "__main__":
    sys.exit(main())
