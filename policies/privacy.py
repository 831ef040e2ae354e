"""Differential privacy of released model updates: calibration, accounting, a budget per researcher, update-level noise.

Two mechanisms (a site's ``[privacy] mechanism``):

- ``"dp-sgd"`` (the default): the site trains with DP-SGD (``policies.dp_sgd``):
  Poisson sampling at rate ``q``, per-sample clipping to ``max_grad_norm``,
  ``N(0, (z·C)²)`` noise per step. ``dp_sgd_noise_multiplier`` calibrates ``z``
  so that every step a job's approved runs may make meets
  ``(epsilon_per_job, delta)``; a release is charged as ``(z, q, steps)``. The
  neighbouring datasets are Opacus's: one training example added or removed.
- ``"update"``: the update-level mechanism below, charged as ``(z, 1, 1)``.

Every release is accounted with Opacus's RDP accountant in a ledger per
researcher, kept in the site's state dir; a release that would take a
researcher past ``budget_epsilon`` is refused.

Update-level mechanism: each training release is a Gaussian mechanism on the site's update
``Δ = new_weights − global_weights``: ``Δ`` is clipped to L2 norm ``C``
(``max_update_norm``) and ``N(0, (z·2C)²)`` noise is added, ``2C`` being the
sensitivity of a clipped update when one training sample is replaced. The noise
multiplier ``z`` is calibrated so that a whole job (its declared number of rounds)
meets ``(epsilon_per_job, delta)``. It carries no subsampling amplification and,
measured (``benchmarks/bench_privacy.py``), leaves a model at chance for ε ≤ 8.

Evaluation figures (val loss, accuracy, confusion matrix) are released without
noise, as aggregates over at least ``min_samples`` val samples: they are not
covered by the (ε, δ) guarantee. The noise is calibrated for all ``limit`` runs a
request may make (the researcher chooses which are training calls).
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

SAMPLE_RATE = 1.0  # an update-level release uses the site's whole training split
Entry = tuple[
    float, float, int
]  # (noise_multiplier, sample_rate, steps): Opacus's RDPAccountant history format


def noise_multiplier_for(epsilon: float, delta: float, releases: int) -> float:
    """The smallest Gaussian noise multiplier giving ``(epsilon, delta)`` over ``releases`` full-batch releases."""
    return dp_sgd_noise_multiplier(epsilon, delta, SAMPLE_RATE, releases)


@functools.lru_cache(maxsize=256)
def dp_sgd_noise_multiplier(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest noise multiplier giving ``(epsilon, delta)`` over ``steps`` Poisson-subsampled Gaussian steps at ``sample_rate``."""
    from opacus.accountants.utils import get_noise_multiplier

    if (
        not (epsilon > 0 and 0 < delta < 1 and 0 < sample_rate <= 1)
        or isinstance(steps, bool)
        or not isinstance(steps, int)
        or steps < 1
    ):
        raise ValueError(
            f"need epsilon > 0, 0 < delta < 1, 0 < sample_rate <= 1 and an integer steps >= 1 (got {epsilon}, {delta}, {sample_rate}, {steps!r})"
        )
    return float(
        get_noise_multiplier(
            target_epsilon=epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant="rdp",
            epsilon_tolerance=0.01,
        )
    )


def as_entry(item: float | Sequence) -> Entry:
    """A ledger item as ``(noise_multiplier, sample_rate, steps)``; a bare number (the ledger before DP-SGD) is one full-batch release."""
    if isinstance(item, (int, float)) and not isinstance(item, bool):
        return (float(item), SAMPLE_RATE, 1)
    z, q, steps = item
    return (float(z), float(q), int(steps))


def epsilon_of(entries: Sequence[float | Sequence], delta: float) -> float:
    """ε at ``delta`` of a sequence of releases (RDP accounting).

    Each entry is ``(noise_multiplier, sample_rate, steps)`` — DP-SGD steps — or a
    bare noise multiplier: one full-batch release (the update-level mechanism).
    """
    from opacus.accountants import RDPAccountant

    history = [entry for entry in map(as_entry, entries) if entry[2] > 0]
    if not history:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = history
    return float(accountant.get_epsilon(delta))


def privatize_update(
    global_weights: Mapping[str, np.ndarray],
    new_weights: Mapping[str, np.ndarray],
    *,
    max_update_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator | None = None,
) -> dict[str, np.ndarray]:
    """Clip the float part of ``new - global`` to ``max_update_norm`` and add calibrated Gaussian noise.

    Integer buffers are not released: the global values are returned for them.
    """
    rng = rng or np.random.default_rng(secrets.randbits(128))
    floats = [name for name, value in new_weights.items() if np.asarray(value).dtype.kind == "f"]
    deltas = {
        name: np.asarray(new_weights[name], dtype=np.float64)
        - np.asarray(global_weights[name], dtype=np.float64)
        for name in floats
    }
    norm = float(np.sqrt(sum(float((d**2).sum()) for d in deltas.values())))
    scale = min(1.0, max_update_norm / norm) if norm > 0 else 1.0
    std = noise_multiplier * 2 * max_update_norm
    released = {name: np.asarray(global_weights[name]).copy() for name in new_weights}
    for name in floats:
        noisy = (
            np.asarray(global_weights[name], dtype=np.float64)
            + deltas[name] * scale
            + rng.normal(0.0, std, deltas[name].shape)
        )
        released[name] = noisy.astype(np.asarray(new_weights[name]).dtype)
    return released


class PrivacyLedger:
    """Per-researcher record of releases at one site, as ``[noise_multiplier, sample_rate, steps]``; survives restarts.

    A ledger written before DP-SGD (bare noise multipliers) is read as full-batch
    releases and rewritten in the new form at the next charge.
    """

    def __init__(self, path: Path, delta: float) -> None:
        self.path = Path(path)
        self.delta = delta

    def _load(self) -> dict[str, list[Entry]]:
        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return {researcher: [as_entry(item) for item in items] for researcher, items in document.items()}

    def spent(self, researcher: str) -> float:
        return epsilon_of(self._load().get(researcher, []), self.delta)

    def charge(
        self,
        researcher: str,
        noise_multiplier: float,
        budget_epsilon: float,
        *,
        sample_rate: float = SAMPLE_RATE,
        steps: int = 1,
    ) -> float:
        """Record one release (``steps`` Gaussian steps at ``sample_rate``) if it keeps ``researcher`` within ``budget_epsilon``.

        Returns ε spent after it; raises ``BudgetExceeded`` (and records nothing) otherwise.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            ledger = self._load()
            history = ledger.get(researcher, [])
            entry = as_entry((noise_multiplier, sample_rate, steps))
            after = epsilon_of(history + [entry], self.delta)
            if after > budget_epsilon + 1e-9:
                raise BudgetExceeded(
                    f"privacy budget: this release would bring epsilon to {after:.2f} at this site, above the budget {budget_epsilon} (spent so far {epsilon_of(history, self.delta):.2f})"
                )
            ledger[researcher] = history + [entry]
            temporary = self.path.with_name(self.path.name + ".tmp")
            temporary.write_text(json.dumps(ledger))
            os.chmod(temporary, 0o600)
            temporary.replace(self.path)
            return after


class BudgetExceeded(Exception):
    """The release would exceed the researcher's privacy budget at this site."""
