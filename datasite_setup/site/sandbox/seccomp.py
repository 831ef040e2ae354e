"""A seccomp filter, built with libseccomp through ctypes, that leaves a worker no way out by system call.

The filter allows everything a numerical Python process needs and refuses, with
``EPERM``, what would let code leave the worker: starting programs (``execve``),
new processes (``fork``, ``vfork``, ``clone`` without ``CLONE_THREAD``), new
sockets of any family (the socket pair the worker was handed keeps working),
tracing or reading other processes, new namespaces, mounts, kernel modules, BPF,
keyrings, ``io_uring`` (which runs system calls the filter cannot see), and leaving
the process group the site kills at a wall-clock limit (``setsid``/``setpgid``).
``clone3`` answers ``ENOSYS``: its flags live in memory seccomp cannot read, and
glibc then falls back to ``clone``, whose flags it can.

Landlock confines paths, not what can be done to a file one may name: changing a
file's mode, owner, times or extended attributes is refused here (the red team made
the state dir's credentials world-readable with ``chmod`` before this). Calls that
act on *another* process by its pid (its resource limits, priority, scheduling,
memory placement, signals) are refused unless they name the worker itself (pid 0,
or its own pid for the thread-group signals); so are the privileged calls a root
worker would reach if a capability survived (``confine`` drops them all first).

libseccomp (Debian's ``libseccomp2``) is a dependency of the system, not of
Python; ``load_filter`` raises if it is missing, and the worker then refuses to
run code (fail closed).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os

__all__ = ["DENIED_SYSCALLS", "SELF_ONLY", "ArgCmp", "SeccompError", "load_filter", "load_library", "prepare"]

DENIED_SYSCALLS = (
    # programs and processes
    "execve",
    "execveat",
    "fork",
    "vfork",
    "setsid",
    "setpgid",
    # network: no new socket of any family; the worker's socket pair exists already
    "socket",
    "socketpair",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    # other processes
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_open",
    "pidfd_getfd",
    "kcmp",
    # the kernel's bigger surfaces
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "keyctl",
    "add_key",
    "request_key",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "personality",
    # files it may name but must not change: mode, owner, times, extended attributes
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "utime",
    "utimes",
    "futimesat",
    "utimensat",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "mknod",
    "mknodat",
    # other processes, by pid, where no argument check can make them safe
    "tkill",
    "pidfd_send_signal",
    "migrate_pages",
    "move_pages",
    "process_madvise",
    # the machine's state: privileged calls (no capability survives confine; refused all the same)
    "reboot",
    "sethostname",
    "setdomainname",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "swapon",
    "swapoff",
    "syslog",
    "acct",
    "quotactl",
    "iopl",
    "ioperm",
)
# (system call, argument index): refused unless that argument is 0 ("this process") — the calls that
# change another process's limits, priority or scheduling by pid; ``setpriority``'s ``which`` must be
# PRIO_PROCESS (0) too, else ``who = 0`` means the caller's process group or user (the site's processes).
SELF_ONLY = (
    ("prlimit64", 0),
    ("setpriority", 0),
    ("setpriority", 1),
    ("sched_setaffinity", 0),
    ("sched_setscheduler", 0),
    ("sched_setparam", 0),
    ("sched_setattr", 0),
    ("ioprio_set", 1),
)
_IOPRIO_WHO_PROCESS = 1
_CLONE_THREAD = 0x00010000
_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_CMP_NE = 1
_SCMP_CMP_MASKED_EQ = 7


def _errno_action(number: int) -> int:
    return 0x00050000 | (number & 0xFFFF)


class SeccompError(OSError):
    """libseccomp is missing or refused to build or load the filter."""


class ArgCmp(ctypes.Structure):
    """libseccomp's ``struct scmp_arg_cmp``: one condition on a system call's argument."""

    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


@functools.cache
def load_library() -> ctypes.CDLL:
    """libseccomp, loaded once (``confine`` loads it before Landlock, while its files are readable)."""
    try:  # the soname first: find_library may run ldconfig or gcc and needs a writable temp folder
        library = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        name = ctypes.util.find_library("seccomp")
        try:
            library = ctypes.CDLL(name or "libseccomp.so.2", use_errno=True)
        except OSError as exc:
            raise SeccompError(0, f"libseccomp is not installed ({exc}): install libseccomp2") from exc
    library.seccomp_init.restype = ctypes.c_void_p
    library.seccomp_init.argtypes = [ctypes.c_uint32]
    library.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    library.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(ArgCmp),
    ]
    library.seccomp_load.argtypes = [ctypes.c_void_p]
    library.seccomp_release.argtypes = [ctypes.c_void_p]
    return library


def prepare() -> None:
    """Load libseccomp now (before Landlock hides the files it is loaded from).

    Raises
    ------
    SeccompError
        libseccomp is missing.
    """
    load_library()


def load_filter() -> list[str]:
    """Install the filter on this process and every thread it starts from now on, for good.

    Returns
    -------
    list of str
        The denied system calls this kernel and libseccomp know (others do not exist here).

    Raises
    ------
    SeccompError
        libseccomp is missing, or building or loading the filter failed; no filter is
        in place then.
    """
    library = load_library()
    context = library.seccomp_init(_SCMP_ACT_ALLOW)
    if not context:
        raise SeccompError(0, "seccomp_init failed")
    denied: list[str] = []
    try:
        for name in DENIED_SYSCALLS:
            number = library.seccomp_syscall_resolve_name(name.encode())
            if number < 0:
                continue  # not a system call on this architecture
            _add_rule(library, context, _errno_action(errno.EPERM), number, [])
            denied.append(name)
        clone = library.seccomp_syscall_resolve_name(b"clone")
        # clone(flags, ...) without CLONE_THREAD makes a process: refused; threads pass
        _add_rule(
            library,
            context,
            _errno_action(errno.EPERM),
            clone,
            [ArgCmp(0, _SCMP_CMP_MASKED_EQ, _CLONE_THREAD, 0)],
        )
        refused = _errno_action(errno.EPERM)
        for name, argument in SELF_ONLY:
            number = library.seccomp_syscall_resolve_name(name.encode())
            if number >= 0:
                _add_rule(library, context, refused, number, [ArgCmp(argument, _SCMP_CMP_NE, 0, 0)])
        ioprio = library.seccomp_syscall_resolve_name(b"ioprio_set")
        if ioprio >= 0:  # who = 0 names this process only with which = IOPRIO_WHO_PROCESS
            _add_rule(library, context, refused, ioprio, [ArgCmp(0, _SCMP_CMP_NE, _IOPRIO_WHO_PROCESS, 0)])
        own = os.getpid()
        for name in ("kill", "tgkill"):  # signals to this process only (Landlock scopes them too, ABI >= 6)
            number = library.seccomp_syscall_resolve_name(name.encode())
            if number >= 0:
                _add_rule(library, context, refused, number, [ArgCmp(0, _SCMP_CMP_NE, own, 0)])
        clone3 = library.seccomp_syscall_resolve_name(b"clone3")
        if clone3 >= 0:
            _add_rule(library, context, _errno_action(errno.ENOSYS), clone3, [])
        if library.seccomp_load(context) < 0:
            raise SeccompError(ctypes.get_errno(), "seccomp_load failed")
    finally:
        library.seccomp_release(context)
    return denied


def _add_rule(library: ctypes.CDLL, context: int, action: int, number: int, conditions: list[ArgCmp]) -> None:
    array = (ArgCmp * max(len(conditions), 1))(*conditions)
    if library.seccomp_rule_add_array(context, action, number, len(conditions), array) < 0:
        raise SeccompError(0, f"seccomp rule for system call {number} was refused")
