"""Files only their owner may read (mode 0600 in a 0700 folder): secrets, keys, credentials."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from datasite_setup.errors import FedimgError


def write_private_file(path: Path, data: bytes, *, replace: bool = False) -> None:
    """Write ``data`` with mode 0600; atomically (temp + rename), refusing to overwrite unless ``replace``."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() and not replace:
        raise FedimgError(f"{path}: already exists; refusing to overwrite a secret")
    temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_private_file(path: Path, what: str) -> bytes:
    """Read a secret file, refusing one that group or others can read."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise FedimgError(f"{path}: the {what} is readable by others (mode {mode:o}); run 'chmod 600 {path}'")
    return path.read_bytes()
