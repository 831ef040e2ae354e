"""How far a starting site has got: ``<state_dir>/start-progress.json``, written by the site, read by ``up``.

``fedimg datasite serve`` records its phase while it starts (``starting``: PySyft
import and database; ``ingesting``, with ``done``/``total`` items when the ingest
reports them; ``serving``: HTTP is about to open). ``fedimg up`` reads it to print
each site's progress and to tell a long first ingest (progress keeps coming) from a
stuck one. The file holds the writer's pid, so a file left by an earlier run is
never taken for the current one. Writes are atomic and at most ``MIN_INTERVAL_S``
apart within a phase, so a fast loop does not become a disk loop.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from datasite_setup.private_file import write_private_file
from datasite_setup.progress import progress_bar

PROGRESS_FILE = "start-progress.json"
MIN_INTERVAL_S = 0.5
PHASES = ("starting", "ingesting", "serving")
T = TypeVar("T")


@dataclass(frozen=True)
class StartProgress:
    """One record of ``start-progress.json``.

    Parameters
    ----------
    pid : int
        The site process that wrote it.
    phase : str
        One of ``PHASES``.
    detail : str
        What is being done within the phase (e.g. ``"reading client_0 train"``).
    done, total : int or None
        Items done and to do in the current step, when it counts them.
    """

    pid: int
    phase: str
    detail: str = ""
    done: int | None = None
    total: int | None = None

    def describe(self) -> str:
        """``"ingesting 120/300 (reading client_0 train)"`` and the like.

        Examples
        --------
        >>> StartProgress(1, "ingesting", "reading train", 120, 300).describe()
        'ingesting 120/300 (reading train)'
        >>> StartProgress(1, "starting").describe()
        'starting'
        """
        count = f" {self.done}/{self.total}" if self.total else ""
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.phase}{count}{detail}"


def read_start_progress(state_dir: Path, pid: int) -> StartProgress | None:
    """What the site process ``pid`` last recorded in ``state_dir``; None if nothing (yet) or another pid's.

    Examples
    --------
    >>> StartReporter(Path("state")).phase("ingesting", "opening")
    >>> read_start_progress(Path("state"), os.getpid())
    StartProgress(pid=..., phase='ingesting', detail='opening', done=None, total=None)
    >>> read_start_progress(Path("state"), 1) is None
    True
    """
    try:
        record = StartProgress(**json.loads((Path(state_dir) / PROGRESS_FILE).read_text()))
    except (OSError, ValueError, TypeError):  # none yet, or being replaced: ask again later
        return None
    return record if record.pid == pid else None


class StartReporter:
    """Writes a starting site's ``start-progress.json`` (see the module docstring).

    Parameters
    ----------
    state_dir : pathlib.Path
        The site's state dir.

    Examples
    --------
    >>> reporter = StartReporter(Path("state"))
    >>> items = list(reporter.bar(range(3), total=3, description="reading train", enabled=False))
    >>> read_start_progress(Path("state"), os.getpid()).describe()
    'starting 3/3 (reading train)'
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / PROGRESS_FILE
        self.current = StartProgress(os.getpid(), "starting")
        self._written = 0.0
        self._write(force=True)

    def phase(self, phase: str, detail: str = "") -> None:
        """Enter ``phase`` (one of ``PHASES``), written at once."""
        if phase not in PHASES:
            raise ValueError(f"unknown start phase {phase!r}; one of {PHASES}")
        self.current = StartProgress(os.getpid(), phase, detail)
        self._write(force=True)

    def bar(self, items: Iterable[T], *, total: int, description: str, enabled: bool = True) -> Iterator[T]:
        """``datasite_setup.progress.progress_bar``, also recording ``done``/``total`` in the file.

        Same parameters as ``progress_bar`` (``enabled`` only switches the display): pass it
        wherever a ``progress`` callable of that signature is accepted.
        """
        phase = self.current.phase
        done = 0
        self._count(phase, description, done, total, force=True)
        for item in progress_bar(items, total=total, description=description, enabled=enabled):
            yield item
            done += 1
            self._count(phase, description, done, total, force=done == total)

    def _count(self, phase: str, detail: str, done: int, total: int, *, force: bool) -> None:
        self.current = StartProgress(os.getpid(), phase, detail.lower(), done, total)
        self._write(force=force)

    def _write(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._written < MIN_INTERVAL_S:
            return
        self._written = now
        write_private_file(self.path, json.dumps(asdict(self.current)).encode(), replace=True)

    def clear(self) -> None:
        """Remove the file (the site stopped)."""
        self.path.unlink(missing_ok=True)
