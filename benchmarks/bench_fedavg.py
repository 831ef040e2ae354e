"""Benchmark: FedAvg's accuracy against centralised training, and the overhead of a round over HTTP datasites.

**Accuracy.** scikit-learn's 1,797 digits are split (seeded, stratified by
label: ``split_train_val``) into a held-out test set (20 %) and a training
pool. The pool is written as class folders (``write_digits``' files) and
converted with ``fedimg convert``'s own code into 5 hospitals, ``--scheme iid``
and ``--scheme dirichlet --alpha 0.5`` (16 px grayscale, each hospital split
80/20 into train/val); the test images go through the same ``standardise``.
FedAvg calls the generated site function (``build_site_function``: the exact
code a site runs) for every hospital in this process and averages with
``researcher.aggregation.fedavg``; the transport does not change accuracy.
The centralised baseline is the same site function (same model, optimiser, lr,
batch size) trained once on the union of the hospitals' train splits for
rounds × local epochs epochs. Both start from the same initial weights and are
evaluated on the same held-out test set, for several seeds (each seed redraws
the test split, the partition and the initial weights).

**Overhead.** Three real datasites (``fedimg datasite serve`` subprocesses over
HTTP, the digits converted into 3 clients at 32 px) run a ``FedAvgJob``
submitted by a researcher and approved by the owners, twice: with the sandbox
on (``[sandbox] mode = "on"``, ``threads = 1`` in each site's policy: every call
in a confined worker on one thread, as three sites share two cores here), then
restarted with ``mode = "off"`` (the calls in the site process, pinned to one
thread by ``OMP_NUM_THREADS``). Each training round's wall time (the job's own
round: send the weights, train at the sites in parallel, fetch the results,
FedAvg, checkpoint) is compared with the same three site-function calls done
one after another in this process, on the same partitions, before and after
the HTTP jobs, with torch on its default threads and on one thread: the faster
is the baseline of both. The sandbox's fixed costs per job (the worker's spawn,
the job's wait for it, its setup) are read from the sites' logs; its cost per
call is the sandbox-on round minus the sandbox-off round. Local epochs are
calibrated so that every site's call is about 3 s of compute. A context run
restarts the sites (sandbox on) on torch's default threads (oversubscribed).

Usage (from the repository root)::

    python -m benchmarks.bench_fedavg [--quick] [--record] [--seeds 3] [--skip-overhead] [--skip-accuracy]
                                      [--workdir benchmarks/_work] [--report PATH] [--wait-load 1.5]

The report (markdown, plus a ``.json`` twin) goes to ``--report`` (default
``WORKDIR/fedavg-report.md``); ``--record`` also adds it to the "FedAvg accuracy
and overhead" section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from benchmarks import harness
from benchmarks.fedavg.accuracy import DIRICHLET_TARGET, IID_TARGET, SCHEMES, run_accuracy
from benchmarks.fedavg.overhead import (
    MIN_COMPUTE_SECONDS,
    OVERHEAD_TARGET,
    UNCONFINED_TARGET,
    run_overhead,
    threads_text,
)
from benchmarks.fedavg.render import accuracy_section, overhead_section
from benchmarks.workloads.digits import DigitsProtocol, software

# The benchmark keeps the machine busy itself: the end load is flagged only above 1.5. --record waits for a
# 1-minute load below 1.5 unless --wait-load says otherwise.
BUSY_NOTE = (
    "the machine was not idle (other processes, or the benchmark's own sites): timings may be pessimistic"
)
ABOUT = (  # what its section of RESULTS.md holds
    "FedAvg against centralised training on the digits, and a round over HTTP datasites against the "
    "same training in one process"
)
BENCHMARK = harness.Benchmark(
    module="bench_fedavg",
    title="FedAvg",
    heading="FedAvg accuracy and overhead",
    about=ABOUT,
    marker_label="fedavg results",
    report_name="fedavg-report.md",
    workdir_use="cache and scratch folder",
    record_help="also add the report to the FedAvg section of benchmarks/RESULTS.md",
    quick_help="smoke run: 1 seed, 2 rounds of 1 epoch; overhead 1 round, 1 epoch, 16 px",
    seeded=False,
    wait_when="first",
    record_wait_load=1.5,
    load=harness.LoadLimits(max_start=0.5, max_end=1.5, busy_note=BUSY_NOTE),
)
SECTION = BENCHMARK.section  # where --record puts the report in benchmarks/RESULTS.md


@dataclass
class Budget:
    """The accuracy part's seeds and FedAvg budget."""

    seeds: int
    rounds: int
    local_epochs: int


@dataclass
class Parts:
    """The FedProx context column, which parts run, and the overhead part's job, sites and threads."""

    fedprox_mu: float
    accuracy: bool
    overhead: bool
    overhead_rounds: int
    overhead_epochs: int | None  # None: calibrated
    overhead_size: int
    overhead_sites: int
    site_threads: (
        int  # torch threads per site ([sandbox] threads, OMP_NUM_THREADS); 0: this process's default
    )
    context: bool


@dataclass
class Settings(harness.WaitOptions, harness.RunOptions, Parts, DigitsProtocol, Budget):
    """bench_fedavg's settings: ``Budget``'s, ``DigitsProtocol``'s and ``Parts``' fields, then the harness's.

    Dataclass fields follow the bases from the last to the first: the order of the JSON twin.
    """


@dataclass
class Results(harness.ReportHeader):
    """A run's figures, after the report header: the wait, both parts' figures, the targets."""

    waited: dict = field(default_factory=dict)
    accuracy: dict = field(default_factory=dict)
    overhead: dict = field(default_factory=dict)
    targets: list = field(default_factory=list)


def run_benchmark(settings: Settings, *, echo: Callable[..., None] = print) -> Results:
    """Run the benchmark: the accuracy part, then the overhead part, each unless skipped.

    ``echo`` gets the progress lines; the results hold every figure, both parts' summaries and the targets.
    """
    harness.prepare_syft_import()  # before the first 'import syft' of this process
    settings.workdir.mkdir(parents=True, exist_ok=True)
    results = Results.begin(settings, harness.machine_info() | software())
    with harness.measuring(results, settings, echo):
        if settings.accuracy:
            import torch

            echo(
                f"accuracy: {settings.seeds} seed(s) × {len(SCHEMES)} schemes, {settings.rounds} rounds × "
                f"{settings.local_epochs} local epoch(s)…"
            )
            threads = torch.get_num_threads()
            # reproducible, and robust on a busy machine; only the overhead part's timings matter
            torch.set_num_threads(1)
            try:
                results.accuracy = run_accuracy(settings, echo)
            finally:
                torch.set_num_threads(threads)
        if settings.overhead:
            load = os.getloadavg()
            results.overhead = run_overhead(settings, echo)
            results.overhead["load_start"] = load
            results.overhead["load_end"] = os.getloadavg()
    results.targets = targets(results, settings)
    return results


def targets(results: Results, settings: Settings) -> list[dict]:
    """The targets table: the accuracy gap per scheme, and the overhead ratio (n/a below its compute)."""
    rows = []
    note = "" if not settings.quick else " (quick mode: too few rounds/seeds to judge)"
    if results.accuracy:
        for scheme, limit, label in (
            ("iid", IID_TARGET, "IID"),
            ("dirichlet", DIRICHLET_TARGET, f"Dirichlet α={settings.alpha:g}"),
        ):
            gap, spread = results.accuracy["summary"][scheme]["fedavg_gap"]
            over = f"(mean gap over {settings.seeds} seed(s))"
            target = f"FedAvg within {limit:g} points of centralised, {label} {over}"
            rows.append(
                {
                    "target": target + note,
                    "measured": f"{gap:+.2f} ± {spread:.2f} points",
                    "result": "PASS" if gap <= limit else "MISS",
                }
            )
    if results.overhead:
        summary, overhead = results.overhead["summary"], results.overhead
        precondition = summary["min_site_compute_seconds"] >= MIN_COMPUTE_SECONDS
        extra = (
            ""
            if precondition
            else f" (every site's call is under {MIN_COMPUTE_SECONDS:g} s of compute here: "
            "the target does not apply)"
        )
        threads = threads_text(overhead["site_threads"])
        runs = [
            (summary, f"torch on {threads} per site", UNCONFINED_TARGET)
        ]  # a report from before the sandbox
        if "unconfined" in summary:
            runs = [
                (summary, f"sandbox on, torch on {threads} per worker", OVERHEAD_TARGET),
                (summary["unconfined"], f"sandbox off, torch on {threads} per site", UNCONFINED_TARGET),
            ]
        for run, how, limit in runs:
            passed = run["ratio"] <= limit
            rows.append(
                {
                    "target": f"a training round over {len(overhead['sites'])} HTTP datasites ({how}) "
                    f"≤ {limit:g}× the same local training in one process (median warm round){extra}",
                    "measured": f"{run['ratio']:.2f}×",
                    "result": ("PASS" if passed else "MISS") if precondition else "n/a",
                }
            )
    return rows


def render_report(results: Results, *, heading: str = "##") -> str:
    """The report on FedAvg's accuracy and the overhead of a round over HTTP, as markdown.

    ``heading`` is ``##`` in the report file, ``###`` in RESULTS.md.
    """
    m = results.machine
    software_line = (
        f"- **Software**: Python {m['python']}, torch {m['torch']} ({m['torch_threads']} intra-op threads), "
        f"PySyft {m['syft']}, numpy {m['numpy']}, scikit-learn {m['scikit-learn']}, "
        f"fedimg {m['fedimg_version']} at commit {m['fedimg_commit']}"
    )
    lines = BENCHMARK.opening(
        results,
        heading=heading,
        subject="FedAvg: accuracy against centralised training, overhead of a round over HTTP",
        software=software_line,
        quick_note="- **Quick mode**: a smoke run; its figures do not judge the targets",
    )
    if results.accuracy:
        lines += ["", *accuracy_section(results, heading + "#")]
    if results.overhead:
        lines += ["", *overhead_section(results, heading + "#")]
    lines += harness.targets_table(results.targets)
    return harness.markdown(lines)


# --- command line ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Settings:
    """The settings ``argv`` asks for (None: ``sys.argv[1:]``), defaults filled in; see ``--help``."""
    parser = BENCHMARK.parser(__doc__)
    parser.add_argument("--seeds", type=int, help="seeds of the accuracy part (default 3; 1 with --quick)")
    parser.add_argument(
        "--rounds",
        type=int,
        help="FedAvg rounds (default 20; 2 with --quick); centralised trains rounds × local epochs epochs",
    )
    parser.add_argument("--local-epochs", type=int, help="local epochs per round (default 2; 1 with --quick)")
    DigitsProtocol.add_options(
        parser, part=" of the accuracy part", val_note=", as fedimg convert --val-fraction"
    )
    parser.add_argument(
        "--fedprox-mu",
        type=float,
        default=0.0,
        help="also run FedProx with this μ as a context column (default 0: off)",
    )
    parser.add_argument("--skip-accuracy", action="store_true", help="skip the accuracy part")
    parser.add_argument(
        "--skip-overhead", action="store_true", help="skip the overhead part (no datasites are started)"
    )
    parser.add_argument(
        "--overhead-rounds", type=int, help="training rounds of the HTTP job (default 3; 1 with --quick)"
    )
    parser.add_argument(
        "--overhead-epochs",
        type=int,
        help="local epochs of the HTTP job (default: calibrated to ~3 s per site call; 1 with --quick)",
    )
    parser.add_argument(
        "--overhead-size", type=int, help="image size of the overhead part, px (default 32; 16 with --quick)"
    )
    parser.add_argument("--overhead-sites", type=int, default=3, help="HTTP datasites (default 3)")
    parser.add_argument(
        "--site-threads",
        type=int,
        default=1,
        help="torch threads per site: the policy's [sandbox] threads (sandbox on) and OMP_NUM_THREADS "
        "(sandbox off) (default 1: three sites share two cores; 0: torch's default)",
    )
    parser.add_argument(
        "--no-context",
        action="store_true",
        help="skip the overhead part's context run (a job with the sites on the other thread setting)",
    )
    BENCHMARK.add_run_options(parser)
    args = parser.parse_args(argv)
    quick = args.quick
    settings = Settings(
        seeds=harness.chosen(args.seeds, quick, full=3, quick=1),
        rounds=harness.chosen(args.rounds, quick, full=20, quick=2),
        local_epochs=harness.chosen(args.local_epochs, quick, full=2, quick=1),
        **DigitsProtocol.options(args),
        fedprox_mu=args.fedprox_mu,
        accuracy=not args.skip_accuracy,
        overhead=not args.skip_overhead,
        overhead_rounds=harness.chosen(args.overhead_rounds, quick, full=3, quick=1),
        overhead_epochs=harness.chosen(args.overhead_epochs, quick, full=None, quick=1),
        overhead_size=harness.chosen(args.overhead_size, quick, full=32, quick=16),
        overhead_sites=args.overhead_sites,
        site_threads=args.site_threads,
        context=not args.no_context,
        **BENCHMARK.run_options(args),
    )
    _check(parser, settings)
    return settings


def _check(parser, settings: Settings) -> None:
    """Stop with a usage error on settings that cannot run (in the order the command line documents them)."""
    if not (settings.accuracy or settings.overhead):
        parser.error("--skip-accuracy and --skip-overhead together leave nothing to run")
    positive = {
        "--seeds": settings.seeds,
        "--rounds": settings.rounds,
        "--local-epochs": settings.local_epochs,
        "--hospitals": settings.hospitals,
        "--overhead-rounds": settings.overhead_rounds,
    }
    for flag, value in positive.items():
        if value < 1:
            parser.error(f"{flag} must be at least 1")
    if settings.overhead_sites < 2:
        parser.error("--overhead-sites must be at least 2")
    if settings.site_threads < 0:
        parser.error("--site-threads must be at least 0 (0: torch's default)")
    if settings.overhead_epochs is not None and settings.overhead_epochs < 1:
        parser.error("--overhead-epochs must be at least 1")
    for flag, value in (("--size", settings.size), ("--overhead-size", settings.overhead_size)):
        if value < 4 or value % 4:
            parser.error(f"{flag} must be a multiple of 4 (SmallCNN pools twice)")
    settings.check_fractions(parser)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.bench_fedavg``: the harness's flow (``Benchmark.main``)."""
    return BENCHMARK.main(argv, parse_args, run_benchmark, render_report)


if __name__ == "__main__":
    sys.exit(main())
