"""Benchmark: ingesting one client's partition into a datasite, PySyft's client upload against fedimg's.

The same converted partition (one client of N distinct images, default 2,000,
at each of ``--sizes``, default 64 and 128 px RGB) is put into a fresh
in-process datasite by

* **PySyft client upload** (the plain way): an admin client logged in to the
  datasite (``worker.get_guest_client().login(...)``) calls
  ``client.upload_dataset(dataset)``: every array goes through the client API
  (serialised, signed, verified, deserialised, serialised again into blob storage);
* **fedimg server-side upload**: ``datasite_setup.site.ingest.upload_server_side``,
  the datasite's own dataset service called with the admin's context (what
  ``fedimg datasite serve`` does before it serves).

Both upload the same ``sy.Dataset`` (``datasite_setup.site.ingest.build_dataset``:
five assets, each with its mock twin), built from arrays already in memory;
only the upload is timed. A third row times fedimg's whole
``ingest_partition`` (read and check the client folder, generate the mock,
build, upload). Two context rows (``--no-context`` skips them) try other asset
representations: the images as lists of PNG bytes through the client path, and
the image arrays cut into shards of at most 16 MiB through fedimg's path (large
arrays cross size cliffs in PySyft's serialiser and glibc's allocator).

Every run uses a fresh datasite (new state dir) and is checked afterwards
through an admin client: the dataset is there with its five assets and the
private ``train_images`` equal the input, so a broken fast path cannot win.
Runs are interleaved (plain, fedimg, full ingest, context rows, per size, per
repeat) and the median of ``--repeats`` is reported.

Usage (from the repository root)::

    python -m benchmarks.bench_ingest [--images N] [--sizes 64,128] [--repeats 3] [--workdir benchmarks/_work]
                                      [--report PATH] [--record] [--quick] [--wait-load 1.5]

The report (markdown, plus a ``.json`` twin) goes to ``--report`` (default
``WORKDIR/ingest-report.md``); ``--record`` also adds it to the "Dataset ingest"
section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from benchmarks import harness
from benchmarks.ingest.partition import SHARD_BYTES, Partition, load_partition, prepare_federation
from benchmarks.ingest.ways import (
    FEDIMG,
    FULL,
    LABELS,
    PLAIN,
    PNG,
    SHARDED,
    Run,
    run_fedimg,
    run_full_ingest,
    run_plain,
)
from benchmarks.workloads.images import JPEG_QUALITY, NOISE_SIGMA, SOURCE_SIZE

ABOUT = "fedimg's server-side ingest against PySyft's client upload"  # what its section of RESULTS.md holds
# The benchmark keeps one core busy itself: the load at the end is flagged only above 1.5.
BENCHMARK = harness.Benchmark(
    module="bench_ingest",
    title="dataset ingest",
    heading="Dataset ingest",
    about=ABOUT,
    marker_label="dataset ingest results",
    report_name="ingest-report.md",
    workdir_use="cache for generated inputs and scratch datasites",
    record_help="also add the report to the Dataset ingest section of benchmarks/RESULTS.md",
    quick_help="smoke run: 60 images, 64 px, 1 repeat",
    seeded=True,
    wait_when="before the timed runs,",
    record_wait_load=None,
    load=harness.LoadLimits(max_start=0.5, max_end=1.5, busy_note=harness.BUSY_NOTE),
)
SECTION = BENCHMARK.section  # where --record puts the report in benchmarks/RESULTS.md

SPEED_TARGET = 5.0  # fedimg's upload ≥ 5× PySyft's client upload, same partition, same run
ISSUE_PLAIN_MB_S = 7.0  # the issue's figure for PySyft's plain upload of one uint8 array, in-process


# --- the benchmark ---------------------------------------------------------------------------


@dataclass
class Workload:
    """What bench_ingest measures: a partition of N images at each size, repeats, the context rows."""

    images: int
    sizes: list
    repeats: int
    context: bool


@dataclass
class Settings(harness.WaitOptions, harness.SeedOption, harness.RunOptions, Workload):
    """bench_ingest's settings: ``Workload``'s, then the harness's (fields follow the bases, last first)."""


@dataclass
class Results(harness.ReportHeader):
    """A run's figures, after the report header: preparation, runs, medians, ratios, targets."""

    waited: dict = field(default_factory=dict)  # the wait for a quiet machine before the timed runs
    preparation: dict = field(default_factory=dict)  # size -> convert / read / mock seconds
    runs: dict = field(default_factory=dict)  # "size|label" -> list[Run as dict]
    summary: dict = field(default_factory=dict)  # size -> label -> median row, plus ratios
    targets: list = field(default_factory=list)
    contention: dict = field(default_factory=dict)


def _prepare(settings: Settings, size: int, echo) -> tuple[Partition, dict]:
    """One size's partition (converted once, cached), in memory, and what preparing it took."""
    echo(f"preparing {settings.images} images at {size} px RGB in {settings.workdir} (cached)…")
    started = time.perf_counter()
    client_dir = prepare_federation(settings.workdir, settings.images, size, seed=settings.seed)
    convert_seconds = time.perf_counter() - started
    p = load_partition(client_dir, size, with_png=settings.context)
    if p.images != settings.images:
        raise harness.BenchmarkError(f"{client_dir}: {p.images} images, expected {settings.images}")
    return p, {
        "generate_and_convert_seconds": round(convert_seconds, 2),
        "read_seconds": round(p.read_seconds, 2),
        "mock_seconds": round(p.mock_seconds, 2),
        "payload_bytes": p.payload_bytes,
        "largest_array_bytes": max(split.images.nbytes for split in p.private.splits.values()),
        "png_payload_bytes": p.png_payload_bytes if settings.context else None,
    }


def run_benchmark(settings: Settings, *, echo=print) -> Results:
    """Run the benchmark: prepare each size's partition, then time every way of uploading it.

    ``echo`` gets the progress lines; the results hold every figure, the medians, ratios and targets.
    """
    harness.prepare_syft_import()  # before the first 'import syft' of this process
    settings.workdir.mkdir(parents=True, exist_ok=True)
    results = Results.begin(
        settings, harness.machine_info() | harness.package_versions(*harness.SYFT_PACKAGES)
    )
    partitions: dict[int, Partition] = {}
    for size in settings.sizes:
        partitions[size], results.preparation[str(size)] = _prepare(settings, size, echo)
    with harness.quiet():
        import syft  # noqa: F401  (imported once, outside every timed part)

    runs: dict[str, list[Run]] = {}
    state = settings.workdir / "ingest-state"

    def record(run: Run) -> None:
        runs.setdefault(f"{run.size}|{run.label}", []).append(run)
        echo(
            f"  {run.size:>4} px  {run.label:<34} {run.images:>6} images  {run.seconds:7.2f} s  "
            f"{run.mb_per_second:7.1f} MB/s  {run.images_per_second:8.1f} images/s  ({run.verified})"
        )

    with harness.measuring(results, settings, echo):
        cpu_before = harness.cpu_snapshot()
        for repeat in range(settings.repeats):
            echo(f"repeat {repeat + 1}/{settings.repeats} (N = {settings.images})")
            for size in settings.sizes:
                partition = partitions[size]
                record(run_plain(partition, state / "plain"))
                record(run_fedimg(partition, state / "fedimg"))
                record(run_full_ingest(partition, state / "full"))
                if settings.context:
                    record(run_plain(partition, state / "png", png=True))
                    record(run_fedimg(partition, state / "sharded", sharded=True))
    # the benchmark is this one process: no children's CPU to add
    results.contention = harness.contention(cpu_before, harness.cpu_snapshot())
    shutil.rmtree(state, ignore_errors=True)
    results.runs = {key: [_run_figures(r) for r in group] for key, group in runs.items()}
    results.summary, results.targets = _summarise(runs, settings)
    return results


def _run_figures(run: Run) -> dict:
    """A run as the JSON twin stores it: its fields, then its rates."""
    return asdict(run) | {"images_per_second": run.images_per_second, "mb_per_second": run.mb_per_second}


def _median_row(group: list[Run]) -> dict:
    seconds = statistics.median(r.seconds for r in group)
    return {
        "images": group[0].images,
        "payload_bytes": group[0].payload_bytes,
        "seconds": seconds,
        "images_per_second": group[0].images / seconds,
        "mb_per_second": group[0].payload_bytes / 1e6 / seconds,
        "runs_images_per_second": [round(r.images_per_second, 1) for r in group],
        "cpu_seconds": statistics.median(r.cpu_seconds for r in group),
        "minor_faults": int(statistics.median(r.minor_faults for r in group)),
        "verified": group[-1].verified,
    }


def _summarise(runs: dict[str, list[Run]], settings: Settings) -> tuple[dict, list]:
    summary: dict = {}
    targets = []
    for size in settings.sizes:
        rows = {label: _median_row(runs[f"{size}|{label}"]) for label in LABELS if f"{size}|{label}" in runs}
        plain, fedimg, full = rows[PLAIN], rows[FEDIMG], rows[FULL]
        pairs = zip(runs[f"{size}|{PLAIN}"], runs[f"{size}|{FEDIMG}"], strict=True)
        ratios = {
            "upload_ratio": fedimg["images_per_second"] / plain["images_per_second"],
            # runs of the same repeat ran back to back: their ratio cancels slow drift in machine load
            "upload_ratio_per_repeat": [round(p.seconds / f.seconds, 2) for p, f in pairs],
            "cpu_ratio": plain["cpu_seconds"] / fedimg["cpu_seconds"] if fedimg["cpu_seconds"] else None,
            "full_ingest_ratio": full["images_per_second"] / plain["images_per_second"],
        }
        if PNG in rows:
            ratios["png_ratio"] = rows[PNG]["images_per_second"] / plain["images_per_second"]
        if SHARDED in rows:
            ratios["sharded_ratio"] = rows[SHARDED]["images_per_second"] / plain["images_per_second"]
        summary[str(size)] = {"rows": rows, **ratios}
        target = f"{FEDIMG} ≥ {SPEED_TARGET:g}× {PLAIN} at {size} px (images/s, same partition, same run)"
        targets.append(
            harness.ratio_target(target, ratios["upload_ratio"], ratios["upload_ratio"] >= SPEED_TARGET)
        )
    return summary, targets


# --- the report ----------------------------------------------------------------------------

COLUMNS = (
    "size, way, images, payload (MB), time (s), MB/s, images/s, per run (images/s), CPU (s), page faults"
).split(", ")


def _table_row(size: int, label: str, row: dict) -> tuple:
    return (
        f"{size} px",
        label,
        row["images"],
        f"{row['payload_bytes'] / 1e6:.1f}",
        f"{row['seconds']:.2f}",
        f"{row['mb_per_second']:.1f}",
        f"{row['images_per_second']:.1f}",
        ", ".join(f"{v:.1f}" for v in row["runs_images_per_second"]),
        f"{row['cpu_seconds']:.1f}",
        f"{row['minor_faults'] / 1000:.0f} k",
    )


def _method_lines(s: dict) -> list[str]:
    """The bullets that say what was measured and how."""
    shard_mib = SHARD_BYTES // 2**20
    return [
        f"- **Input**: one client of N = {s['images']} distinct images (bench_convert's generated "
        f"{SOURCE_SIZE}-px RGB JPEGs, quality {JPEG_QUALITY}, digits tinted and noised σ={NOISE_SIGMA:g}), "
        "converted with `fedimg convert --clients 1 --scheme iid --mode RGB --size S` (train/val 80/20) at "
        f"S = {', '.join(f'{size} px' for size in s['sizes'])}",
        "- **Dataset**: `datasite_setup.site.ingest.build_dataset`: train/val images `uint8 (N, 3, S, S)`, "
        "train/val labels `int64`, a metadata table; every asset with its generated mock twin of the same "
        "shape. **Payload** = bytes of every array, private and mock (both are serialised and stored); "
        "MB = 10⁶ bytes",
        f"- **{PLAIN}**: admin client logged in to an in-process datasite (login not timed), "
        "`client.upload_dataset(dataset)`",
        f"- **{FEDIMG}**: `upload_server_side(worker, dataset)` (the datasite's dataset service with the "
        "admin's context; no client logged in before, as in `fedimg datasite serve`)",
        f"- **{FULL}**: `ingest_partition(worker, client_dir)`: read and check the client folder (sha256 of "
        "every file, PNG decode), generate the mock, build, upload",
        (
            f"- **Context rows** (not targets): *{PNG}*: the same dataset with the images as lists of PNG "
            f"bytes (the partition's own files; the mock PNG-encoded) through the client path; *{SHARDED}*: "
            f"each images array cut into assets `<split>_images_NNN` of at most {shard_mib} MiB, through "
            "fedimg's path"
            if s["context"]
            else "- **Context rows** (PNG bytes, shards): skipped (`--no-context`)"
        ),
        f"- **Runs**: {s['repeats']} repeat(s), each on a fresh datasite (new state dir, SQLite + on-disk "
        "blobs), interleaved; median reported; only the upload (or the whole `ingest_partition`) is timed; "
        "after each run an admin client checks the dataset (5 assets, private `train_images` equal to the "
        "input); CPU and minor page faults are this process's during the timed part"
        + ("; quick mode" if s["quick"] else ""),
    ]


def _size_line(size: int, entry: dict, prep: dict) -> str:
    """One size's ratios: fedimg's upload against PySyft's, and the other ways against PySyft's."""
    rows = entry["rows"]
    fedimg, plain = rows[FEDIMG], rows[PLAIN]
    per_repeat = ", ".join(f"{r:.2f}×" for r in entry["upload_ratio_per_repeat"])
    return (
        f"- **{size} px** (largest array: train_images, {prep['largest_array_bytes'] / 1e6:.1f} MB): "
        f"fedimg's upload {fedimg['mb_per_second']:.1f} MB/s ({fedimg['images_per_second']:.0f} images/s) "
        f"vs PySyft's client upload {plain['mb_per_second']:.1f} MB/s ({plain['images_per_second']:.0f} "
        f"images/s): **{entry['upload_ratio']:.2f}×** (per repeat {per_repeat}"
        + (f"; CPU seconds {entry['cpu_ratio']:.2f}×" if entry.get("cpu_ratio") else "")
        + f"); the whole `ingest_partition` (read {prep['read_seconds']:.1f} s and mock "
        f"{prep['mock_seconds']:.1f} s when measured alone) {entry['full_ingest_ratio']:.2f}× the client "
        "upload alone"
        + (
            f"; PNG bytes through the client path {entry['png_ratio']:.2f}× the client upload of uint8 arrays"
            if "png_ratio" in entry
            else ""
        )
        + (
            f"; fedimg's path with {SHARD_BYTES // 2**20}-MiB shards {entry['sharded_ratio']:.2f}× it"
            if "sharded_ratio" in entry
            else ""
        )
    )


def render_report(results: Results, *, heading: str = "##") -> str:
    """The report on the ways of ingesting a partition, as markdown.

    ``heading`` is ``##`` in the report file, ``###`` in RESULTS.md.
    """
    m, s, summary = results.machine, results.settings, results.summary
    software = (
        f"- **Software**: Python {m['python']}, PySyft {m['syft']}, numpy {m['numpy']}, "
        f"pandas {m['pandas']}, Pillow {m['pillow']}, "
        f"fedimg {m['fedimg_version']} at commit {m['fedimg_commit']}"
    )
    subject = "fedimg ingest vs PySyft's client upload"
    lines = BENCHMARK.opening(results, heading=heading, subject=subject, software=software)
    lines += [*_method_lines(s), ""]
    rows = [
        _table_row(size, label, row)
        for size in s["sizes"]
        for label, row in summary[str(size)]["rows"].items()
    ]
    lines += [*harness.table(COLUMNS, "rlrrrrrlrr", rows), ""]
    lines += [_size_line(size, summary[str(size)], results.preparation[str(size)]) for size in s["sizes"]]
    lines.append(
        "- **Reference** (the issue): PySyft's plain upload of one uint8 array, in-process, "
        f"~{ISSUE_PLAIN_MB_S:g} MB/s on this class of machine"
    )
    lines += harness.targets_table(results.targets)
    return harness.markdown(lines)


# --- command line --------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sizes takes comma-separated pixel sizes, e.g. 64,128 (got {text!r})"
        ) from None
    if not sizes or any(not 8 <= size <= 1024 for size in sizes) or len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError(f"--sizes takes distinct sizes from 8 to 1024 px (got {text!r})")
    return sizes


def parse_args(argv: Sequence[str] | None) -> Settings:
    """The settings ``argv`` asks for (None: ``sys.argv[1:]``), defaults filled in; see ``--help``."""
    parser = BENCHMARK.parser(__doc__)
    parser.add_argument(
        "--images", type=int, help="N, images in the client's partition (default 2000; 60 with --quick)"
    )
    parser.add_argument(
        "--sizes", type=_sizes, help="image sizes in px, comma-separated (default 64,128; 64 with --quick)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        help="interleaved runs of each way; the median is reported (default 3; 1 with --quick)",
    )
    parser.add_argument(
        "--no-context",
        action="store_true",
        help="skip the context rows (PNG bytes through the client path, shards through fedimg's)",
    )
    BENCHMARK.add_run_options(parser)
    args = parser.parse_args(argv)
    images = harness.chosen(args.images, args.quick, full=2000, quick=60)
    repeats = harness.chosen(args.repeats, args.quick, full=3, quick=1)
    if images < 10 or repeats < 1:
        parser.error("--images must be at least 10 (train and val both need images) and --repeats at least 1")
    return Settings(
        images=images,
        sizes=args.sizes or ([64] if args.quick else [64, 128]),
        repeats=repeats,
        context=not args.no_context,
        **BENCHMARK.run_options(args),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.bench_ingest``: the harness's flow (``Benchmark.main``)."""
    return BENCHMARK.main(argv, parse_args, run_benchmark, render_report)


if __name__ == "__main__":
    sys.exit(main())
