"""DP-SGD at the site: the trusted training loop a differentially private site runs.

A differentially private site runs it instead of the job template's plain training loop.

The job template (``policies/template.py``, ``fedavg-3``) calls
``train_private`` when the site's release hook hands it a ``privacy`` dict
(``policies.enforcement``): the noise multiplier, clipping norm, sample rate and
number of steps are the site's, never the researcher's. The loop is owner code
installed with fedimg; the researcher's model is used only as a function of its
parameters and input (``torch.func.functional_call``):

- **Poisson sampling**: at each of ``steps`` steps every training example joins
  the batch with probability ``q = sample_rate``, drawn from a NumPy generator
  seeded with ``secrets`` (not torch's global RNG, which model code can reseed);
- **per-sample gradients** (``vmap(grad(...))``) of the loss at *copies* of the
  current parameters, so a forward that writes to its own parameters or buffers
  in place changes nothing the loop keeps; under ``vmap`` a sample's gradient
  cannot depend on another sample's data (reading values out with ``.item()`` or
  writing them into shared tensors raises);
- each per-sample gradient clipped to L2 norm ``C = max_grad_norm`` (a non-finite
  one counts as zero), summed, ``N(0, (z·C)²)`` noise added per coordinate
  (``z = noise_multiplier``), divided by the expected batch size ``q·n``;
- the optimizer step (SGD with momentum, or Adam) and FedProx's proximal term
  ``mu·(θ − θ_global)`` act on the noisy gradient and the public global weights
  only: post-processing, no further privacy cost.

The clipping, noise and parameter updates are NumPy arithmetic on arrays the
model never sees, through functions bound when this module was imported (the
datasite imports it at start-up, before any researcher code runs), so rebinding
``torch``/``numpy`` attributes later cannot switch the noise off. Only
parameters are released: buffers (BatchNorm statistics, or images a model
stashes in one) go back at the global values the researcher sent in. Models with
BatchNorm in training mode cannot be trained per sample (use GroupNorm).

The guarantee is per *training* example with Poisson sampling, accounted with
Opacus's RDP accountant by the site (``policies.privacy``); Opacus itself is not
needed here. Not covered: the validation split (evaluated without noise; the
template trains first, so the model has seen no val image while it trains, and a
tensor kept from inside ``vmap`` cannot be read afterwards), and the number of
training examples, released as is for FedAvg's weighting.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.func import functional_call, grad, vmap

# Bound at import (datasite start-up): later rebinding of these module attributes by model code does
# not reach the loop.
_array = np.array
_zeros = np.zeros
_ones = np.ones
_zeros_like = np.zeros_like
_where = np.where
_tensordot = np.tensordot
_sqrt = np.sqrt
_minimum = np.minimum
_maximum = np.maximum
_isfinite = np.isfinite
_flatnonzero = np.flatnonzero
_errstate = np.errstate
_float64 = np.float64
_Generator = np.random.Generator
_PCG64 = np.random.PCG64
_randbits = secrets.randbits
_finite_number = math.isfinite
_ceil = math.ceil
_named_parameters = nn.Module.named_parameters
_set_train = nn.Module.train
_Tensor = torch.Tensor
_tensor = torch.tensor
_as_tensor = torch.as_tensor
_int64 = torch.int64
_detach = torch.Tensor.detach
_to_numpy = torch.Tensor.numpy
_functional_call = functional_call
_grad = grad
_vmap = vmap
OPTIMIZERS = ("sgd", "adam")
CHUNK = 256  # per-sample gradients are computed this many examples at a time (memory)


def schedule(num_train: int, batch_size: int, local_epochs: int) -> tuple[float, int]:
    """The sample rate and number of steps of one DP-SGD training call.

    The same expected number of examples per step, and of steps, as the template's plain loop:
    ``q = batch_size / n`` and ``local_epochs · ⌈n / batch_size⌉`` steps.

    Parameters
    ----------
    num_train : int
        The site's number of training examples ``n``.
    batch_size, local_epochs : int
        The job's settings.

    Returns
    -------
    tuple of (float, int)
        ``(sample_rate, steps)``; the sample rate is at most 1.

    Raises
    ------
    ValueError
        When a setting is not an integer >= 1.

    Examples
    --------
    >>> schedule(100, 25, 2)
    (0.25, 8)
    >>> schedule(10, 32, 3)  # a batch larger than the site: every example, every step
    (1.0, 3)
    """
    sizes = {"num_train": num_train, "batch_size": batch_size, "local_epochs": local_epochs}
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1 (got {value!r})")
    return min(1.0, batch_size / num_train), local_epochs * _ceil(num_train / batch_size)


def train_private(
    model: nn.Module,
    weights: Mapping[str, Any],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    loss_function: Callable[..., torch.Tensor],
    lr: float,
    noise_multiplier: float,
    max_grad_norm: float,
    sample_rate: float,
    steps: int,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    mu: float = 0.0,
    seed: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Train ``model`` from the global ``weights`` with DP-SGD.

    ``weights`` are the global weights the researcher sent (a state dict of arrays):
    training starts from them, whatever the model object holds. The released dict
    has their names, order, shapes and dtypes; parameters are trained, every other
    entry (buffers) is the global value. ``seed`` makes the sampling and noise
    reproducible (tests and benchmarks); a site never passes it, so both come from
    ``secrets``.

    Parameters
    ----------
    model : nn.Module
        The researcher's model, used only as a function of its parameters and input.
    weights : Mapping of str to array-like
        The global weights (the model's state dict as arrays).
    images, labels : torch.Tensor
        The site's training split.
    loss_function : callable
        ``loss_function(logits, targets)``, e.g. ``F.cross_entropy``.
    lr : float
        The learning rate.
    noise_multiplier, max_grad_norm, sample_rate : float
        The site's privacy settings: ``z``, the clipping norm ``C`` and the Poisson sampling rate ``q``.
    steps : int
        How many DP-SGD steps.
    optimizer : {"sgd", "adam"}, default "sgd"
        SGD (with ``momentum``) or Adam.
    momentum : float, default 0.0
        SGD's momentum, in ``[0, 1)``.
    mu : float, default 0.0
        FedProx's proximal coefficient (0: plain FedAvg).
    seed : int, optional
        Seeds the sampling and the noise (tests and benchmarks only).

    Returns
    -------
    tuple of (dict of str to ndarray, dict of str to float)
        The weights to release and the train metrics. The metrics are
        ``{"loss": 0.0, "accuracy": 0.0}``: under DP no training figure is measured
        (it would cost privacy); they keep the release format and are hidden by the
        researcher's client.

    Raises
    ------
    ValueError
        When a setting is out of range, the data are empty or mismatched, the global weights miss a
        parameter, or the model's per-sample gradients are not tensors of the parameters' shapes.

    Examples
    --------
    >>> import torch.nn.functional as F
    >>> model = nn.Linear(3, 2)
    >>> weights = {name: value.detach().numpy() for name, value in model.state_dict().items()}
    >>> images, labels = torch.randn(16, 3), torch.randint(0, 2, (16,))
    >>> released, metrics = train_private(
    ...     model, weights, images, labels, loss_function=F.cross_entropy, lr=0.1,
    ...     noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.25, steps=4, seed=0,
    ... )
    >>> {name: value.shape for name, value in released.items()}, metrics
    ({'weight': (2, 3), 'bias': (2,)}, {'loss': 0.0, 'accuracy': 0.0})
    """
    _check_settings(
        lr=lr,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        sample_rate=sample_rate,
        steps=steps,
        optimizer=optimizer,
        momentum=momentum,
        mu=mu,
    )
    images, labels = _as_tensor(images), _as_tensor(labels)
    count = int(labels.shape[0])
    if count < 1 or int(images.shape[0]) != count:
        raise ValueError(
            "train_private needs as many images as labels, at least one "
            f"(got {int(images.shape[0])} and {count})"
        )
    trained, aliases = _trainable(model, weights)
    start = {name: _array(weights[name], dtype=_float64) for name in trained}
    theta = {name: value.copy() for name, value in start.items()}
    dtypes = {name: _array(weights[name]).dtype for name in trained}
    untrained = [name for name in weights if name not in trained and name not in aliases]
    buffers = {name: _array(weights[name]) for name in untrained}
    rng = _Generator(_PCG64(_randbits(128) if seed is None else seed))
    step = _optimizer(optimizer, lr=lr, momentum=momentum)
    per_sample = _per_sample_gradient_function(model, loss_function, dtypes)
    _set_train(model, True)
    for _ in range(steps):
        chosen = _flatnonzero(rng.random(count) < sample_rate)
        batch = (images, labels, chosen)
        total = _clipped_gradient_sum(per_sample, theta, buffers, batch, max_grad_norm)
        noisy = _noisy_mean(total, rng, noise_multiplier * max_grad_norm, sample_rate * count)
        if mu > 0:  # FedProx: the proximal term's gradient depends on the public global weights only
            noisy = {name: value + mu * (theta[name] - start[name]) for name, value in noisy.items()}
        theta = step(theta, noisy)
    return _released(weights, theta, aliases), {"loss": 0.0, "accuracy": 0.0}


def _clipped_gradient_sum(
    per_sample: Callable[..., dict[str, np.ndarray]],
    theta: Mapping[str, np.ndarray],
    buffers: Mapping[str, np.ndarray],
    batch: tuple[torch.Tensor, torch.Tensor, np.ndarray],
    max_grad_norm: float,
) -> dict[str, np.ndarray]:
    """The sum of the batch's per-example gradients, each clipped to ``max_grad_norm``.

    ``batch`` is ``(images, labels, chosen)``: the training split and the indices sampled this step.
    """
    images, labels, chosen = batch
    total = {name: _zeros_like(value) for name, value in theta.items()}
    for start_index in range(0, len(chosen), CHUNK):
        index = _as_tensor(chosen[start_index : start_index + CHUNK], dtype=_int64)
        gradients = per_sample(theta, buffers, images[index], labels[index])
        _add_clipped(total, gradients, max_grad_norm)
    return total


def _noisy_mean(
    total: Mapping[str, np.ndarray], rng: np.random.Generator, std: float, expected_batch: float
) -> dict[str, np.ndarray]:
    """``(total + N(0, std²)) / expected_batch`` per coordinate: the privatised mean gradient."""
    return {
        name: (value + rng.normal(0.0, std, value.shape)) / expected_batch for name, value in total.items()
    }


def _released(
    weights: Mapping[str, Any], theta: Mapping[str, np.ndarray], aliases: Mapping[str, str]
) -> dict[str, np.ndarray]:
    """The weights to release: trained parameters in the global dtypes, every other entry at its global value.

    A tied alias is released with its parameter's trained value.
    """
    released = {}
    for name, value in weights.items():
        source = theta.get(aliases.get(name, name))
        released[name] = _array(value, copy=True) if source is None else source.astype(_array(value).dtype)
    return released


def _check_settings(
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


def _trainable(model: nn.Module, weights: Mapping[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The trained parameter names, and each tied alias → the name of its parameter.

    Read with ``nn.Module``'s own ``named_parameters``: a model cannot override it.
    """
    names: list[str] = []
    aliases: dict[str, str] = {}
    seen: dict[int, str] = {}  # id(parameter) -> its first name
    for name, parameter in _named_parameters(model, remove_duplicate=False):
        if id(parameter) in seen:
            aliases[name] = seen[id(parameter)]
            continue
        seen[id(parameter)] = name
        if parameter.requires_grad:
            names.append(name)
    missing = [name for name in names + list(aliases) if name not in weights]
    if missing:
        raise ValueError(f"the global weights have no entry for the model's parameters {missing}")
    return names, aliases


def _per_sample_gradient_function(
    model: nn.Module, loss_function: Callable[..., torch.Tensor], dtypes: Mapping[str, np.dtype]
) -> Callable[..., dict[str, np.ndarray]]:
    """A function ``(θ, buffers, images, labels) -> {name: (B, *shape) float64 array}``.

    It gives one loss gradient per example, computed at fresh copies of ``θ``.
    """

    def loss_of(parameters: dict, buffers: dict, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        output = _functional_call(model, (parameters, buffers), (image.unsqueeze(0),))
        return loss_function(output, label.unsqueeze(0))

    gradient_of = _vmap(_grad(loss_of), in_dims=(None, None, 0, 0), randomness="different")

    def per_sample(
        theta: Mapping[str, np.ndarray],
        buffers: Mapping[str, np.ndarray],
        images: torch.Tensor,
        labels: torch.Tensor,
    ) -> dict[str, np.ndarray]:
        # fresh copies every step: whatever the forward writes into them is thrown away
        parameters = {name: _tensor(value.astype(dtypes[name])) for name, value in theta.items()}
        state = {name: _tensor(value) for name, value in buffers.items()}
        gradients = gradient_of(parameters, state, images, labels)
        out = {}
        for name, value in theta.items():
            gradient = gradients.get(name) if type(gradients) is dict else None
            expected = (len(labels), *value.shape)
            if type(gradient) is not _Tensor or tuple(gradient.shape) != expected:
                raise ValueError(
                    f"the model's per-sample gradient for {name!r} is not a tensor of shape {expected}"
                )
            out[name] = _array(_to_numpy(_detach(gradient)), dtype=_float64)
        return out

    return per_sample


def _add_clipped(
    total: dict[str, np.ndarray], gradients: Mapping[str, np.ndarray], max_grad_norm: float
) -> None:
    """Add each example's gradient, scaled to L2 norm at most ``max_grad_norm``, to ``total``.

    The norm is over all parameters together.
    """
    batch = len(next(iter(gradients.values()))) if gradients else 0
    squares = _zeros(batch)
    finite = _ones(batch, dtype=bool)
    with _errstate(over="ignore", invalid="ignore"):
        for value in gradients.values():
            flat = value.reshape(batch, -1)
            finite &= _isfinite(flat).all(axis=1)
            squares += (_where(_isfinite(flat), flat, 0.0) ** 2).sum(axis=1)
        # a gradient with a non-finite entry counts as zero; one too large to square has norm inf and
        # scale 0
        norms = _maximum(_sqrt(squares), 1e-12)
        scale = _where(finite, _minimum(1.0, max_grad_norm / norms), 0.0)
    for name, value in gradients.items():
        clean = _where(finite.reshape((batch,) + (1,) * (value.ndim - 1)), value, 0.0)
        total[name] += _tensordot(scale, clean, axes=1)


def _optimizer(kind: str, *, lr: float, momentum: float) -> Callable[[dict, dict], dict]:
    """SGD (heavy-ball momentum, as ``torch.optim.SGD``) or Adam (``torch.optim.Adam``'s defaults).

    Both act on NumPy arrays; the returned step maps ``(θ, gradient)`` to the new ``θ``.
    """
    state: dict[str, Any] = {"t": 0, "m": {}, "v": {}}

    def sgd(theta: dict, gradient: dict) -> dict:
        if momentum > 0:
            state["m"] = {
                name: momentum * state["m"][name] + g if name in state["m"] else g.copy()
                for name, g in gradient.items()
            }
            gradient = state["m"]
        return {name: theta[name] - lr * gradient[name] for name in theta}

    def adam(
        theta: dict, gradient: dict, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
    ) -> dict:
        state["t"] += 1
        t = state["t"]
        state["m"] = {
            name: beta1 * state["m"].get(name, 0.0) + (1 - beta1) * g for name, g in gradient.items()
        }
        state["v"] = {
            name: beta2 * state["v"].get(name, 0.0) + (1 - beta2) * g * g for name, g in gradient.items()
        }
        updated = {}
        for name in theta:
            first_moment = state["m"][name] / (1 - beta1**t)  # bias-corrected
            second_moment = state["v"][name] / (1 - beta2**t)
            updated[name] = theta[name] - lr * first_moment / (_sqrt(second_moment) + eps)
        return updated

    return sgd if kind == "sgd" else adam
