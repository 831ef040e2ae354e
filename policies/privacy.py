"""Differential privacy of released model updates: clipping, Gaussian noise, and a budget per researcher.

Each training release is a Gaussian mechanism on the site's update
``Δ = new_weights − global_weights``: ``Δ`` is clipped to L2 norm ``C``
(``max_update_norm``) and ``N(0, (z·2C)²)`` noise is added, ``2C`` being the
sensitivity of a clipped update when one training sample is replaced. The noise
multiplier ``z`` is calibrated so that a whole job (its declared number of rounds)
meets ``(epsilon_per_job, delta)``, and every release is accounted with Opacus's
RDP accountant in a ledger per researcher, kept in the site's state dir. A release
that would take a researcher past ``budget_epsilon`` is refused.

Evaluation figures (val loss, accuracy, confusion matrix) are released without
noise, as aggregates over at least ``min_samples`` val samples: they are not
covered by the (ε, δ) guarantee. The noise is calibrated for all ``limit`` runs a
request may make (the researcher chooses which are training calls).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from pathlib import Path
from typing import Mapping

import numpy as np

SAMPLE_RATE = 1.0  # every release uses the site's whole training split


def noise_multiplier_for(epsilon: float, delta: float, releases: int) -> float:
    """The smallest Gaussian noise multiplier giving ``(epsilon, delta)`` over ``releases`` full-batch releases."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=SAMPLE_RATE, steps=releases, accountant="rdp", epsilon_tolerance=0.01))


def epsilon_of(noise_multipliers: list[float], delta: float) -> float:
    """ε at ``delta`` of a sequence of full-batch Gaussian releases (RDP accounting)."""
    from opacus.accountants import RDPAccountant

    if not noise_multipliers:
        return 0.0
    accountant = RDPAccountant()
    for z in noise_multipliers:
        accountant.step(noise_multiplier=z, sample_rate=SAMPLE_RATE)
    return float(accountant.get_epsilon(delta))


def privatize_update(global_weights: Mapping[str, np.ndarray], new_weights: Mapping[str, np.ndarray], *, max_update_norm: float, noise_multiplier: float, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Clip the float part of ``new - global`` to ``max_update_norm`` and add calibrated Gaussian noise.

    Integer buffers are not released: the global values are returned for them.
    """
    rng = rng or np.random.default_rng(secrets.randbits(128))
    floats = [name for name, value in new_weights.items() if np.asarray(value).dtype.kind == "f"]
    deltas = {name: np.asarray(new_weights[name], dtype=np.float64) - np.asarray(global_weights[name], dtype=np.float64) for name in floats}
    norm = float(np.sqrt(sum(float((d**2).sum()) for d in deltas.values())))
    scale = min(1.0, max_update_norm / norm) if norm > 0 else 1.0
    std = noise_multiplier * 2 * max_update_norm
    released = {name: np.asarray(global_weights[name]).copy() for name in new_weights}
    for name in floats:
        noisy = np.asarray(global_weights[name], dtype=np.float64) + deltas[name] * scale + rng.normal(0.0, std, deltas[name].shape)
        released[name] = noisy.astype(np.asarray(new_weights[name]).dtype)
    return released


class PrivacyLedger:
    """Per-researcher record of releases (their noise multipliers) at one site; survives restarts."""

    def __init__(self, path: Path, delta: float) -> None:
        self.path = Path(path)
        self.delta = delta

    def _load(self) -> dict[str, list[float]]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def spent(self, researcher: str) -> float:
        return epsilon_of(self._load().get(researcher, []), self.delta)

    def charge(self, researcher: str, noise_multiplier: float, budget_epsilon: float) -> float:
        """Record one release if it keeps ``researcher`` within ``budget_epsilon``; return ε spent after it.

        Raises ``BudgetExceeded`` (and records nothing) otherwise.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            ledger = self._load()
            history = ledger.get(researcher, [])
            after = epsilon_of(history + [noise_multiplier], self.delta)
            if after > budget_epsilon + 1e-9:
                raise BudgetExceeded(f"privacy budget: this release would bring epsilon to {after:.2f} at this site, above the budget {budget_epsilon} (spent so far {epsilon_of(history, self.delta):.2f})")
            ledger[researcher] = history + [noise_multiplier]
            temporary = self.path.with_name(self.path.name + ".tmp")
            temporary.write_text(json.dumps(ledger))
            os.chmod(temporary, 0o600)
            temporary.replace(self.path)
            return after


class BudgetExceeded(Exception):
    """The release would exceed the researcher's privacy budget at this site."""
