"""Smoke tests of the console benchmark: its command line, its report, and a quick run over a real site and console.

No timing is asserted: a benchmark's figures belong in its report, not in a test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_console
from benchmarks.harness.reporting import ENTRY_HEADING, record_report


def test_the_command_line_defaults_and_its_quick_mode() -> None:
    full = bench_console.parse_args(["--workdir", "/w"])
    assert (full.sites, full.requests, full.repeats, full.quick) == (3, 3, 10, False)
    quick = bench_console.parse_args(["--workdir", "/w", "--quick", "--repeats", "4"])
    assert (quick.sites, quick.requests, quick.repeats, quick.quick) == (1, 1, 4, True)
    assert quick.report == Path("/w/console-report.md")
    with pytest.raises(SystemExit):
        bench_console.parse_args(["--requests", "9"])  # more than a site keeps pending


def test_the_summary_compares_every_page_with_the_ping_and_the_target() -> None:
    results = bench_console.Results(settings={}, machine={}, load_start=(), load_end=(), started="now")
    results.ping = [0.01, 0.02, 0.03]
    results.pages = {"Requests": [0.2, 0.4, 0.3], "Audit": [1.5, 1.2, 0.9]}

    summary = bench_console.summarise(results)

    assert summary["ping_median_s"] == 0.02 and summary["ping_max_s"] == 0.03
    assert summary["pages"]["Requests"] == {
        "median_s": 0.3,
        "max_s": 0.4,
        "ratio_to_ping": pytest.approx(15.0),
        "meets_target": True,
    }
    assert summary["pages"]["Audit"]["meets_target"] is False  # median 1.2 s > 1 s


def test_quick_run_times_every_page_and_records_its_report(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    report = tmp_path / "report.md"

    code = bench_console.main(["--quick", "--workdir", str(tmp_path / "work"), "--report", str(report)])

    assert code == 0
    text = report.read_text()
    assert "**Machine**" in text and "Load average" in text and "Quick mode" in text
    assert "| page | median s | max s | median / ping | KiB |" in text
    for name in (*bench_console.PAGE_NAMES.values(), bench_console.PING):
        assert f"| {name} |" in text, name
    assert "| Requests ≤ 1 s (median) |" in text and "| target | measured | result |" in text
    data = json.loads(report.with_suffix(".json").read_text())
    assert set(data["pages"]) == set(bench_console.PAGE_NAMES.values())
    assert all(len(samples) == 2 and all(s > 0 for s in samples) for samples in data["pages"].values())
    assert len(data["ping"]) == 2 and data["sign_in_s"] > 0
    assert set(data["page_bytes"]) == set(data["pages"]) and data["page_bytes"]["Dataset"] > 1000
    assert "Owner console: page times" in capsys.readouterr().out

    results_file = tmp_path / "RESULTS.md"
    record_report(
        bench_console.render_report(_results(data), heading=ENTRY_HEADING),
        bench_console.SECTION,
        results_file,
    )
    recorded = results_file.read_text()
    assert "## Owner console" in recorded and "### Owner console: page times" in recorded
    assert bench_console.SECTION.marker in recorded


def _results(data: dict) -> bench_console.Results:
    return bench_console.Results(**data)
