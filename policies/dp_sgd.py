"""DP-SGD's worker half: per-example gradients of the researcher's model, for the site's own descent.

A differentially private site runs it instead of the job template's plain training loop.

The job template (``policies/template.py``) calls ``train_private`` when the
site's release hook hands it a ``privacy`` dict (``policies.enforcement``): the
noise multiplier, clipping norm, sample rate and number of steps are the site's,
never the researcher's. The descent itself — Poisson sampling, clipping, noise,
the optimizer step, the step count and what is released — is the site's
``policies.dp_descent.SiteDescent``; this half only does what needs the model.
At each step it receives the current parameters and the batch's indices, reads
those rows of the training split (``images[sorted indices]``: a memory map is
read only there), and sends back one gradient row per example:

- **per-sample gradients** (``vmap(grad(...))``) of the loss at *fresh copies*
  of the site's parameters (``torch.func.functional_call``), so a forward that
  writes to its own parameters or buffers changes nothing the site keeps; under
  ``vmap`` an honest model's row ``i`` cannot depend on another example (reading
  values out with ``.item()`` or writing them into shared tensors raises);
- each row clipped to L2 norm ``C`` here too (the site re-clips every row it
  receives: this copy is only so that an honest worker sends what counts), as a
  ``(batch, P)`` float32 matrix in the declared parameter order.

Two channels, one protocol (``policies.dp_descent``): with the sandbox off the
descent is a ``SiteDescent`` in this process; in the sandbox worker
(``datasite_setup.site.sandbox.worker``) ``use_remote_descent`` installs an
``ask`` that sends each request to the site over the worker's socket and waits
for its answer, and the site builds the ``SiteDescent`` itself and releases its
own iterates (``SiteDescent.release``), whatever this process returns. What the
(ε, δ) guarantee rests on is stated in ``policies.dp_descent``.

The model is used only as a function of its parameters and input, through
``nn.Module`` and ``torch.func`` functions bound when this module was imported
(before any researcher code runs), so a model that overrides ``named_parameters``
or rebinds ``torch`` attributes later does not change what is trained. Only
parameters are trained: buffers (BatchNorm statistics, or images a model stashes
in one) are used and released at the global values the researcher sent. Models
with BatchNorm in training mode cannot be trained per sample (use GroupNorm).

The guarantee is per *training* example with Poisson sampling, accounted with
Opacus's RDP accountant by the site (``policies.privacy``); Opacus itself is not
needed here. Not covered: the validation split (evaluated without noise) and the
number of training examples, released as is for FedAvg's weighting.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.func import functional_call, grad, vmap

from policies.dp_descent import SiteDescent, check_settings

__all__ = ["CHUNK", "schedule", "train_private", "use_remote_descent"]

# Bound at import (datasite and worker start-up): later rebinding of these module attributes by model code
# does not reach the loop.
_array = np.array
_asarray = np.asarray
_ceil = math.ceil
_named_parameters = nn.Module.named_parameters
_set_train = nn.Module.train
_Tensor = torch.Tensor
_tensor = torch.tensor
_as_tensor = torch.as_tensor
_cat = torch.cat
_where = torch.where
_isfinite = torch.isfinite
_clamp = torch.clamp
_zeros = torch.zeros
_vector_norm = torch.linalg.vector_norm
_int64 = torch.int64
_float32 = torch.float32
_float64 = torch.float64
_no_grad = torch.no_grad
_functional_call = functional_call
_grad = grad
_vmap = vmap
CHUNK = 256  # per-sample gradients are computed this many examples at a time (memory)
_HEADER_ROOM = 2**16  # bytes of an ask that are not its rows (JSON header)

Ask = Callable[[Any], Any]
# The channel to the site's descent: (ask, max_ask_bytes), or None for an in-process SiteDescent.
_REMOTE: list[tuple[Ask, int | None] | None] = [None]


def use_remote_descent(ask: Ask | None, *, max_ask_bytes: int | None = None) -> None:
    """Send this process's DP-SGD requests to the site through ``ask`` (the sandbox worker calls this).

    Parameters
    ----------
    ask : callable or None
        ``ask(tree) -> tree``: sends one request to the site's ``SiteDescent.answer`` and returns its
        answer. ``None`` goes back to an in-process descent (the sandbox switched off, tests).
    max_ask_bytes : int, optional
        The largest request the site accepts: gradient rows are sent in chunks under it.

    Examples
    --------
    >>> use_remote_descent(lambda tree: {"refused": "no site here"})
    >>> use_remote_descent(None)  # back to an in-process descent
    """
    _REMOTE[0] = None if ask is None else (ask, max_ask_bytes)


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
    images: Any,
    labels: Any,
    *,
    loss_function: Callable[..., torch.Tensor],
    lr: float,
    noise_multiplier: float,
    max_grad_norm: float,
    sample_rate: float,
    steps: int,
    to_inputs: Callable[[Any], torch.Tensor] | None = None,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    mu: float = 0.0,
    seed: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Train ``model`` from the global ``weights`` with DP-SGD, the descent kept by the site.

    ``weights`` are the global weights the researcher sent (a state dict of arrays):
    training starts from them, whatever the model object holds. The released dict
    has their names, order, shapes and dtypes; parameters are trained, every other
    entry (buffers) is the global value. With a remote descent installed
    (``use_remote_descent``) the site draws, clips, noises and steps, and the
    weights returned here are the site's final iterates as it sent them back; the
    site releases its own copy regardless.

    Parameters
    ----------
    model : nn.Module
        The researcher's model, used only as a function of its parameters and input.
    weights : Mapping of str to array-like
        The global weights (the model's state dict as arrays).
    images, labels : array-like
        The site's training split: ``(N, ...)`` images (uint8 arrays, read-only memory maps or tensors;
        only each batch's rows are read) and ``N`` integer labels.
    loss_function : callable
        ``loss_function(logits, targets)``, e.g. ``F.cross_entropy``.
    lr : float
        The learning rate.
    noise_multiplier, max_grad_norm, sample_rate : float
        The site's privacy settings: ``z``, the clipping norm ``C`` and the Poisson sampling rate ``q``.
    steps : int
        How many DP-SGD steps.
    to_inputs : callable, optional
        Turns a batch of ``images`` rows into the model's float input (default: ``torch.as_tensor``).
    optimizer : {"sgd", "adam"}, default "sgd"
        SGD (with ``momentum``) or Adam.
    momentum : float, default 0.0
        SGD's momentum, in ``[0, 1)``.
    mu : float, default 0.0
        FedProx's proximal coefficient (0: plain FedAvg).
    seed : int, optional
        Seeds an in-process descent's sampling and noise (tests and benchmarks only; a remote descent
        is seeded by the site alone).

    Returns
    -------
    tuple of (dict of str to ndarray, dict of str to float)
        The weights to release and the train metrics. The metrics are
        ``{"loss": 0.0, "accuracy": 0.0}``: under DP no training figure is released
        (it would cost privacy); they keep the release format and are hidden by the
        researcher's client.

    Raises
    ------
    ValueError
        When a setting is out of range, the data are empty or mismatched, the global weights miss a
        parameter, the model's per-sample gradients are not tensors of the parameters' shapes, or the
        site's descent refused a request.

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
    settings = {"lr": lr, "optimizer": optimizer, "momentum": momentum, "mu": mu}
    privacy = {
        "noise_multiplier": noise_multiplier,
        "max_grad_norm": max_grad_norm,
        "sample_rate": sample_rate,
        "steps": steps,
    }
    count = len(labels)
    if count < 1 or len(images) != count:
        raise ValueError(
            f"train_private needs as many images as labels, at least one (got {len(images)} and {count})"
        )
    trainable, aliases = _trainable(model, weights)
    remote = _REMOTE[0]
    if remote is None:
        ask: Ask = SiteDescent.for_call(privacy, weights, settings, count, seed=seed).answer
        max_ask_bytes = None
    else:
        ask, max_ask_bytes = remote
    shapes = {name: tuple(_array(weights[name]).shape) for name in trainable}
    buffers = {name: _array(weights[name]) for name in weights if name not in shapes and name not in aliases}
    rows_of = _gradient_rows_function(model, loss_function, shapes, max_grad_norm)
    per_ask = _rows_per_ask(sum(math.prod(shape) for shape in shapes.values()), max_ask_bytes)
    reader = _BatchReader(images, labels, to_inputs)
    _set_train(model, True)
    answer = _asked(
        ask, {"op": "begin", "trainable": {k: list(v) for k, v in shapes.items()}, "tied": aliases}
    )
    while not answer.get("done"):
        step, parameters, indices = answer["step"], answer["parameters"], _asarray(answer["indices"])
        for start in range(0, max(len(indices), 1), per_ask):  # an empty batch still completes its step
            inputs, targets = reader.read(indices[start : start + per_ask])
            rows, loss_sum, correct = rows_of(parameters, buffers, inputs, targets)
            ask_rows = {"op": "rows", "step": step, "rows": rows, "loss_sum": loss_sum, "correct": correct}
            answer = _asked(ask, ask_rows)
    return {name: _array(value) for name, value in answer["weights"].items()}, {"loss": 0.0, "accuracy": 0.0}


def _asked(ask: Ask, tree: dict[str, Any]) -> dict[str, Any]:
    answer = ask(tree)
    if not isinstance(answer, dict):
        raise ValueError(f"the site's DP-SGD descent answered a {type(answer).__name__}")
    if "refused" in answer:
        raise ValueError(f"the site's DP-SGD descent refused: {answer['refused']}")
    return answer


def _rows_per_ask(width: int, max_ask_bytes: int | None) -> int:
    """How many float32 gradient rows of ``width`` fit in one ask (at most ``CHUNK``)."""
    if max_ask_bytes is None:
        return CHUNK
    room = max_ask_bytes - _HEADER_ROOM
    if room < 4 * width:
        raise ValueError(
            f"one example's gradient ({width} parameters, {4 * width / 2**20:.1f} MB) is over this site's "
            f"cap on a worker's message ({max_ask_bytes / 2**20:.1f} MB): raise [sandbox] max_result_mb"
        )
    return max(1, min(CHUNK, room // (4 * max(width, 1))))


class _BatchReader:
    """A batch's rows of the training split, read only where the indices point (memory maps stay on disk)."""

    def __init__(self, images: Any, labels: Any, to_inputs: Callable[[Any], torch.Tensor] | None) -> None:
        self.images, self.labels = images, labels
        self.to_inputs = to_inputs if to_inputs is not None else _as_tensor

    def read(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        index = _asarray(indices, dtype=np.int64)
        if isinstance(self.images, _Tensor):
            batch = self.images[_as_tensor(index)]
        else:
            batch = self.images[index] if len(index) else self.images[:0]
        if isinstance(self.labels, _Tensor):
            targets = self.labels[_as_tensor(index)].to(_int64)
        else:
            targets = _as_tensor(
                _asarray(self.labels[index] if len(index) else self.labels[:0]), dtype=_int64
            )
        return self.to_inputs(batch), targets


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
    return names, {alias: name for alias, name in aliases.items() if name in names}


def _gradient_rows_function(
    model: nn.Module,
    loss_function: Callable[..., torch.Tensor],
    shapes: Mapping[str, tuple[int, ...]],
    max_grad_norm: float,
) -> Callable[..., tuple[np.ndarray, float, int]]:
    """A function ``(parameters, buffers, inputs, targets) -> (rows, loss_sum, correct)``.

    ``rows`` is the batch's ``(m, P)`` float32 matrix of per-example gradients, each clipped to
    ``max_grad_norm``, in the order of ``shapes``; computed at fresh copies of the parameters.
    """

    def loss_of(parameters: dict, buffers: dict, image: torch.Tensor, label: torch.Tensor) -> Any:
        output = _functional_call(model, (parameters, buffers), (image.unsqueeze(0),))
        loss = loss_function(output, label.unsqueeze(0))
        return loss, (loss.detach(), (output.detach().argmax(-1) == label).sum())

    gradient_of = _vmap(_grad(loss_of, has_aux=True), in_dims=(None, None, 0, 0), randomness="different")
    width = sum(math.prod(shape) for shape in shapes.values())

    def rows_of(
        parameters: Mapping[str, Any], buffers: Mapping[str, np.ndarray], inputs: Any, targets: torch.Tensor
    ) -> tuple[np.ndarray, float, int]:
        count = len(targets)
        if count == 0:
            return np.zeros((0, width), np.float32), 0.0, 0
        # fresh copies every step, on the inputs' device: whatever the forward writes into them is thrown away
        device = inputs.device if isinstance(inputs, _Tensor) else None
        theta = {name: _tensor(_asarray(parameters[name]), device=device) for name in shapes}
        state = {name: _tensor(value, device=device) for name, value in buffers.items()}
        gradients, (losses, correct) = gradient_of(theta, state, inputs, targets.to(device))
        flat = []
        for name, shape in shapes.items():
            gradient = gradients.get(name) if type(gradients) is dict else None
            if type(gradient) is not _Tensor or tuple(gradient.shape) != (count, *shape):
                raise ValueError(
                    f"the model's per-sample gradient for {name!r} is not a tensor of shape {(count, *shape)}"
                )
            flat.append(gradient.detach().reshape(count, -1).to("cpu", _float32))
        with _no_grad():
            matrix = _cat(flat, 1) if flat else _zeros((count, 0), dtype=_float32)
            finite = _isfinite(matrix).all(1)
            matrix = _where(finite[:, None], matrix, 0.0)
            norms = _vector_norm(matrix, dim=1, dtype=_float64)  # float64: a huge finite row is scaled
            scale = _where(finite, _clamp(max_grad_norm / _clamp(norms, min=1e-300), max=1.0), 0.0)
            rows = (matrix.to(_float64) * scale[:, None]).to(_float32).numpy()
        return rows, float(losses.detach().sum()), int(correct.detach().sum())

    return rows_of
