"""Printing tables to a terminal without squeezing their numbers."""

from __future__ import annotations

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` at its natural width: a narrow terminal scrolls rather than turning counts into '…'.

    Parameters
    ----------
    console : rich.console.Console
        Where to print; its width is restored afterwards.
    table : rich.table.Table
        The table to print.

    Examples
    --------
    >>> import io
    >>> from rich.console import Console
    >>> from rich.table import Table
    >>> table = Table("client", "train")
    >>> table.add_row("st_marys_hospital", "1234567")
    >>> console = Console(file=io.StringIO(), width=12)
    >>> print_table(console, table)
    >>> "1234567" in console.file.getvalue(), console.width
    (True, 12)
    """
    # The table is measured against a practically unlimited width to get its natural one.
    width = Measurement.get(console, console.options.update_width(100_000), table).maximum
    previous = console.width
    console.width = max(previous, width)
    try:
        console.print(table)
    finally:
        console.width = previous
