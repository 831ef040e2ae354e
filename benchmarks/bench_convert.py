"""Benchmark: ``fedimg convert`` against a plain single-process Pillow loop.

The same set of N distinct 256×256 RGB JPEGs (default 2,000, generated from
scikit-learn's digits and cached in the work folder) is converted to 128-px RGB
PNGs by

* **plain loop**: one Python process, for each file ``Image.open → convert("RGB")
  → resize((128, 128), BICUBIC) → save PNG``. Its time is measured *inside* the
  process around the loop (file listing included, interpreter start excluded);
* **fedimg convert**: the real CLI (``fedimg convert SRC OUT --clients 3 --scheme
  iid --size 128 --mode RGB --seed 0 --quiet --overwrite``) in a subprocess. Its
  time is the *whole* subprocess wall time: interpreter start, imports, scan,
  decoding, dedup, partition, manifests and report included. This is
  deliberately conservative for fedimg.

Runs are interleaved (plain, fedimg, plain, fedimg, …) so drift in machine load
hits both; the median of ``--repeats`` runs is reported. Peak memory is the sum
of the RSS of the process and all its children, sampled every 50 ms, for
fedimg at N and at 10·N images (``--big-factor``).

Usage (from the repository root)::

    python -m benchmarks.bench_convert [--images N] [--repeats 3] [--workdir benchmarks/_work]
                                       [--report PATH] [--record] [--quick]

The report (markdown, plus a ``.json`` twin) goes to ``--report`` (default
``WORKDIR/report.md``); ``--record`` also adds it to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks import harness
from benchmarks.convert import contenders
from benchmarks.convert.contenders import Run
from benchmarks.workloads.images import JPEG_QUALITY, NOISE_SIGMA, SOURCE_SIZE, generate_images

ABOUT = "`fedimg convert` against a plain single-process Pillow loop"  # what its section of RESULTS.md holds
# A 1-minute load above 0.5 at start or end is flagged: fedimg needs the second core.
BENCHMARK = harness.Benchmark(
    module="bench_convert",
    title="fedimg convert",
    heading="Conversion",
    about=ABOUT,
    marker_label="results",
    report_name="report.md",
    workdir_use="cache for generated inputs and scratch outputs",
    record_help="also add the report to benchmarks/RESULTS.md",
    quick_help="smoke run: 200 images, 1 repeat, scale run at 2·N",
    seeded=True,
    wait_when=None,
    record_wait_load=None,
    load=harness.LoadLimits(max_start=0.5, max_end=0.5, busy_note=harness.BUSY_NOTE),
)
SECTION = BENCHMARK.section  # where --record puts the report in benchmarks/RESULTS.md

SPEED_TARGET = 1.5  # fedimg ≥ 1.5× the plain loop (on a 2-core machine)
RSS_TARGET = 1.3  # peak RSS at 10·N ≤ 1.3× that at N
TARGET_CORES = 2


# --- the benchmark ---------------------------------------------------------------------------


@dataclass
class Workload:
    """What bench_convert measures: N images, interleaved repeats, the memory run at F·N, the context rows."""

    images: int
    repeats: int
    big_factor: int
    big_repeats: int
    context: bool


@dataclass
class Settings(harness.SeedOption, harness.RunOptions, Workload):
    """bench_convert's settings: ``Workload``'s, then the harness's (fields follow the bases, last first)."""


@dataclass
class Results(harness.ReportHeader):
    """Every figure of a run (the JSON twin), after the report header."""

    generation_seconds: dict = field(default_factory=dict)
    runs: dict = field(default_factory=dict)  # label -> list[Run as dict]
    summary: dict = field(default_factory=dict)
    targets: list = field(default_factory=list)
    contention: dict = field(default_factory=dict)  # CPU used by other processes during the timed runs


def _generated(settings: Settings, count: int, results: Results, echo) -> Path:
    """The inputs of ``count`` images (cached), timing their generation."""
    started = time.perf_counter()
    source = generate_images(settings.workdir, count, seed=settings.seed)
    results.generation_seconds[str(count)] = round(time.perf_counter() - started, 2)
    return source


def run_benchmark(settings: Settings, *, echo=print) -> Results:
    """Run the benchmark: generate the inputs, time both contenders (interleaved), then the memory run.

    ``echo`` gets the progress lines; the results hold every figure, the medians, ratios and targets.
    """
    settings.workdir.mkdir(parents=True, exist_ok=True)
    logs = settings.workdir / "logs"
    logs.mkdir(exist_ok=True)
    results = Results.begin(settings, harness.machine_info())
    n, big_n = settings.images, settings.images * settings.big_factor
    runs: dict[str, list[Run]] = {}

    def record(run: Run) -> None:
        runs.setdefault(run.label, []).append(run)
        echo(
            f"  {run.label:<32} {run.images:>6} images  {run.seconds:7.2f} s  "
            f"{run.images_per_second:8.1f} images/s  peak RSS {_mib(run.peak_tree_rss)}"
        )

    with harness.measuring(results, settings, echo):
        echo(f"generating {n} distinct {SOURCE_SIZE}px JPEGs in {settings.workdir} (cached)…")
        source = _generated(settings, n, results, echo)
        big_source = None
        if settings.big_factor > 1:
            echo(f"generating {big_n} distinct {SOURCE_SIZE}px JPEGs (cached)…")
            big_source = _generated(settings, big_n, results, echo)
        harness.warm_page_cache(source)
        cpu_before = harness.cpu_snapshot()
        work = settings.workdir
        for repeat in range(settings.repeats):
            echo(f"repeat {repeat + 1}/{settings.repeats} (N = {n})")
            record(contenders.run_plain(source, work / "out-plain", n, logs / f"plain-{repeat}.log"))
            record(contenders.run_fedimg(source, work / "out-fedimg", n, logs / f"fedimg-{repeat}.log"))
            if settings.context:
                draft_log = logs / f"plain-draft-{repeat}.log"
                record(contenders.run_plain(source, work / "out-plain-draft", n, draft_log, draft=True))
                single_log = logs / f"fedimg-w1-{repeat}.log"
                record(contenders.run_fedimg(source, work / "out-fedimg-w1", n, single_log, workers=1))
        if big_source is not None:
            harness.warm_page_cache(big_source)
            echo(f"memory run at {settings.big_factor}·N = {big_n} images")
            for repeat in range(settings.big_repeats):
                big_log = logs / f"fedimg-big-{repeat}.log"
                run = contenders.run_fedimg(big_source, work / "out-fedimg-big", big_n, big_log)
                run.label = f"fedimg convert at {settings.big_factor}·N"
                record(run)
    children = sum(r.cpu_seconds for group in runs.values() for r in group)
    results.contention = harness.contention(cpu_before, harness.cpu_snapshot(), children_cpu_seconds=children)
    results.runs = {
        label: [asdict(r) | {"images_per_second": r.images_per_second} for r in group]
        for label, group in runs.items()
    }
    results.summary, results.targets = _summarise(runs, settings)
    return results


def _median_run(group: list[Run]) -> dict:
    seconds = statistics.median(r.seconds for r in group)
    return {
        "images": group[0].images,
        "seconds": seconds,
        "images_per_second": group[0].images / seconds,
        "runs_images_per_second": [round(r.images_per_second, 1) for r in group],
        "wall_seconds": statistics.median(r.wall_seconds for r in group),
        "cpu_seconds": statistics.median(r.cpu_seconds for r in group),
        "peak_tree_rss": int(statistics.median(r.peak_tree_rss for r in group)),
        "peak_tree_processes": max(r.peak_tree_processes for r in group),
        "max_single_rss": int(statistics.median(r.max_single_rss for r in group)),
        "timing": group[0].timing,
    }


def _summarise(runs: dict[str, list[Run]], settings: Settings) -> tuple[dict, list]:
    summary = {label: _median_run(group) for label, group in runs.items()}
    plain, fedimg = summary["plain loop"], summary["fedimg convert"]
    speed_ratio = fedimg["images_per_second"] / plain["images_per_second"]
    summary["speed_ratio"] = speed_ratio
    cores = os.cpu_count() or 1
    core_note = (
        ""
        if cores == TARGET_CORES
        else f" (measured on {cores} cores; the target is stated for {TARGET_CORES})"
    )
    speed_target = f"fedimg convert ≥ {SPEED_TARGET}× the plain loop (images/s){core_note}"
    targets = [harness.ratio_target(speed_target, speed_ratio, speed_ratio >= SPEED_TARGET)]
    big_label = f"fedimg convert at {settings.big_factor}·N"
    if big_label in summary:
        rss_ratio = summary[big_label]["peak_tree_rss"] / fedimg["peak_tree_rss"]
        summary["rss_ratio"] = rss_ratio
        summary["single_rss_ratio"] = summary[big_label]["max_single_rss"] / fedimg["max_single_rss"]
        note = (
            ""
            if settings.big_factor == 10
            else f" (measured at {settings.big_factor}·N, not 10·N: --quick or --big-factor)"
        )
        rss_target = f"peak RSS at 10·N ≤ {RSS_TARGET}× peak RSS at N{note}"
        targets.append(harness.ratio_target(rss_target, rss_ratio, rss_ratio <= RSS_TARGET))
    return summary, targets


# --- the report ----------------------------------------------------------------------------

COLUMNS = (
    "measurement, images, time (s), images/s, per run (images/s), CPU (s), "
    "peak RSS (tree), processes, largest process"
).split(", ")


def _mib(value: int | float) -> str:
    return f"{value / 2**20:.0f} MiB"


def _table_row(label: str, row: dict) -> tuple:
    return (
        label,
        row["images"],
        f"{row['seconds']:.2f}",
        f"{row['images_per_second']:.1f}",
        ", ".join(f"{v:.1f}" for v in row["runs_images_per_second"]),
        f"{row['cpu_seconds']:.1f}",
        _mib(row["peak_tree_rss"]),
        row["peak_tree_processes"],
        _mib(row["max_single_rss"]),
    )


def _software_line(m: dict) -> str:
    libjpeg = f"libjpeg{'-turbo' if m['libjpeg_turbo'] else ''} {m['libjpeg']}"
    return (
        f"- **Software**: Python {m['python']}, Pillow {m['pillow']} ({libjpeg}, zlib {m['zlib']}), "
        f"fedimg {m['fedimg_version']} at commit {m['fedimg_commit']}"
    )


def _method_lines(s: dict, summary: dict, big_label: str) -> list[str]:
    """The bullets that say what was measured and how."""
    n, big = s["images"], big_label in summary
    size, fedimg_args = contenders.OUTPUT_SIZE, " ".join(contenders.FEDIMG_ARGS)
    return [
        f"- **Inputs**: N = {n} distinct {SOURCE_SIZE}×{SOURCE_SIZE} RGB JPEGs (quality {JPEG_QUALITY}; "
        f"scikit-learn digits upscaled, shifted, tinted, noised σ={NOISE_SIGMA:g}) in 10 class folders"
        + (f"; the memory run uses a set of {n * s['big_factor']} made the same way" if big else ""),
        f"- **Output**: {size}×{size} RGB PNG (Pillow defaults, bicubic)",
        f"- **Runs**: {s['repeats']} repeat(s) of each, interleaved plain/fedimg, median reported"
        + (f"; {s['big_repeats']} memory run(s) at {s['big_factor']}·N" if big else "")
        + ("; quick mode" if s["quick"] else ""),
        "- **Plain loop**: `open → convert('RGB') → "
        f"resize(({size}, {size}), BICUBIC) → save PNG`, one process; time measured inside "
        "the process around the loop (file listing included, interpreter start excluded)",
        f"- **fedimg**: `fedimg convert SRC OUT {fedimg_args}` (all cores); time = wall time "
        "of the whole CLI subprocess (interpreter start, imports, scan, decode, dedup, partition, manifests, "
        "report.md and plot included)",
        "- **Peak RSS**: sum over the process and all its children, sampled every "
        f"{harness.SAMPLE_INTERVAL * 1000:.0f} ms (forked workers' shared pages count once per process: an "
        'upper bound, the same yardstick at every size); "largest process" is the kernel\'s high-water mark '
        "(VmHWM) of the biggest single process",
    ]


def render_report(results: Results, *, heading: str = "##") -> str:
    """The report on fedimg convert against the plain loop, as markdown.

    ``heading`` is ``##`` in the report file, ``###`` in RESULTS.md.
    """
    m, s, summary = results.machine, results.settings, results.summary
    n = s["images"]
    big_label = f"fedimg convert at {s['big_factor']}·N"
    plain, fedimg = summary["plain loop"], summary["fedimg convert"]
    subject = "fedimg convert vs a plain Pillow loop"
    lines = BENCHMARK.opening(results, heading=heading, subject=subject, software=_software_line(m))
    lines += [*_method_lines(s, summary, big_label), ""]
    rows = [_table_row(label, row) for label, row in summary.items() if isinstance(row, dict)]
    lines += harness.table(COLUMNS, "lrrrlrrrr", rows)
    lines += [
        "",
        f"- **Speed**: fedimg convert {fedimg['images_per_second']:.1f} images/s vs plain loop "
        f"{plain['images_per_second']:.1f} images/s: **{summary['speed_ratio']:.2f}×**",
    ]
    if "rss_ratio" in summary:
        big = summary[big_label]
        lines.append(
            f"- **Memory**: fedimg peak RSS {_mib(fedimg['peak_tree_rss'])} at N = {n} and "
            f"{_mib(big['peak_tree_rss'])} at {s['big_factor']}·N = {big['images']}: "
            f"**{summary['rss_ratio']:.2f}×** (largest single process {_mib(fedimg['max_single_rss'])} → "
            f"{_mib(big['max_single_rss'])}, {summary['single_rss_ratio']:.2f}×); "
            f"plain loop {_mib(plain['peak_tree_rss'])}"
        )
    if "plain loop + JPEG draft" in summary:
        draft, single = summary["plain loop + JPEG draft"], summary["fedimg convert --workers 1"]
        lines.append(
            "- **Context** (not targets): the plain loop with JPEG draft decoding (what fedimg does) runs at "
            f"{draft['images_per_second']:.1f} images/s; fedimg on one worker at "
            f"{single['images_per_second']:.1f} images/s, so all cores give "
            f"{fedimg['images_per_second'] / single['images_per_second']:.2f}× over one"
        )
    lines += harness.targets_table(results.targets)
    return harness.markdown(lines)


# --- command line --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Settings:
    """The settings ``argv`` asks for (None: ``sys.argv[1:]``), defaults filled in; see ``--help``."""
    parser = BENCHMARK.parser(__doc__)
    parser.add_argument("--images", type=int, help="N, the number of images (default 2000; 200 with --quick)")
    parser.add_argument(
        "--repeats",
        type=int,
        help="interleaved runs of each contender; the median is reported (default 3; 1 with --quick)",
    )
    parser.add_argument(
        "--big-factor",
        type=int,
        help="the memory scale run converts this many times N (default 10; 2 with --quick; 1 skips it)",
    )
    parser.add_argument("--big-repeats", type=int, default=1, help="runs at big-factor·N (default 1)")
    parser.add_argument(
        "--no-context",
        action="store_true",
        help="skip the context runs (plain loop with JPEG draft, fedimg --workers 1)",
    )
    BENCHMARK.add_run_options(parser)
    args = parser.parse_args(argv)
    images = harness.chosen(args.images, args.quick, full=2000, quick=200)
    repeats = harness.chosen(args.repeats, args.quick, full=3, quick=1)
    big_factor = harness.chosen(args.big_factor, args.quick, full=10, quick=2)
    if images < 1 or repeats < 1 or big_factor < 1 or args.big_repeats < 1:
        parser.error("--images, --repeats, --big-factor and --big-repeats must be at least 1")
    return Settings(
        images=images,
        repeats=repeats,
        big_factor=big_factor,
        big_repeats=args.big_repeats,
        context=not args.no_context,
        **BENCHMARK.run_options(args),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.bench_convert``: the harness's flow (``Benchmark.main``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_plain_loop"]:
        return contenders.plain_loop_main(argv[1:])
    return BENCHMARK.main(argv, parse_args, run_benchmark, render_report)


if __name__ == "__main__":
    sys.exit(main())
