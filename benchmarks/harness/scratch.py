"""Scratch files: outputs removed outside the timed parts, inputs read once, the fixed federation secret."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

BENCH_SECRET = "5eed" * 16  # 64 hex characters: a fixed federation secret, so runs do not touch ~/.config


def clean(path: Path) -> None:
    """Remove an output outside the timed window, and flush writeback so it does not land in the next run.

    Parameters
    ----------
    path : Path
        A folder (or nothing: a missing one is fine).

    Examples
    --------
    >>> (Path("out") / "a").mkdir(parents=True)
    >>> clean(Path("out"))
    >>> Path("out").exists()
    False
    """
    shutil.rmtree(path, ignore_errors=True)
    os.sync()


def warm_page_cache(source: Path) -> int:
    """Read every file under ``source`` once, so no contender pays for the first disk read.

    Parameters
    ----------
    source : Path
        A folder of inputs.

    Returns
    -------
    int
        The bytes read.

    Examples
    --------
    >>> (Path("inputs") / "a").mkdir(parents=True)
    >>> _ = (Path("inputs") / "a" / "one.bin").write_bytes(b"1234")
    >>> warm_page_cache(Path("inputs"))
    4
    """
    total = 0
    for directory, _, files in os.walk(source):
        for name in files:
            with open(os.path.join(directory, name), "rb") as handle:
                total += len(handle.read())
    return total


def secret_file(workdir: Path, name: str) -> Path:
    """The file ``workdir/name`` holding ``BENCH_SECRET`` (written once, private) for ``fedimg convert``.

    Parameters
    ----------
    workdir : Path
        The benchmark's work folder.
    name : str
        The file's name.

    Returns
    -------
    Path
        The secret file.

    Examples
    --------
    >>> secret_file(Path("."), "secret").read_text() == BENCH_SECRET + "\\n"
    True
    """
    from datasite_setup import write_private_file

    secret = workdir / name
    if not secret.exists():
        write_private_file(secret, (BENCH_SECRET + "\n").encode())
    return secret
