"""``bench_privacy``'s runs: per seed and scheme, FedAvg without DP and under each mechanism; their summary.

The data and training are ``bench_fedavg``'s accuracy protocol (``benchmarks.workloads.digits``).
Per seed and scheme: for every rounds setting, no DP, clipping only, update-level DP at each ε
(and, IID, at the context ε); then DP-SGD at each ε with its own settings, and its clipping only.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import BenchmarkError, mean_std
from benchmarks.privacy.mechanisms import (
    calibrate,
    dp_sgd_noise_to_clip,
    dp_sgd_privacy,
    dp_sgd_profile,
    float_parameters,
    noise_to_clip,
    train_dp_sgd_fedavg,
    train_private_fedavg,
)
from benchmarks.workloads.digits import DigitsData, hospital_stats, make_job, site_function


def _echo_run(echo: Callable[..., None], run: dict, kind_width: int, z: float, detail: str) -> None:
    epsilon = run["epsilon"]
    echo(
        f"  seed {run['seed']}  {run['scheme']:<9}  {run['rounds']:>3} rounds  {run['kind']:<{kind_width}}"
        + (f" ε={epsilon:<6g} z={z:<8.3f}" if epsilon is not None else " " * 25)
        + f"  acc {run['accuracy']:.2%}  ({detail}, {run['seconds']:.1f} s)"
    )


def run_dp_sgd(
    settings: Any,
    results: Any,
    hospitals: list[Any],
    test: tuple,
    base: dict,
    scheme_index: int,
    work: Path,
    echo: Callable[..., None],
) -> None:
    """The DP-SGD rows of one seed and scheme: clipping only (z = 0, the default settings), then each ε.

    Each ε trains with its own settings (``dp_sgd_profile``); the runs are added to ``results``.
    """
    seed, scheme = base["seed"], base["scheme"]
    for epsilon in [None, *settings.epsilons]:
        profile = dp_sgd_profile(settings.dp_sgd_profiles, epsilon)
        rounds = profile["rounds"]
        local_epochs = profile["local_epochs"]
        name = f"dpsgd_{scheme}_{seed}_{rounds}_{local_epochs}"
        job = make_job(name, settings, seed, rounds=rounds, local_epochs=local_epochs)
        function = site_function(
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
        _echo_run(echo, run, 16, run["noise_multiplier"], f"val {run['val_accuracy']:.2%}")


def _significant(value: float, digits: int = 2) -> float:
    if value <= 0 or not math.isfinite(value):
        raise BenchmarkError(f"cannot calibrate the clipping norm from a median update norm of {value}")
    return float(f"{value:.{digits}g}")


@dataclass
class _UpdateLevel:
    """The update-level runs of one seed, scheme and rounds setting, and what they share."""

    base: dict  # every run's seed, scheme, rounds, hospitals' sizes, test set figures
    scheme_index: int
    function: Callable[..., dict]
    hospitals: list[Any]
    initial: dict
    test: tuple
    results: Any
    echo: Callable[..., None]

    def run(self, kind: str, epsilon: float | None, clip: float | None, z: float) -> dict:
        """One FedAvg run of ``kind`` (no DP, clip only, DP, context), seeded by its place in the grid."""
        rounds = self.base["rounds"]
        kind_seed = 1 if kind == "clip only" else 0
        epsilon_key = int(round(1000 * (epsilon or 0)))
        rng = np.random.default_rng([self.base["seed"], self.scheme_index, rounds, epsilon_key, kind_seed])
        run = self.base | {"kind": kind, "epsilon": epsilon, "clip": clip, "noise_multiplier": z}
        run |= train_private_fedavg(
            self.function,
            self.hospitals,
            self.initial,
            rounds,
            self.test,
            clip=clip,
            noise_multiplier=z,
            rng=rng,
        )
        parameters = self.results.parameters
        run["noise_to_clip"] = (
            noise_to_clip(z, self.base["train_sizes"], parameters) if clip is not None else 0.0
        )
        self.results.runs.append(run)
        _echo_run(self.echo, run, 10, z, f"median update norm {run['median_update_norm']:.3f}")
        return run

    def run_all(self, settings: Any) -> None:
        """No DP (which calibrates C unless it is known), clip only, DP at each ε, and (IID) the context ε."""
        results, key = self.results, f"{self.base['rounds']}|{self.base['scheme']}"
        plain = self.run("no DP", None, None, 0.0)
        if key not in results.clip:
            results.clip[key] = {
                "C": _significant(plain["median_update_norm"]),
                "source": f"seed {self.base['seed']}'s no-DP median {plain['median_update_norm']:.4f}",
            }
        clip = results.clip[key]["C"]
        self.run("clip only", None, clip, 0.0)
        for epsilon in settings.epsilons:
            self.run("DP", epsilon, clip, self._noise_multiplier(epsilon))
        if self.base["scheme"] == "iid":
            for epsilon in settings.context_epsilons:
                self.run("context", epsilon, clip, self._noise_multiplier(epsilon))

    def _noise_multiplier(self, epsilon: float) -> float:
        return self.results.calibration[f"{self.base['rounds']}|{epsilon:g}"]["noise_multiplier"]


def run_accuracy(settings: Any, results: Any, echo: Callable[..., None]) -> None:
    """Every run of the benchmark, added to ``results`` (with the calibrations and clipping norms they use).

    Parameters
    ----------
    settings : bench_privacy.Settings
        The benchmark's settings.
    results : bench_privacy.Results
        Its results; ``clip``, ``calibration``, ``dp_sgd_calibration``, ``runs`` and ``parameters``
        are filled in.
    echo : Callable
        Where progress lines go.
    """
    data = DigitsData.prepare(settings.workdir, "privacy-accuracy")
    for rounds in settings.rounds:
        for scheme in settings.schemes:
            if settings.clip is not None:
                results.clip[f"{rounds}|{scheme}"] = {"C": settings.clip, "source": "--clip"}
        for epsilon in sorted(set(settings.epsilons) | set(settings.context_epsilons)):
            results.calibration[f"{rounds}|{epsilon:g}"] = calibrate(epsilon, settings.delta, rounds)
    for seed in range(settings.seeds):
        pool, test = data.split(settings, seed)
        majority = float(np.bincount(test[1]).max() / len(test[1]))
        for scheme_index, scheme in enumerate(settings.schemes):
            hospitals = data.hospitals(pool, scheme, seed, settings)
            stats = hospital_stats(hospitals)
            for rounds in settings.rounds:
                base = {
                    "seed": seed,
                    "scheme": scheme,
                    "rounds": rounds,
                    "train_sizes": stats["train_sizes"],
                    "top_label_share": stats["top_label_share"],
                    "test_samples": int(len(test[1])),
                    "majority_share": majority,
                }
                name = f"dp_{scheme}_{seed}_{rounds}"
                job = make_job(name, settings, seed, rounds=rounds, local_epochs=settings.local_epochs)
                function = site_function(job, data.work / "functions")
                initial = job.initial_weights()
                results.parameters = float_parameters(initial)
                update_level = _UpdateLevel(
                    base, scheme_index, function, hospitals, initial, test, results, echo
                )
                update_level.run_all(settings)
            if settings.dp_sgd:
                # DP-SGD runs its own rounds: ``base`` (the last rounds setting's) only places its keys
                run_dp_sgd(settings, results, hospitals, test, base, scheme_index, data.work, echo)


def summarise(results: Any, settings: Any) -> dict:
    """Mean ± std over seeds per (rounds, scheme, kind, ε); the gap is paired: no-DP − DP of the same seed.

    Parameters
    ----------
    results : bench_privacy.Results
        The runs.
    settings : bench_privacy.Settings
        The rounds settings (DP-SGD's gap is to the no-DP run of the most rounds).

    Returns
    -------
    dict
        ``"rounds|scheme|kind|ε"`` → accuracy and gap (mean ± std, in points), per-seed accuracy, noise / C,
        update norms, clipped share, val accuracy and the majority class's share.
    """
    summary: dict = {}
    plain = {(r["seed"], r["scheme"], r["rounds"]): r for r in results.runs if r["kind"] == "no DP"}
    longest = max(
        settings.rounds
    )  # DP-SGD runs its own rounds: its gap is to the no-DP run of the most rounds

    def reference(run: dict) -> dict:
        rounds = longest if run["kind"].startswith("DP-SGD") else run["rounds"]
        return plain[(run["seed"], run["scheme"], rounds)]

    groups: dict[tuple, list[dict]] = {}
    for run in results.runs:
        groups.setdefault((run["rounds"], run["scheme"], run["kind"], run["epsilon"]), []).append(run)
    for (rounds, scheme, kind, epsilon), runs in groups.items():
        accuracy = [100 * r["accuracy"] for r in runs]
        gaps = [100 * (reference(r)["accuracy"] - r["accuracy"]) for r in runs]
        key = f"{rounds}|{scheme}|{kind}|{'' if epsilon is None else f'{epsilon:g}'}"
        clipped = runs[0]["clipped_share"] is not None
        summary[key] = {
            "rounds": rounds,
            "scheme": scheme,
            "kind": kind,
            "epsilon": epsilon,
            "accuracy": mean_std(accuracy),
            "per_seed": [round(a, 2) for a in accuracy],
            "gap": mean_std(gaps),
            "noise_to_clip": statistics.mean(r["noise_to_clip"] for r in runs),
            "median_update_norm": statistics.median(r["median_update_norm"] for r in runs),
            "clipped_share": statistics.mean(r["clipped_share"] for r in runs) if clipped else None,
            "val_accuracy": mean_std([100 * r["val_accuracy"] for r in runs])
            if "val_accuracy" in runs[0]
            else None,
            "majority_share": statistics.mean(r["majority_share"] for r in runs),
        }
    return summary
