"""Progress display for long loops (rich, on stderr, silent when not wanted)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


def progress_bar(items: Iterable[T], *, total: int, description: str, enabled: bool = True) -> Iterator[T]:
    """Yield ``items`` while showing a bar with count, rate and time left on stderr.

    Parameters
    ----------
    items : iterable
        What the loop walks over; yielded unchanged.
    total : int
        How many items there are (the bar's 100 %).
    description : str
        The text left of the bar, e.g. ``"Standardising images"``.
    enabled : bool, default True
        False yields the items with no display at all (``--quiet``, tests).

    Returns
    -------
    iterator
        The items, in order.

    Examples
    --------
    >>> [item * 2 for item in progress_bar([1, 2, 3], total=3, description="Doubling", enabled=False)]
    [2, 4, 6]
    """
    if not enabled:
        yield from items
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)
