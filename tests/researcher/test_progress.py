"""Round progress for researchers (issue 11, finding 10): one readable line per round, figures rounded.

Before, the demo printed raw dicts with 16-digit floats and nothing while rounds ran.
"""

from __future__ import annotations

import io
import re

from researcher.progress import history_table, report_round, round_line, rounded
from researcher.results import RoundRecord, aggregate_evaluations

LONG_FLOAT = re.compile(r"\d\.\d{5,}")


def _record(round_number: int) -> RoundRecord:
    evaluations = [
        {"loss": 2.3025850929940455, "num_samples": 96, "confusion": [[40, 8], [15, 33]]},
        {"loss": 1.1111111111111112, "num_samples": 109, "confusion": [[50, 5], [3, 51]]},
    ]
    sites: dict[str, dict] = {
        "hospital_a": {"status": "ok", "seconds": 12.345678, "val": {"accuracy": 0.7604166666666666}},
        "hospital_b": {"status": "ok", "seconds": 7.5, "val": {"accuracy": 0.926605504587156}},
        "hospital_c": {"status": "error", "error": "ConnectionError: " + "x" * 300},
    }
    return RoundRecord(round_number, sites, aggregate_evaluations(evaluations), {"loss": 0.8123456789})


def test_a_round_line_counts_sites_times_and_rounds_every_figure() -> None:
    line = round_line(_record(0), rounds=3, seconds=13.04)
    assert line.startswith("round 1/3: 2/3 sites answered in 13.0 s; ")
    assert "val loss 1.669, val accuracy 0.849; train loss 0.812" in line
    assert "hospital_c failed: ConnectionError: xxx" in line and "x" * 100 not in line
    assert LONG_FLOAT.findall(line) == []


def test_the_final_evaluation_is_named_and_timed_by_its_slowest_site() -> None:
    line = round_line(_record(3), rounds=3)
    assert line.startswith("final evaluation: 2/3 sites answered in 12.3 s")


def test_report_round_prints_one_line_per_call() -> None:
    stream = io.StringIO()
    for number in range(2):
        report_round(_record(number), rounds=2, seconds=1.0, stream=stream)
    lines = stream.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["round 1/2", "round 2/2"]


def test_the_history_table_and_a_dry_run_print_no_long_floats() -> None:
    table = history_table([_record(0), _record(1)], rounds=1)
    assert table.splitlines()[0].split() == [
        "round",
        "sites",
        "seconds",
        "train_loss",
        "val_loss",
        "val_accuracy",
    ]
    assert table.splitlines()[2].split()[0] == "final"
    assert LONG_FLOAT.findall(table) == []
    dry_run = {"hospital_a": {"train_loss": 2.045123456789, "val_accuracy": 0.75, "num_samples": 377}}
    assert (
        str(rounded(dry_run))
        == "{'hospital_a': {'train_loss': 2.045, 'val_accuracy': 0.75, 'num_samples': 377}}"
    )
