"""DP-SGD's trusted half: the sampling, clipping, noise and step, kept in the site process.

The researcher's model runs in a sandboxed worker (``datasite_setup.site.sandbox``),
and code that reaches that process's memory (ctypes is reachable through torch) can
change anything computed there. So the site keeps every step of DP-SGD that the
privacy guarantee depends on, and asks the worker only for what needs the model:

- the **site** (``SiteDescent``, NumPy only, no model) draws each step's Poisson
  batch (every training example joins with probability ``q``, from a generator
  seeded by ``secrets``), re-clips every per-example gradient row the worker sends
  to L2 norm ``C`` (a row with a non-finite entry counts as zero), sums them, adds
  ``N(0, (z·C)²)`` per coordinate, divides by ``q·n``, adds FedProx's
  ``mu·(θ − θ_global)`` and takes the optimizer step (SGD with momentum, or Adam)
  on **its own copy** of the trainable parameters. It counts the steps (never more
  than the ``steps`` the site charged for) and releases only its own iterates,
  plus the global buffers the researcher sent;
- the **worker** (``policies.dp_sgd.train_private``) receives the current
  parameters and the batch's indices, computes one gradient row per example
  (``vmap(grad(...))``), clips it and sends the rows back.

What the (ε, δ) guarantee rests on now
--------------------------------------
The site's sampling, clipping, noise, step counting and parameter updates: all in
the site process, out of the worker's reach, and checked there (each row's norm is
re-measured by the site; rows of the wrong names, shapes or dtypes, more rows than
the batch, asks past the planned steps or a run that stops short are refused and
nothing trained is released). Whatever the worker sends, each released iterate is
the public global weights moved by steps each of which adds at most ``C`` per
example to the sum before ``N(0, (z·C)²)`` noise the worker never sees.

What it still trusts the worker for: that row ``i`` is a function of example ``i``
(and the public parameters) only. ``vmap`` makes honest model code per-sample: a
forward cannot mix examples of the batch. Hostile code in the worker can break
that — a model whose forward reads other examples through a closure over
``train_images``, or through process memory, and writes them into row ``i`` —
and then one example can move up to every row of its batch, beyond the
sensitivity the accountant assumes. The static review (only the template, a model
class of allowed modules and attributes) and the sandbox make such code harder to
write; neither can prove it absent. The validation split is not covered (its
figures are released without noise), nor is the number of training examples.

Protocol (one ``ask`` → one answer; the same in-process and over the worker's socket)
-------------------------------------------------------------------------------------
1. ``{"op": "begin", "trainable": {name: shape}, "tied": {alias: name}}`` → the first step;
2. ``{"op": "rows", "step": k, "rows": (m, P) float32 (or {name: (m, *shape)}),
   "loss_sum": float, "correct": int}``, in chunks until the step's batch is complete →
   ``{"step": k, "received": r}`` while rows are missing, then the next step, or
   ``{"done": True, "weights": {...}}`` after the last one.

A step is ``{"step": k, "parameters": {name: array}, "indices": int64 array}``.
Anything else is answered ``{"refused": reason}``, and ``release`` refuses.

Examples
--------
>>> import numpy as np
>>> weights = {"w": np.zeros(3), "count": np.zeros((), np.int64)}
>>> privacy = {"noise_multiplier": 0.0, "max_grad_norm": 1.0, "sample_rate": 1.0, "steps": 1}
>>> descent = SiteDescent.for_call(privacy, weights, {"lr": 0.5}, num_samples=2, seed=0)
>>> step = descent.answer({"op": "begin", "trainable": {"w": [3]}, "tied": {}})
>>> step["step"], step["indices"].tolist()
(0, [0, 1])
>>> rows = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 0.5]], np.float32)  # the first row is clipped to norm 1
>>> done = descent.answer({"op": "rows", "step": 0, "rows": rows, "loss_sum": 1.0, "correct": 1})
>>> done["done"], done["weights"]["w"].round(3).tolist()
(True, [-0.15, -0.2, -0.125])
>>> descent.release({"round": 0, "weights": {"w": np.ones(3)}})["weights"]["w"].round(3).tolist()
[-0.15, -0.2, -0.125]
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from typing import Any

import numpy as np

from policies.release import ReleaseRefused

__all__ = ["OPTIMIZERS", "SiteDescent", "check_settings"]

# Bound at import (the site imports policies at start-up): code that rebinds numpy attributes later, in a
# process that also runs researcher code (the sandbox switched off), does not reach the noise.
_array = np.array
_asarray = np.asarray
_zeros = np.zeros
_concatenate = np.concatenate
_where = np.where
_sqrt = np.sqrt
_einsum = np.einsum
_minimum = np.minimum
_maximum = np.maximum
_isfinite = np.isfinite
_flatnonzero = np.flatnonzero
_ndarray = np.ndarray
_float32 = np.dtype(np.float32)
_float64 = np.float64
_int64 = np.int64
_Generator = np.random.Generator
_PCG64 = np.random.PCG64
_randbits = secrets.randbits
_finite_number = math.isfinite

OPTIMIZERS = ("sgd", "adam")
PRIVACY_KEYS = ("noise_multiplier", "max_grad_norm", "sample_rate", "steps")
BLOCK = 16  # rows re-clipped at a time (float64 copies of a block only)
_BEGIN_KEYS = {"op", "trainable", "tied"}
_ROWS_KEYS = {"op", "step", "rows", "loss_sum", "correct"}


def check_settings(
    *,
    lr: float,
    noise_multiplier: float,
    max_grad_norm: float,
    sample_rate: float,
    steps: int,
    optimizer: str,
    momentum: float,
    mu: float,
) -> None:
    """Refuse DP-SGD settings out of range, naming the setting.

    Parameters
    ----------
    lr, noise_multiplier, max_grad_norm, sample_rate, momentum, mu : float
        The learning rate, ``z``, ``C``, ``q``, SGD's momentum and FedProx's ``mu``.
    steps : int
        How many DP-SGD steps.
    optimizer : str
        ``"sgd"`` or ``"adam"``.

    Raises
    ------
    ValueError
        When a setting is out of range.

    Examples
    --------
    >>> check_settings(lr=0.1, noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5, steps=2,
    ...                optimizer="sgd", momentum=0.0, mu=0.0)
    >>> check_settings(lr=0.1, noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5, steps=2,
    ...                optimizer="lbfgs", momentum=0.0, mu=0.0)
    Traceback (most recent call last):
    ...
    ValueError: optimizer must be one of ('sgd', 'adam') (got 'lbfgs')
    """
    numbers = {
        "lr": lr,
        "noise_multiplier": noise_multiplier,
        "max_grad_norm": max_grad_norm,
        "sample_rate": sample_rate,
        "momentum": momentum,
        "mu": mu,
    }
    for name, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite_number(value):
            raise ValueError(f"{name} must be a finite number (got {value!r})")
    if not (lr > 0 and max_grad_norm > 0 and noise_multiplier >= 0 and mu >= 0):
        raise ValueError(
            "lr and max_grad_norm must be > 0, noise_multiplier and mu >= 0 "
            f"(got lr={lr}, max_grad_norm={max_grad_norm}, noise_multiplier={noise_multiplier}, mu={mu})"
        )
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1] (got {sample_rate})")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1) (got {momentum})")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1 (got {steps!r})")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS} (got {optimizer!r})")


class SiteDescent:
    """One training call's DP-SGD, site side: it owns the iterates; the worker only sends gradient rows.

    Build it with ``for_call``; hand ``answer`` to the worker as its channel (in-process or the
    sandbox runner's ``on_request``); then ``release`` the call's result.

    Parameters
    ----------
    weights : Mapping of str to array-like
        The global weights the researcher sent (copied).
    num_samples : int
        The site's number of training examples ``n``.
    lr, noise_multiplier, max_grad_norm, sample_rate, steps, optimizer, momentum, mu
        As in ``check_settings``.
    seed : int, optional
        Seeds the sampling and the noise (tests and benchmarks only; a site never passes it).
    """

    def __init__(
        self,
        weights: Mapping[str, Any],
        num_samples: int,
        *,
        lr: float,
        noise_multiplier: float,
        max_grad_norm: float,
        sample_rate: float,
        steps: int,
        optimizer: str = "sgd",
        momentum: float = 0.0,
        mu: float = 0.0,
        seed: int | None = None,
    ) -> None:
        check_settings(
            lr=lr,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            sample_rate=sample_rate,
            steps=steps,
            optimizer=optimizer,
            momentum=momentum,
            mu=mu,
        )
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be an integer >= 1 (got {num_samples!r})")
        self.weights = {name: _array(value, copy=True) for name, value in weights.items()}
        self.num_samples = num_samples
        self.noise_std = noise_multiplier * max_grad_norm
        self.max_grad_norm = float(max_grad_norm)
        self.sample_rate = float(sample_rate)
        self.planned_steps = steps
        self.steps_done = 0
        self.problem: str | None = None
        self._lr, self._mu, self._momentum, self._optimizer = float(lr), float(mu), float(momentum), optimizer
        self._rng = _Generator(_PCG64(_randbits(128) if seed is None else seed))
        self._state = "new"  # new -> step -> done; refused from anywhere
        self._names: list[str] = []
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._offsets: dict[str, tuple[int, int]] = {}
        self._tied: dict[str, str] = {}
        self._start = _zeros(0)
        self._theta = _zeros(0)
        self._moments: dict[str, Any] = {"t": 0}
        self._indices = _zeros(0, dtype=_int64)
        self._received = 0
        self._total = _zeros(0)
        self._figures = {"loss_sum": 0.0, "correct": 0, "rows": 0}

    @classmethod
    def for_call(
        cls,
        privacy: Mapping[str, Any],
        weights: Mapping[str, Any],
        settings: Mapping[str, Any],
        num_samples: int,
        *,
        seed: int | None = None,
    ) -> SiteDescent:
        """The descent of one training call at a DP-SGD site.

        Parameters
        ----------
        privacy : Mapping
            The site's settings (``execution.dp_sgd``): ``noise_multiplier``, ``max_grad_norm``,
            ``sample_rate``, ``steps``.
        weights : Mapping of str to array-like
            The global weights the researcher sent.
        settings : Mapping
            The job's ``lr`` (required), ``optimizer``, ``momentum``, ``mu`` (other keys are ignored:
            the whole CONFIG may be passed).
        num_samples : int
            The site's number of training examples.
        seed : int, optional
            Seeds the sampling and the noise (tests only).

        Returns
        -------
        SiteDescent
            Ready for the worker's first ask.

        Raises
        ------
        ValueError
            A privacy key is missing or a setting is out of range (a site configuration error).

        Examples
        --------
        >>> import numpy as np
        >>> privacy = {"noise_multiplier": 1.1, "max_grad_norm": 1.0, "sample_rate": 0.25, "steps": 8}
        >>> descent = SiteDescent.for_call(privacy, {"w": np.zeros(2, np.float32)}, {"lr": 0.1}, 100)
        >>> descent.planned_steps, descent.noise_std
        (8, 1.1)
        """
        missing = [key for key in PRIVACY_KEYS if key not in privacy]
        if missing or "lr" not in settings:
            raise ValueError(
                f"DP-SGD needs privacy {list(PRIVACY_KEYS)} and the job's lr (missing {missing})"
            )
        return cls(
            weights,
            num_samples,
            lr=settings["lr"],
            optimizer=settings.get("optimizer", "sgd"),
            momentum=settings.get("momentum", 0.0),
            mu=settings.get("mu", 0.0),
            seed=seed,
            **{key: privacy[key] for key in PRIVACY_KEYS},
        )

    # -- the channel ---------------------------------------------------------------------------------

    def answer(self, tree: Any) -> dict[str, Any]:
        """Answer one ask of the worker (``on_request``); a malformed ask is answered ``{"refused": ...}``.

        Parameters
        ----------
        tree : object
            The ask, as it came over the wire: nothing in it is trusted.

        Returns
        -------
        dict
            The next step, a receipt, ``{"done": True, "weights": ...}`` or ``{"refused": reason}``.
        """
        if self._state == "refused":
            return {"refused": self.problem}
        try:
            if not isinstance(tree, dict):
                raise ReleaseRefused("an ask that is not a dict")
            if self._state == "done":
                raise ReleaseRefused(f"the worker asked past the {self.planned_steps} planned DP-SGD steps")
            if self._state == "new":
                self._begin(tree)
                return self._next_step()
            return self._rows(tree)
        except Exception as refused:  # nothing a worker sends may break the site's side: it is refused
            self.problem = (
                str(refused) if isinstance(refused, ReleaseRefused) else f"a malformed ask ({refused!r})"
            )
            self._state = "refused"
            return {"refused": self.problem}

    def _begin(self, tree: dict) -> None:
        if tree.get("op") != "begin" or set(tree) != _BEGIN_KEYS:
            raise ReleaseRefused(f"the first ask must be {sorted(_BEGIN_KEYS)} with op 'begin'")
        trainable, tied = tree["trainable"], tree["tied"]
        if not isinstance(trainable, dict) or not isinstance(tied, dict):
            raise ReleaseRefused("'trainable' and 'tied' must be dicts")
        for name, shape in trainable.items():
            glob = self.weights.get(name)
            # only names of the global weights, at their shapes: the site's iterates are those arrays.
            if glob is None or glob.dtype.kind != "f" or _shape(shape) != glob.shape:
                raise ReleaseRefused(
                    f"the worker declared {name!r} trainable with shape {shape!r}: not a floating "
                    "entry of that shape in the global weights"
                )
        for alias, target in tied.items():
            glob = self.weights.get(alias)
            twin = target in trainable and alias not in trainable
            if glob is None or not twin or glob.dtype.kind != "f" or glob.shape != _shape(trainable[target]):
                raise ReleaseRefused(
                    f"the worker declared {alias!r} tied to {target!r}: not a trainable twin"
                )
        # An undeclared name is released at its global value: the researcher sent it, so it reveals nothing
        # about the data whether or not the model really trains it (a lying worker only loses its training).
        self._names = list(trainable)
        self._tied = dict(tied)
        offset = 0
        for name in self._names:
            self._shapes[name] = self.weights[name].shape
            size = int(self.weights[name].size)
            self._offsets[name] = (offset, offset + size)
            offset += size
        flat = [self.weights[name].astype(_float64).reshape(-1) for name in self._names]
        self._start = _concatenate(flat) if flat else _zeros(0)
        self._theta = self._start.copy()

    def _next_step(self) -> dict[str, Any]:
        if self.steps_done == self.planned_steps:
            self._state = "done"
            return {"done": True, "weights": self.released_weights()}
        self._state = "step"
        self._indices = _flatnonzero(self._rng.random(self.num_samples) < self.sample_rate).astype(_int64)
        self._received = 0
        self._total = _zeros(self._theta.size)
        return {"step": self.steps_done, "parameters": self._parameters(), "indices": self._indices.copy()}

    def _rows(self, tree: dict) -> dict[str, Any]:
        if tree.get("op") != "rows" or set(tree) != _ROWS_KEYS:
            raise ReleaseRefused(f"a step's ask must be {sorted(_ROWS_KEYS)} with op 'rows'")
        if type(tree["step"]) is not int or tree["step"] != self.steps_done:
            raise ReleaseRefused(f"rows for step {tree['step']!r} while step {self.steps_done} is running")
        rows = self._matrix(tree["rows"])
        if self._received + len(rows) > len(self._indices):
            raise ReleaseRefused(
                f"{self._received + len(rows)} gradient rows for a batch of {len(self._indices)} examples"
            )
        loss_sum, correct = tree["loss_sum"], tree["correct"]
        if isinstance(loss_sum, bool) or not isinstance(loss_sum, (int, float)):
            raise ReleaseRefused("loss_sum must be a number")
        if isinstance(correct, bool) or not isinstance(correct, int) or not 0 <= correct <= len(rows):
            raise ReleaseRefused("correct must be an integer from 0 to the number of rows")
        self._total += _clipped_sum(rows, self.max_grad_norm)
        self._received += len(rows)
        self._figures["loss_sum"] += float(loss_sum)
        self._figures["correct"] += correct
        self._figures["rows"] += len(rows)
        if self._received < len(self._indices):
            return {"step": self.steps_done, "received": self._received}
        self._take_step()
        return self._next_step()

    def _matrix(self, rows: Any) -> np.ndarray:
        """The rows as one ``(m, P)`` float32 matrix in the declared order; anything else is refused."""
        width = self._theta.size
        if isinstance(rows, dict):
            if list(rows) != self._names:
                raise ReleaseRefused(f"gradient rows for {sorted(rows)}, not the declared {self._names}")
            parts = [self._matrix_part(name, value) for name, value in rows.items()]
            counts = {len(part) for part in parts}
            if len(counts) > 1:
                raise ReleaseRefused("gradient rows of different batch sizes per parameter")
            return _concatenate(parts, axis=1) if parts else _zeros((0, 0), dtype=_float32)
        if type(rows) is not _ndarray or rows.dtype != _float32 or rows.ndim != 2 or rows.shape[1] != width:
            raise ReleaseRefused(f"gradient rows must be a float32 matrix of shape (rows, {width})")
        return rows

    def _matrix_part(self, name: str, value: Any) -> np.ndarray:
        shape = self._shapes[name]
        if (
            type(value) is not _ndarray
            or value.dtype != _float32
            or value.shape[1:] != shape
            or value.ndim < 1
        ):
            raise ReleaseRefused(f"gradient rows for {name!r} must be float32 of shape (rows, *{shape})")
        return value.reshape(len(value), -1)

    def _take_step(self) -> None:
        expected_batch = self.sample_rate * self.num_samples
        noise = self._rng.normal(0.0, self.noise_std, self._theta.size)
        gradient = (self._total + noise) / expected_batch
        if self._mu > 0:  # FedProx: its gradient depends on the public global weights only
            gradient = gradient + self._mu * (self._theta - self._start)
        self._theta = _optimizer_step(
            self._optimizer, self._theta, gradient, self._moments, self._lr, self._momentum
        )
        self.steps_done += 1

    # -- what leaves ------------------------------------------------------------------------------------

    def _parameters(self) -> dict[str, np.ndarray]:
        out = {}
        for name in self._names:
            low, high = self._offsets[name]
            out[name] = self._theta[low:high].reshape(self._shapes[name]).astype(self.weights[name].dtype)
        return out

    def released_weights(self) -> dict[str, np.ndarray]:
        """The site's iterates (in the global dtypes), tied aliases at their parameter's, the rest global.

        Returns
        -------
        dict of str to ndarray
            The global weights' names, order, shapes and dtypes.
        """
        trained = self._parameters()
        return {
            name: trained[self._tied.get(name, name)].astype(value.dtype)
            if self._tied.get(name, name) in trained
            else value.copy()
            for name, value in self.weights.items()
        }

    @property
    def train_figures(self) -> dict[str, float]:
        """The worker's own loss and accuracy over the rows it sent: unverified, for the owner's log only.

        Returns
        -------
        dict of str to float
            ``loss`` and ``accuracy`` (0 when no row came); never released (they are not private).
        """
        rows = max(int(self._figures["rows"]), 1)
        return {
            "loss": float(self._figures["loss_sum"]) / rows,
            "accuracy": int(self._figures["correct"]) / rows,
        }

    def release(self, result: Any) -> dict[str, Any]:
        """The call's result with the site's own training in it: its iterates, its ``n``, no train figures.

        Parameters
        ----------
        result : dict
            What the worker returned (its ``weights``, ``num_samples`` and ``train`` are replaced).

        Returns
        -------
        dict
            ``result`` with ``weights`` = the site's iterates plus the global buffers, ``num_samples`` =
            the site's ``n`` and ``train`` = ``{"loss": 0.0, "accuracy": 0.0}`` (no training figure is
            measured under DP); ``check_release`` still runs on it.

        Raises
        ------
        ReleaseRefused
            The worker sent a malformed ask, or did not complete exactly the planned steps.
        """
        if self.problem is not None:
            raise ReleaseRefused(f"DP-SGD refused: {self.problem}")
        if self._state != "done" or self.steps_done != self.planned_steps:
            raise ReleaseRefused(
                f"DP-SGD refused: the worker completed {self.steps_done} of the {self.planned_steps} "
                "planned steps"
            )
        if not isinstance(result, dict):
            raise ReleaseRefused(f"the output must be a dict (got {type(result).__name__})")
        return {
            **result,
            "weights": self.released_weights(),
            "num_samples": self.num_samples,
            "train": {"loss": 0.0, "accuracy": 0.0},
        }


def _shape(value: Any) -> tuple[int, ...] | None:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value
    ):
        return None
    return tuple(value)


def _clipped_sum(rows: np.ndarray, max_grad_norm: float) -> np.ndarray:
    """The sum of the float32 rows, each scaled to L2 norm at most ``max_grad_norm`` (a non-finite row: 0).

    Norms are measured in float64 (a float32 entry squared cannot overflow there), a block of rows at a time.
    """
    total = _zeros(rows.shape[1] if rows.ndim == 2 else 0)
    for start in range(0, len(rows), BLOCK):
        part = rows[start : start + BLOCK]
        finite = _isfinite(part).all(axis=1)
        block = part.astype(_float64)  # a copy: the rows the worker sent are not changed
        if not finite.all():
            block[~finite] = 0.0
        norms = _maximum(_sqrt(_einsum("ij,ij->i", block, block)), 1e-300)
        scale = _where(finite, _minimum(1.0, max_grad_norm / norms), 0.0)
        total += scale @ block
    return total


def _optimizer_step(
    kind: str, theta: np.ndarray, gradient: np.ndarray, state: dict[str, Any], lr: float, momentum: float
) -> np.ndarray:
    """One step of SGD (heavy-ball momentum, as ``torch.optim.SGD``) or Adam (``torch.optim.Adam`` defaults).

    ``state`` holds the moments between steps.
    """
    if kind == "sgd":
        if momentum > 0:
            state["m"] = gradient.copy() if "m" not in state else momentum * state["m"] + gradient
            gradient = state["m"]
        return theta - lr * gradient
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    state["t"] += 1
    t = state["t"]
    state["m"] = beta1 * state.get("m", 0.0) + (1 - beta1) * gradient
    state["v"] = beta2 * state.get("v", 0.0) + (1 - beta2) * gradient * gradient
    first_moment = state["m"] / (1 - beta1**t)  # bias-corrected
    second_moment = state["v"] / (1 - beta2**t)
    return theta - lr * first_moment / (_sqrt(second_moment) + eps)
