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
import math
import os
import shutil
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import bench_fedavg, report
from benchmarks.machine import (
    add_wait_options,
    load_line,
    machine_info,
    machine_line,
    wait_for_quiet_machine,
    wait_load,
    waited_line,
)
from benchmarks.report import ResultsSection

SECTION = ResultsSection(  # where --record puts the report in benchmarks/RESULTS.md
    heading="## Differential privacy",
    intro="FedAvg's test accuracy on the digits under the sites' DP — DP-SGD at the site (`policies.dp_sgd`, the default mechanism) and "
    'clip + Gaussian noise on every released update (`mechanism = "update"`), as `policies.enforcement` applies them — at several ε, '
    "against no DP (`.venv/bin/python -m benchmarks.bench_privacy --record`; how to read it: [README.md](README.md)).",
    marker="<!-- privacy results: newest first; `python -m benchmarks.bench_privacy --record` inserts below -->",
)
MAX_LOAD = 2.0  # a 1-minute load above this at start or end gets BUSY_NOTE in the report
RECORD_WAIT_LOAD = 2.0  # --record waits for a 1-minute load below this unless --wait-load says otherwise
BUSY_NOTE = "the machine was busy (shared): nothing here is timed, only the run took longer"
PROFILE_KEYS = ("rounds", "local_epochs", "batch_size", "lr", "momentum", "clip")
# DP-SGD's training settings per ε ("default": any other ε, and the clip-only run); how they were chosen: DP_SGD_TUNING
DP_SGD_PROFILES = {
    "default": {"rounds": 40, "local_epochs": 1, "batch_size": 64, "lr": 0.5, "momentum": 0.0, "clip": 1.0},
    "1": {
        "rounds": 20,
        "local_epochs": 1,
        "batch_size": 256,
        "lr": 1.0,
        "momentum": 0.0,
        "clip": 1.0,
    },  # a batch ≥ n: q = 1
}
SCHEME_LABELS = {"iid": "IID", "dirichlet": "Dirichlet"}


@dataclass
class Settings:
    seeds: int
    rounds: list[int]
    local_epochs: int
    epsilons: list[float]
    context_epsilons: list[float]
    delta: float
    clip: float | None  # None: calibrated per rounds setting
    schemes: list[str]
    lr: float
    momentum: float
    batch_size: int
    width: int
    size: int
    hospitals: int
    alpha: float
    test_fraction: float
    val_fraction: float
    workdir: Path
    report: Path
    record: bool
    quick: bool
    wait_load: float | None = None
    wait_timeout: float = 600.0
    # DP-SGD (the sites' default mechanism): its own training settings per ε, tuned for DP (DP_SGD_TUNING)
    dp_sgd: bool = True
    dp_sgd_profiles: dict = field(
        default_factory=lambda: {key: dict(value) for key, value in DP_SGD_PROFILES.items()}
    )


@dataclass
class Results(report.ReportHeader):
    waited: dict = field(default_factory=dict)
    clip: dict = field(default_factory=dict)  # "rounds|scheme" -> {"C": ..., "source": ...}
    calibration: dict = field(
        default_factory=dict
    )  # "rounds|epsilon" -> {"noise_multiplier", "epsilon_accounted", "loose"}
    dp_sgd_calibration: dict = field(
        default_factory=dict
    )  # "scheme|seed|epsilon" -> per hospital {"n", "sample_rate", "steps", "noise_multiplier", "epsilon_accounted"}
    runs: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    parameters: int = 0
    seconds: float = 0.0


# --- the site's DP, as the release hook applies it --------------------------------------------------------


def calibrate(epsilon: float, delta: float, rounds: int) -> dict:
    """The noise multiplier a site uses for a job of ``rounds`` rounds (``limit = rounds + 1`` runs), and the ε it accounts."""
    from policies.privacy import epsilon_of, noise_multiplier_for

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        z = noise_multiplier_for(epsilon, delta, rounds + 1)
        accounted = epsilon_of([z] * (rounds + 1), delta)
    # Opacus warns when the best RDP order is its smallest: the bound (so z) is then looser than it could be
    loose = any("smallest alpha" in str(w.message) for w in caught)
    return {"noise_multiplier": z, "epsilon_accounted": accounted, "loose": loose}


def update_norm(global_weights: dict, new_weights: dict) -> float:
    """L2 norm of the float part of ``new - global``: what ``privatize_update`` clips."""
    total = 0.0
    for name, value in new_weights.items():
        if np.asarray(value).dtype.kind == "f":
            total += float(
                (
                    (np.asarray(value, dtype=np.float64) - np.asarray(global_weights[name], dtype=np.float64))
                    ** 2
                ).sum()
            )
    return math.sqrt(total)


def float_parameters(weights: dict) -> int:
    return int(sum(np.asarray(v).size for v in weights.values() if np.asarray(v).dtype.kind == "f"))


def noise_to_clip(noise_multiplier: float, sizes: Sequence[int], parameters: int) -> float:
    """Expected L2 norm of the noise in the sample-weighted FedAvg of the releases, in units of ``C`` (a clipped update's largest norm)."""
    total = sum(sizes)
    return 2 * noise_multiplier * math.sqrt(parameters * sum(n * n for n in sizes)) / total


def train_private_fedavg(
    function: Callable[..., dict],
    hospitals: list[Any],
    weights: dict,
    rounds: int,
    test: tuple[np.ndarray, np.ndarray],
    *,
    clip: float | None,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> dict:
    """``rounds`` of FedAvg over the hospitals' site-function calls; with ``clip``, every release goes through ``privatize_update``.

    ``clip=None`` is plain FedAvg (no DP); ``noise_multiplier=0`` with a clip is clipping only.
    """
    from policies.privacy import privatize_update
    from researcher.aggregation import fedavg

    norms: list[float] = []
    started = time.perf_counter()
    for rnd in range(rounds):
        updates = []
        for hospital in hospitals:
            train, val = hospital.splits["train"], hospital.splits["val"]
            output = function(train.images, train.labels, val.images, val.labels, weights, rnd)
            released = output["weights"]
            norms.append(update_norm(weights, released))
            if clip is not None:
                released = privatize_update(
                    weights, released, max_update_norm=clip, noise_multiplier=noise_multiplier, rng=rng
                )
            updates.append((released, output["num_samples"]))
        weights = fedavg(updates)
    final = bench_fedavg.evaluate(function, weights, *test, rounds)
    return {
        "accuracy": final["accuracy"],
        "loss": final["loss"] if math.isfinite(final["loss"]) else None,
        "median_update_norm": float(statistics.median(norms)),
        "clipped_share": (sum(n > clip for n in norms) / len(norms)) if clip is not None else None,
        "seconds": round(time.perf_counter() - started, 2),
    }


# --- DP-SGD, as a site runs it -------------------------------------------------------------------------------


def dp_sgd_profile(profiles: dict, epsilon: float | None) -> dict:
    """The DP-SGD training settings used at ``epsilon`` (``None``: the clip-only run uses the default ones)."""
    return profiles.get("default" if epsilon is None else f"{epsilon:g}", profiles["default"])


def dp_sgd_privacy(
    num_train: int,
    epsilon: float | None,
    delta: float,
    *,
    batch_size: int,
    local_epochs: int,
    rounds: int,
    max_grad_norm: float,
) -> dict:
    """What a DP-SGD site's release hook hands the site function (``policies.enforcement``): its own calibration.

    ``q = batch / n``, ``local_epochs · ⌈n / batch⌉`` steps per call, z for ``(rounds + 1)`` calls' steps
    (the approved runs, any of which may train); ``epsilon=None``: no noise (clipping only).
    """
    from policies.dp_sgd import schedule
    from policies.privacy import dp_sgd_noise_multiplier, epsilon_of

    sample_rate, steps = schedule(num_train, batch_size, local_epochs)
    z = 0.0 if epsilon is None else dp_sgd_noise_multiplier(epsilon, delta, sample_rate, steps * (rounds + 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus: "optimal order is the largest alpha" (a conservative bound)
        accounted = epsilon_of([(z, sample_rate, steps * (rounds + 1))], delta) if z > 0 else math.inf
    return {
        "n": num_train,
        "sample_rate": sample_rate,
        "steps": steps,
        "noise_multiplier": z,
        "max_grad_norm": max_grad_norm,
        "epsilon_accounted": accounted,
    }


def train_dp_sgd_fedavg(
    function: Callable[..., dict],
    hospitals: list[Any],
    weights: dict,
    rounds: int,
    test: tuple[np.ndarray, np.ndarray],
    *,
    privacy: list[dict],
    rng: np.random.Generator,
) -> dict:
    """``rounds`` of FedAvg where every hospital trains with the sites' DP-SGD (``privacy[i]`` for hospital i).

    The sampling and noise are seeded from ``rng`` (a site draws them from ``secrets``). Besides the test
    accuracy, returns the federated val accuracy (what a researcher sees, used to tune the settings).
    """
    from researcher.aggregation import fedavg
    from researcher.results import aggregate_evaluations

    norms: list[float] = []
    started = time.perf_counter()
    for rnd in range(rounds):
        updates = []
        for hospital, settings in zip(hospitals, privacy):
            train, val = hospital.splits["train"], hospital.splits["val"]
            handed = {
                key: settings[key] for key in ("noise_multiplier", "max_grad_norm", "sample_rate", "steps")
            }
            output = function(
                train.images,
                train.labels,
                val.images,
                val.labels,
                weights,
                rnd,
                privacy=handed | {"seed": int(rng.integers(2**62))},
            )
            norms.append(update_norm(weights, output["weights"]))
            updates.append((output["weights"], output["num_samples"]))
        weights = fedavg(updates)
    final = bench_fedavg.evaluate(function, weights, *test, rounds)
    val = aggregate_evaluations(
        [
            function(
                h.splits["train"].images[:0],
                h.splits["train"].labels[:0],
                h.splits["val"].images,
                h.splits["val"].labels,
                weights,
                rounds,
            )["val"]
            for h in hospitals
        ]
    )
    return {
        "accuracy": final["accuracy"],
        "val_accuracy": val["accuracy"],
        "loss": final["loss"] if math.isfinite(final["loss"]) else None,
        "median_update_norm": float(statistics.median(norms)),
        "clipped_share": None,
        "seconds": round(time.perf_counter() - started, 2),
    }


def dp_sgd_noise_to_clip(privacy: list[dict], parameters: int) -> float:
    """Expected L2 norm of one step's noise in a hospital's averaged gradient, in units of C: z·√parameters / (q·n), mean over hospitals."""
    return statistics.mean(
        p["noise_multiplier"] * math.sqrt(parameters) / (p["sample_rate"] * p["n"]) for p in privacy
    )


def run_dp_sgd(
    settings: Settings,
    results: Results,
    fed: Any,
    hospitals: list[Any],
    test: tuple,
    base: dict,
    scheme_index: int,
    work: Path,
    echo: Callable[..., None],
) -> None:
    """The DP-SGD rows of one seed and scheme: clipping only (z = 0, the default settings), then each ε with its settings."""
    seed, scheme = base["seed"], base["scheme"]
    for epsilon in [None, *settings.epsilons]:
        profile = dp_sgd_profile(settings.dp_sgd_profiles, epsilon)
        rounds = profile["rounds"]
        job = bench_fedavg.make_job(
            f"dpsgd_{scheme}_{seed}_{rounds}_{profile['local_epochs']}",
            channels=1,
            size=settings.size,
            settings=fed,
            seed=seed,
            rounds=rounds,
            local_epochs=profile["local_epochs"],
        )
        function = bench_fedavg.site_function(
            job,
            work / "functions",
            batch_size=profile["batch_size"],
            lr=profile["lr"],
            momentum=profile["momentum"],
        )
        kind = "DP-SGD clip only" if epsilon is None else "DP-SGD"
        privacy = [
            dp_sgd_privacy(
                len(h.splits["train"].labels),
                epsilon,
                settings.delta,
                batch_size=profile["batch_size"],
                local_epochs=profile["local_epochs"],
                rounds=rounds,
                max_grad_norm=profile["clip"],
            )
            for h in hospitals
        ]
        if epsilon is not None:
            results.dp_sgd_calibration[f"{scheme}|{seed}|{epsilon:g}"] = privacy
        rng = np.random.default_rng([seed, scheme_index, rounds, int(round(1000 * (epsilon or 0))), 2])
        run = base | {
            "rounds": rounds,
            "kind": kind,
            "epsilon": epsilon,
            "clip": profile["clip"],
            "profile": profile,
            "noise_multiplier": max(p["noise_multiplier"] for p in privacy),
        }
        run |= train_dp_sgd_fedavg(
            function, hospitals, job.initial_weights(), rounds, test, privacy=privacy, rng=rng
        )
        run["noise_to_clip"] = dp_sgd_noise_to_clip(privacy, results.parameters)
        results.runs.append(run)
        echo(
            f"  seed {seed}  {scheme:<9}  {rounds:>3} rounds  {kind:<16}"
            + (f" ε={epsilon:<6g} z={run['noise_multiplier']:<8.3f}" if epsilon is not None else " " * 25)
            + f"  acc {run['accuracy']:.2%}  (val {run['val_accuracy']:.2%}, {run['seconds']:.1f} s)"
        )


# --- the runs ----------------------------------------------------------------------------------------------


def fedavg_settings(settings: Settings) -> Any:
    """``bench_fedavg``'s settings for the same data and model (through its command line, so its defaults stay its own)."""
    argv = [
        "--skip-overhead",
        "--workdir", str(settings.workdir),
        "--local-epochs", str(settings.local_epochs),
        "--lr", repr(settings.lr),
        "--momentum", repr(settings.momentum),
        "--batch-size", str(settings.batch_size),
        "--width", str(settings.width),
        "--size", str(settings.size),
        "--hospitals", str(settings.hospitals),
        "--alpha", repr(settings.alpha),
        "--test-fraction", repr(settings.test_fraction),
        "--val-fraction", repr(settings.val_fraction),
    ]  # fmt: skip
    return bench_fedavg.parse_args(argv)


def _significant(value: float, digits: int = 2) -> float:
    if value <= 0 or not math.isfinite(value):
        raise bench_fedavg.BenchmarkError(
            f"cannot calibrate the clipping norm from a median update norm of {value}"
        )
    return float(f"{value:.{digits}g}")


def run_accuracy(settings: Settings, results: Results, echo: Callable[..., None]) -> None:
    from datasite_setup.convert.sample_data import load_digit_images

    fed = fedavg_settings(settings)
    work = settings.workdir / "privacy-accuracy"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    source = bench_fedavg.digits_source(settings.workdir)
    secret = bench_fedavg._secret(settings.workdir)
    _, labels = load_digit_images()
    for rounds in settings.rounds:
        for scheme in settings.schemes:
            if settings.clip is not None:
                results.clip[f"{rounds}|{scheme}"] = {"C": settings.clip, "source": "--clip"}
        for epsilon in sorted(set(settings.epsilons) | set(settings.context_epsilons)):
            results.calibration[f"{rounds}|{epsilon:g}"] = calibrate(epsilon, settings.delta, rounds)
    for seed in range(settings.seeds):
        pool, held_out = bench_fedavg.held_out_split(labels, settings.test_fraction, seed)
        test = bench_fedavg.test_set(source, held_out, labels, settings.size)
        majority = float(np.bincount(test[1]).max() / len(test[1]))
        for scheme_index, scheme in enumerate(settings.schemes):
            hospitals = bench_fedavg.convert_hospitals(
                source, pool, labels, work / f"{scheme}-seed{seed}", scheme, seed, fed, secret
            )
            stats = bench_fedavg.hospital_stats(hospitals)
            sizes = stats["train_sizes"]
            for rounds in settings.rounds:
                job = bench_fedavg.make_job(
                    f"dp_{scheme}_{seed}_{rounds}",
                    channels=1,
                    size=settings.size,
                    settings=fed,
                    seed=seed,
                    rounds=rounds,
                    local_epochs=settings.local_epochs,
                )
                function = bench_fedavg.site_function(job, work / "functions")
                initial = job.initial_weights()
                results.parameters = float_parameters(initial)
                base = {
                    "seed": seed,
                    "scheme": scheme,
                    "rounds": rounds,
                    "train_sizes": sizes,
                    "top_label_share": stats["top_label_share"],
                    "test_samples": int(len(test[1])),
                    "majority_share": majority,
                }

                def one(kind: str, epsilon: float | None, clip: float | None, z: float) -> dict:
                    rng = np.random.default_rng(
                        [
                            seed,
                            scheme_index,
                            rounds,
                            int(round(1000 * (epsilon or 0))),
                            1 if kind == "clip only" else 0,
                        ]
                    )
                    run = base | {"kind": kind, "epsilon": epsilon, "clip": clip, "noise_multiplier": z}
                    run |= train_private_fedavg(
                        function, hospitals, initial, rounds, test, clip=clip, noise_multiplier=z, rng=rng
                    )
                    run["noise_to_clip"] = (
                        noise_to_clip(z, sizes, results.parameters) if clip is not None else 0.0
                    )
                    results.runs.append(run)
                    echo(
                        f"  seed {seed}  {scheme:<9}  {rounds:>3} rounds  {kind:<10}"
                        + (f" ε={epsilon:<6g} z={z:<8.3f}" if epsilon is not None else " " * 25)
                        + f"  acc {run['accuracy']:.2%}  (median update norm {run['median_update_norm']:.3f}, {run['seconds']:.1f} s)"
                    )
                    return run

                plain = one("no DP", None, None, 0.0)
                if f"{rounds}|{scheme}" not in results.clip:
                    results.clip[f"{rounds}|{scheme}"] = {
                        "C": _significant(plain["median_update_norm"]),
                        "source": f"seed {seed}'s no-DP median {plain['median_update_norm']:.4f}",
                    }
                clip = results.clip[f"{rounds}|{scheme}"]["C"]
                one("clip only", None, clip, 0.0)
                for epsilon in settings.epsilons:
                    one("DP", epsilon, clip, results.calibration[f"{rounds}|{epsilon:g}"]["noise_multiplier"])
                if scheme == "iid":
                    for epsilon in settings.context_epsilons:
                        one(
                            "context",
                            epsilon,
                            clip,
                            results.calibration[f"{rounds}|{epsilon:g}"]["noise_multiplier"],
                        )
            if settings.dp_sgd:
                run_dp_sgd(settings, results, fed, hospitals, test, base, scheme_index, work, echo)


def _mean_std(values: Sequence[float]) -> list[float]:
    return [float(statistics.mean(values)), float(statistics.stdev(values)) if len(values) > 1 else 0.0]


def summarise(results: Results, settings: Settings) -> dict:
    """Mean ± std over seeds per (rounds, scheme, kind, ε); the gap is paired: no-DP − DP of the same seed, in points."""
    summary: dict = {}
    plain = {(r["seed"], r["scheme"], r["rounds"]): r for r in results.runs if r["kind"] == "no DP"}
    longest = max(
        settings.rounds
    )  # DP-SGD runs its own rounds: its gap is to the no-DP run of the most rounds

    def reference(run: dict) -> dict:
        return plain[
            (run["seed"], run["scheme"], longest if run["kind"].startswith("DP-SGD") else run["rounds"])
        ]

    groups: dict[tuple, list[dict]] = {}
    for run in results.runs:
        groups.setdefault((run["rounds"], run["scheme"], run["kind"], run["epsilon"]), []).append(run)
    for (rounds, scheme, kind, epsilon), runs in groups.items():
        accuracy = [100 * r["accuracy"] for r in runs]
        gaps = [100 * (reference(r)["accuracy"] - r["accuracy"]) for r in runs]
        key = f"{rounds}|{scheme}|{kind}|{'' if epsilon is None else f'{epsilon:g}'}"
        summary[key] = {
            "rounds": rounds,
            "scheme": scheme,
            "kind": kind,
            "epsilon": epsilon,
            "accuracy": _mean_std(accuracy),
            "per_seed": [round(a, 2) for a in accuracy],
            "gap": _mean_std(gaps),
            "noise_to_clip": statistics.mean(r["noise_to_clip"] for r in runs),
            "median_update_norm": statistics.median(r["median_update_norm"] for r in runs),
            "clipped_share": statistics.mean(r["clipped_share"] for r in runs)
            if runs[0]["clipped_share"] is not None
            else None,
            "val_accuracy": _mean_std([100 * r["val_accuracy"] for r in runs])
            if "val_accuracy" in runs[0]
            else None,
            "majority_share": statistics.mean(r["majority_share"] for r in runs),
        }
    return summary


def _software() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    info = bench_fedavg._software()
    try:
        info["opacus"] = version("opacus")
    except PackageNotFoundError:
        info["opacus"] = "unknown"
    return info


def run_benchmark(settings: Settings, *, echo: Callable[..., None] = print) -> Results:
    import torch

    settings.workdir.mkdir(parents=True, exist_ok=True)
    results = Results.begin(settings, machine_info() | _software())
    if settings.wait_load is not None:
        results.waited = wait_for_quiet_machine(settings.wait_load, settings.wait_timeout, echo)
    results.load_start = os.getloadavg()
    echo(
        f"privacy: {settings.seeds} seed(s) × {len(settings.schemes)} scheme(s) × rounds {settings.rounds}, "
        f"ε ∈ {settings.epsilons} (context {settings.context_epsilons}), δ = {settings.delta:g}…"
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # reproducible, and robust on a busy machine: nothing here is a timing
    started = time.perf_counter()
    try:
        run_accuracy(settings, results, echo)
    finally:
        torch.set_num_threads(threads)
    results.seconds = round(time.perf_counter() - started, 1)
    results.load_end = os.getloadavg()
    results.summary = summarise(results, settings)
    return results


# --- the report -------------------------------------------------------------------------------------------


def _pm(pair: Sequence[float], digits: int = 2) -> str:
    return f"{round(pair[0], digits) + 0.0:.{digits}f} ± {pair[1]:.{digits}f}"


def _entry(
    results: Results, rounds: int, scheme: str, kind: str, epsilon: float | None = None
) -> dict | None:
    return results.summary.get(f"{rounds}|{scheme}|{kind}|{'' if epsilon is None else f'{epsilon:g}'}")


def render_report(results: Results, *, heading: str = "##") -> str:
    m, s = results.machine, results.settings
    eps_list = ", ".join(f"{e:g}" for e in s["epsilons"])
    lines = [
        f"{heading} Differential privacy: FedAvg accuracy at ε ∈ {{{eps_list}}} against no DP — {results.started}",
        "",
        machine_line(m),
        f"- **Software**: Python {m['python']}, torch {m['torch']} (one intra-op thread here), opacus {m['opacus']}, numpy {m['numpy']}, "
        f"scikit-learn {m['scikit-learn']}, fedimg {m['fedimg_version']} at commit {m['fedimg_commit']}",
        load_line(
            results.load_start, results.load_end, max_start=MAX_LOAD, max_end=MAX_LOAD, busy_note=BUSY_NOTE
        )
        + f"; the whole run took {results.seconds:.0f} s",
    ]
    if results.waited:
        lines.append(waited_line(results.waited))
    if s["quick"]:
        lines.append("- **Quick mode**: a smoke run; its figures mean nothing")
    first = results.runs[0]
    schemes = " and ".join(
        f"`--scheme {x}`" + (f" `--alpha {s['alpha']:g}`" if x == "dirichlet" else "") for x in s["schemes"]
    )
    lines += [
        f"- **Data** (`bench_fedavg`'s protocol and helpers): scikit-learn's 1,797 digits; per seed a held-out stratified test set of "
        f"{s['test_fraction']:.0%} ({first['test_samples']} images; the largest class is {100 * first['majority_share']:.1f} % of it: chance level) and a "
        f"training pool converted with `fedimg convert` into {s['hospitals']} hospitals, {schemes}, {s['size']} px grayscale, "
        f"val fraction {s['val_fraction']:g}",
        f"- **Model and training**: `SmallCNN(width={s['width']})` ({results.parameters:,} float parameters), SGD lr {s['lr']:g} momentum {s['momentum']:g}, "
        f"batch {s['batch_size']}, {s['local_epochs']} local epoch(s) per round; FedAvg calls the generated site function (the code the sites run) "
        "for every hospital in this process, then `researcher.aggregation.fedavg`; test accuracy of the final model",
        *(_dp_sgd_bullets(results) if s.get("dp_sgd") else []),
        f'- **Update-level DP** (`mechanism = "update"`), as a site\'s release hook applies it (`policies.enforcement`): per job of R rounds, z = `noise_multiplier_for(ε, δ, R + 1)` '
        "(R training calls + the final evaluation are the runs the owner approves); every training call's weights go through "
        "`privatize_update(global, new, max_update_norm=C, noise_multiplier=z)` (the update clipped to L2 norm C, then N(0, (2zC)²) on every "
        f"float parameter; the noise is drawn from a seeded generator instead of the site's `secrets` one) before FedAvg; δ = {s['delta']:g}. "
        "*ε accounted* = `epsilon_of([z] × (R + 1), δ)`, the RDP accountant a site's ledger charges",
        "- **Clipping norm C**, per rounds setting and scheme: the median unclipped update norm of seed 0's no-DP run, to two significant "
        "digits, kept for the other seeds (as a site's policy would be): "
        + "; ".join(
            f"R = {key.split('|')[0]} {SCHEME_LABELS[key.split('|')[1]]}: **C = {value['C']:g}** ({value['source']})"
            for key, value in results.clip.items()
        )
        + ". Once an update is clipped, the noise grows with C as fast as the signal does, so a larger C only adds noise; a smaller one "
        "only throws signal away. *Clip only* is the same C with z = 0",
        "- **noise / C** (update-level): the expected L2 norm of the noise in one round's averaged update (sample-weighted over the hospitals) divided by C, "
        "the largest norm a clipped update can have: 2z·√(parameters · Σnᵢ²) / Σnᵢ",
        f"- **Seeds**: {s['seeds']} (each redraws the test split, the partition, the initial weights and the noise); mean ± standard deviation; "
        "gap = no DP − with DP, paired by seed, in points (positive: DP is worse); DP-SGD's gap is to the no-DP run of the most rounds",
        "",
        *(_headline(results, heading) if s.get("dp_sgd") else []),
        *(_dp_sgd_table(results, heading) if s.get("dp_sgd") else []),
        f'{heading}# Update-level DP (`mechanism = "update"`)',
        "",
        "| rounds (runs) | scheme | ε | δ | noise multiplier z | clip C | ε accounted | noise / C per round | test accuracy (%) | per seed | gap to no DP (points) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for rounds in s["rounds"]:
        for scheme in s["schemes"]:
            clip = results.clip[f"{rounds}|{scheme}"]["C"]
            label = SCHEME_LABELS[scheme] + (f" α={s['alpha']:g}" if scheme == "dirichlet" else "")
            prefix = f"| {rounds} ({rounds + 1}) | {label} |"
            plain = _entry(results, rounds, scheme, "no DP")
            lines.append(
                f"{prefix} ∞ (no DP) | — | — | — | — | — | {_pm(plain['accuracy'])} | {', '.join(f'{a:.1f}' for a in plain['per_seed'])} | — |"
            )
            clipped = _entry(results, rounds, scheme, "clip only")
            lines.append(
                f"{prefix} ∞ (clip only) | — | 0 | {clip:g} | — | 0 | {_pm(clipped['accuracy'])} | {', '.join(f'{a:.1f}' for a in clipped['per_seed'])} | {_pm(clipped['gap'])} |"
            )
            for epsilon in sorted(s["epsilons"], reverse=True):
                entry = _entry(results, rounds, scheme, "DP", epsilon)
                cal = results.calibration[f"{rounds}|{epsilon:g}"]
                lines.append(
                    f"{prefix} **{epsilon:g}** | {s['delta']:g} | {cal['noise_multiplier']:.3f} | {clip:g} | {cal['epsilon_accounted']:.2f} | "
                    f"{entry['noise_to_clip']:.0f} | **{_pm(entry['accuracy'])}** | {', '.join(f'{a:.1f}' for a in entry['per_seed'])} | {_pm(entry['gap'])} |"
                )
    if s["context_epsilons"] and "iid" in s["schemes"]:
        lines += [
            "",
            "Context (IID; not a privacy anyone would sign off): how large ε must be before accuracy comes back, with the IID C of the same rounds",
            "",
            "| rounds (runs) | ε | noise multiplier z | ε accounted | noise / C per round | test accuracy (%) | per seed | gap to no DP (points) |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
        ]
        for rounds in s["rounds"]:
            for epsilon in s["context_epsilons"]:
                entry = _entry(results, rounds, "iid", "context", epsilon)
                cal = results.calibration[f"{rounds}|{epsilon:g}"]
                lines.append(
                    f"| {rounds} ({rounds + 1}) | {epsilon:g} | {cal['noise_multiplier']:.4f}{'¹' if cal['loose'] else ''} | {cal['epsilon_accounted']:.1f} | "
                    f"{entry['noise_to_clip']:.1f} | {_pm(entry['accuracy'])} | {', '.join(f'{a:.1f}' for a in entry['per_seed'])} | {_pm(entry['gap'])} |"
                )
        if any(
            results.calibration[f"{r}|{e:g}"]["loose"] for r in s["rounds"] for e in s["context_epsilons"]
        ):
            lines += [
                "",
                "¹ Opacus's best RDP order is its smallest one here: the bound is loose, a smaller z would meet the same ε.",
            ]
    lines += ["", *_observations(results)]
    return "\n".join(lines) + "\n"


DP_SGD_TUNING = (
    "chosen on seed 0's IID partition only, by the federated **val** accuracy of the final model (the hospitals' val splits, what a "
    "researcher sees; never the test set), one noise draw per setting. At ε = 4, among 76 settings: SGD at C = 1 over rounds "
    "{10, 20, 30, 40, 60} × local epochs {1, 2} × batch {32, 64, 128, all ≈ 230} × lr {0.25 … 2}; momentum 0.9 (lr 0.05–0.2) and 0.5 "
    "(lr 0.25); C ∈ {0.1, 0.3, 0.5, 3} with lr scaled; Adam (lr 0.002–0.01): best val 84.4 % (the default settings; a dozen others within "
    "3 points; Adam and momentum 0.9 worse). At ε = 8, 5 variants of it (batch 32/64, lr 0.25–1, momentum 0.5): all within 2 points, the "
    "default kept. At ε = 1 the default learns nothing (z ≈ 15); among 45 settings (rounds {5 … 40} × batch {64, 128, all} × lr "
    "{0.1 … 2}, 2 local epochs, momentum 0.5) full batches (q = 1) with fewer rounds were best: val 51 %, single draws varying by "
    "±10 points. The tuning runs are not charged to any privacy budget here; at real sites they would be"
)


def _dp_sgd_bullets(results: Results) -> list[str]:
    s = results.settings
    return [
        '- **DP-SGD** (`mechanism = "dp-sgd"`, the sites\' default), as a site runs it: every training call of the generated site function gets '
        "the `privacy` settings a site's release hook hands it (`policies.enforcement`) and trains with `policies.dp_sgd.train_private`: Poisson "
        "sampling at q = batch / n, local epochs · ⌈n / batch⌉ steps per call, per-example gradients clipped to L2 norm C, N(0, (zC)²) noise on "
        "their sum, divided by q·n; z = `dp_sgd_noise_multiplier(ε, δ, q, steps per call × (R + 1))` per hospital (its own n), so that all R + 1 "
        "approved runs meet (ε, δ); *ε accounted* = `epsilon_of([(z, q, steps × (R + 1))], δ)`, the largest over the hospitals. The sampling and "
        "noise come from a seeded generator instead of the site's `secrets` one. Buffers are released at their global values; the model has none",
        "- **DP-SGD settings** (SGD; C = max_grad_norm): "
        + "; ".join(
            f"{'other ε and clip only' if key == 'default' else f'ε = {key}'}: **{_profile_text(value)}**"
            for key, value in s["dp_sgd_profiles"].items()
        )
        + f"; {DP_SGD_TUNING}. "
        "*DP-SGD clip only* is the default settings with z = 0. *noise / C per step*: z·√parameters / (q·n), the expected L2 norm of one step's noise in a "
        "hospital's averaged gradient, in units of C (mean over hospitals)",
    ]


def _profile_text(profile: dict) -> str:
    return f"R = {profile['rounds']}, {profile['local_epochs']} local epoch(s), batch {profile['batch_size']}, lr {profile['lr']:g}, momentum {profile['momentum']:g}, C = {profile['clip']:g}"


def _headline(results: Results, heading: str) -> list[str]:
    """Test accuracy per ε, one column per mechanism (and rounds setting)."""
    s = results.settings
    columns = [("DP-SGD", None)] + [("update", rounds) for rounds in s["rounds"]]
    profiles = s["dp_sgd_profiles"]

    def rounds_of(kind: str, rounds: int | None, epsilon: float | None) -> int:
        return dp_sgd_profile(profiles, epsilon)["rounds"] if kind == "DP-SGD" else rounds

    lines = [
        f"{heading}# Test accuracy (%) per ε and mechanism",
        "",
        "| scheme | ε | "
        + " | ".join(
            "DP-SGD (its settings per ε)" if kind == "DP-SGD" else f"update-level, R = {rounds}"
            for kind, rounds in columns
        )
        + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in columns) + " |",
    ]
    for scheme in s["schemes"]:
        label = SCHEME_LABELS[scheme] + (f" α={s['alpha']:g}" if scheme == "dirichlet" else "")
        cells = [
            _pm(_entry(results, rounds, scheme, "no DP")["accuracy"]) if kind == "update" else "—"
            for kind, rounds in columns
        ]
        lines.append(f"| {label} | ∞ (no DP) | " + " | ".join(cells) + " |")
        cells = [
            _pm(
                _entry(
                    results,
                    rounds_of(kind, rounds, None),
                    scheme,
                    "DP-SGD clip only" if kind == "DP-SGD" else "clip only",
                )["accuracy"]
            )
            for kind, rounds in columns
        ]
        lines.append(f"| {label} | ∞ (clip only) | " + " | ".join(cells) + " |")
        for epsilon in sorted(s["epsilons"], reverse=True):
            cells = [
                _pm(
                    _entry(
                        results,
                        rounds_of(kind, rounds, epsilon),
                        scheme,
                        "DP-SGD" if kind == "DP-SGD" else "DP",
                        epsilon,
                    )["accuracy"]
                )
                for kind, rounds in columns
            ]
            lines.append(
                f"| {label} | **{epsilon:g}** | "
                + " | ".join(f"**{c}**" if i == 0 else c for i, c in enumerate(cells))
                + " |"
            )
    return lines + [""]


def _dp_sgd_table(results: Results, heading: str) -> list[str]:
    s = results.settings
    profiles = s["dp_sgd_profiles"]
    lines = [
        f'{heading}# DP-SGD (`mechanism = "dp-sgd"`)',
        "",
        "| scheme | ε | δ | rounds (runs) | local epochs | batch | lr | clip C | sample rate q | steps per call | noise multiplier z (hospitals) | ε accounted (max) | noise / C per step | test accuracy (%) | per seed | val accuracy (%) | gap to no DP (points) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for scheme in s["schemes"]:
        label = SCHEME_LABELS[scheme] + (f" α={s['alpha']:g}" if scheme == "dirichlet" else "")
        for epsilon in [None, *sorted(s["epsilons"], reverse=True)]:
            profile = dp_sgd_profile(profiles, epsilon)
            settings = f"{profile['rounds']} ({profile['rounds'] + 1}) | {profile['local_epochs']} | {profile['batch_size']} | {profile['lr']:g} | {profile['clip']:g}"
            if epsilon is None:
                entry = _entry(results, profile["rounds"], scheme, "DP-SGD clip only")
                cells = f"| {label} | ∞ (clip only) | — | {settings} | — | — | 0 | — | 0 | {_pm(entry['accuracy'])}"
            else:
                entry = _entry(results, profile["rounds"], scheme, "DP-SGD", epsilon)
                hospitals = [
                    p
                    for key, value in results.dp_sgd_calibration.items()
                    if key.startswith(f"{scheme}|") and key.endswith(f"|{epsilon:g}")
                    for p in value
                ]
                cells = (
                    f"| {label} | **{epsilon:g}** | {s['delta']:g} | {settings} | {_span([p['sample_rate'] for p in hospitals], '.3f')} | "
                    f"{_span([p['steps'] for p in hospitals], 'd')} | {_span([p['noise_multiplier'] for p in hospitals], '.3f')} | "
                    f"{max(p['epsilon_accounted'] for p in hospitals):.2f} | {entry['noise_to_clip']:.1f} | **{_pm(entry['accuracy'])}**"
                )
            lines.append(
                f"{cells} | {', '.join(f'{a:.1f}' for a in entry['per_seed'])} | {_pm(entry['val_accuracy'])} | {_pm(entry['gap'])} |"
            )
    return lines + [""]


def _span(values: Sequence[float], spec: str) -> str:
    low, high = min(values), max(values)
    return f"{low:{spec}}" if low == high else f"{low:{spec}}–{high:{spec}}"


def _observations(results: Results) -> list[str]:
    s = results.settings
    lines = []
    norms = []
    for rounds in s["rounds"]:
        for scheme in s["schemes"]:
            plain = _entry(results, rounds, scheme, "no DP")
            shares = sorted(
                {
                    round(100 * _entry(results, rounds, scheme, "DP", e)["clipped_share"])
                    for e in s["epsilons"]
                }
            )
            dp_norm = statistics.median(
                _entry(results, rounds, scheme, "DP", e)["median_update_norm"] for e in s["epsilons"]
            )
            norms.append(
                f"R = {rounds} {SCHEME_LABELS[scheme]}: median unclipped norm {plain['median_update_norm']:.2f} without DP; "
                f"{100 * _entry(results, rounds, scheme, 'clip only')['clipped_share']:.0f} % of updates clipped with clipping only, "
                f"{'–'.join(map(str, shares[:: max(len(shares) - 1, 1)]))} % with DP (median norm {dp_norm:.3g})"
            )
    lines.append(
        "- **Update norms**: "
        + "; ".join(norms)
        + ". With DP, every update after the first round starts from a noisy global model far "
        "from any good one, so it is large and clipped (first-round updates start from the clean initial weights)"
    )
    best = max((e for e in results.summary.values() if e["kind"] == "DP"), key=lambda e: e["accuracy"][0])
    chance = 100 * results.runs[0]["majority_share"]
    lines.append(
        f"- **Best update-level DP at ε ≤ {max(s['epsilons']):g}**: {_pm(best['accuracy'])} % (R = {best['rounds']}, {SCHEME_LABELS[best['scheme']]}, "
        f"ε = {best['epsilon']:g}); chance is {chance:.1f} %"
    )
    if s["context_epsilons"] and "iid" in s["schemes"]:
        back = []
        for rounds in s["rounds"]:
            within = [
                e
                for e in s["context_epsilons"]
                if _entry(results, rounds, "iid", "context", e)["gap"][0] <= 5.0
            ]
            back.append(
                f"R = {rounds}: "
                + (f"ε = {min(within):g}" if within else f"not even at ε = {max(s['context_epsilons']):g}")
            )
        lines.append("- **Within 5 points of no DP (IID)**: " + "; ".join(back))
    if s.get("dp_sgd"):
        best_sgd = max(
            (e for e in results.summary.values() if e["kind"] == "DP-SGD"), key=lambda e: e["accuracy"][0]
        )
        worst_sgd = min(
            (e for e in results.summary.values() if e["kind"] == "DP-SGD"), key=lambda e: e["accuracy"][0]
        )
        lines.append(
            f"- **DP-SGD**: from {_pm(worst_sgd['accuracy'])} % ({SCHEME_LABELS[worst_sgd['scheme']]}, ε = {worst_sgd['epsilon']:g}) to "
            f"{_pm(best_sgd['accuracy'])} % ({SCHEME_LABELS[best_sgd['scheme']]}, ε = {best_sgd['epsilon']:g}), where the update-level mechanism "
            f"reaches at most {_pm(best['accuracy'])} %: per-example clipping bounds one example's influence on each step, and Poisson "
            "subsampling amplifies the privacy of every step, so far less noise per step buys the same ε"
        )
    lines.append(
        f"- **Time**: {len(results.runs)} FedAvg runs in {results.seconds:.0f} s on one torch thread"
    )
    return lines


# --- command line -----------------------------------------------------------------------------------------


def _numbers(text: str, kind: type) -> list:
    if text.strip().lower() in ("", "none"):
        return []
    return [kind(part) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_privacy", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seeds", type=int, help="seeds (default 3; 1 with --quick)")
    parser.add_argument(
        "--rounds", help="FedAvg rounds settings, comma-separated (default 20,5; 2 with --quick)"
    )
    parser.add_argument("--local-epochs", type=int, help="local epochs per round (default 2; 1 with --quick)")
    parser.add_argument("--epsilons", default="1,4,8", help="ε per job of the main table (default 1,4,8)")
    parser.add_argument(
        "--context-epsilons",
        help="larger ε of the context table, IID only; 'none' skips it (default 64,256,1024,4096; 64 with --quick)",
    )
    parser.add_argument(
        "--delta", type=float, default=1e-5, help="δ (default 1e-5, the site policy's default)"
    )
    parser.add_argument(
        "--clip",
        type=float,
        help="clipping norm C for every run (default: per rounds setting and scheme, the median unclipped update norm of seed 0's no-DP run)",
    )
    parser.add_argument("--iid-only", action="store_true", help="skip the Dirichlet partition")
    parser.add_argument(
        "--lr", type=float, default=0.05, help="SGD learning rate (default 0.05, as bench_fedavg)"
    )
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--width", type=int, default=16, help="SmallCNN width (default 16)")
    parser.add_argument("--size", type=int, default=16, help="image size, px, a multiple of 4 (default 16)")
    parser.add_argument("--hospitals", type=int, default=5, help="hospitals (default 5)")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (default 0.5)")
    parser.add_argument(
        "--test-fraction", type=float, default=0.2, help="held-out test share of the digits (default 0.2)"
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.2, help="each hospital's val share (default 0.2)"
    )
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
    report.add_report_options(
        parser,
        workdir_use="cache and scratch folder",
        report_name="privacy-report.md",
        record_help="also add the report to the Differential privacy section of benchmarks/RESULTS.md",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 seed, 2 rounds of 1 epoch, context ε 64"
    )
    add_wait_options(parser, record_default=RECORD_WAIT_LOAD)
    args = parser.parse_args(argv)
    quick = args.quick
    try:
        rounds = _numbers(args.rounds if args.rounds is not None else ("2" if quick else "20,5"), int)
        epsilons = _numbers(args.epsilons, float)
        context = _numbers(
            args.context_epsilons
            if args.context_epsilons is not None
            else ("64" if quick else "64,256,1024,4096"),
            float,
        )
    except ValueError as exc:
        parser.error(f"--rounds, --epsilons and --context-epsilons are comma-separated numbers ({exc})")
    workdir, report_path = report.output_paths(args)
    settings = Settings(
        seeds=args.seeds if args.seeds is not None else (1 if quick else 3),
        rounds=rounds,
        local_epochs=args.local_epochs if args.local_epochs is not None else (1 if quick else 2),
        epsilons=epsilons,
        context_epsilons=context,
        delta=args.delta,
        clip=args.clip,
        schemes=["iid"] if args.iid_only else ["iid", "dirichlet"],
        lr=args.lr,
        momentum=args.momentum,
        batch_size=args.batch_size,
        width=args.width,
        size=args.size,
        hospitals=args.hospitals,
        alpha=args.alpha,
        test_fraction=args.test_fraction,
        val_fraction=args.val_fraction,
        workdir=workdir,
        report=report_path,
        record=args.record,
        quick=quick,
        wait_load=wait_load(args, RECORD_WAIT_LOAD),
        wait_timeout=args.wait_timeout,
        dp_sgd=not args.no_dp_sgd,
        dp_sgd_profiles=_profiles(parser, args.dp_sgd_settings, quick),
    )
    if settings.seeds < 1 or settings.local_epochs < 1 or settings.hospitals < 1:
        parser.error("--seeds, --local-epochs and --hospitals must be at least 1")
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
    return settings


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
                f"--dp-sgd-settings[{key!r}]: rounds, local_epochs and batch_size are integers >= 1, lr and clip > 0, momentum in [0, 1)"
            )
    return profiles


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    report.publish(
        run_benchmark(settings),
        render_report,
        title="differential privacy",
        path=settings.report,
        section=SECTION,
        record=settings.record,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
