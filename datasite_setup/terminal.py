"""Printing tables to a terminal without squeezing their numbers."""

from __future__ import annotations

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table


def print_table(console: Console, table: Table) -> None:
    """Print at the table's natural width: a narrow terminal scrolls rather than turning counts into '…'."""
    width = Measurement.get(console, console.options.update_width(100_000), table).maximum
    previous = console.width
    console.width = max(previous, width)
    try:
        console.print(table)
    finally:
        console.width = previous
