"""The site's DP-SGD: per-sample clipping, noise scale, what is released, what model code cannot change, its RNG.

In-process: ``train_private`` (the worker half) talking to a ``SiteDescent`` (the site half) in the same
process; the site half is also driven directly, as a hostile worker would.
"""

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

import policies.dp_descent as dp_descent
import policies.dp_sgd as dp_sgd
from policies import ReleaseRefused, SiteDescent, use_remote_descent
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
    shapes=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    batch=st.integers(1, 6),
    log_scale=st.floats(-6, 30),
    clip=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**16),
)
def test_each_example_adds_at_most_the_clipping_norm(shapes, batch, log_scale, clip, seed) -> None:
    rng = np.random.default_rng(seed)
    rows = (rng.normal(size=(batch, sum(shapes))) * 10.0**log_scale).astype(np.float32)
    for example in range(batch):
        one = rows[example : example + 1]
        total = dp_descent._clipped_sum(one, clip)
        norm = float(np.linalg.norm(total))
        original = float(np.linalg.norm(one.astype(np.float64)))
        assert norm <= clip * (1 + 1e-9)
        if original <= clip:  # small gradients pass unchanged
            np.testing.assert_allclose(total, one[0].astype(np.float64))
        else:  # large ones are scaled, direction kept
            assert norm == pytest.approx(clip, rel=1e-9)


def test_a_non_finite_gradient_counts_as_zero() -> None:
    rows = np.array([[np.nan, 1.0], [np.inf, 0.0], [3.0, 4.0]], np.float32)
    np.testing.assert_allclose(dp_descent._clipped_sum(rows, 1.0), [0.6, 0.8])


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


# --- the template's call: uint8 images (or read-only memory maps) and to_inputs -------------------------------


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 4 * 4, 2)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(1))


def bright_and_dark(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Label 1: bright images, label 0: dark ones (uint8, N×1×4×4)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n).astype(np.int64)
    images = np.where(labels[:, None, None, None] == 1, 200, 40) + rng.integers(-30, 30, (n, 1, 4, 4))
    return images.astype(np.uint8), labels


def as_inputs(images) -> torch.Tensor:
    return torch.as_tensor(np.asarray(images), dtype=torch.float32) / 255.0


def accuracy(model: nn.Module, weights: dict, images: np.ndarray, labels: np.ndarray) -> float:
    model.load_state_dict({name: torch.as_tensor(value) for name, value in weights.items()})
    with torch.no_grad():
        return float((model(as_inputs(images)).argmax(1).numpy() == labels).mean())


def test_the_templates_call_learns_from_read_only_memory_maps(tmp_path: Path) -> None:
    torch.manual_seed(8)
    model = Tiny()
    weights = global_weights(model)
    images, labels = bright_and_dark(200)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", labels)
    mapped_images = np.load(tmp_path / "images.npy", mmap_mode="r")
    mapped_labels = np.load(tmp_path / "labels.npy", mmap_mode="r")
    settings = {"lr": 0.5, "optimizer": "sgd", "momentum": 0.5, "mu": 0.0}
    privacy = {"noise_multiplier": 0.5, "max_grad_norm": 1.0, "sample_rate": 0.2, "steps": 30}
    trained, train = train_private(
        model,
        weights,
        mapped_images,
        mapped_labels,
        loss_function=F.cross_entropy,
        to_inputs=as_inputs,
        **settings,
        **privacy,
    )
    assert train == {"loss": 0.0, "accuracy": 0.0}
    assert {k: (v.shape, v.dtype) for k, v in trained.items()} == {
        k: (v.shape, v.dtype) for k, v in weights.items()
    }
    before, after = accuracy(model, weights, images, labels), accuracy(model, trained, images, labels)
    assert after >= 0.9 and after > before


# --- the site's half, driven as a hostile worker would --------------------------------------------------------

PRIVACY = {"noise_multiplier": 0.0, "max_grad_norm": 1.0, "sample_rate": 1.0, "steps": 2}
WEIGHTS = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(2, np.float32), "seen": np.zeros((), np.int64)}
DECLARED = {"w": [2, 3], "b": [2]}


def descent(**privacy) -> SiteDescent:
    return SiteDescent.for_call(PRIVACY | privacy, WEIGHTS, {"lr": 1.0}, num_samples=4, seed=0)


def begin(site: SiteDescent, trainable=None, tied=None) -> dict:
    return site.answer(
        {"op": "begin", "trainable": DECLARED if trainable is None else trainable, "tied": tied or {}}
    )


def rows_ask(step: int, rows, correct: int = 0) -> dict:
    return {"op": "rows", "step": step, "rows": rows, "loss_sum": 0.0, "correct": correct}


def test_the_site_re_clips_every_row_the_worker_sends() -> None:
    site = descent(steps=1)
    step = begin(site)
    assert step["step"] == 0 and step["indices"].tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(step["parameters"]["w"], WEIGHTS["w"])
    huge = np.full((4, 8), 1e30, np.float32)  # a worker that skipped its own clipping
    done = site.answer(rows_ask(0, huge))
    released = site.release({"round": 0})
    # four rows of norm C = 1 at most, no noise, divided by q·n = 4, lr 1: the update's norm is at most 1
    update = np.concatenate([released["weights"]["w"].ravel(), released["weights"]["b"]])
    assert done["done"] is True
    assert np.linalg.norm(update.astype(np.float64)) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_array_equal(done["weights"]["w"], released["weights"]["w"])


def test_rows_may_come_in_chunks_or_per_parameter_and_an_empty_batch_still_steps() -> None:
    site = descent(steps=2)
    begin(site)
    row = np.zeros((1, 8), np.float32)
    assert site.answer(rows_ask(0, row)) == {"step": 0, "received": 1}
    per_parameter = {"w": np.zeros((3, 2, 3), np.float32), "b": np.zeros((3, 2), np.float32)}
    assert site.answer(rows_ask(0, per_parameter))["step"] == 1
    assert site.answer(rows_ask(1, np.zeros((4, 8), np.float32)))["done"] is True
    assert site.steps_done == 2
    empty = SiteDescent.for_call(PRIVACY | {"sample_rate": 1e-9, "steps": 1}, WEIGHTS, {"lr": 1.0}, 4)
    assert len(begin(empty)["indices"]) == 0
    assert empty.answer(rows_ask(0, np.zeros((0, 8), np.float32)))["done"] is True


def complete(site: SiteDescent, steps: int) -> None:
    for step in range(steps):
        site.answer(rows_ask(step, np.zeros((4, 8), np.float32)))


@pytest.mark.parametrize(
    "hostile, message",
    [
        (lambda s: s.answer(rows_ask(0, np.zeros((4, 8), np.float64))), "float32 matrix of shape"),
        (lambda s: s.answer(rows_ask(0, np.zeros((4, 9), np.float32))), "float32 matrix of shape"),
        (lambda s: s.answer(rows_ask(0, np.zeros((5, 8), np.float32))), "5 gradient rows for a batch of 4"),
        (lambda s: s.answer(rows_ask(0, {"w": np.zeros((4, 2, 3), np.float32)})), "not the declared"),
        (
            lambda s: s.answer(
                rows_ask(0, {"b": np.zeros((4, 2), np.float32), "w": np.zeros((4, 2, 3), np.float32)})
            ),
            "not the declared",
        ),
        (
            lambda s: s.answer(
                rows_ask(0, {"w": np.zeros((4, 3, 2), np.float32), "b": np.zeros((4, 2), np.float32)})
            ),
            "must be float32 of shape",
        ),
        (lambda s: s.answer(rows_ask(1, np.zeros((4, 8), np.float32))), "rows for step 1 while step 0"),
        (lambda s: s.answer(rows_ask(0, [[0.0] * 8] * 4)), "float32 matrix"),
        (lambda s: s.answer(rows_ask(0, np.zeros((4, 8), np.float32), correct=5)), "correct must be"),
        (
            lambda s: s.answer({**rows_ask(0, np.zeros((4, 8), np.float32)), "noise_multiplier": 0.0}),
            "a step's ask must be",
        ),
        (lambda s: s.answer({"op": "begin", "trainable": DECLARED, "tied": {}}), "a step's ask must be"),
        (
            lambda s: (complete(s, 2), s.answer(rows_ask(2, np.zeros((4, 8), np.float32)))),
            "past the 2 planned",
        ),
        (lambda s: s.answer("rows"), "not a dict"),
    ],
    ids=[
        "float64",
        "width",
        "too-many-rows",
        "missing-name",
        "name-order",
        "shape",
        "skipped-step",
        "list",
        "correct",
        "extra-key",
        "begin-twice",
        "too-many-steps",
        "not-a-dict",
    ],
)
def test_malformed_asks_are_refused_and_nothing_trained_is_released(hostile, message: str) -> None:
    site = descent()
    begin(site)
    hostile(site)
    assert message in site.problem
    assert "refused" in site.answer(rows_ask(0, np.zeros((4, 8), np.float32)))  # and stays refused
    with pytest.raises(ReleaseRefused, match="DP-SGD refused"):
        site.release({"round": 0})


@pytest.mark.parametrize(
    "trainable, tied, message",
    [
        ({"w": [2, 3], "nope": [1]}, {}, "'nope' trainable"),
        ({"w": [3, 2]}, {}, "'w' trainable with shape [3, 2]"),
        ({"seen": []}, {}, "'seen' trainable"),  # an integer buffer cannot be trained
        ({"w": [2, 3]}, {"b": "w"}, "'b' tied to 'w'"),  # not the same shape
    ],
)
def test_the_site_accepts_only_global_floating_names_at_their_shapes(trainable, tied, message: str) -> None:
    site = descent()
    assert "refused" in begin(site, trainable, tied)
    assert message in site.problem
    with pytest.raises(ReleaseRefused):
        site.release({})


def test_too_few_steps_release_nothing() -> None:
    site = descent(steps=3)
    begin(site)
    complete(site, 2)
    with pytest.raises(ReleaseRefused, match="completed 2 of the 3 planned steps"):
        site.release({"round": 0})
    with pytest.raises(ReleaseRefused, match="completed 0 of the 3"):
        descent(steps=3).release({"round": 0})  # the worker never asked


def test_release_puts_the_sites_iterates_its_count_and_no_train_figures_in_the_result() -> None:
    site = descent(steps=1, noise_multiplier=1.0)
    begin(site, {"w": [2, 3]})  # "b" undeclared: released at its global value
    site.answer(rows_ask(0, np.zeros((4, 6), np.float32), correct=3))
    worker_said = {
        "round": 0,
        "val": {"loss": 1.0},
        "weights": {"w": np.full((2, 3), 9.0, np.float32)},
        "num_samples": 1,
        "train": {"loss": 0.1, "accuracy": 1.0},
    }
    released = site.release(worker_said)
    assert released["round"] == 0 and released["val"] == {"loss": 1.0}
    assert released["num_samples"] == 4 and released["train"] == {"loss": 0.0, "accuracy": 0.0}
    assert list(released["weights"]) == list(WEIGHTS)
    assert all(released["weights"][k].dtype == WEIGHTS[k].dtype for k in WEIGHTS)
    np.testing.assert_array_equal(released["weights"]["b"], WEIGHTS["b"])
    np.testing.assert_array_equal(released["weights"]["seen"], WEIGHTS["seen"])
    assert 0 < np.abs(released["weights"]["w"]).max() < 9.0  # the site's noise, not the worker's 9s
    assert site.train_figures == {"loss": 0.0, "accuracy": 0.75}  # the worker's figures, kept at the site


def test_with_all_zero_rows_the_update_is_the_sites_noise() -> None:
    z, clip, q, n, lr = 1.5, 0.5, 0.5, 40, 0.2
    weights = {"w": np.zeros(20_000, np.float32)}
    privacy = {"noise_multiplier": z, "max_grad_norm": clip, "sample_rate": q, "steps": 1}
    site = SiteDescent.for_call(privacy, weights, {"lr": lr}, num_samples=n, seed=3)
    step = site.answer({"op": "begin", "trainable": {"w": [20_000]}, "tied": {}})
    site.answer(rows_ask(0, np.zeros((len(step["indices"]), 20_000), np.float32)))
    update = site.release({})["weights"]["w"].astype(np.float64)
    assert update.std() == pytest.approx(lr * z * clip / (q * n), rel=0.03)


def test_a_remote_channel_that_refuses_is_an_error_and_none_goes_back_in_process() -> None:
    model = Linear()
    weights = global_weights(model)
    use_remote_descent(lambda tree: {"refused": "the site said no"})
    try:
        with pytest.raises(ValueError, match="refused: the site said no"):
            train(model, weights, *data(n=4))
    finally:
        use_remote_descent(None)
    assert set(train(model, weights, *data(n=4))) == set(weights)


def test_a_remote_channel_gets_the_same_protocol_as_the_in_process_descent() -> None:
    torch.manual_seed(9)
    model = Linear()
    weights = global_weights(model)
    images, labels = data(n=10)
    options = dict(noise_multiplier=0.7, sample_rate=0.5, steps=3)
    site = SiteDescent.for_call(options | {"max_grad_norm": 1.0}, weights, {"lr": 1.0}, 10, seed=4)
    asks: list[str] = []

    def ask(tree):
        asks.append(tree["op"])
        return site.answer(tree)

    use_remote_descent(ask, max_ask_bytes=2**16 + 4 * 15 * 2)  # two rows of 15 floats per ask
    try:
        remote = train(model, weights, images, labels, **options, seed=None)
    finally:
        use_remote_descent(None)
    local = train(model, weights, images, labels, **options, seed=4)
    assert asks[0] == "begin" and asks.count("rows") > 3  # chunked under the cap
    for name in weights:
        np.testing.assert_allclose(remote[name], local[name], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(site.release({})["weights"][name], remote[name])
