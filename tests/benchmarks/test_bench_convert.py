"""Smoke test of the conversion benchmark: it runs end to end and writes its report.

No timing is asserted: a benchmark's figures belong in its report, not in a test.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import bench_convert
from benchmarks.harness.reporting import ENTRY_HEADING, record_report


def test_quick_benchmark_writes_a_report_with_every_row(tmp_path: Path, capsys) -> None:
    report = tmp_path / "report.md"
    results_file = tmp_path / "RESULTS.md"

    code = bench_convert.main(
        ["--quick", "--images", "80", "--workdir", str(tmp_path / "work"), "--report", str(report)]
    )

    assert code == 0
    text = report.read_text()
    for row in (
        "| plain loop | 80 |",
        "| fedimg convert | 80 |",
        "| plain loop + JPEG draft | 80 |",
        "| fedimg convert --workers 1 | 80 |",
        "| fedimg convert at 2·N | 160 |",
    ):
        assert row in text
    assert "images/s" in text and "peak RSS" in text
    assert (
        "**Machine**" in text
        and "Pillow" in text
        and "Load average" in text
        and "Other load during the timed runs" in text
    )
    assert text.count("**PASS**") + text.count("**MISS**") == 2
    printed = capsys.readouterr().out
    assert "| target | measured | result |" in printed

    data = json.loads(report.with_suffix(".json").read_text())
    summary = data["summary"]
    assert summary["plain loop"]["images"] == 80 and summary["fedimg convert"]["images"] == 80
    assert summary["fedimg convert at 2·N"]["images"] == 160
    for row in ("plain loop", "fedimg convert", "fedimg convert at 2·N"):
        assert summary[row]["images_per_second"] > 0
        assert summary[row]["peak_tree_rss"] > 0
    assert summary["speed_ratio"] > 0 and summary["rss_ratio"] > 0
    assert summary["fedimg convert"]["peak_tree_processes"] >= 1

    # The generated inputs are cached: 80 and 160 distinct JPEGs in ten class folders.
    sources = sorted(p for p in (tmp_path / "work").iterdir() if p.is_dir() and p.name.startswith("src-"))
    assert [len(list(p.rglob("*.jpg"))) for p in sources] == [160, 80]
    assert all(len([d for d in p.iterdir() if d.is_dir()]) == 10 for p in sources)
    # Scratch outputs are removed after each run.
    assert not any((tmp_path / "work").glob("out-*"))

    # --record inserts the report, one heading level down, first under the "Conversion" marker (report.record_report).
    results = bench_convert.Results(**{k: tuple(v) if k.startswith("load") else v for k, v in data.items()})
    marker = bench_convert.SECTION.marker
    results_file.write_text(f"# Benchmark results\n\nintro\n\n{marker}\n\n### older entry\n")
    record_report(
        bench_convert.render_report(results, heading=ENTRY_HEADING), bench_convert.SECTION, results_file
    )
    recorded = results_file.read_text()
    assert (
        recorded.index(marker)
        < recorded.index("### fedimg convert vs a plain Pillow loop")
        < recorded.index("### older entry")
    )
