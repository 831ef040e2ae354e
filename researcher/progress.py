"""What a researcher sees while a job runs: one line per training round, figures rounded.

``report_round`` is called by the job once per round (and for the final
evaluation); ``round_line`` is that line as text, and ``rounded`` rounds the
floats of any result (a dry run's dict, a history) for display. Nothing here
talks to a site.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from researcher.results import RoundRecord

DIGITS = 3
"""Decimals shown for losses and accuracies."""
_ERROR_CHARS = 80  # a site's error, cut: the full text is in the checkpoint and history.json


def rounded(value: Any, digits: int = DIGITS) -> Any:
    """``value`` with every float rounded to ``digits`` decimals, inside dicts, lists and tuples too.

    Parameters
    ----------
    value : any
        A number, or a (nested) dict, list or tuple of them; other values are returned unchanged.
    digits : int, default DIGITS
        Decimals kept.

    Returns
    -------
    any
        The same structure with rounded floats (NaN and infinities unchanged).

    Examples
    --------
    >>> rounded({"hospital_a": {"train_loss": 2.3025850929940455, "val_accuracy": 0.12, "num_samples": 240}})
    {'hospital_a': {'train_loss': 2.303, 'val_accuracy': 0.12, 'num_samples': 240}}
    >>> rounded([0.123456, None, (1.98765, "x")], digits=2)
    [0.12, None, (1.99, 'x')]
    """
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else value
    if isinstance(value, dict):
        return {key: rounded(item, digits) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(rounded(item, digits) for item in value)
    return value


def round_line(record: RoundRecord, rounds: int, seconds: float | None = None) -> str:
    """One round as a line: sites answered, seconds, the global model's val figures, the train loss.

    Parameters
    ----------
    record : RoundRecord
        The round, as the job recorded it (``round == rounds`` is the final evaluation).
    rounds : int
        The job's training rounds.
    seconds : float, optional
        The round's wall time; default: the slowest site's.

    Returns
    -------
    str
        E.g. ``round 1/3: 3/3 sites answered in 12.4 s; val loss 0.701, val accuracy 0.781; train
        loss 0.812``, with the sites that failed and why.

    Examples
    --------
    >>> sites = {"a": {"status": "ok", "seconds": 4.25}, "b": {"status": "error", "error": "ConnectionError"}}
    >>> record = RoundRecord(0, sites, {"loss": 2.3025850929940455, "accuracy": 0.1171875}, {"loss": 1.0049})
    >>> print(round_line(record, rounds=3))
    round 1/3: 1/2 sites answered in 4.2 s; val loss 2.303, val accuracy 0.117; train loss 1.005;
    b failed: ConnectionError
    >>> round_line(RoundRecord(3, {"a": {"status": "ok", "seconds": 1.0}}, {"accuracy": 0.9}), 3, seconds=1.5)
    'final evaluation: 1/1 sites answered in 1.5 s; val accuracy 0.900'
    """
    answered = [name for name, entry in record.sites.items() if entry.get("status") == "ok"]
    if seconds is None:
        seconds = max((record.sites[name].get("seconds", 0.0) for name in answered), default=0.0)
    title = "final evaluation" if record.round >= rounds else f"round {record.round + 1}/{rounds}"
    parts = [f"{title}: {len(answered)}/{len(record.sites)} sites answered in {seconds:.1f} s"]
    parts.append(
        _figures(
            ("val loss", record.evaluation.get("loss")), ("val accuracy", record.evaluation.get("accuracy"))
        )
    )
    parts.append(_figures(("train loss", record.train.get("loss"))))
    parts += [
        f"{name} failed: {str(entry.get('error', ''))[:_ERROR_CHARS]}"
        for name, entry in record.sites.items()
        if entry.get("status") != "ok"
    ]
    return "; ".join(part for part in parts if part)


def report_round(
    record: RoundRecord, rounds: int, seconds: float | None = None, *, stream: TextIO | None = None
) -> None:
    """Print ``round_line`` of a finished round: what a job calls once per round.

    Parameters
    ----------
    record : RoundRecord
        The round just closed.
    rounds : int
        The job's training rounds.
    seconds : float, optional
        The round's wall time (default: the slowest site's).
    stream : text file, optional
        Where to print (default: ``sys.stdout``, read at call time so notebooks capture it).

    Examples
    --------
    >>> report_round(RoundRecord(0, {"a": {"status": "ok", "seconds": 2.0}}, {"accuracy": 0.5}), rounds=2)
    round 1/2: 1/1 sites answered in 2.0 s; val accuracy 0.500
    """
    print(round_line(record, rounds, seconds), file=stream or sys.stdout, flush=True)


def history_table(history: Sequence[RoundRecord], rounds: int) -> str:
    """The job's rounds as a fixed-width text table, figures rounded.

    Parameters
    ----------
    history : sequence of RoundRecord
        ``TrainingResult.history``.
    rounds : int
        The job's training rounds.

    Returns
    -------
    str
        Columns round, sites (answered/asked), seconds (the slowest site), train loss, val loss, val
        accuracy; ``-`` where a figure is missing.

    Examples
    --------
    >>> site = {"status": "ok", "seconds": 3.14159}
    >>> first = RoundRecord(0, {"a": site}, {"loss": 2.30258, "accuracy": 0.1}, {"loss": 1.23456})
    >>> final = RoundRecord(1, {"a": {"status": "ok", "seconds": 0.5}}, {"loss": 0.9, "accuracy": 0.75})
    >>> history = [first, final]
    >>> print(history_table(history, rounds=1))
    round  sites  seconds  train_loss  val_loss  val_accuracy
        1    1/1      3.1       1.235     2.303         0.100
    final    1/1      0.5           -     0.900         0.750
    """
    header = ("round", "sites", "seconds", "train_loss", "val_loss", "val_accuracy")
    rows = [header]
    for record in history:
        answered = [entry for entry in record.sites.values() if entry.get("status") == "ok"]
        seconds = max((entry.get("seconds", 0.0) for entry in answered), default=0.0)
        rows.append(
            (
                "final" if record.round >= rounds else str(record.round + 1),
                f"{len(answered)}/{len(record.sites)}",
                f"{seconds:.1f}",
                _number(record.train.get("loss")),
                _number(record.evaluation.get("loss")),
                _number(record.evaluation.get("accuracy")),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows
    )


def _figures(*named: tuple[str, float | None]) -> str:
    return ", ".join(f"{name} {value:.{DIGITS}f}" for name, value in named if value is not None)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.{DIGITS}f}"
