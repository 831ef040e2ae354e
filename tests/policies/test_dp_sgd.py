"""The site's DP-SGD loop: per-sample clipping, noise scale, what is released, what model code cannot change, its RNG."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import policies.dp_sgd as dp_sgd
from policies.dp_sgd import schedule, train_private


class Linear(nn.Module):
    def __init__(self, features: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(features, classes)

    def forward(self, x):
        return self.fc(x)


def data(
    n: int = 12, features: int = 4, classes: int = 3, scale: float = 1.0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, features, generator=generator), torch.randint(
        0, classes, (n,), generator=generator
    )


def global_weights(model: nn.Module) -> dict[str, np.ndarray]:
    return {name: value.detach().clone().numpy() for name, value in model.state_dict().items()}


def train(model: nn.Module, weights: dict, images, labels, **overrides) -> dict[str, np.ndarray]:
    options = (
        dict(
            loss_function=F.cross_entropy,
            lr=1.0,
            noise_multiplier=0.0,
            max_grad_norm=1.0,
            sample_rate=1.0,
            steps=1,
            seed=0,
        )
        | overrides
    )
    return train_private(model, weights, images, labels, **options)[0]


def update_norm(released: dict, weights: dict) -> float:
    return math.sqrt(
        sum(
            float(((released[k].astype(np.float64) - weights[k]) ** 2).sum())
            for k in weights
            if weights[k].dtype.kind == "f"
        )
    )


# --- clipping ------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    shapes=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 3)), min_size=1, max_size=3),
    batch=st.integers(1, 6),
    log_scale=st.floats(-6, 30),
    clip=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**16),
)
def test_each_example_adds_at_most_the_clipping_norm(shapes, batch, log_scale, clip, seed) -> None:
    rng = np.random.default_rng(seed)
    gradients = {
        f"p{i}": rng.normal(size=(batch, *shape)) * 10.0**log_scale for i, shape in enumerate(shapes)
    }
    for example in range(batch):
        one = {name: value[example : example + 1] for name, value in gradients.items()}
        total = {name: np.zeros(value.shape[1:]) for name, value in gradients.items()}
        dp_sgd._add_clipped(total, one, clip)
        norm = math.sqrt(sum(float((t**2).sum()) for t in total.values()))
        original = math.sqrt(sum(float((v**2).sum()) for v in one.values()))
        assert norm <= clip * (1 + 1e-9)
        if math.isfinite(original) and original <= clip:  # small gradients pass unchanged
            assert all(np.allclose(total[name], one[name][0]) for name in total)
        elif math.isfinite(original):  # large ones are scaled, direction kept
            assert norm == pytest.approx(clip, rel=1e-9)


def test_a_non_finite_gradient_counts_as_zero() -> None:
    gradients = {"w": np.array([[np.nan, 1.0], [np.inf, 0.0], [3.0, 4.0]])}
    total = {"w": np.zeros(2)}
    dp_sgd._add_clipped(total, gradients, 1.0)
    np.testing.assert_allclose(total["w"], [0.6, 0.8])


@pytest.mark.parametrize("clip", [0.01, 0.5])
def test_a_training_step_moves_the_weights_by_at_most_lr_times_clip(clip: float) -> None:
    torch.manual_seed(0)
    model = Linear()
    weights = global_weights(model)
    images, labels = data(n=1, scale=1e4)  # one example with a huge gradient, every step (q = 1), no noise
    released = train(model, weights, images, labels, max_grad_norm=clip, lr=0.5, steps=3)
    assert update_norm(released, weights) <= 3 * 0.5 * clip * (1 + 1e-6)
    assert update_norm(released, weights) > 0.5 * clip  # the clip binds: the gradient was far larger


def test_without_noise_or_clipping_it_is_full_batch_sgd_with_momentum() -> None:
    torch.manual_seed(1)
    model = Linear()
    weights = global_weights(model)
    images, labels = data(n=16)
    released = train(model, weights, images, labels, max_grad_norm=1e9, lr=0.3, momentum=0.9, steps=4)
    reference = Linear()
    reference.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.3, momentum=0.9)
    for _ in range(4):
        optimizer.zero_grad()
        F.cross_entropy(reference(images), labels).backward()
        optimizer.step()
    for name, value in reference.state_dict().items():
        np.testing.assert_allclose(released[name], value.numpy(), rtol=1e-4, atol=1e-6)


def test_adam_and_fedprox_run_and_fedprox_pulls_towards_the_global_weights() -> None:
    torch.manual_seed(2)
    model = Linear()
    weights = global_weights(model)
    images, labels = data(n=32)
    free = train(model, weights, images, labels, optimizer="adam", lr=0.05, steps=20)
    pulled = train(model, weights, images, labels, optimizer="adam", lr=0.05, steps=20, mu=50.0)
    assert 0 < update_norm(pulled, weights) < update_norm(free, weights)


# --- noise -----------------------------------------------------------------------------------------------


class Flat(nn.Module):
    """20,000 parameters whose gradient is zero: what moves them is the noise alone."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(20_000))

    def forward(self, x):
        return x[:, :3] + 0.0 * self.w.sum()


@pytest.mark.parametrize("z, clip, q, n, lr", [(2.0, 0.5, 0.5, 10, 1.0), (0.7, 3.0, 0.25, 40, 0.1)])
def test_the_noise_is_z_times_clip_over_the_expected_batch(
    z: float, clip: float, q: float, n: int, lr: float
) -> None:
    model = Flat()
    weights = global_weights(model)
    images, labels = data(n=n)
    released = train(
        model, weights, images, labels, noise_multiplier=z, max_grad_norm=clip, sample_rate=q, lr=lr, seed=5
    )
    step = released["w"].astype(np.float64) - weights["w"]
    assert abs(step.mean()) < 5 * step.std() / math.sqrt(step.size)
    assert step.std() == pytest.approx(lr * z * clip / (q * n), rel=0.03)


# --- what is released -------------------------------------------------------------------------------------


class Memoriser(nn.Module):
    """Copies what it sees first (in the template: val images, at evaluation) into a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.register_buffer("stash", torch.zeros(2, 4))
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, x):
        self.calls.add_(1)  # a data-independent write: allowed under vmap, thrown away
        return self.fc(x)


def test_buffers_are_released_at_their_global_values() -> None:
    torch.manual_seed(3)
    model = Memoriser()
    weights = global_weights(model)
    images, labels = data(n=8)
    with torch.no_grad():
        model.stash.copy_(images[:2])  # what the evaluation before training would have stashed
    released = train(model, weights, images, labels, noise_multiplier=1.0)
    assert list(released) == list(weights)
    for name in ("stash", "calls"):
        assert released[name].dtype == weights[name].dtype
        np.testing.assert_array_equal(released[name], weights[name])
    assert not np.array_equal(released["fc.weight"], weights["fc.weight"])


class CopiesItsInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.register_buffer("stash", torch.zeros(4))

    def forward(self, x):
        self.stash.copy_(x[0])  # one example's data into a shared tensor: vmap refuses
        return self.fc(x)


def test_a_forward_that_writes_data_into_shared_state_fails() -> None:
    model = CopiesItsInput()
    with pytest.raises(RuntimeError, match="vmap"):
        train(model, global_weights(model), *data(n=4))


class Writer(nn.Module):
    """Writes into its own parameters in place during every forward, and already holds tampered weights."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        with torch.no_grad():
            self.fc.weight.add_(1000.0)
            self.fc.bias.fill_(7.0)
        return self.fc(x)


def test_a_forward_that_writes_its_parameters_in_place_does_not_reach_the_release() -> None:
    torch.manual_seed(4)
    model = Writer()
    weights = global_weights(model)
    with torch.no_grad():
        model.fc.weight.fill_(
            123.0
        )  # tampered before training (e.g. during the evaluation): training starts from `weights`
    released = train(model, weights, *data(n=6), max_grad_norm=0.1, lr=1.0, steps=2)
    assert update_norm(released, weights) <= 2 * 0.1 * (1 + 1e-6)
    assert np.abs(released["fc.weight"] - weights["fc.weight"]).max() < 1.0


class Hider(Linear):
    """Overrides the Module methods a loop would ask for its parameters and mode."""

    def named_parameters(self, *args, **kwargs):
        return iter(())

    def parameters(self, *args, **kwargs):
        return iter(())

    def state_dict(self, *args, **kwargs):
        return {}


def test_overridden_module_methods_do_not_change_what_is_trained() -> None:
    torch.manual_seed(5)
    honest = Linear()
    weights = global_weights(honest)
    hider = Hider()
    images, labels = data(n=10)
    expected = train(honest, weights, images, labels, noise_multiplier=0.5, seed=9)
    got = train(hider, weights, images, labels, noise_multiplier=0.5, seed=9)
    for name in weights:
        np.testing.assert_array_equal(got[name], expected[name])


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encode = nn.Linear(3, 3, bias=False)
        self.decode = nn.Linear(3, 3, bias=False)
        self.decode.weight = self.encode.weight

    def forward(self, x):
        return self.decode(torch.relu(self.encode(x[:, :3])))


def test_tied_parameters_are_trained_once_and_released_under_both_names() -> None:
    torch.manual_seed(6)
    model = Tied()
    weights = global_weights(model)
    assert set(weights) == {"encode.weight", "decode.weight"}
    released = train(model, weights, *data(n=8))
    np.testing.assert_array_equal(released["encode.weight"], released["decode.weight"])
    assert not np.array_equal(released["encode.weight"], weights["encode.weight"])


# --- randomness ---------------------------------------------------------------------------------------------


def test_a_seed_reproduces_and_without_one_the_randomness_is_secret() -> None:
    torch.manual_seed(7)
    model = Linear()
    weights = global_weights(model)
    images, labels = data(n=20)
    noisy = dict(noise_multiplier=1.0, sample_rate=0.5, steps=3)
    first, second = (
        train(model, weights, images, labels, **noisy, seed=11),
        train(model, weights, images, labels, **noisy, seed=11),
    )
    assert all(np.array_equal(first[k], second[k]) for k in weights)
    # without a seed, resetting torch's global RNG (which model code can do) does not repeat the noise or the sampling
    torch.manual_seed(0)
    third = train(model, weights, images, labels, **noisy, seed=None)
    torch.manual_seed(0)
    fourth = train(model, weights, images, labels, **noisy, seed=None)
    assert not np.array_equal(third["fc.weight"], fourth["fc.weight"])


def test_rebinding_numpy_or_torch_functions_later_does_not_reach_the_noise(monkeypatch) -> None:
    """Model code can assign module attributes (``np.random.Generator = …``, ``torch.tensor = …``); the loop bound its own at import."""
    model = Flat()
    weights = global_weights(model)
    images, labels = data(n=10)
    monkeypatch.setattr(
        np.random, "Generator", lambda *a, **k: (_ for _ in ()).throw(AssertionError("looked up at run time"))
    )
    monkeypatch.setattr(
        np, "where", lambda *a, **k: (_ for _ in ()).throw(AssertionError("looked up at run time"))
    )
    released = train(model, weights, images, labels, noise_multiplier=1.0)
    assert released["w"].std() > 0


# --- settings -----------------------------------------------------------------------------------------------


def test_schedule_is_the_plain_loops_batches() -> None:
    assert schedule(230, 64, 2) == (64 / 230, 8)
    assert schedule(100, 25, 1) == (0.25, 4)
    assert schedule(10, 32, 3) == (1.0, 3)  # a batch larger than the site: every example, every step
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        schedule(10, 0, 1)
    with pytest.raises(ValueError, match="num_train must be an integer >= 1"):
        schedule(0, 8, 1)


@pytest.mark.parametrize(
    "override, message",
    [
        (dict(noise_multiplier=-1.0), "noise_multiplier and mu >= 0"),
        (dict(max_grad_norm=0.0), "max_grad_norm must be > 0"),
        (dict(sample_rate=0.0), r"sample_rate must be in \(0, 1\]"),
        (dict(sample_rate=1.5), r"sample_rate must be in \(0, 1\]"),
        (dict(steps=0), "steps must be an integer >= 1"),
        (dict(steps=2.0), "steps must be an integer >= 1"),
        (dict(lr=float("nan")), "lr must be a finite number"),
        (dict(momentum=1.0), r"momentum must be in \[0, 1\)"),
        (dict(optimizer="lbfgs"), "optimizer must be one of"),
    ],
)
def test_settings_are_validated(override: dict, message: str) -> None:
    model = Linear()
    with pytest.raises(ValueError, match=message):
        train(model, global_weights(model), *data(n=4), **override)


def test_missing_global_weights_are_an_error() -> None:
    model = Linear()
    weights = global_weights(model)
    del weights["fc.bias"]
    with pytest.raises(ValueError, match=r"no entry for the model's parameters \['fc.bias'\]"):
        train(model, weights, *data(n=4))


def test_opacus_is_not_needed_to_train() -> None:
    tree = ast.parse(Path(dp_sgd.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not [name for name in imported if name.split(".")[0] == "opacus"]
