"""PySyft in a benchmark's own process: imported cleanly, and silenced around what is measured."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator

SYFT_PACKAGES = ("syft", "numpy", "pandas")  # their versions go in the report beside machine_info()


def prepare_syft_import() -> None:
    """Drop the environment variables syft would read at import.

    Call before this process's first ``import syft``.
    """
    from datasite_setup.site.datasite import clear_syft_import_environment

    clear_syft_import_environment()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow syft's prints, progress bars and start-up log line (the signing key's hash, logged CRITICAL).

    Examples
    --------
    >>> with quiet():
    ...     print("not shown")
    """
    syft_logger = logging.getLogger("syft")
    level = syft_logger.level
    syft_logger.setLevel(logging.CRITICAL + 1)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        syft_logger.setLevel(level)
