"""DP-SGD at the site: the trusted training loop a differentially private site runs instead of the template's plain loop.

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

# bound at import (datasite start-up): later rebinding of these module attributes by model code does not reach the loop
_array, _zeros, _ones, _zeros_like, _where, _tensordot = (
    np.array,
    np.zeros,
    np.ones,
    np.zeros_like,
    np.where,
    np.tensordot,
)
_sqrt, _minimum, _maximum, _isfinite, _flatnonzero, _errstate = (
    np.sqrt,
    np.minimum,
    np.maximum,
    np.isfinite,
    np.flatnonzero,
    np.errstate,
)
_Generator, _PCG64, _randbits = np.random.Generator, np.random.PCG64, secrets.randbits
_named_parameters, _set_train = nn.Module.named_parameters, nn.Module.train
_Tensor, _tensor, _as_tensor, _detach, _to_numpy = (
    torch.Tensor,
    torch.tensor,
    torch.as_tensor,
    torch.Tensor.detach,
    torch.Tensor.numpy,
)
_functional_call, _grad, _vmap = functional_call, grad, vmap
OPTIMIZERS = ("sgd", "adam")
CHUNK = 256  # per-sample gradients are computed this many examples at a time (memory)


def schedule(num_train: int, batch_size: int, local_epochs: int) -> tuple[float, int]:
    """``(sample_rate, steps)`` of one training call: ``q = batch_size / n``, ``local_epochs · ⌈n / batch_size⌉`` steps.

    The same expected number of examples per step and of steps as the template's plain loop.
    """
    for name, value in {
        "num_train": num_train,
        "batch_size": batch_size,
        "local_epochs": local_epochs,
    }.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1 (got {value!r})")
    return min(1.0, batch_size / num_train), local_epochs * math.ceil(num_train / batch_size)


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
    """Train ``model`` from the global ``weights`` with DP-SGD; return ``(weights to release, train metrics)``.

    ``weights`` are the global weights the researcher sent (a state dict of arrays):
    training starts from them, whatever the model object holds. The released dict
    has their names, order, shapes and dtypes; parameters are trained, every other
    entry (buffers) is the global value. ``seed`` makes the sampling and noise
    reproducible (tests and benchmarks); a site never passes it, so both come from
    ``secrets``. The train metrics are ``{"loss": 0.0, "accuracy": 0.0}``: under
    DP no training figure is measured (it would cost privacy); they keep the
    release format and are hidden by the researcher's client.
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
            f"train_private needs as many images as labels, at least one (got {int(images.shape[0])} and {count})"
        )
    trained, aliases = _trainable(model, weights)
    start = {name: _array(weights[name], dtype=np.float64) for name in trained}
    theta = {name: value.copy() for name, value in start.items()}
    dtypes = {name: _array(weights[name]).dtype for name in trained}
    buffers = {name: _array(weights[name]) for name in weights if name not in trained and name not in aliases}
    rng = _Generator(_PCG64(_randbits(128) if seed is None else seed))
    step = _optimizer(optimizer, lr=lr, momentum=momentum)
    per_sample = _per_sample_gradient_function(model, loss_function, dtypes)
    _set_train(model, True)
    for _ in range(steps):
        chosen = _flatnonzero(rng.random(count) < sample_rate)
        total = {name: _zeros_like(value) for name, value in theta.items()}
        for start_index in range(0, len(chosen), CHUNK):
            index = _as_tensor(chosen[start_index : start_index + CHUNK], dtype=torch.int64)
            gradients = per_sample(theta, buffers, images[index], labels[index])
            _add_clipped(total, gradients, max_grad_norm)
        noisy = {
            name: (value + rng.normal(0.0, noise_multiplier * max_grad_norm, value.shape))
            / (sample_rate * count)
            for name, value in total.items()
        }
        if mu > 0:  # FedProx: the proximal term's gradient depends on the public global weights only
            noisy = {name: value + mu * (theta[name] - start[name]) for name, value in noisy.items()}
        theta = step(theta, noisy)
    released = {}
    for name, value in weights.items():
        source = theta.get(aliases.get(name, name))
        released[name] = _array(value, copy=True) if source is None else source.astype(_array(value).dtype)
    return released, {"loss": 0.0, "accuracy": 0.0}


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
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number (got {value!r})")
    if not (lr > 0 and max_grad_norm > 0 and noise_multiplier >= 0 and mu >= 0):
        raise ValueError(
            f"lr and max_grad_norm must be > 0, noise_multiplier and mu >= 0 (got lr={lr}, max_grad_norm={max_grad_norm}, noise_multiplier={noise_multiplier}, mu={mu})"
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
    """The trained parameter names (``nn.Module``'s own method: a model cannot override it) and tied aliases → their name."""
    names, aliases, seen = [], {}, {}
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
    """``(θ, buffers, images, labels) -> {name: (B, *shape) float64 array}``: one loss gradient per example."""

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
            if type(gradient) is not _Tensor or tuple(gradient.shape) != (len(labels), *value.shape):
                raise ValueError(
                    f"the model's per-sample gradient for {name!r} is not a tensor of shape {(len(labels), *value.shape)}"
                )
            out[name] = _array(_to_numpy(_detach(gradient)), dtype=np.float64)
        return out

    return per_sample


def _add_clipped(
    total: dict[str, np.ndarray], gradients: Mapping[str, np.ndarray], max_grad_norm: float
) -> None:
    """Add each example's gradient, scaled to L2 norm at most ``max_grad_norm`` (over all parameters), to ``total``."""
    batch = len(next(iter(gradients.values()))) if gradients else 0
    squares = _zeros(batch)
    finite = _ones(batch, dtype=bool)
    with _errstate(over="ignore", invalid="ignore"):
        for value in gradients.values():
            flat = value.reshape(batch, -1)
            finite &= _isfinite(flat).all(axis=1)
            squares += (_where(_isfinite(flat), flat, 0.0) ** 2).sum(axis=1)
        # a gradient with a non-finite entry counts as zero; one too large to square has norm inf and scale 0
        scale = _where(finite, _minimum(1.0, max_grad_norm / _maximum(_sqrt(squares), 1e-12)), 0.0)
    for name, value in gradients.items():
        clean = _where(finite.reshape((batch,) + (1,) * (value.ndim - 1)), value, 0.0)
        total[name] += _tensordot(scale, clean, axes=1)


def _optimizer(kind: str, *, lr: float, momentum: float) -> Callable[[dict, dict], dict]:
    """SGD (heavy-ball momentum, as ``torch.optim.SGD``) or Adam (``torch.optim.Adam``'s defaults), on NumPy arrays."""
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
        return {
            name: theta[name]
            - lr * (state["m"][name] / (1 - beta1**t)) / (_sqrt(state["v"][name] / (1 - beta2**t)) + eps)
            for name in theta
        }

    return sgd if kind == "sgd" else adam
