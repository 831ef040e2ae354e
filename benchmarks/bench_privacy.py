"""Benchmark: FedAvg's test accuracy under the sites' differential privacy, ε ∈ {1, 4, 8}, against no DP.

**Data and training** are ``bench_fedavg``'s accuracy protocol, through its own
helpers: scikit-learn's 1,797 digits, per seed a held-out stratified test set
(20 %) and a training pool converted with ``fedimg convert``'s code into 5
hospitals (``--scheme iid`` and ``--scheme dirichlet --alpha 0.5``, 16 px
grayscale, 80/20 train/val); ``SmallCNN``, SGD with momentum; FedAvg calls the
generated site function (``build_site_function``: the code a site runs) for
every hospital in this process and averages with ``researcher.aggregation.fedavg``.

**Two mechanisms**, each exactly as a site applies it (``policies.enforcement``):

- **DP-SGD** (``mechanism = "dp-sgd"``, the default): every training call gets the
  ``privacy`` settings a site's release hook hands the site function, and trains
  with ``policies.dp_sgd.train_private``: Poisson sampling at ``q = batch / n``,
  per-example clipping to ``C``, ``N(0, (zC)²)`` noise per step, with ``z =
  dp_sgd_noise_multiplier(ε, δ, q, steps per call × (rounds + 1))`` per hospital.
  Its training settings (rounds, local epochs, batch, lr, momentum, C) are its own,
  per ε (``DP_SGD_PROFILES``, tuned on the hospitals' val splits: ``DP_SGD_TUNING``;
  ``--dp-sgd-settings`` overrides them); a *clip only* run (``z = 0``) separates the
  cost of clipping from the cost of noise.
- **Update-level** (``mechanism = "update"``): the noise multiplier is
  ``noise_multiplier_for(ε, δ, rounds + 1)`` (the job's approved executions:
  ``rounds`` training calls and the final evaluation), and the released weights are
  ``privatize_update(global, new, max_update_norm=C, noise_multiplier=z)``: the
  update clipped to L2 norm ``C`` plus ``N(0, (2zC)²)`` noise on every float
  parameter. The accounted ε of the whole job is ``epsilon_of([z] * (rounds + 1), δ)``.
  ``C`` is, per rounds setting and partition scheme, the median unclipped update
  norm of the first no-DP run (seed 0), rounded to two significant digits
  (``--clip`` sets it); the later seeds keep it, as a site's policy would. Each
  rounds setting also runs *clip only* (``z = 0``), and (IID) a few larger ε as
  context, to show where accuracy comes back.

Sampling and noise come from seeded generators (a site's come from ``secrets``).

Usage (from the repository root)::

    python -m benchmarks.bench_privacy [--quick] [--record] [--seeds 3] [--rounds 20,5] [--epsilons 1,4,8]
                                       [--context-epsilons 64,256,1024,4096] [--clip C] [--iid-only]
                                       [--dp-sgd-settings JSON] [--no-dp-sgd]
                                       [--workdir benchmarks/_work] [--report PATH] [--wait-load 2]

The report (markdown, plus a ``.json`` twin) goes to ``--report`` (default
``WORKDIR/privacy-report.md``); ``--record`` also adds it to the "Differential
privacy" section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from benchmarks import harness
from benchmarks.privacy.render import body_lines
from benchmarks.privacy.runs import run_accuracy, summarise
from benchmarks.workloads.digits import DigitsProtocol, software

ABOUT = (  # what its section of RESULTS.md holds
    "FedAvg's test accuracy on the digits under the sites' DP — DP-SGD at the site (`policies.dp_sgd`, "
    'the default mechanism) and clip + Gaussian noise on every released update (`mechanism = "update"`), as '
    "`policies.enforcement` applies them — at several ε, against no DP"
)
# Nothing here is timed: a busy machine only makes the run longer. --record waits for a 1-minute load below 2
# unless --wait-load says otherwise.
BUSY_NOTE = "the machine was busy (shared): nothing here is timed, only the run took longer"
BENCHMARK = harness.Benchmark(
    module="bench_privacy",
    title="differential privacy",
    heading="Differential privacy",
    about=ABOUT,
    marker_label="privacy results",
    report_name="privacy-report.md",
    workdir_use="cache and scratch folder",
    record_help="also add the report to the Differential privacy section of benchmarks/RESULTS.md",
    quick_help="smoke run: 1 seed, 2 rounds of 1 epoch, context ε 64",
    seeded=False,
    wait_when="first",
    record_wait_load=2.0,
    load=harness.LoadLimits(max_start=2.0, max_end=2.0, busy_note=BUSY_NOTE),
)
SECTION = BENCHMARK.section  # where --record puts the report in benchmarks/RESULTS.md
PROFILE_KEYS = ("rounds", "local_epochs", "batch_size", "lr", "momentum", "clip")
# DP-SGD's training settings per ε ("default": any other ε, and the clip-only run); how they were chosen:
# privacy.render.DP_SGD_TUNING
DP_SGD_PROFILES = {
    "default": {"rounds": 40, "local_epochs": 1, "batch_size": 64, "lr": 0.5, "momentum": 0.0, "clip": 1.0},
    # a batch ≥ n: q = 1
    "1": {"rounds": 20, "local_epochs": 1, "batch_size": 256, "lr": 1.0, "momentum": 0.0, "clip": 1.0},
}


@dataclass
class Grid:
    """What bench_privacy runs: seeds, rounds settings, local epochs, ε, δ, the clipping norm, the schemes."""

    seeds: int
    rounds: list[int]
    local_epochs: int
    epsilons: list[float]
    context_epsilons: list[float]
    delta: float
    clip: float | None  # None: calibrated per rounds setting
    schemes: list[str]


@dataclass
class Settings(harness.WaitOptions, harness.RunOptions, DigitsProtocol, Grid):
    """bench_privacy's settings: ``Grid``'s and ``DigitsProtocol``'s, the harness's, then DP-SGD's own.

    Dataclass fields follow the bases from the last to the first: the order of the JSON twin.
    """

    # DP-SGD (the sites' default mechanism): its own training settings per ε, tuned for DP
    dp_sgd: bool = True
    dp_sgd_profiles: dict = field(
        default_factory=lambda: {key: dict(value) for key, value in DP_SGD_PROFILES.items()}
    )


@dataclass
class Results(harness.ReportHeader):
    """A run's figures, after the report header: calibrations, clipping norms, runs, summary."""

    waited: dict = field(default_factory=dict)
    clip: dict = field(default_factory=dict)  # "rounds|scheme" -> {"C": ..., "source": ...}
    # "rounds|epsilon" -> {"noise_multiplier", "epsilon_accounted", "loose"}
    calibration: dict = field(default_factory=dict)
    # "scheme|seed|epsilon" -> per hospital {"n", "sample_rate", "steps", "noise_multiplier", …}
    dp_sgd_calibration: dict = field(default_factory=dict)
    runs: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    parameters: int = 0
    seconds: float = 0.0


def run_benchmark(settings: Settings, *, echo: Callable[..., None] = print) -> Results:
    """Run the benchmark: every FedAvg run without DP and under each mechanism, on one torch thread.

    ``echo`` gets the progress lines; the results hold every figure, the calibrations and the summary.
    """
    import torch

    settings.workdir.mkdir(parents=True, exist_ok=True)
    results = Results.begin(
        settings, harness.machine_info() | software() | harness.package_versions("opacus")
    )
    with harness.measuring(results, settings, echo):
        echo(
            f"privacy: {settings.seeds} seed(s) × {len(settings.schemes)} scheme(s) × rounds "
            f"{settings.rounds}, ε ∈ {settings.epsilons} (context {settings.context_epsilons}), "
            f"δ = {settings.delta:g}…"
        )
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # reproducible, and robust on a busy machine: nothing here is a timing
        started = time.perf_counter()
        try:
            run_accuracy(settings, results, echo)
        finally:
            torch.set_num_threads(threads)
        results.seconds = round(time.perf_counter() - started, 1)
    results.summary = summarise(results, settings)
    return results


def render_report(results: Results, *, heading: str = "##") -> str:
    """The report on FedAvg's accuracy under the sites' DP, as markdown.

    ``heading`` is ``##`` in the report file, ``###`` in RESULTS.md.
    """
    m, s = results.machine, results.settings
    eps_list = ", ".join(f"{e:g}" for e in s["epsilons"])
    software_line = (
        f"- **Software**: Python {m['python']}, torch {m['torch']} (one intra-op thread here), "
        f"opacus {m['opacus']}, numpy {m['numpy']}, scikit-learn {m['scikit-learn']}, "
        f"fedimg {m['fedimg_version']} at commit {m['fedimg_commit']}"
    )
    lines = BENCHMARK.opening(
        results,
        heading=heading,
        subject=f"Differential privacy: FedAvg accuracy at ε ∈ {{{eps_list}}} against no DP",
        software=software_line,
        load_note=f"; the whole run took {results.seconds:.0f} s",
        quick_note="- **Quick mode**: a smoke run; its figures mean nothing",
    )
    return harness.markdown(lines + body_lines(results, heading))


# --- command line ------------------------------------------------------------------------------------------


def _numbers(text: str, kind: type) -> list:
    if text.strip().lower() in ("", "none"):
        return []
    return [kind(part) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None) -> Settings:
    """The settings ``argv`` asks for (None: ``sys.argv[1:]``), defaults filled in; see ``--help``."""
    parser = BENCHMARK.parser(__doc__)
    parser.add_argument("--seeds", type=int, help="seeds (default 3; 1 with --quick)")
    parser.add_argument(
        "--rounds", help="FedAvg rounds settings, comma-separated (default 20,5; 2 with --quick)"
    )
    parser.add_argument("--local-epochs", type=int, help="local epochs per round (default 2; 1 with --quick)")
    parser.add_argument("--epsilons", default="1,4,8", help="ε per job of the main table (default 1,4,8)")
    parser.add_argument(
        "--context-epsilons",
        help="larger ε of the context table, IID only; 'none' skips it "
        "(default 64,256,1024,4096; 64 with --quick)",
    )
    parser.add_argument(
        "--delta", type=float, default=1e-5, help="δ (default 1e-5, the site policy's default)"
    )
    parser.add_argument(
        "--clip",
        type=float,
        help="clipping norm C for every run (default: per rounds setting and scheme, "
        "the median unclipped update norm of seed 0's no-DP run)",
    )
    parser.add_argument("--iid-only", action="store_true", help="skip the Dirichlet partition")
    DigitsProtocol.add_options(parser, lr_note=", as bench_fedavg")
    parser.add_argument(
        "--dp-sgd-settings",
        help='DP-SGD training settings as JSON: {"default" | "<ε>": {'
        + ", ".join(PROFILE_KEYS)
        + "}}, merged over the tuned defaults "
        f"({json.dumps(DP_SGD_PROFILES)}); --quick runs 2 rounds",
    )
    parser.add_argument(
        "--no-dp-sgd", action="store_true", help="skip DP-SGD (only the update-level mechanism, as before)"
    )
    BENCHMARK.add_run_options(parser)
    args = parser.parse_args(argv)
    quick = args.quick
    try:
        rounds = _numbers(harness.chosen(args.rounds, quick, full="20,5", quick="2"), int)
        epsilons = _numbers(args.epsilons, float)
        context = _numbers(
            harness.chosen(args.context_epsilons, quick, full="64,256,1024,4096", quick="64"), float
        )
    except ValueError as exc:
        parser.error(f"--rounds, --epsilons and --context-epsilons are comma-separated numbers ({exc})")
    settings = Settings(
        seeds=harness.chosen(args.seeds, quick, full=3, quick=1),
        rounds=rounds,
        local_epochs=harness.chosen(args.local_epochs, quick, full=2, quick=1),
        epsilons=epsilons,
        context_epsilons=context,
        delta=args.delta,
        clip=args.clip,
        schemes=["iid"] if args.iid_only else ["iid", "dirichlet"],
        **DigitsProtocol.options(args),
        **BENCHMARK.run_options(args),
        dp_sgd=not args.no_dp_sgd,
        dp_sgd_profiles=_profiles(parser, args.dp_sgd_settings, quick),
    )
    _check(parser, settings)
    return settings


def _check(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """Stop with a usage error on settings that cannot run."""
    if settings.seeds < 1 or settings.local_epochs < 1 or settings.hospitals < 1:
        parser.error("--seeds, --local-epochs and --hospitals must be at least 1")
    rounds, epsilons, context = settings.rounds, settings.epsilons, settings.context_epsilons
    if not rounds or min(rounds) < 1 or len(set(rounds)) != len(rounds):
        parser.error("--rounds must list distinct numbers of at least 1")
    if not epsilons or min(epsilons + (context or [1.0])) <= 0:
        parser.error("--epsilons (and --context-epsilons) must be positive")
    if not 0 < settings.delta < 1:
        parser.error("--delta must be in (0, 1)")
    if settings.clip is not None and not settings.clip > 0:
        parser.error("--clip must be positive")
    if settings.size < 4 or settings.size % 4:
        parser.error("--size must be a multiple of 4 (SmallCNN pools twice)")
    settings.check_fractions(parser)


def _profiles(parser: argparse.ArgumentParser, text: str | None, quick: bool) -> dict:
    """The tuned DP-SGD settings, with ``--dp-sgd-settings`` merged over them (validated)."""
    profiles = {key: dict(value) for key, value in DP_SGD_PROFILES.items()}
    try:
        given = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        parser.error(f"--dp-sgd-settings must be JSON ({exc})")
    if not isinstance(given, dict):
        parser.error('--dp-sgd-settings must be a JSON object of {"default" | "<ε>": {settings}}')
    for key, value in given.items():
        if not isinstance(value, dict) or set(value) - set(PROFILE_KEYS):
            parser.error(f"--dp-sgd-settings[{key!r}] must be an object with keys among {list(PROFILE_KEYS)}")
        profiles[key] = {**profiles.get(key, profiles["default"]), **value}
    for key, profile in profiles.items():
        if quick:
            profile["rounds"] = 2
        integers = all(
            isinstance(profile[k], int) and not isinstance(profile[k], bool) and profile[k] >= 1
            for k in ("rounds", "local_epochs", "batch_size")
        )
        if not (integers and profile["lr"] > 0 and profile["clip"] > 0 and 0 <= profile["momentum"] < 1):
            parser.error(
                f"--dp-sgd-settings[{key!r}]: rounds, local_epochs and batch_size are integers >= 1, "
                "lr and clip > 0, momentum in [0, 1)"
            )
    return profiles


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.bench_privacy``: the harness's flow (``Benchmark.main``)."""
    return BENCHMARK.main(argv, parse_args, run_benchmark, render_report)


if __name__ == "__main__":
    sys.exit(main())
