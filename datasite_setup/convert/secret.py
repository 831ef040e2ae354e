"""The federation secret that keys every pseudonym.

It never lives inside the converted output: it comes from ``FEDIMG_SECRET`` (the
secret itself), from ``FEDIMG_SECRET_FILE`` (a path), or from a file created on
first use under the user's config directory with mode 0600.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from datasite_setup.errors import FedimgError

SECRET_ENV = "FEDIMG_SECRET"
SECRET_FILE_ENV = "FEDIMG_SECRET_FILE"
MIN_SECRET_BYTES = 16


def default_secret_path() -> Path:
    """Where the secret file lives when nothing else is given.

    Returns
    -------
    Path
        ``$XDG_CONFIG_HOME/fedimg/secret`` (``~/.config/fedimg/secret`` when unset).

    Examples
    --------
    >>> default_secret_path().parts[-2:]
    ('fedimg', 'secret')
    """
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "fedimg" / "secret"


def load_secret(secret_file: Path | None = None) -> bytes:
    """Return the federation secret, creating the secret file (mode 0600) on first use.

    Precedence: the ``secret_file`` argument, ``$FEDIMG_SECRET`` (the secret itself),
    ``$FEDIMG_SECRET_FILE`` (a path), then ``default_secret_path()``.

    Parameters
    ----------
    secret_file : Path, optional
        The secret file (``--secret-file``); created when missing.

    Returns
    -------
    bytes
        The secret, at least ``MIN_SECRET_BYTES`` long, surrounding whitespace removed.

    Raises
    ------
    FedimgError
        When the file cannot be created or read, is readable by others, or the secret is too short.

    Examples
    --------
    >>> from pathlib import Path
    >>> secret = load_secret(Path("federation.secret"))  # created: 32 random bytes in hex
    >>> len(secret), load_secret(Path("federation.secret")) == secret
    (64, True)
    """
    if secret_file is None and os.environ.get(SECRET_ENV):
        return _checked(os.environ[SECRET_ENV].encode(), f"${SECRET_ENV}")
    if secret_file is None and os.environ.get(SECRET_FILE_ENV):
        secret_file = Path(os.environ[SECRET_FILE_ENV])
    path = secret_file or default_secret_path()
    try:
        if not path.exists():
            _create_secret_file(path)
        _refuse_loose_permissions(path)
        secret = path.read_bytes().strip()
    except OSError as exc:
        # A directory, an unreadable file, a parent that is a file: name it, no traceback.
        raise FedimgError(
            f"{path}: the federation secret file cannot be created or read ({exc.strerror or exc}); "
            f"set ${SECRET_ENV} or ${SECRET_FILE_ENV} to a readable 0600 file"
        ) from exc
    return _checked(secret, str(path))


def _create_secret_file(path: Path) -> None:
    # Written aside, then hard-linked into place: a concurrent first run either
    # wins or finds the other's complete file, never a half-written one.
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink(missing_ok=True)


def _refuse_loose_permissions(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise FedimgError(
            f"{path}: the federation secret is readable by others (mode {mode:o}); run 'chmod 600 {path}'"
        )


def _checked(secret: bytes, where: str) -> bytes:
    if len(secret) < MIN_SECRET_BYTES:
        generate = 'python -c "import secrets; print(secrets.token_hex(32))"'
        raise FedimgError(
            f"{where}: the federation secret is too short ({len(secret)} bytes); "
            f"use at least {MIN_SECRET_BYTES} random bytes, e.g. '{generate}'"
        )
    return secret
