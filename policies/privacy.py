"""Differential privacy of released model updates: calibration, accounting, budgets, update-level noise.

Calibration of the noise, accounting of what each release costs, a budget per researcher at each
site, and the update-level mechanism.

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
from typing import cast

import numpy as np

SAMPLE_RATE = 1.0  # an update-level release uses the site's whole training split
# (noise_multiplier, sample_rate, steps): Opacus's RDPAccountant history format
Entry = tuple[float, float, int]


def noise_multiplier_for(epsilon: float, delta: float, releases: int) -> float:
    """The smallest Gaussian noise multiplier giving ``(epsilon, delta)`` over full-batch releases.

    Parameters
    ----------
    epsilon, delta : float
        The privacy target of all the releases together.
    releases : int
        How many releases (update-level mechanism: one per training call a job may make).

    Returns
    -------
    float
        The noise multiplier ``z`` (noise standard deviation over sensitivity).

    Examples
    --------
    >>> round(noise_multiplier_for(4.0, 1e-5, 10), 2)
    3.66
    """
    return dp_sgd_noise_multiplier(epsilon, delta, SAMPLE_RATE, releases)


@functools.lru_cache(maxsize=256)
def dp_sgd_noise_multiplier(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest noise multiplier giving ``(epsilon, delta)`` over Poisson-subsampled Gaussian steps.

    Parameters
    ----------
    epsilon, delta : float
        The privacy target of all the steps together (``epsilon > 0``, ``0 < delta < 1``).
    sample_rate : float
        The probability ``q`` that an example joins a step's batch, in ``(0, 1]``.
    steps : int
        How many DP-SGD steps (at least 1).

    Returns
    -------
    float
        The noise multiplier ``z``: each step adds ``N(0, (z·C)²)`` to the clipped gradients' sum.

    Raises
    ------
    ValueError
        When a setting is out of range.

    Examples
    --------
    >>> round(dp_sgd_noise_multiplier(4.0, 1e-5, 0.01, 1000), 2)
    0.78
    """
    from opacus.accountants.utils import get_noise_multiplier

    steps_ok = not isinstance(steps, bool) and isinstance(steps, int) and steps >= 1
    if not (epsilon > 0 and 0 < delta < 1 and 0 < sample_rate <= 1) or not steps_ok:
        raise ValueError(
            "need epsilon > 0, 0 < delta < 1, 0 < sample_rate <= 1 and an integer steps >= 1 "
            f"(got {epsilon}, {delta}, {sample_rate}, {steps!r})"
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


def as_entry(item: float | Sequence[float]) -> Entry:
    """A ledger item as ``(noise_multiplier, sample_rate, steps)``.

    A bare number (the ledger before DP-SGD) is one full-batch release.

    Examples
    --------
    >>> as_entry(2.0), as_entry([1.1, 0.01, 300])
    ((2.0, 1.0, 1), (1.1, 0.01, 300))
    """
    if isinstance(item, (int, float)) and not isinstance(item, bool):
        return (float(item), SAMPLE_RATE, 1)
    # anything else must unpack into three numbers (a bool does not, and raises)
    z, q, steps = cast(Sequence[float], item)
    return (float(z), float(q), int(steps))


def epsilon_of(entries: Sequence[float | Sequence], delta: float) -> float:
    """ε at ``delta`` of a sequence of releases (RDP accounting).

    Parameters
    ----------
    entries : sequence
        Each entry is ``(noise_multiplier, sample_rate, steps)`` — DP-SGD steps — or a
        bare noise multiplier: one full-batch release (the update-level mechanism).
    delta : float
        The δ at which ε is reported.

    Returns
    -------
    float
        ε of all the releases together (0.0 for none).

    Examples
    --------
    >>> epsilon_of([], 1e-5)
    0.0
    >>> round(epsilon_of([(1.0, 0.01, 1000)], 1e-5), 2), round(epsilon_of([(1.0, 0.01, 1000), 2.0], 1e-5), 2)
    (2.1, 3.03)
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

    Parameters
    ----------
    global_weights, new_weights : Mapping of str to ndarray
        The weights the researcher sent and the weights the site trained from them (same names).
    max_update_norm : float
        ``C``: the L2 norm the update (all float tensors together) is clipped to.
    noise_multiplier : float
        ``z``: the noise's standard deviation is ``z · 2C``.
    rng : numpy.random.Generator, optional
        The noise source; a generator seeded from ``secrets`` when None.

    Returns
    -------
    dict of str to ndarray
        ``global + clipped update + noise`` for float tensors, in their dtypes; the global value otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> new = {"w": np.array([3.0, 4.0]), "count": np.array(7)}
    >>> old = {"w": np.zeros(2), "count": np.array(5)}
    >>> released = privatize_update(old, new, max_update_norm=1.0, noise_multiplier=0.0)
    >>> released["w"].round(6).tolist(), int(released["count"])  # clipped to norm 1; the buffer kept
    ([0.6, 0.8], 5)
    """
    rng = rng or np.random.default_rng(secrets.randbits(128))
    floats = [name for name, value in new_weights.items() if np.asarray(value).dtype.kind == "f"]
    deltas = {
        name: np.asarray(new_weights[name], dtype=np.float64)
        - np.asarray(global_weights[name], dtype=np.float64)
        for name in floats
    }
    squared_norm = sum(float((d**2).sum()) for d in deltas.values())
    norm = float(np.sqrt(squared_norm))
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
    """Per-researcher record of the releases at one site, kept in a JSON file: it survives restarts.

    Each release is stored as ``[noise_multiplier, sample_rate, steps]``. A ledger
    written before DP-SGD (bare noise multipliers) is read as full-batch releases
    and rewritten in the new form at the next charge.

    Parameters
    ----------
    path : Path
        The ledger file (created with its folder on the first charge, 0600).
    delta : float
        The δ at which the site reports and budgets ε.

    Examples
    --------
    >>> from pathlib import Path
    >>> ledger = PrivacyLedger(Path("ledger.json"), delta=1e-5)
    >>> round(ledger.charge("ada@university.example", 1.0, 10.0, sample_rate=0.01, steps=1000), 2)
    2.1
    >>> ledger.charge("ada@university.example", 2.0, 2.5)  # one full-batch release at z = 2
    Traceback (most recent call last):
    ...
    policies.privacy.BudgetExceeded: privacy budget: this release would bring epsilon to 3.03 at this site, \
above the budget 2.5 (spent so far 2.10)
    >>> round(ledger.spent("ada@university.example"), 2)  # the refused release was not recorded
    2.1
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
        """ε spent so far by ``researcher`` at this site (0.0 when nothing was released to them)."""
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
        """Record one release if it keeps ``researcher`` within ``budget_epsilon``.

        Parameters
        ----------
        researcher : str
            Who receives the release (their email).
        noise_multiplier : float
            The release's noise multiplier ``z``.
        budget_epsilon : float
            The researcher's total ε at this site.
        sample_rate : float, default 1.0
            DP-SGD's sampling rate ``q`` (1.0: a full-batch, update-level release).
        steps : int, default 1
            How many Gaussian steps the release is made of.

        Returns
        -------
        float
            ε spent by ``researcher`` after this release.

        Raises
        ------
        BudgetExceeded
            When the release would take the researcher past ``budget_epsilon``; nothing is recorded.
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
                spent_before = epsilon_of(history, self.delta)
                raise BudgetExceeded(
                    f"privacy budget: this release would bring epsilon to {after:.2f} at this site, "
                    f"above the budget {budget_epsilon} (spent so far {spent_before:.2f})"
                )
            ledger[researcher] = history + [entry]
            temporary = self.path.with_name(self.path.name + ".tmp")
            temporary.write_text(json.dumps(ledger))
            os.chmod(temporary, 0o600)
            temporary.replace(self.path)
            return after


class BudgetExceeded(Exception):
    """The release would exceed the researcher's privacy budget at this site."""
