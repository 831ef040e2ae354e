"""A site's log: one rotating file (or stderr), timestamps on every line, no false alarms.

``fedimg datasite serve`` logs through ``site_log``. With a log file (``fedimg up``
gives each site ``<state_dir>/datasite.log``) the file rotates by size
(``LOG_MAX_BYTES``, ``LOG_BACKUPS`` old files: ``datasite.log.1`` … ``.5``), so a
site that runs for months cannot fill its disk, and whatever the process prints on
``sys.stdout``/``sys.stderr`` (its start-up lines, progress bars, a traceback) is
written to the same file as log records. Without one, records go to stderr as before.

Normal events are not alarms: PySyft logs ``Hash of the signing key`` at CRITICAL
every time a server is built; it is demoted to DEBUG (not shown at the site's INFO level).
"""

from __future__ import annotations

import contextlib
import io
import logging
import logging.handlers
import os
import sys
from collections.abc import Iterator
from pathlib import Path

LOG_MAX_BYTES = 10 * 2**20
LOG_BACKUPS = 5
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
OUTPUT_LOGGER = "fedimg.site"  # what the process prints, and the site's own start and stop
_DEMOTED = (("syft.server.server", "Hash of the signing key"),)


class DemoteStartupNoise(logging.Filter):
    """A handler filter that demotes PySyft's start-up messages (``_DEMOTED``) to DEBUG.

    A demoted record is dropped by a handler whose level is above DEBUG (the filter
    runs after the handler's level check, so it applies that check itself).

    Examples
    --------
    >>> record = logging.LogRecord("syft.server.server", logging.CRITICAL, "", 0,
    ...                            "Hash of the signing key 'ab12c...'", None, None)
    >>> handler = logging.StreamHandler(io.StringIO())
    >>> handler.setLevel(logging.INFO)
    >>> DemoteStartupNoise(handler).filter(record), record.levelname
    (False, 'DEBUG')
    """

    def __init__(self, handler: logging.Handler) -> None:
        super().__init__()
        self.handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        for logger, prefix in _DEMOTED:
            if record.name == logger and str(record.msg).startswith(prefix):
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
                return self.handler.level <= logging.DEBUG
        return True


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose every file, the first and each one started by a rotation, is 0600."""

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        stream = open(fd, self.mode, encoding=self.encoding, errors=self.errors)  # noqa: SIM115 (closed by the handler)
        assert isinstance(stream, io.TextIOWrapper)  # text mode
        return stream


class _LogWriter(io.TextIOBase):
    """A text stream that writes each complete line as a record of ``logger`` (for stdout/stderr)."""

    def __init__(self, logger: logging.Logger, level: int) -> None:
        super().__init__()
        self.logger, self.level, self._pending = logger, level, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        for line in lines:
            if line.strip():
                self.logger.log(self.level, line.rstrip())
        return len(text)

    def flush(self) -> None:
        if self._pending.strip():
            self.logger.log(self.level, self._pending.rstrip())
        self._pending = ""


@contextlib.contextmanager
def site_log(
    log_file: Path | None,
    *,
    max_bytes: int = LOG_MAX_BYTES,
    backups: int = LOG_BACKUPS,
    level: int = logging.INFO,
) -> Iterator[logging.Logger]:
    """Log the site process (see the module docstring) while the block runs.

    Parameters
    ----------
    log_file : pathlib.Path or None
        The log file (0600, like its rotated copies, in an existing folder); None logs to stderr and
        leaves ``sys.stdout``/``sys.stderr`` alone.
    max_bytes : int, default 10 MiB
        Size at which the file is rotated.
    backups : int, default 5
        Rotated files kept (``<log_file>.1`` newest … ``.<backups>`` oldest).
    level : int, default logging.INFO
        The lowest level written.

    Returns
    -------
    context manager of logging.Logger
        The ``fedimg.site`` logger; on exit the handler is removed and the streams restored.

    Examples
    --------
    >>> with site_log(Path("site.log"), max_bytes=200, backups=2) as log:
    ...     print("datasite hospital_a serving")
    ...     for i in range(10):
    ...         log.info("line %d", i)
    >>> sorted(path.name for path in Path(".").glob("site.log*"))
    ['site.log', 'site.log.1', 'site.log.2']
    >>> "fedimg.site INFO datasite hospital_a serving" in Path("site.log.2").read_text()
    True
    """
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = _PrivateRotatingFileHandler(
            log_file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(DemoteStartupNoise(handler))
    root = logging.getLogger()
    root.addHandler(handler)
    previous_root = root.level
    root.setLevel(min(root.level or level, level))
    # PySyft sets the root logger to CRITICAL when a server is built: fedimg's own records keep their level
    fedimg = logging.getLogger("fedimg")
    previous_level = fedimg.level
    fedimg.setLevel(level)
    output = logging.getLogger(OUTPUT_LOGGER)
    streams = sys.stdout, sys.stderr
    if log_file is not None:
        sys.stdout, sys.stderr = _LogWriter(output, logging.INFO), _LogWriter(output, logging.WARNING)
    try:
        yield output
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sys.stdout, sys.stderr = streams
        root.removeHandler(handler)
        handler.close()
        root.setLevel(previous_root)
        fedimg.setLevel(previous_level)
