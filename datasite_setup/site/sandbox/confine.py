"""Confine the current process, in the order the kernel needs: limits, then Landlock, then seccomp.

Called by the sandbox worker once it holds everything it needs (its socket, the
memory maps of its inputs, the modules it imports) and before it sees any
researcher code. Each step either succeeds or raises; the worker then refuses the
job (fail closed).
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path

from datasite_setup.site.sandbox import landlock, seccomp

__all__ = ["Confinement", "Limits", "confine"]


@dataclass(frozen=True)
class Limits:
    """Resource limits for one worker.

    Parameters
    ----------
    memory_mb : int
        Address space (``RLIMIT_AS``); allocations past it fail with ``MemoryError``.
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

    Raises
    ------
    OSError
        A step failed (``LandlockError``, ``SeccompError`` or a refused rlimit).
    """
    _set_limit(resource.RLIMIT_AS, limits.memory_mb * 2**20)
    _set_limit(resource.RLIMIT_CPU, limits.cpu_seconds)
    _set_limit(resource.RLIMIT_FSIZE, limits.file_mb * 2**20)
    _set_limit(resource.RLIMIT_NOFILE, limits.open_files)
    _set_limit(resource.RLIMIT_CORE, 0)  # a crash must not write the process's memory to disk
    abi = landlock.restrict(read, write, require_abi=require_abi)
    denied = seccomp.load_filter()
    return Confinement(abi, tuple(denied))
