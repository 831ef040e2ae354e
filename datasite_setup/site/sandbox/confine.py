"""Confine the current process, in the order the kernel needs: limits, then Landlock, then seccomp.

Called by the sandbox worker once it holds everything it needs (its socket, the
memory maps of its inputs, the modules it imports) and before it sees any
researcher code. Each step either succeeds or raises; the worker then refuses the
job (fail closed).
"""

from __future__ import annotations

import ctypes
import platform
import resource
from dataclasses import dataclass
from pathlib import Path

from datasite_setup.site.sandbox import landlock, seccomp

__all__ = ["Confinement", "Limits", "address_space_bytes", "confine", "drop_capabilities"]


@dataclass(frozen=True)
class Limits:
    """Resource limits for one worker.

    Parameters
    ----------
    memory_mb : int
        Memory the code may allocate: the address space (``RLIMIT_AS``) is what the worker has
        mapped when it is confined (interpreter, torch, its memory-mapped inputs) plus this much;
        allocations past it fail with ``MemoryError``.
    cpu_seconds : int
        CPU time of the whole worker (``RLIMIT_CPU``); past it the kernel kills it.
    file_mb : int
        The largest file it may write (``RLIMIT_FSIZE``), in its private folder only.
    open_files : int
        Open file descriptors (``RLIMIT_NOFILE``).
    """

    memory_mb: int
    cpu_seconds: int
    file_mb: int = 64
    open_files: int = 256


@dataclass(frozen=True)
class Confinement:
    """What was put in place: the Landlock ABI and the system calls refused."""

    landlock_abi: int
    denied_syscalls: tuple[str, ...]


def _set_limit(which: int, value: int) -> None:
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def address_space_bytes() -> int:
    """This process's mapped address space now (``VmSize``), in bytes.

    Examples
    --------
    >>> address_space_bytes() > 0
    True
    """
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmSize in /proc/self/status")


_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_SYS_CAPSET = {"x86_64": 126, "aarch64": 91}


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def drop_capabilities() -> None:
    """Give up every capability (a site running as root would hand its workers all of them).

    Empties the bounding set where allowed (it matters only for ``execve``, which seccomp
    refuses anyway), the ambient set, and the effective, permitted and inheritable sets;
    then checks ``/proc/self/status`` and raises if any capability is left.

    Raises
    ------
    OSError
        When a capability is still held (the worker then refuses the job).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for capability in range(last + 1):
        libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0)  # EPERM without CAP_SETPCAP: nothing to drop then
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    number = _SYS_CAPSET.get(platform.machine())
    if number is None:
        raise OSError(0, f"capset: unknown system call number on {platform.machine()}")
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.syscall(ctypes.c_long(number), ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    held = {
        key: value
        for key, value in _status_fields(("CapEff", "CapPrm", "CapInh", "CapAmb")).items()
        if int(value, 16) != 0
    }
    if held:
        raise OSError(0, f"capabilities still held after dropping them: {held}")


def _status_fields(names: tuple[str, ...]) -> dict[str, str]:
    with open("/proc/self/status", encoding="ascii") as status:
        fields = dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)
    return {name: fields[name].strip() for name in names if name in fields}


def confine(read: list[Path], write: list[Path], limits: Limits, *, require_abi: int = 1) -> Confinement:
    """Apply ``limits``, restrict the file system to ``read``/``write``, and load the seccomp filter.

    Parameters
    ----------
    read : list of Path
        What stays readable (the interpreter, its packages, fedimg's own packages).
    write : list of Path
        The worker's private folder.
    limits : Limits
        The resource limits.
    require_abi : int
        The lowest Landlock ABI accepted.

    Returns
    -------
    Confinement
        The Landlock ABI used and the system calls denied.

    Notes
    -----
    The order: limits, capabilities dropped, Landlock, seccomp.

    Raises
    ------
    OSError
        A step failed (``LandlockError``, ``SeccompError`` or a refused rlimit).
    """
    # on top of what is mapped now: a 3 GB partition's maps must not eat the code's allowance
    _set_limit(resource.RLIMIT_AS, address_space_bytes() + limits.memory_mb * 2**20)
    _set_limit(resource.RLIMIT_CPU, limits.cpu_seconds)
    _set_limit(resource.RLIMIT_FSIZE, limits.file_mb * 2**20)
    _set_limit(resource.RLIMIT_NOFILE, limits.open_files)
    _set_limit(resource.RLIMIT_CORE, 0)  # a crash must not write the process's memory to disk
    seccomp.prepare()  # libseccomp's files must be read before Landlock
    drop_capabilities()  # before Landlock and seccomp, which then need none (no_new_privs)
    abi = landlock.restrict(read, write, require_abi=require_abi)
    denied = seccomp.load_filter()
    return Confinement(abi, tuple(denied))
