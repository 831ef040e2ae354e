"""A minimal ctypes layer over the kernel's Landlock ABI (``linux/landlock.h``).

Landlock lets an unprivileged process give up access to the file system and to TCP
for itself and every thread and child it will have. The sandbox worker uses it to
keep read access to the interpreter and its packages only, write access to its own
empty working directory only, no TCP at all (ABI 4+), and — from ABI 6 — no signals
to and no abstract Unix sockets of processes outside its domain (the site's server).

Only three system calls and three structures are involved; they are declared here
as the kernel documents them (Documentation/userspace-api/landlock.rst), so no
third-party binding is needed. Rights a running kernel does not know are dropped
by ABI version, as the kernel documentation's "best effort" example does, but the
caller learns the ABI and decides whether that is enough (``require_abi``).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["LandlockError", "abi_version", "restrict"]

_SYS_CREATE_RULESET = 444  # the same numbers on x86_64 and aarch64 (asm-generic)
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# Filesystem rights, in ABI order: the ABI that introduced a right is the index below.
_FS_RIGHTS_BY_ABI = {
    1: 13,  # EXECUTE .. MAKE_SYM (bits 0-12)
    2: 14,  # REFER
    3: 15,  # TRUNCATE
    4: 15,
    5: 16,  # IOCTL_DEV
}
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_TRUNCATE, _IOCTL_DEV = 1 << 14, 1 << 15
_FILE_RIGHTS = (
    _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
)  # the rights a rule on a file may carry
_READ_RIGHTS = _EXECUTE | _READ_FILE | _READ_DIR
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class LandlockError(OSError):
    """Landlock is unavailable or refused a step; the message says which."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),  # ABI 4
        ("scoped", ctypes.c_uint64),  # ABI 6
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the kernel's struct is packed
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def abi_version() -> int:
    """The Landlock ABI this kernel offers, or 0 when it offers none.

    Returns
    -------
    int
        0 (no Landlock: an old kernel, or Landlock not enabled at boot, or a
        seccomp profile that refuses the call) or the ABI version (1, 2, ...).

    Examples
    --------
    >>> abi_version() >= 0
    True
    """
    version = _libc.syscall(
        _SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION)
    )
    return max(int(version), 0)


def _fs_rights(abi: int) -> int:
    count = _FS_RIGHTS_BY_ABI.get(abi, 16)
    return (1 << count) - 1


def _fail(step: str) -> LandlockError:
    number = ctypes.get_errno()
    return LandlockError(number, f"landlock {step}: {os.strerror(number)}")


def restrict(read: Iterable[Path], write: Iterable[Path], *, require_abi: int = 1) -> int:
    """Restrict this process (all its threads, and what it would start) to the given paths, for good.

    Everything not named is refused: reading, writing, listing, executing. TCP bind
    and connect are refused on ABI 4 and later; signals and abstract Unix sockets
    towards processes outside the sandbox on ABI 6 and later. Sets
    ``PR_SET_NO_NEW_PRIVS`` first, as the kernel requires.

    Parameters
    ----------
    read : iterable of Path
        Files and folders (with everything beneath them) that stay readable and executable.
    write : iterable of Path
        Folders (with everything beneath them) where everything stays allowed.
    require_abi : int
        Refuse (raise) on a kernel offering less.

    Returns
    -------
    int
        The ABI the restriction was made with.

    Raises
    ------
    LandlockError
        Landlock is unavailable, below ``require_abi``, or a step failed; nothing
        is restricted then, and the caller must not run untrusted code.
    """
    abi = abi_version()
    if abi < max(require_abi, 1):
        raise LandlockError(0, f"landlock ABI {abi} is below the required {require_abi}")
    handled = _fs_rights(abi)
    attr = _RulesetAttr(
        handled_access_fs=handled,
        handled_access_net=(_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 else 0,
        scoped=(_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= 6 else 0,
    )
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset = _libc.syscall(
        _SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)
    )
    if ruleset < 0:
        raise _fail("create_ruleset")
    try:
        for paths, rights in ((read, _READ_RIGHTS), (write, handled)):
            for path in paths:
                _add_path_rule(int(ruleset), Path(path), rights & handled)
        if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise _fail("prctl(PR_SET_NO_NEW_PRIVS)")
        if _libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) < 0:
            raise _fail("restrict_self")
    finally:
        os.close(ruleset)
    return abi


def _add_path_rule(ruleset: int, path: Path, rights: int) -> None:
    descriptor = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        if not path.is_dir():
            rights &= _FILE_RIGHTS  # the kernel refuses directory rights on a file
        rule = _PathBeneathAttr(allowed_access=rights, parent_fd=descriptor)
        added = _libc.syscall(
            _SYS_ADD_RULE,
            ctypes.c_int(ruleset),
            ctypes.c_int(_RULE_PATH_BENEATH),
            ctypes.byref(rule),
            ctypes.c_uint32(0),
        )
        if added < 0:
            raise _fail(f"add_rule({path})")
    finally:
        os.close(descriptor)
