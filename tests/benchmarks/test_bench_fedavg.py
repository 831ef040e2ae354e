"""Smoke tests of the FedAvg benchmark: it runs end to end on a tiny budget and writes its report.

No accuracy or timing is asserted: a benchmark's figures belong in its report, not in a test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import bench_fedavg
from benchmarks.harness.reporting import ENTRY_HEADING, record_report
from benchmarks.workloads.digits import held_out_split


def test_the_held_out_split_is_disjoint_stratified_and_seeded() -> None:
    labels = np.repeat(np.arange(10), 50)
    pool, test = held_out_split(labels, 0.2, seed=3)
    assert len(np.intersect1d(pool, test)) == 0 and len(pool) + len(test) == len(labels)
    assert np.bincount(labels[test], minlength=10).tolist() == [10] * 10
    again_pool, again_test = held_out_split(labels, 0.2, seed=3)
    assert np.array_equal(test, again_test) and np.array_equal(pool, again_pool)
    assert not np.array_equal(test, held_out_split(labels, 0.2, seed=4)[1])


def test_quick_accuracy_run_writes_a_report_with_both_schemes(tmp_path: Path, capsys) -> None:
    report = tmp_path / "report.md"
    work = tmp_path / "work"

    code = bench_fedavg.main(["--quick", "--skip-overhead", "--workdir", str(work), "--report", str(report)])

    assert code == 0
    text = report.read_text()
    assert "| IID |" in text and "| Dirichlet α=0.5 |" in text
    assert "**Machine**" in text and "torch" in text and "Load average" in text and "Quick mode" in text
    assert "Gap by budget" in text and "Overhead" not in text
    assert (
        text.count("**PASS**") + text.count("**MISS**") == 4
    )  # the accuracy table and the targets table, two rows each
    assert "| target | measured | result |" in capsys.readouterr().out

    data = json.loads(report.with_suffix(".json").read_text())
    assert data["overhead"] == {} and data["load_start"] and data["load_end"]
    runs = data["accuracy"]["runs"]
    assert [(r["seed"], r["scheme"]) for r in runs] == [(0, "iid"), (0, "dirichlet")]
    for run in runs:
        assert run["test_samples"] + run["pool_samples"] == 1797
        hospitals = run["hospitals"]
        assert (
            len(hospitals["train_sizes"]) == 5
            and sum(hospitals["train_sizes"]) + sum(hospitals["val_sizes"]) == run["pool_samples"]
        )
        assert run["centralised"]["train_samples"] == sum(hospitals["train_sizes"])
        assert len(run["fedavg"]["curve"]) == 2 and len(run["fedavg"]["val_curve"]) == 3
        assert 0 <= run["fedavg"]["accuracy"] <= 1 and 0 <= run["centralised"]["accuracy"] <= 1
    iid = data["accuracy"]["summary"]["iid"]
    assert iid["fedavg_gap"][0] == pytest.approx(iid["centralised"][0] - iid["fedavg"][0])
    assert set(iid["budgets"]) == {"1", "2"}
    # The hospitals are a real fedimg federation; the scratch pool folders are gone.
    assert (work / "fedavg-accuracy" / "dirichlet-seed0" / "federation.json").is_file()
    assert not list((work / "fedavg-accuracy").glob("*-pool"))

    # --record puts the report, one heading level down, in a new "FedAvg accuracy and overhead" section (report.record_report).
    results = bench_fedavg.Results(**{k: tuple(v) if k.startswith("load") else v for k, v in data.items()})
    results_file = tmp_path / "RESULTS.md"
    record_report(
        bench_fedavg.render_report(results, heading=ENTRY_HEADING), bench_fedavg.SECTION, results_file
    )
    recorded = results_file.read_text()
    assert (
        recorded.index("## FedAvg accuracy and overhead\n")
        < recorded.index(bench_fedavg.SECTION.marker)
        < recorded.index("### FedAvg: accuracy against")
    )


@pytest.mark.slow
def test_quick_overhead_run_over_http_datasites(tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    work = tmp_path / "work"

    code = bench_fedavg.main(
        [
            "--quick",
            "--skip-accuracy",
            "--overhead-sites",
            "2",
            "--no-context",
            "--workdir",
            str(work),
            "--report",
            str(report),
        ]
    )

    assert code == 0
    text = report.read_text()
    assert (
        "Overhead: a round over 2 HTTP datasites" in text
        and "Where the time goes" in text
        and "torch on **1 thread per site**" in text
    )
    assert "| 0 (training, first) |" in text and "| 1 (evaluation only) |" in text
    assert "**Context:" not in text  # --no-context: the sites are started once (keeps the test short)
    data = json.loads(report.with_suffix(".json").read_text())
    overhead = data["overhead"]
    assert overhead["sites"] == ["client_0", "client_1"]
    assert [r["round"] for r in overhead["http_rounds"]] == [0, 1]
    assert all(status == "ok" for r in overhead["http_rounds"] for status in r["statuses"].values())
    # The sites ran the same function on the same data as the in-process baseline.
    assert overhead["http_final_accuracy"] == pytest.approx(overhead["local_final_accuracy"], abs=0.02)
    summary = overhead["summary"]
    assert summary["http_round_seconds"] > 0 and summary["local_round_seconds"] > 0 and summary["ratio"] > 0
    assert data["targets"][-1]["result"] in ("PASS", "MISS", "n/a")
    # The sites were stopped and their state removed; their logs stay.
    assert not list((work / "fedavg-overhead").glob("state-*/"))
    assert len(list((work / "fedavg-overhead").glob("state-*.log"))) == 2
