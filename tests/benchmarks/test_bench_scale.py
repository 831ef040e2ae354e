"""Smoke tests of the scale benchmark: its pieces, and a run end to end on tiny partitions over a real site.

No timing is asserted: a benchmark's figures belong in its report, not in a test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import bench_scale
from benchmarks.harness.reporting import ENTRY_HEADING, record_report
from benchmarks.scale.memory import TreeMemoryWatch, reset_high_water, tree_rss
from benchmarks.scale.site_job import policy_text
from benchmarks.workloads.shapes import CLASSES, generate_shapes, shape_image


def test_the_sandbox_mode_decides_the_sites_policy_file() -> None:
    assert policy_text("default") is None  # today's site: no [sandbox] section at all
    assert policy_text("on") == '[sandbox]\nmode = "on"\nthreads = 1\n'
    assert policy_text("off", 2) == '[sandbox]\nmode = "off"\nthreads = 2\n'
    with pytest.raises(ValueError, match="sandbox mode"):
        policy_text("maybe")


def test_the_command_line_defaults_and_its_quick_mode() -> None:
    full = bench_scale.parse_args(["--workdir", "/w"])
    assert (full.images, full.size, full.large, full.sandbox, full.repeats) == (
        [2000, 20000],
        64,
        False,
        "default",
        3,
    )
    quick = bench_scale.parse_args(["--quick", "--workdir", "/w", "--sandbox", "on", "--large"])
    assert (quick.images, quick.size, quick.sandbox, quick.large, quick.repeats) == (
        [120, 240],
        16,
        "on",
        True,
        1,
    )
    for wrong in (["--images", "50"], ["--size", "30"], ["--images", "a,b"], ["--sandbox", "maybe"]):
        with pytest.raises(SystemExit):
            bench_scale.parse_args(wrong)


def test_generated_shapes_are_distinct_labelled_and_cached(tmp_path: Path) -> None:
    source = generate_shapes(tmp_path, 40, 16, seed=1)
    files = sorted(source.rglob("*.png"))
    assert len(files) == 40 and {f.parent.name for f in files} <= set(CLASSES)
    assert len({f.read_bytes() for f in files}) == 40
    label, pixels = shape_image(1, 0, 16)
    assert (source / CLASSES[label] / "img_000000.png").is_file() and pixels.shape == (16, 16, 3)
    stamp = files[0].stat().st_mtime_ns
    assert generate_shapes(tmp_path, 40, 16, seed=1) == source and files[0].stat().st_mtime_ns == stamp


def test_the_memory_watch_sees_a_child_grow_and_its_peak_after_a_reset() -> None:
    code = "import time; time.sleep(0.6); b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(2)"
    assert reset_high_water(os.getpid())
    before, _ = tree_rss(os.getpid())
    watch = TreeMemoryWatch(os.getpid())
    watch.phase("busy")
    watch.start()
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        child.wait(30)
    finally:
        child.kill()
        figures = watch.stop()
    busy = figures["phases"]["busy"]
    assert busy["peak_bytes"] - before > 150 * 2**20  # the child's 200 MiB, seen in the tree
    assert busy["max_processes"] >= 2 and figures["processes_seen"] >= 2
    assert figures["site_high_water_bytes"] > 0  # the kernel's peak of this process since the reset


def _entry(images: int, http: float, local: float, idle: int, peak: int, partition: int) -> dict:
    calls = [
        {
            "seconds": http + 1,
            "site_user_seconds": 1.0,
            "site_system_seconds": 0.1,
            "site_minor_faults": 10,
            "other_cpu_seconds": 0.0,
            "val_accuracy": 0.5,
        },
        {
            "seconds": http,
            "site_user_seconds": 1.0,
            "site_system_seconds": 0.1,
            "site_minor_faults": 10,
            "other_cpu_seconds": 0.0,
            "val_accuracy": 0.5,
        },
    ]
    memory = {"peak_bytes": peak, "site_high_water_bytes": 0}
    entry = {
        "images": images,
        "size": 64,
        "partition": {"bytes": partition},
        "site": {"calls": calls, "memory": memory, "high_water_reset": True, "idle_rss_bytes": idle},
        "in_process": {"training_seconds": 1.0, "evaluation_seconds": local},
    }
    entry["summary"] = bench_scale.summarise(entry)
    return entry


def test_the_targets_follow_the_issues_rules() -> None:
    settings = bench_scale.parse_args(["--workdir", "/w"])
    mib = 2**20
    small = _entry(2000, http=5.0, local=1.0, idle=500 * mib, peak=540 * mib, partition=25 * mib)
    assert small["summary"]["evaluation_overhead_seconds"] == pytest.approx(4.0)
    assert small["summary"]["growth_ratio"] == pytest.approx(40 / 25)
    flat = _entry(20000, http=14.0, local=4.0, idle=500 * mib, peak=900 * mib, partition=250 * mib)
    results = bench_scale.Results(
        settings={}, machine={}, load_start=(), load_end=(), started="", sizes=[small, flat]
    )
    rows = bench_scale.targets(results, settings)
    assert [row["result"] for row in rows] == ["PASS", "PASS", "PASS"]  # 10 s ≤ 2 + 2 × 4; 1.6×; 1.6×
    grows = _entry(20000, http=45.0, local=4.0, idle=500 * mib, peak=2500 * mib, partition=250 * mib)
    results.sizes = [small, grows]
    rows = bench_scale.targets(results, settings)
    assert rows[0]["result"] == "FAIL" and "41.00 s (limit 10.00 s)" in rows[0]["measured"]
    assert [row["result"] for row in rows[1:]] == ["PASS", "FAIL"]  # 2,000 MiB of growth: 8× the partition


def test_a_large_partition_that_does_not_fit_is_skipped_with_the_reason(tmp_path: Path) -> None:
    reason = bench_scale.large_fits(tmp_path, 10**9, 224)
    assert reason is not None and "memory" in reason
    assert bench_scale.large_fits(tmp_path, 1, 16) is None


@pytest.mark.slow
def test_a_quick_run_measures_both_sizes_over_a_real_site(tmp_path: Path, capsys) -> None:
    report, work = tmp_path / "report.md", tmp_path / "work"

    code = bench_scale.main(["--quick", "--workdir", str(work), "--report", str(report)])

    assert code == 0
    text = report.read_text()
    assert "| | 120 × 16 px | 240 × 16 px |" in text.replace("|  |", "| |")
    assert "**fixed overhead of a call**" in text and "**RSS growth during the job**" in text
    assert "no `policy.toml`" in text and "Quick mode" in text and "Load average" in text
    assert "| target | measured | result |" in capsys.readouterr().out
    data = json.loads(report.with_suffix(".json").read_text())
    assert data["settings"]["sandbox"] == "default" and data["skipped"] == []
    assert [(e["images"], e["size"]) for e in data["sizes"]] == [(120, 16), (240, 16)]
    for entry in data["sizes"]:
        part, site, local, summary = entry["partition"], entry["site"], entry["in_process"], entry["summary"]
        assert part["train"] + part["val"] == entry["images"] and part["val"] >= 20
        assert part["bytes"] == entry["images"] * (3 * 16 * 16 + np.dtype(np.int64).itemsize)
        assert site["policy"] is None  # default mode: the site ran on its default policy
        # ... and its sandbox workers on the baseline's one thread (they get no OMP_NUM_THREADS)
        assert "1 torch thread(s) per worker" in Path(site["log"]).read_text()
        assert site["start_timeout_seconds"] == bench_scale.start_timeout(entry["images"] * 3 * 16 * 16)
        growth = summary["growth_parts"]  # what the peak was made of: the workers' and the site's own
        assert set(growth) == {"site", "children"} and set(growth["children"]) == {
            "RssAnon",
            "RssFile",
            "RssShmem",
        }
        assert [(c["round"], c["kind"]) for c in site["calls"]] == [(0, "training"), (1, "evaluation only")]
        # the site tree's CPU, sandbox workers it has reaped included: never negative, the training call's real
        assert all(
            c["seconds"] > 0 and min(c["site_user_seconds"], c["site_system_seconds"]) >= 0
            for c in site["calls"]
        )
        assert site["calls"][0]["site_user_seconds"] > 0
        assert summary["evaluation_overhead_seconds"] == pytest.approx(
            site["calls"][1]["seconds"] - local["evaluation_seconds"]
        )
        assert (
            summary["peak_rss_bytes"]
            >= site["memory"]["peak_bytes"]
            > summary["idle_rss_bytes"]
            > 100 * 2**20
        )
        assert summary["growth_bytes"] == summary["peak_rss_bytes"] - summary["idle_rss_bytes"]
        assert site["high_water_reset"] and site["memory"]["site_high_water_bytes"] > 0
        assert {"round 0 (training)", "round 1 (evaluation only)"} <= set(site["memory"]["phases"])
        # the site and this process ran the same function on the same data and weights
        assert summary["site_val_accuracy"] == pytest.approx(local["val_accuracy"], abs=2 / part["val"])
    assert data["sizes"][0]["job"] == data["sizes"][1]["job"] == data["job"]  # the same job at both sizes
    assert [row["result"] for row in data["targets"]] and all(
        r["result"] in ("PASS", "FAIL") for r in data["targets"]
    )
    assert len(data["targets"]) == 3 and "(quick mode" in data["targets"][0]["target"]
    # the sites were stopped and their state (the blob store) removed; their logs stay
    assert (
        not list((work / "scale").glob("state-*/")) and len(list((work / "scale").glob("state-*.log"))) == 2
    )

    fields: dict[str, Any] = {k: tuple(v) if k.startswith("load") else v for k, v in data.items()}
    results = bench_scale.Results(**fields)
    results_file = tmp_path / "RESULTS.md"
    record_report(
        bench_scale.render_report(results, heading=ENTRY_HEADING), bench_scale.SECTION, results_file
    )
    recorded = results_file.read_text()
    assert recorded.index(bench_scale.SECTION.heading) < recorded.index("### Scale: one site's calls")
