"""``bench_fedavg``'s accuracy part: FedAvg against centralised training on the digits.

Per seed and partition scheme, FedAvg calls the generated site function for every
hospital in this process and averages with ``researcher.aggregation.fedavg`` (the
transport does not change the arithmetic); the centralised baseline is the same
site function trained once on the union of the hospitals' train splits for
rounds × local epochs epochs. Both start from the same initial weights and are
evaluated on the same held-out test set.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import mean_std
from benchmarks.workloads.digits import DigitsData, evaluate, hospital_stats, make_job, site_function

SCHEMES = ("iid", "dirichlet")
IID_TARGET = 2.0  # FedAvg within 2 accuracy points of centralised on IID
DIRICHLET_TARGET = 4.0  # … and within 4 points on Dirichlet α = 0.5


def checkpoints(rounds: int) -> list[int]:
    """The rounds at which the budget table compares FedAvg with centralised training: R/4, R/2, R."""
    return sorted({max(1, rounds // 4), max(1, rounds // 2), rounds})


def train_fedavg(
    function: Callable[..., dict],
    hospitals: list[Any],
    weights: dict,
    rounds: int,
    test: tuple[np.ndarray, np.ndarray],
) -> dict:
    """``rounds`` of FedAvg: every hospital's site-function call in turn, then ``fedavg``.

    Parameters
    ----------
    function : Callable[..., dict]
        The job's site function.
    hospitals : list
        The hospitals' partitions.
    weights : dict
        The initial weights.
    rounds : int
        FedAvg rounds.
    test : tuple[np.ndarray, np.ndarray]
        The held-out test set.

    Returns
    -------
    dict
        The final ``accuracy`` on the test set, its ``curve`` after every round, the ``val_curve``
        (``val_curve[r]`` is the hospitals' pooled val accuracy of the model after ``r`` rounds,
        ``r = 0 … rounds``, as the job's history reports it) and the ``seconds`` it took.
    """
    from researcher.aggregation import fedavg

    curve, val_curve = [], []
    started = time.perf_counter()
    for rnd in range(rounds):
        updates, correct, seen = [], 0.0, 0
        for hospital in hospitals:
            train, val = hospital.splits["train"], hospital.splits["val"]
            output = function(train.images, train.labels, val.images, val.labels, weights, rnd)
            updates.append((output["weights"], output["num_samples"]))
            correct += output["val"]["accuracy"] * output["val"]["num_samples"]
            seen += output["val"]["num_samples"]
        val_curve.append(correct / max(seen, 1))
        weights = fedavg(updates)
        curve.append(evaluate(function, weights, *test, rounds)["accuracy"])
    val_images = np.concatenate([h.splits["val"].images for h in hospitals])
    val_labels = np.concatenate([h.splits["val"].labels for h in hospitals])
    val_curve.append(evaluate(function, weights, val_images, val_labels, rounds)["accuracy"])
    return {
        "accuracy": curve[-1],
        "curve": [round(a, 4) for a in curve],
        "val_curve": [round(a, 4) for a in val_curve],
        "seconds": round(time.perf_counter() - started, 2),
    }


def train_centralised(
    job: Any,
    folder: Path,
    hospitals: list[Any],
    weights: dict,
    budgets: Sequence[int],
    test: tuple[np.ndarray, np.ndarray],
) -> dict:
    """The same site function, one call on the union of the hospitals' train splits, for each budget.

    ``budgets`` are in epochs; every budget trains afresh from ``weights``.
    """
    images = np.concatenate([h.splits["train"].images for h in hospitals])
    labels = np.concatenate([h.splits["train"].labels for h in hospitals])
    started = time.perf_counter()
    accuracy = {}
    for epochs in budgets:
        function = site_function(job, folder, rounds=1, local_epochs=epochs)
        trained = function(images, labels, *test, weights, 0)["weights"]
        accuracy[epochs] = evaluate(function, trained, *test, 1)["accuracy"]
    return {
        "accuracy": accuracy[max(budgets)],
        "by_epochs": {str(k): v for k, v in accuracy.items()},
        "train_samples": int(len(labels)),
        "seconds": round(time.perf_counter() - started, 2),
    }


def run_accuracy(settings: Any, echo: Callable[..., None]) -> dict:
    """The accuracy part: per seed and scheme, centralised training and FedAvg (and FedProx) on the hospitals.

    Parameters
    ----------
    settings : bench_fedavg.Settings
        The seeds, budget and protocol settings.
    echo : Callable
        Where progress lines go.

    Returns
    -------
    dict
        ``runs`` (one a seed and scheme) and their ``summary``.
    """
    data = DigitsData.prepare(settings.workdir, "fedavg-accuracy")
    variants = [("fedavg", 0.0)] + ([("fedprox", settings.fedprox_mu)] if settings.fedprox_mu > 0 else [])
    runs: list[dict] = []
    for seed in range(settings.seeds):
        pool, test = data.split(settings, seed)
        for scheme in SCHEMES:
            hospitals = data.hospitals(pool, scheme, seed, settings)
            rounds, local_epochs = settings.rounds, settings.local_epochs
            job = make_job(f"acc_{scheme}_{seed}", settings, seed, rounds=rounds, local_epochs=local_epochs)
            initial = job.initial_weights()
            central = train_centralised(
                job,
                data.work / "functions",
                hospitals,
                initial,
                [k * settings.local_epochs for k in checkpoints(settings.rounds)],
                test,
            )
            run: dict[str, Any] = {
                "seed": seed,
                "scheme": scheme,
                "test_samples": int(len(test[1])),
                "pool_samples": int(len(pool)),
                "hospitals": hospital_stats(hospitals),
                "centralised": central,
            }
            for variant, mu in variants:
                function = site_function(job, data.work / "functions", mu=mu)
                run[variant] = train_fedavg(function, hospitals, initial, settings.rounds, test)
            runs.append(run)
            echo(
                f"  seed {seed}  {scheme:<9}  centralised {central['accuracy']:.2%}  "
                f"FedAvg {run['fedavg']['accuracy']:.2%}"
                + (f"  FedProx {run['fedprox']['accuracy']:.2%}" if "fedprox" in run else "")
                + f"  (train sizes {run['hospitals']['train_sizes']})"
            )
    return {"runs": runs, "summary": summarise_accuracy(runs, settings)}


def summarise_accuracy(runs: list[dict], settings: Any) -> dict:
    """Per scheme, mean ± std over seeds (in %): both contenders' accuracy, the gap, the gap by budget.

    Also the change of FedAvg's pooled val accuracy over its last quarter of rounds (convergence).
    """
    summary = {}
    for scheme in SCHEMES:
        chosen = [r for r in runs if r["scheme"] == scheme]
        central = [100 * r["centralised"]["accuracy"] for r in chosen]
        entry: dict = {"centralised": mean_std(central), "budgets": {}}
        for variant in ("fedavg", "fedprox"):
            if variant not in chosen[0]:
                continue
            accuracy = [100 * r[variant]["accuracy"] for r in chosen]
            entry[variant] = mean_std(accuracy)
            entry[f"{variant}_gap"] = mean_std([c - a for c, a in zip(central, accuracy, strict=True)])
        for rounds in checkpoints(settings.rounds):
            epochs = rounds * settings.local_epochs
            c = [100 * r["centralised"]["by_epochs"][str(epochs)] for r in chosen]
            f = [100 * r["fedavg"]["curve"][rounds - 1] for r in chosen]
            entry["budgets"][str(rounds)] = {
                "epochs": epochs,
                "centralised": mean_std(c),
                "fedavg": mean_std(f),
                "gap": mean_std([a - b for a, b in zip(c, f, strict=True)]),
            }
        quarter = max(1, settings.rounds // 4)
        entry["val_last_quarter_change"] = mean_std(
            [100 * (r["fedavg"]["val_curve"][-1] - r["fedavg"]["val_curve"][-1 - quarter]) for r in chosen]
        )
        summary[scheme] = entry
    return summary
