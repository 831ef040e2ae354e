"""The generated site function, run locally on synthetic arrays (no datasite)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from policies.template import render_site_source
from researcher.job import FedAvgJob
from researcher.models import SmallCNN
from researcher.site_function import build_site_function, load_model_class
from tests.support.job_config import job_config

CONFIG = job_config(num_classes=2, image_size=8, rounds=2, local_epochs=2)


def arrays(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.integers(0, 60, (n, 1, 8, 8)).astype(np.uint8)
    images[labels == 1, :, :4] += 150  # an easy, learnable signal
    return images, labels


@pytest.fixture
def site(tmp_path):
    return build_site_function("fedimg_test_job", SmallCNN, CONFIG, folder=tmp_path)


def initial(seed=0):
    import torch

    torch.manual_seed(seed)
    return {k: v.numpy() for k, v in SmallCNN(channels=1, image_size=8, num_classes=2).state_dict().items()}


def test_source_is_deterministic_and_readable(site) -> None:
    assert (
        render_site_source("fedimg_test_job", inspect.getsource(SmallCNN), "SmallCNN", CONFIG) == site.source
    )
    assert "class SmallCNN" in site.source and "'rounds': 2" in site.source
    assert inspect.getsource(site.function) == site.source  # what PySyft will read and ship


def test_training_call_returns_only_aggregates_and_learns(site) -> None:
    train_images, train_labels = arrays(200)
    val_images, val_labels = arrays(80, seed=1)
    weights = initial()
    first = site.function(train_images, train_labels, val_images, val_labels, weights, 0)
    assert set(first) == {"round", "val", "weights", "num_samples", "train", "device"}
    assert first["device"] == "cpu"  # no device from the site: the CPU
    assert set(first["val"]) == {"loss", "accuracy", "num_samples", "confusion"}
    assert first["num_samples"] == 200 and first["val"]["num_samples"] == 80
    assert first["val"]["confusion"].sum() == 80 and first["val"]["confusion"].shape == (2, 2)
    assert {k: v.shape for k, v in first["weights"].items()} == {k: v.shape for k, v in weights.items()}
    final = site.function(train_images, train_labels, val_images, val_labels, first["weights"], 2)
    assert set(final) == {"round", "val", "device"}  # the last call only evaluates
    assert final["val"]["accuracy"] > first["val"]["accuracy"]
    assert final["val"]["accuracy"] > 0.9


def test_same_inputs_same_update(site) -> None:
    train_images, train_labels = arrays(64)

    def run() -> dict:
        output = site.function(train_images, train_labels, train_images[:8], train_labels[:8], initial(), 0)
        return output["weights"]

    first, second = run(), run()
    assert all(np.array_equal(first[k], second[k]) for k in first)


def test_fedprox_pulls_towards_the_global_model(tmp_path) -> None:
    train_images, train_labels = arrays(200)
    weights = initial()

    def distance(mu: float) -> float:
        site = build_site_function(
            f"fedimg_prox_{int(mu * 10)}", SmallCNN, {**CONFIG, "mu": mu, "local_epochs": 3}, folder=tmp_path
        )
        out = site.function(train_images, train_labels, train_images[:8], train_labels[:8], weights, 0)[
            "weights"
        ]
        return float(sum(((out[k] - weights[k]) ** 2).sum() for k in weights if out[k].dtype.kind == "f"))

    assert distance(5.0) < distance(0.0)


def test_job_validates_its_configuration() -> None:
    with pytest.raises(ValueError, match="rounds must be an integer >= 1"):
        FedAvgJob(SmallCNN, rounds=0)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        FedAvgJob(SmallCNN, optimizer="lbfgs")
    with pytest.raises(ValueError, match="model=Net"):
        FedAvgJob()
    with pytest.raises(TypeError):
        FedAvgJob(SmallCNN, learning_rate=0.1)


def test_model_from_source_text() -> None:
    source = "class Tiny(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(4, 2)\n\n    def forward(self, x):\n        return self.fc(x.flatten(1))\n"
    job = FedAvgJob(model_source=source, model_name="Tiny", rounds=1, model_kwargs={})
    assert job.model_source() == source
    from researcher.site_function import build_site_function

    site = build_site_function("fedimg_tiny", job.model_class, {"rounds": 1}, folder=None)
    assert "class Tiny(nn.Module):" in site.source
    assert set(job.initial_weights()) == {"fc.weight", "fc.bias"}
    with pytest.raises(ValueError, match="defines no class 'Nope'"):
        load_model_class(source, "Nope")


class MockFederation:
    """What ``FedAvgJob.dry_run`` reads of a federation: site names, the label map and mock arrays."""

    names = ["a", "b"]
    label_map = {"0": 0, "1": 1}

    def mock_arrays(self, name: str, split: str):
        return arrays(120 if split == "train" else 40, seed=len(name) + len(split))


def test_dry_run_through_the_sites_dp_sgd() -> None:
    job = FedAvgJob(
        SmallCNN,
        name="dry_dp",
        rounds=2,
        local_epochs=1,
        batch_size=32,
        lr=0.5,
        model_kwargs={"channels": 1, "image_size": 8, "num_classes": 2},
    )
    plain = job.dry_run(MockFederation())
    assert all(entry["train_loss"] > 0 for entry in plain.values())
    private = job.dry_run(MockFederation(), privacy={"noise_multiplier": 0.8, "max_grad_norm": 0.5})
    assert set(private) == {"a", "b"} and all(
        entry["train_loss"] is None and entry["num_samples"] == 120 for entry in private.values()
    )
    with pytest.raises(
        ValueError, match=r"takes noise_multiplier and max_grad_norm \(got \['sample_rate'\]\)"
    ):
        job.dry_run(MockFederation(), privacy={"sample_rate": 1.0})


def test_dp_sgd_sites_train_figures_are_not_shown() -> None:
    from researcher.job import _site_entry

    val = {"loss": 1.0, "accuracy": 0.5, "num_samples": 4, "confusion": np.eye(2, dtype=np.int64) * 2}
    dp = _site_entry(
        {
            "val": val,
            "train": {"loss": 0.0, "accuracy": 0.0},
            "num_samples": 10,
            "privacy": {"mechanism": "dp-sgd", "epsilon_spent": 0.5},
        }
    )
    assert "train" not in dp and dp["num_samples"] == 10 and dp["privacy"]["epsilon_spent"] == 0.5
    update = _site_entry(
        {
            "val": val,
            "train": {"loss": 0.7, "accuracy": 0.6},
            "num_samples": 10,
            "privacy": {"mechanism": "update"},
        }
    )
    assert update["train"] == {"loss": 0.7, "accuracy": 0.6}


RECORDING_MODEL = """\
class Recording(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 2)

    def forward(self, x):
        CALLS.append(int(x.shape[0]))  # CALLS: a list the test puts in the generated module
        return self.fc(x.flatten(1))
"""


def test_under_dp_sgd_the_model_trains_before_it_sees_a_val_image(tmp_path) -> None:
    """Val images are not covered by DP: a model that saw them first could carry them into its gradients."""
    import sys

    job = FedAvgJob(model_source=RECORDING_MODEL, model_name="Recording", rounds=1, model_kwargs={})
    site = build_site_function(
        "fedimg_order", job.model_class, dict(CONFIG, rounds=1, model_kwargs={}), folder=tmp_path
    )
    calls = sys.modules[site.function.__module__].CALLS = []
    train_images, train_labels = arrays(40)
    val_images, val_labels = arrays(30, seed=1)
    privacy = {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "sample_rate": 0.5, "steps": 2}
    released = site.function(
        train_images, train_labels, val_images, val_labels, job.initial_weights(), 0, privacy=privacy
    )
    assert released["val"]["num_samples"] == 30 and released["num_samples"] == 40
    batch = CONFIG["batch_size"]  # the template evaluates in chunks of the job's batch size
    val_calls = [min(batch, 30 - start) for start in range(0, 30, batch)]
    training_calls = calls[: len(calls) - len(val_calls)]
    assert calls[len(training_calls) :] == val_calls and training_calls and set(training_calls) == {1}
    # per-example training calls, then val
    calls.clear()
    site.function(train_images, train_labels, val_images, val_labels, job.initial_weights(), 0)
    assert calls[: len(val_calls)] == val_calls  # without DP the template evaluates first, as before
