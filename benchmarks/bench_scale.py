"""Benchmark: what a site's call costs as its partition grows (one site, 2,000 and 20,000 images of 64 px).

One real datasite (``fedimg datasite serve`` over HTTP) per partition size, one
after the other in the same run, ingests a partition of N generated RGB images
(four shape classes, converted by ``fedimg convert`` into one client, train/val
80/20) and runs the same ``FedAvgJob`` (``SmallCNN``, one training round, then the
final evaluation-only call), submitted by a researcher and approved by the owner.
Each call's seconds (the researcher's) are compared with the same rendered site
function called in this process on the partition's arrays read from disk: the
evaluation-only call's difference is the site's **fixed overhead** per call. The
site's process tree (sandbox workers included, once there are any) is sampled from
``/proc``: its RSS idle after ingest, its peak during the job, the growth against
the partition's bytes. Targets (issue 10, "Measure"): the fixed overhead at the
larger N ≤ 2 s + 2 × the overhead at the smaller, and the RSS growth during the
job ≤ 2 × the partition's bytes. ``--large`` adds 5,000 images at 224 px (~750 MB)
when the machine's free memory and disk allow it. ``--sandbox on|off`` writes
``[sandbox] mode`` into the site's ``policy.toml``; ``default`` writes no policy.

Usage (from the repository root)::

    python -m benchmarks.bench_scale [--images 2000,20000] [--size 64] [--large] [--sandbox default]
                                     [--quick] [--record] [--workdir benchmarks/_work] [--report PATH]

The report (markdown, plus a ``.json`` twin) goes to ``--report`` (default
``WORKDIR/scale-report.md``); ``--record`` also adds it to the "Scale: one site's
calls as the partition grows" section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import gc
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from benchmarks import harness
from benchmarks.scale.in_process import check_same_result, run_in_process
from benchmarks.scale.partition import label_count, scale_federation
from benchmarks.scale.render import MIB, method_lines, reading_lines, sizes_table, skipped_lines
from benchmarks.scale.site_job import SANDBOX_MODES, run_site_job, start_timeout
from benchmarks.workloads.digits import software

OVERHEAD_SLACK_SECONDS = 2.0  # overhead(big) ≤ 2 s + 2 × overhead(small)
OVERHEAD_FACTOR = 2.0
GROWTH_LIMIT = 2.0  # RSS growth during the job ≤ 2 × the partition's bytes
MIN_IMAGES = 100  # val is 20 %: the site's default release policy wants at least 20 val samples
LARGE = (5000, 224)  # --large: images, px
LARGE_MEMORY_FACTOR = (
    12  # --large runs when free memory ≥ this × its partition's bytes (the site today: ~10×)
)
LARGE_DISK_FACTOR = 6  # … and free disk ≥ this × (source PNGs, converted PNGs, the site's blobs twice)
BUSY_NOTE = (
    "the machine was not idle (other processes, or the benchmark's own site): timings may be pessimistic"
)
BENCHMARK = harness.Benchmark(
    module="bench_scale",
    title="scale",
    heading="Scale: one site's calls as the partition grows",
    about="One site at 2,000 and 20,000 images of 64 px RGB, the same job: a call's fixed overhead and the "
    "site's memory growth against the same calls in one process",
    marker_label="scale results",
    report_name="scale-report.md",
    workdir_use="cache (generated and converted partitions) and scratch folder",
    record_help="also add the report to the scale section of benchmarks/RESULTS.md",
    quick_help="smoke run: 120 and 240 images of 16 px, 1 evaluation repeat",
    seeded=True,
    wait_when="first",
    record_wait_load=1.5,
    load=harness.LoadLimits(max_start=0.5, max_end=1.5, busy_note=BUSY_NOTE),
)
SECTION = BENCHMARK.section


@dataclass
class Workload:
    """The partitions, the job's model and batch, the site's threads and sandbox, the baseline's repeats."""

    images: list[int]
    size: int
    large: bool
    width: int
    batch_size: int
    site_threads: int
    sandbox: str
    repeats: int


@dataclass
class Settings(harness.WaitOptions, harness.SeedOption, harness.RunOptions, Workload):
    """bench_scale's settings: ``Workload``'s fields, then the harness's (the JSON twin's order)."""


@dataclass
class Results(harness.ReportHeader):
    """A run's figures, after the report header: the wait, the contention, the job, each size's figures."""

    waited: dict = field(default_factory=dict)
    contention: dict = field(default_factory=dict)
    job: dict = field(default_factory=dict)
    sizes: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    targets: list = field(default_factory=list)


def make_job(settings: Settings, size: int, classes: int) -> Any:
    """The job every size runs: ``SmallCNN`` on RGB, one round of one local epoch, SGD."""
    from researcher import FedAvgJob
    from researcher.models import SmallCNN

    kwargs = {"channels": 3, "image_size": size, "num_classes": classes, "width": settings.width}
    return FedAvgJob(
        SmallCNN,
        name="bench_scale",
        rounds=1,
        local_epochs=1,
        batch_size=settings.batch_size,
        lr=0.05,
        optimizer="sgd",
        momentum=0.9,
        seed=settings.seed,
        model_kwargs=kwargs,
    )


def pixel_bytes(client_dir: Any, size: int) -> int:
    """The decoded bytes of a converted RGB partition: its images (one file each) × 3 × ``size``².

    Examples
    --------
    >>> import tempfile, pathlib
    >>> client = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("train/a/1.png", "train/b/2.png", "val/a/3.png"):
    ...     (client / name).parent.mkdir(parents=True, exist_ok=True); _ = (client / name).write_bytes(b"")
    >>> pixel_bytes(client, 64) == 3 * 3 * 64 * 64
    True
    """
    from pathlib import Path

    images = sum(1 for path in Path(client_dir).rglob("*.png"))
    return images * 3 * size * size


def growth_parts(site: dict) -> dict:
    """What the RSS growth at the job's peak is made of: anonymous and file-backed, site and workers.

    Parameters
    ----------
    site : dict
        ``run_site_job``'s figures (``idle_parts`` and ``memory["peak_parts"]``).

    Returns
    -------
    dict
        ``{"site": {...}, "children": {...}}`` in bytes per ``RssAnon`` / ``RssFile`` / ``RssShmem``
        (peak sample − idle); empty when either was not read.

    Examples
    --------
    >>> idle = {"site": {"RssAnon": 10, "RssFile": 5}, "children": {"RssAnon": 3, "RssFile": 1}}
    >>> peak = {"site": {"RssAnon": 11, "RssFile": 5}, "children": {"RssAnon": 9, "RssFile": 4}}
    >>> growth_parts({"idle_parts": idle, "memory": {"peak_parts": peak}})["children"]
    {'RssAnon': 6, 'RssFile': 3}
    """
    idle, peak = site.get("idle_parts") or {}, site.get("memory", {}).get("peak_parts") or {}
    if not idle or not peak:
        return {}
    return {
        group: {name: peak[group][name] - idle[group].get(name, 0) for name in peak[group]} for group in peak
    }


def job_description(job: Any, function: Any, classes: int) -> dict:
    """What the report says of the job: model, budget, classes, the site function's hash."""
    c = job.config
    return {
        "model": f"SmallCNN(width={c.model_kwargs['width']})",
        "rounds": c.rounds,
        "local_epochs": c.local_epochs,
        "batch_size": c.batch_size,
        "classes": classes,
        "function_sha256": function.sha256,
    }


def summarise(entry: dict) -> dict:
    """One size's headline figures: each call over HTTP and in one process, the overhead, the memory."""
    site, local, part = entry["site"], entry["in_process"], entry["partition"]
    training, evaluation = site["calls"][0], site["calls"][-1]
    memory = site["memory"]
    high_water = memory["site_high_water_bytes"] if site["high_water_reset"] else 0
    peak = max(memory["peak_bytes"], high_water)
    overhead = evaluation["seconds"] - local["evaluation_seconds"]
    return {
        "training_http_seconds": training["seconds"],
        "training_local_seconds": local["training_seconds"],
        "training_overhead_seconds": training["seconds"] - local["training_seconds"],
        "evaluation_http_seconds": evaluation["seconds"],
        "evaluation_local_seconds": local["evaluation_seconds"],
        "evaluation_overhead_seconds": overhead,
        "overhead_seconds_per_100_mib": overhead / (part["bytes"] / (100 * MIB)),
        "evaluation_site_user_seconds": evaluation["site_user_seconds"],
        "evaluation_site_system_seconds": evaluation["site_system_seconds"],
        "evaluation_site_minor_faults": evaluation["site_minor_faults"],
        "training_other_cpu_seconds": training["other_cpu_seconds"],
        "evaluation_other_cpu_seconds": evaluation["other_cpu_seconds"],
        "idle_rss_bytes": site["idle_rss_bytes"],
        "peak_rss_bytes": peak,
        "growth_bytes": peak - site["idle_rss_bytes"],
        "growth_ratio": (peak - site["idle_rss_bytes"]) / part["bytes"],
        "site_val_accuracy": evaluation["val_accuracy"],
        "growth_parts": growth_parts(site),
    }


def large_fits(workdir: Any, images: int, size: int) -> str | None:
    """Why ``images`` at ``size`` px RGB do not fit this machine now (free memory, free disk), or None."""
    import psutil

    data = images * 3 * size * size
    memory, disk = psutil.virtual_memory().available, shutil.disk_usage(workdir).free
    if memory < LARGE_MEMORY_FACTOR * data:
        return (
            f"{memory / 2**30:.1f} GiB of memory free, {LARGE_MEMORY_FACTOR}× its {data / 1e6:.0f} MB "
            f"needed ({LARGE_MEMORY_FACTOR * data / 2**30:.1f} GiB)"
        )
    if disk < LARGE_DISK_FACTOR * data:
        return f"{disk / 2**30:.1f} GiB of disk free, {LARGE_DISK_FACTOR * data / 2**30:.1f} GiB needed"
    return None


def measure_size(settings: Settings, client_dir: Any, size: int, echo: Callable[..., None]) -> dict:
    """One partition size: the job over HTTP at a fresh site, then the same calls in this process."""
    classes = label_count(client_dir)
    job = make_job(settings, size, classes)
    http = run_site_job(
        job,
        client_dir,
        settings.workdir / "scale",
        threads=settings.site_threads,
        sandbox=settings.sandbox,
        echo=echo,
        timeout=start_timeout(pixel_bytes(client_dir, size)),
    )
    final = http.pop("final_weights")
    function = job.site_function(SimpleNamespace(label_map=range(classes)))  # built for the submission
    echo("    the same calls in this process…")
    local = run_in_process(
        function.function,
        client_dir,
        initial=job.initial_weights(),
        final=final,
        rounds=job.config.rounds,
        threads=settings.site_threads,
        repeats=settings.repeats,
    )
    partition = {key: local.pop(key) for key in ("images", "train", "val", "image_bytes", "bytes")}
    entry = {"images": partition["images"], "size": size, "partition": partition, "site": http}
    entry["in_process"] = local
    entry["job"] = job_description(job, function, classes)
    problem = check_same_result(http["calls"][-1]["val_accuracy"], local["val_accuracy"], partition["val"])
    if problem:
        raise harness.BenchmarkError(f"{partition['images']} images: {problem}")
    entry["summary"] = summarise(entry)
    s = entry["summary"]
    echo(
        f"    evaluation-only call {s['evaluation_http_seconds']:.2f} s over HTTP vs "
        f"{s['evaluation_local_seconds']:.2f} s in one process: "
        f"overhead {s['evaluation_overhead_seconds']:.2f} s; "
        f"RSS idle {s['idle_rss_bytes'] / MIB:.0f} MiB, peak {s['peak_rss_bytes'] / MIB:.0f} MiB "
        f"(growth {s['growth_ratio']:.2f}× the partition)"
    )
    return entry


def run_benchmark(settings: Settings, *, echo: Callable[..., None] = print) -> Results:
    """Prepare every partition, then measure each size in turn; the results hold every figure, the targets."""
    harness.prepare_syft_import()  # before the first 'import syft' of this process
    settings.workdir.mkdir(parents=True, exist_ok=True)
    results = Results.begin(settings, harness.machine_info() | software())
    wanted = [(n, settings.size) for n in settings.images]
    if settings.large:
        reason = large_fits(settings.workdir, *LARGE)
        if reason is None:
            wanted.append(LARGE)
        else:
            results.skipped.append({"images": LARGE[0], "size": LARGE[1], "reason": reason})
            echo(f"--large: skipped, {reason}")
    clients = {}
    for images, size in wanted:
        echo(f"partition: {images:,} images of {size} px RGB (generated and converted once, cached)…")
        clients[(images, size)] = scale_federation(settings.workdir, images, size, seed=settings.seed)
    before = harness.cpu_snapshot()
    with harness.measuring(results, settings, echo):
        for images, size in wanted:
            echo(f"{images:,} images of {size} px: one site over HTTP, one job…")
            results.sizes.append(measure_size(settings, clients[(images, size)], size, echo))
            gc.collect()
    site_cpu = sum(entry["site"]["site_cpu_seconds"] for entry in results.sizes)
    results.contention = harness.contention(before, harness.cpu_snapshot(), children_cpu_seconds=site_cpu)
    results.job = results.sizes[0]["job"]
    results.targets = targets(results, settings)
    return results


def targets(results: Results, settings: Settings) -> list[dict]:
    """The targets table: the fixed overhead at the two first sizes, the RSS growth at every size."""
    rows = []
    note = " (quick mode: too small to judge)" if settings.quick else ""
    entries = results.sizes
    if len(entries) >= 2:
        small, big = entries[0], entries[1]
        limit = OVERHEAD_SLACK_SECONDS + OVERHEAD_FACTOR * small["summary"]["evaluation_overhead_seconds"]
        measured = big["summary"]["evaluation_overhead_seconds"]
        rows.append(
            {
                "target": f"the evaluation-only call's fixed overhead at {big['images']:,} images ≤ "
                f"{OVERHEAD_SLACK_SECONDS:g} s + {OVERHEAD_FACTOR:g} × the overhead at {small['images']:,}"
                + note,
                "measured": f"{measured:.2f} s (limit {limit:.2f} s)",
                "result": "PASS" if measured <= limit else "FAIL",
            }
        )
    for entry in entries:
        s = entry["summary"]
        rows.append(
            {
                "target": f"the site's RSS growth during the job ≤ {GROWTH_LIMIT:g} × the partition's bytes, "
                f"{_where(entry)}{note}",
                "measured": f"{s['growth_bytes'] / MIB:,.0f} MiB, {s['growth_ratio']:.2f}× "
                f"{entry['partition']['bytes'] / MIB:,.0f} MiB",
                "result": "PASS" if s["growth_ratio"] <= GROWTH_LIMIT else "FAIL",
            }
        )
    return rows


def _where(entry: dict) -> str:
    return f"{entry['images']:,} images of {entry['size']} px"


def render_report(results: Results, *, heading: str = "##") -> str:
    """The scale report as markdown; ``heading`` is ``##`` in the report file, ``###`` in RESULTS.md."""
    m = results.machine
    software_line = (
        f"- **Software**: Python {m['python']}, torch {m['torch']}, PySyft {m['syft']}, numpy {m['numpy']}, "
        f"fedimg {m['fedimg_version']} at commit {m['fedimg_commit']}"
    )
    lines = BENCHMARK.opening(
        results,
        heading=heading,
        subject="Scale: one site's calls and memory as its partition grows",
        software=software_line,
        quick_note="- **Quick mode**: a smoke run; its figures do not judge the targets",
    )
    lines += ["", *method_lines(results.settings, results.job), *skipped_lines(results.skipped)]
    if results.sizes:
        lines += ["", *sizes_table(results.sizes), "", *reading_lines(results.sizes)]
    lines += harness.targets_table(results.targets)
    return harness.markdown(lines)


# --- command line ------------------------------------------------------------------------------------------


def _counts(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise ValueError(f"--images must be comma-separated integers (got {text!r})") from exc


def parse_args(argv: Sequence[str] | None) -> Settings:
    """The settings ``argv`` asks for (None: ``sys.argv[1:]``), defaults filled in; see ``--help``."""
    parser = BENCHMARK.parser(__doc__)
    parser.add_argument(
        "--images",
        help="partition sizes, comma-separated; the overhead target compares the first two "
        "(default 2000,20000; 120,240 with --quick)",
    )
    parser.add_argument(
        "--size", type=int, help="image size, px, a multiple of 4 (default 64; 16 with --quick)"
    )
    parser.add_argument(
        "--large",
        action="store_true",
        help="also 5,000 images at 224 px (~750 MB) if free memory and disk allow (else skipped, noted)",
    )
    parser.add_argument("--width", type=int, default=8, help="SmallCNN width (default 8)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size of the job (default 64)")
    parser.add_argument(
        "--site-threads",
        type=int,
        default=1,
        help="torch threads at the site and in the baseline (default 1)",
    )
    parser.add_argument(
        "--sandbox",
        choices=SANDBOX_MODES,
        default="default",
        help='default: no policy.toml; on/off: [sandbox] mode = "on"/"off" in the site\'s policy.toml',
    )
    parser.add_argument(
        "--repeats", type=int, help="timed evaluation-only calls in one process (default 3; 1 with --quick)"
    )
    BENCHMARK.add_run_options(parser)
    args = parser.parse_args(argv)
    quick = args.quick
    try:
        images = _counts(harness.chosen(args.images, quick, full="2000,20000", quick="120,240"))
    except ValueError as exc:
        parser.error(str(exc))
    settings = Settings(
        images=images,
        size=harness.chosen(args.size, quick, full=64, quick=16),
        large=args.large,
        width=args.width,
        batch_size=args.batch_size,
        site_threads=args.site_threads,
        sandbox=args.sandbox,
        repeats=harness.chosen(args.repeats, quick, full=3, quick=1),
        **BENCHMARK.run_options(args),
    )
    if not settings.images or min(settings.images) < MIN_IMAGES:
        parser.error(
            f"--images needs at least one size, each of at least {MIN_IMAGES} images (a site's default "
            "policy releases nothing with fewer than 20 val samples)"
        )
    if settings.size < 4 or settings.size % 4:
        parser.error("--size must be a multiple of 4 (SmallCNN pools twice)")
    for flag, value in (("--width", settings.width), ("--batch-size", settings.batch_size)):
        if value < 1:
            parser.error(f"{flag} must be at least 1")
    if settings.site_threads < 1 or settings.repeats < 1:
        parser.error("--site-threads and --repeats must be at least 1")
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.bench_scale``: the harness's flow (``Benchmark.main``)."""
    return BENCHMARK.main(argv, parse_args, run_benchmark, render_report)


if __name__ == "__main__":
    sys.exit(main())
