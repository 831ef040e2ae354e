"""The sites' two DP mechanisms as ``bench_privacy`` applies them, exactly as a site's release hook does.

- **Update-level** (``mechanism = "update"``): the noise multiplier of a job of R
  rounds (R + 1 approved runs), and FedAvg whose every release goes through
  ``privatize_update`` (clip the update to C, add N(0, (2zC)²)).
- **DP-SGD** (``mechanism = "dp-sgd"``): the ``privacy`` settings a site hands the
  site function (its own calibration per hospital), and FedAvg whose every
  training call trains with them.

Sampling and noise come from seeded generators (a site's come from ``secrets``).
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmarks.workloads.digits import evaluate

# --- update-level DP, as the release hook applies it ---------------------------------------------------


def calibrate(epsilon: float, delta: float, rounds: int) -> dict:
    """The noise multiplier a site uses for a job of ``rounds`` rounds (``limit = rounds + 1`` runs).

    Parameters
    ----------
    epsilon, delta : float
        The job's (ε, δ).
    rounds : int
        The job's training rounds.

    Returns
    -------
    dict
        ``noise_multiplier`` z, the ``epsilon_accounted`` for R + 1 releases at z, and whether the
        bound is ``loose`` (Opacus's best RDP order was its smallest).

    Examples
    --------
    >>> calibration = calibrate(4.0, 1e-5, rounds=5)
    >>> calibration["epsilon_accounted"] <= 4.01 and calibration["noise_multiplier"] > 1
    True
    """
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
    """How many float parameters the weights hold (what update-level DP adds noise to)."""
    return int(sum(np.asarray(v).size for v in weights.values() if np.asarray(v).dtype.kind == "f"))


def noise_to_clip(noise_multiplier: float, sizes: Sequence[int], parameters: int) -> float:
    """Expected L2 norm of the noise in the sample-weighted FedAvg of the releases, in units of ``C``.

    ``C`` is the largest norm a clipped update can have: ``2z·√(parameters · Σnᵢ²) / Σnᵢ``.

    Examples
    --------
    >>> noise_to_clip(1.0, [10] * 4, 100)
    10.0
    """
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
    """``rounds`` of FedAvg; with ``clip``, every hospital's release goes through ``privatize_update``.

    ``clip=None`` is plain FedAvg (no DP); ``noise_multiplier=0`` with a clip is clipping only.

    Returns
    -------
    dict
        The final model's test ``accuracy`` and ``loss``, the ``median_update_norm`` before clipping,
        the ``clipped_share`` of updates, and the ``seconds`` it took.
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
    final = evaluate(function, weights, *test, rounds)
    return {
        "accuracy": final["accuracy"],
        "loss": final["loss"] if math.isfinite(final["loss"]) else None,
        "median_update_norm": float(statistics.median(norms)),
        "clipped_share": (sum(n > clip for n in norms) / len(norms)) if clip is not None else None,
        "seconds": round(time.perf_counter() - started, 2),
    }


# --- DP-SGD, as a site runs it ---------------------------------------------------------------------------


def dp_sgd_profile(profiles: dict, epsilon: float | None) -> dict:
    """The DP-SGD training settings used at ``epsilon`` (``None``: the clip-only run, on the default ones)."""
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
    """What a DP-SGD site's release hook hands the site function (``policies.enforcement``).

    ``q = batch / n``, ``local_epochs · ⌈n / batch⌉`` steps per call, z for ``(rounds + 1)`` calls' steps
    (the approved runs, any of which may train); ``epsilon=None``: no noise (clipping only).

    Returns
    -------
    dict
        ``n``, ``sample_rate`` q, ``steps`` per call, ``noise_multiplier`` z, ``max_grad_norm`` C and
        the ``epsilon_accounted`` (infinite without noise).
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
    """``rounds`` of FedAvg where every hospital trains with the sites' DP-SGD (``privacy[i]``: hospital i's).

    The sampling and noise are seeded from ``rng`` (a site draws them from ``secrets``). Besides the test
    accuracy, returns the federated val accuracy (what a researcher sees, used to tune the settings).
    """
    from researcher.aggregation import fedavg
    from researcher.results import aggregate_evaluations

    norms: list[float] = []
    started = time.perf_counter()
    for rnd in range(rounds):
        updates = []
        for hospital, settings in zip(hospitals, privacy, strict=True):
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
    final = evaluate(function, weights, *test, rounds)
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
    """Expected L2 norm of one step's noise in a hospital's averaged gradient, in units of C.

    That is z·√parameters / (q·n), the mean over the hospitals.
    """
    return statistics.mean(
        p["noise_multiplier"] * math.sqrt(parameters) / (p["sample_rate"] * p["n"]) for p in privacy
    )
