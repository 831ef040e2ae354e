"""Smoke test of the ingest benchmark: it runs end to end on a tiny partition and writes its report.

No timing is asserted: a benchmark's figures belong in its report, not in a test.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import bench_ingest
from benchmarks.harness.reporting import ENTRY_HEADING, record_report


def test_quick_benchmark_writes_a_report_with_every_row(tmp_path: Path, capsys) -> None:
    report = tmp_path / "report.md"
    work = tmp_path / "work"

    code = bench_ingest.main(
        ["--quick", "--images", "40", "--sizes", "32", "--workdir", str(work), "--report", str(report)]
    )

    assert code == 0
    text = report.read_text()
    for label in bench_ingest.LABELS:
        assert f"| 32 px | {label} | 40 |" in text
    assert "MB/s" in text and "images/s" in text
    assert (
        "**Machine**" in text
        and "PySyft" in text
        and "Load average" in text
        and "Other load during the timed runs" in text
    )
    assert text.count("**PASS**") + text.count("**MISS**") == 1
    assert "| target | measured | result |" in capsys.readouterr().out

    data = json.loads(report.with_suffix(".json").read_text())
    entry = data["summary"]["32"]
    for label in bench_ingest.LABELS:
        row = entry["rows"][label]
        assert row["images"] == 40
        assert (
            row["images_per_second"] > 0
            and row["mb_per_second"] > 0
            and row["payload_bytes"] > 0
            and row["minor_faults"] >= 0
        )
        assert "equal" in row["verified"]
        assert ("train shards" if label == bench_ingest.SHARDED else "5 assets") in row["verified"]
    # Private and mock uint8 images at 32 px RGB, plus int64 labels: the payload both ways upload.
    assert entry["rows"][bench_ingest.PLAIN]["payload_bytes"] == 2 * 40 * (3 * 32 * 32 + 8)
    assert (
        entry["upload_ratio"] > 0
        and entry["full_ingest_ratio"] > 0
        and len(entry["upload_ratio_per_repeat"]) == 1
    )
    assert data["load_start"] and data["load_end"]

    # The converted partition is cached; the scratch datasites are gone.
    assert len(list(work.glob("ingest-fed-n40-s32-*.done"))) == 1
    assert not (work / "ingest-state").exists()

    # --record puts the report, one heading level down, in a new "Dataset ingest" section (report.record_report).
    results = bench_ingest.Results(**{k: tuple(v) if k.startswith("load") else v for k, v in data.items()})
    results_file = tmp_path / "RESULTS.md"
    record_report(
        bench_ingest.render_report(results, heading=ENTRY_HEADING), bench_ingest.SECTION, results_file
    )
    recorded = results_file.read_text()
    assert (
        recorded.index("## Dataset ingest\n")
        < recorded.index(bench_ingest.SECTION.marker)
        < recorded.index("### fedimg ingest vs PySyft's client upload")
    )
