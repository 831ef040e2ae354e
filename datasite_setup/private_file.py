"""Files only their owner may read (mode 0600 in a 0700 folder): secrets, keys, credentials."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from datasite_setup.errors import FedimgError


def write_private_file(path: Path, data: bytes, *, replace: bool = False) -> None:
    """Write ``data`` with mode 0600, atomically (a temporary file renamed into place).

    The parent folder is created with mode 0700 when missing. A reader never sees a
    half-written file: either the old content or the new one is at ``path``.

    Parameters
    ----------
    path : Path
        Where the file goes.
    data : bytes
        Its whole content.
    replace : bool, default False
        Overwrite an existing file; without it an existing file is an error.

    Raises
    ------
    FedimgError
        When ``path`` exists and ``replace`` is False.

    Examples
    --------
    >>> from pathlib import Path
    >>> key = Path("keys/site.key")
    >>> write_private_file(key, b"0123456789abcdef")
    >>> oct(key.stat().st_mode & 0o777)
    '0o600'
    >>> write_private_file(key, b"another key")
    Traceback (most recent call last):
    ...
    datasite_setup.errors.FedimgError: keys/site.key: already exists; refusing to overwrite a secret
    >>> write_private_file(key, b"another key", replace=True)
    >>> key.read_bytes()
    b'another key'
    """
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
    """Read a secret file, refusing one that group or others can read.

    Parameters
    ----------
    path : Path
        The file to read.
    what : str
        What the file holds, for the error message (e.g. ``"site key"``).

    Returns
    -------
    bytes
        The file's content.

    Raises
    ------
    FedimgError
        When the file's mode lets group or others read it; the message says how to fix it.

    Examples
    --------
    >>> from pathlib import Path
    >>> write_private_file(Path("site.key"), b"0123456789abcdef")
    >>> read_private_file(Path("site.key"), "site key")
    b'0123456789abcdef'
    >>> Path("site.key").chmod(0o644)
    >>> read_private_file(Path("site.key"), "site key")
    Traceback (most recent call last):
    ...
    datasite_setup.errors.FedimgError: site.key: the site key is readable by others (mode 644); run ...
    """
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise FedimgError(f"{path}: the {what} is readable by others (mode {mode:o}); run 'chmod 600 {path}'")
    return path.read_bytes()
