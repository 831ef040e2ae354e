"""Figures as the reports write them: markdown tables, the targets table, mean ± standard deviation.

Every report is a list of markdown lines; these helpers make the table rows and
the common summary numbers the same way in every benchmark.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence

ALIGNMENT = {"l": "---", "r": "---:", "c": ":---:"}  # a column's rule cell: left, right, centred


def row(*cells: object) -> str:
    """One markdown table row.

    Parameters
    ----------
    *cells : object
        The cells, already formatted (``str()`` is applied).

    Returns
    -------
    str
        ``| a | b |``.

    Examples
    --------
    >>> row("plain loop", 80, "97.8")
    '| plain loop | 80 | 97.8 |'
    """
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def rule(alignment: str) -> str:
    """The rule under a markdown table's header.

    Parameters
    ----------
    alignment : str
        One letter a column: ``l`` (left), ``r`` (right) or ``c`` (centred).

    Returns
    -------
    str
        ``| --- | ---: | :---: |``.

    Examples
    --------
    >>> rule("lrc")
    '| --- | ---: | :---: |'
    """
    return row(*(ALIGNMENT[letter] for letter in alignment))


def table(header: Sequence[str], alignment: str, rows: Iterable[Sequence[object]] = ()) -> list[str]:
    """A markdown table's lines: header, rule, rows.

    Parameters
    ----------
    header : Sequence[str]
        The column titles.
    alignment : str
        ``rule``'s letters, one a column.
    rows : Iterable[Sequence[object]]
        The rows' cells.

    Returns
    -------
    list[str]
        One line a row, the header and rule first.

    Examples
    --------
    >>> print("\\n".join(table(["way", "images/s"], "lr", [["plain", "97.8"], ["fedimg", "39.6"]])))
    | way | images/s |
    | --- | ---: |
    | plain | 97.8 |
    | fedimg | 39.6 |
    """
    return [row(*header), rule(alignment), *(row(*cells) for cells in rows)]


def targets_table(targets: Iterable[dict]) -> list[str]:
    """The table every report ends its targets with, after a blank line.

    Parameters
    ----------
    targets : Iterable[dict]
        ``target``, ``measured`` and ``result`` (PASS, MISS or n/a) of each target.

    Returns
    -------
    list[str]
        A blank line, then the table.

    Examples
    --------
    >>> print("\\n".join(targets_table([{"target": "fast", "measured": "2.0×", "result": "PASS"}])))
    <BLANKLINE>
    | target | measured | result |
    | --- | ---: | :---: |
    | fast | 2.0× | **PASS** |
    """
    rows = [(t["target"], t["measured"], f"**{t['result']}**") for t in targets]
    return ["", *table(("target", "measured", "result"), "lrc", rows)]


def ratio_target(target: str, ratio: float, passed: bool) -> dict:
    """A row of the targets table for a target stated as a ratio.

    Parameters
    ----------
    target : str
        What the target says.
    ratio : float
        The measured ratio.
    passed : bool
        Whether it meets the target.

    Returns
    -------
    dict
        ``target``, ``measured`` (``1.23×``) and ``result`` (PASS or MISS).

    Examples
    --------
    >>> ratio_target("fedimg ≥ 1.5× the plain loop", 1.234, True)
    {'target': 'fedimg ≥ 1.5× the plain loop', 'measured': '1.23×', 'result': 'PASS'}
    """
    return {"target": target, "measured": f"{ratio:.2f}×", "result": "PASS" if passed else "MISS"}


def markdown(lines: Iterable[str]) -> str:
    """A report's lines as its markdown text (one newline at the end).

    Examples
    --------
    >>> markdown(["## title", "", "- a bullet"])
    '## title\\n\\n- a bullet\\n'
    """
    return "\n".join(lines) + "\n"


def mean_std(values: Sequence[float]) -> list[float]:
    """The mean and the sample standard deviation (0 for a single value).

    Parameters
    ----------
    values : Sequence[float]
        One figure a seed, say.

    Returns
    -------
    list[float]
        ``[mean, standard deviation]``, as the JSON twin stores it.

    Examples
    --------
    >>> mean_std([1.0, 2.0, 3.0])
    [2.0, 1.0]
    >>> mean_std([4.0])
    [4.0, 0.0]
    """
    return [float(statistics.mean(values)), float(statistics.stdev(values)) if len(values) > 1 else 0.0]


def pm(pair: Sequence[float], digits: int = 2) -> str:
    """A ``mean_std`` pair as ``mean ± std`` (never ``-0.00``).

    Parameters
    ----------
    pair : Sequence[float]
        The mean and the standard deviation.
    digits : int
        Digits after the point.

    Returns
    -------
    str
        The pair as the reports write it.

    Examples
    --------
    >>> pm([97.5, 0.123])
    '97.50 ± 0.12'
    >>> pm([-0.001, 0.0])
    '0.00 ± 0.00'
    """
    return f"{round(pair[0], digits) + 0.0:.{digits}f} ± {pair[1]:.{digits}f}"
