"""DP-SGD across the sandbox: the model's gradients in a real confined worker, the descent in the site process.

A real ``WorkerPool`` worker (Landlock, seccomp, rlimits) runs site functions that call
``train_private`` — the honest one, the real rendered job template, and hostile ones that talk
to the site's descent directly — while the site answers through ``SiteDescent``. Nothing is mocked.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from datasite_setup.site.sandbox.runner import CallAborted, JobWorker, WorkerPool, WorkerSettings
from policies import ReleaseRefused, SiteDescent, render_site_source
from researcher.models import SmallCNN

SITE = """
def job(train_images, train_labels, weights, privacy, settings, mode="honest"):
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import policies.dp_sgd as dp
    from policies.dp_sgd import train_private

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.head = nn.Linear(4 * 8 * 8, 2)

        def forward(self, x):
            return self.head(torch.relu(self.conv(x)).flatten(1))

    def as_inputs(images):
        return torch.as_tensor(np.array(images), dtype=torch.float32) / 255.0

    fake = {"round": 0, "weights": {k: np.full_like(np.asarray(v), 9) for k, v in weights.items()},
            "num_samples": 1, "train": {"loss": 0.0, "accuracy": 1.0}}
    if mode == "honest":
        trained, train = train_private(Net(), weights, train_images, train_labels, loss_function=F.cross_entropy,
                                       to_inputs=as_inputs, **settings, **privacy)
        return {"round": 0, "weights": trained, "num_samples": int(len(train_labels)), "train": train}
    if mode == "local_descent":  # switch the channel back to an in-process descent, then train without noise
        dp.use_remote_descent(None)
        trained, train = train_private(Net(), weights, train_images, train_labels, loss_function=F.cross_entropy,
                                       to_inputs=as_inputs, **settings, **{**privacy, "noise_multiplier": 0.0})
        return {**fake, "weights": trained}
    ask = dp._REMOTE[0][0]  # the raw channel to the site, as code that reaches the worker's memory has it
    declared = {k: list(np.shape(v)) for k, v in weights.items() if np.asarray(v).dtype.kind == "f"}
    width = sum(int(np.prod(shape)) for shape in declared.values())
    if mode == "ask_forever":
        while True:
            ask({"op": "begin", "trainable": declared, "tied": {}})
    if mode == "no_noise":
        return {**fake, "answer": ask({"op": "begin", "trainable": declared, "tied": {}, "noise_multiplier": 0.0})}
    answer = ask({"op": "begin", "trainable": declared, "tied": {}})
    if mode == "skip":  # one step, then stop early and return its own weights
        ask({"op": "rows", "step": 0, "rows": np.zeros((len(answer["indices"]), width), np.float32),
             "loss_sum": 0.0, "correct": 0})
        return fake
    while not answer.get("done"):
        count = len(answer["indices"])
        rows = np.zeros((count, width), np.float32)
        if mode == "huge_rows":  # every example pushes coordinate 0 as far as it can
            rows[:, 0] = 1e30
        answer = ask({"op": "rows", "step": answer["step"], "rows": rows, "loss_sum": 0.0, "correct": count})
    if mode == "extra_step":
        answer = ask({"op": "rows", "step": answer.get("step", 99), "rows": np.zeros((1, width), np.float32),
                      "loss_sum": 0.0, "correct": 0})
    return {**fake, "answer": answer}
"""
SETTINGS = {"lr": 0.5, "optimizer": "sgd", "momentum": 0.0, "mu": 0.0}


def bright_and_dark(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Label 1: bright images, label 0: dark ones (uint8, N×1×8×8)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n).astype(np.int64)
    images = np.where(labels[:, None, None, None] == 1, 200, 40) + rng.integers(-30, 30, (n, 1, 8, 8))
    return images.astype(np.uint8), labels


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("state")
    images, labels = bright_and_dark(120)
    np.save(state / "train_images.npy", images)
    np.save(state / "train_labels.npy", labels)
    val_images, val_labels = bright_and_dark(40, seed=1)
    np.save(state / "val_images.npy", val_images)
    np.save(state / "val_labels.npy", val_labels)
    return state


@pytest.fixture(scope="module")
def pool(site: Path):
    pool = WorkerPool(WorkerSettings(seconds_per_call=30, memory_mb=3072), forbidden=[site])
    yield pool
    pool.close()


def worker(pool: WorkerPool, site: Path, key: str = "dp-job") -> JobWorker:
    assets = {name: site / f"{name}.npy" for name in ("train_images", "train_labels")}
    return pool.worker_for(key, source=SITE, function="job", assets=assets)


def net_weights(seed: int = 0) -> dict[str, np.ndarray]:
    generator = torch.Generator().manual_seed(seed)
    shapes = {"conv.weight": (4, 1, 3, 3), "conv.bias": (4,), "head.weight": (2, 256), "head.bias": (2,)}
    return {name: (0.1 * torch.randn(shape, generator=generator)).numpy() for name, shape in shapes.items()}


def run(pool: WorkerPool, site: Path, mode: str, weights: dict, privacy: dict) -> tuple[SiteDescent, object]:
    """The lead's glue, as the site will run it: a descent per call, answering the worker, then released."""
    descent = SiteDescent.for_call(privacy, weights, SETTINGS, 120)
    inputs = {"weights": weights, "privacy": privacy, "settings": SETTINGS, "mode": mode}
    result = worker(pool, site).call(inputs, on_request=descent.answer)
    return descent, result


def accuracy(weights: dict, images: np.ndarray, labels: np.ndarray) -> float:
    conv = torch.nn.functional.conv2d(torch.as_tensor(images / 255.0, dtype=torch.float32),
                                      torch.as_tensor(weights["conv.weight"]), torch.as_tensor(weights["conv.bias"]),
                                      padding=1)  # fmt: skip
    logits = torch.relu(conv).flatten(1) @ torch.as_tensor(weights["head.weight"]).T + weights["head.bias"]
    return float((logits.argmax(1).numpy() == labels).mean())


def test_an_honest_call_trains_and_the_site_releases_its_own_iterates(pool: WorkerPool, site: Path) -> None:
    weights = net_weights()
    privacy = {"noise_multiplier": 0.3, "max_grad_norm": 1.0, "sample_rate": 0.25, "steps": 12}
    descent, result = run(pool, site, "honest", weights, privacy)
    released = descent.release(result)
    assert descent.steps_done == 12 and descent.problem is None
    for name in weights:  # the worker returned what the site sent back at the end: the site's own iterates
        np.testing.assert_array_equal(released["weights"][name], result["weights"][name])
        assert released["weights"][name].dtype == weights[name].dtype
    images, labels = bright_and_dark(120)
    assert accuracy(released["weights"], images, labels) >= 0.9 > accuracy(weights, images, labels) - 0.2
    assert released["num_samples"] == 120 and released["train"] == {"loss": 0.0, "accuracy": 0.0}
    assert 0 < descent.train_figures["accuracy"] <= 1  # the worker's loss/correct counts reached the site


def flat_weights(size: int = 20_000) -> dict[str, np.ndarray]:
    return {"w": np.zeros(size, np.float32), "count": np.zeros((), np.int64)}


def test_all_zero_rows_release_pure_site_noise(pool: WorkerPool, site: Path) -> None:
    z, clip, q, lr, n = 1.2, 0.5, 0.5, SETTINGS["lr"], 120
    privacy = {"noise_multiplier": z, "max_grad_norm": clip, "sample_rate": q, "steps": 1}
    descent, result = run(pool, site, "zero_rows", flat_weights(), privacy)
    released = descent.release(result)["weights"]
    update = released["w"].astype(np.float64)
    assert update.std() == pytest.approx(
        lr * z * clip / (q * n), rel=0.03
    )  # the worker sent no gradient at all
    assert released["count"] == 0 and not np.array_equal(
        update, result["weights"]["w"]
    )  # not the worker's 9s


def test_huge_rows_move_the_release_only_as_far_as_clipped_rows_can(pool: WorkerPool, site: Path) -> None:
    z, clip, q, lr, n, steps = 1.0, 0.5, 0.5, SETTINGS["lr"], 120, 2
    privacy = {"noise_multiplier": z, "max_grad_norm": clip, "sample_rate": q, "steps": steps}
    descent, result = run(pool, site, "huge_rows", flat_weights(), privacy)
    update = descent.release(result)["weights"]["w"].astype(np.float64)
    noise_std = lr * z * clip / (q * n) * np.sqrt(steps)  # two steps of independent noise
    assert update[1:].std() == pytest.approx(noise_std, rel=0.03)
    # coordinate 0: every sampled example added exactly C (clipped by the site from 1e30), plus the noise
    rows = descent._figures["rows"]  # the sampled examples of both steps (the worker sent a row for each)
    assert 0 < rows <= steps * n
    assert update[0] == pytest.approx(-lr * clip * rows / (q * n), abs=5 * noise_std)
    assert (
        abs(update[0]) <= lr * steps * clip / q
    )  # never more than C per example per step, whatever was sent


@pytest.mark.parametrize(
    "mode, message",
    [
        ("no_noise", "the first ask must be"),  # a request to change a setting is refused, not followed
        ("skip", "completed 1 of the 3 planned steps"),
        ("extra_step", "asked past the 3 planned"),
        (
            "local_descent",
            "completed 0 of the 3 planned steps",
        ),  # its own noiseless descent: nothing of it leaves
    ],
)
def test_a_hostile_worker_gets_nothing_released(
    pool: WorkerPool, site: Path, mode: str, message: str
) -> None:
    privacy = {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "sample_rate": 0.25, "steps": 3}
    descent, result = run(pool, site, mode, net_weights(), privacy)
    with pytest.raises(ReleaseRefused, match=message):
        descent.release(result)


def test_an_ask_without_a_descent_aborts_the_call(pool: WorkerPool, site: Path) -> None:
    privacy = {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "sample_rate": 0.25, "steps": 3}
    inputs = {"weights": net_weights(), "privacy": privacy, "settings": SETTINGS, "mode": "honest"}
    with pytest.raises(CallAborted, match="asked the site mid-call"):
        worker(pool, site).call(inputs)


def test_asking_forever_is_stopped_at_the_calls_wall_clock_limit(site: Path) -> None:
    short = WorkerPool(WorkerSettings(seconds_per_call=3, memory_mb=3072), forbidden=[site])
    try:
        descent = SiteDescent.for_call(
            {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "sample_rate": 0.25, "steps": 3},
            net_weights(), SETTINGS, 120,
        )  # fmt: skip
        inputs = {"weights": net_weights(), "privacy": {}, "settings": SETTINGS, "mode": "ask_forever"}
        with pytest.raises(CallAborted, match="limit of 3 s"):
            worker(short, site).call(inputs, on_request=descent.answer)
    finally:
        short.close()


def test_the_real_job_template_trains_through_the_sites_descent(pool: WorkerPool, site: Path) -> None:
    config = {
        "rounds": 2, "local_epochs": 1, "batch_size": 30, "lr": 0.5, "optimizer": "sgd", "momentum": 0.0,
        "loss": "cross_entropy", "min_sites": 1, "seed": 0, "mu": 0.0, "server_momentum": 0.0, "server_lr": 1.0,
        "model_kwargs": {"channels": 1, "image_size": 8, "num_classes": 2}, "num_classes": 2,
    }  # fmt: skip
    source = render_site_source("fedimg_dp", inspect.getsource(SmallCNN), "SmallCNN", config)
    if "to_inputs=as_inputs" not in source:
        pytest.skip("the job template does not call train_private with to_inputs yet")
    assets = {
        name: site / f"{name}.npy" for name in ("train_images", "train_labels", "val_images", "val_labels")
    }
    job = pool.worker_for("template-job", source=source, function="fedimg_dp", assets=assets)
    torch.manual_seed(0)
    weights = {
        k: v.detach().numpy()
        for k, v in SmallCNN(channels=1, image_size=8, num_classes=2).state_dict().items()
    }
    privacy = {"noise_multiplier": 0.5, "max_grad_norm": 1.0, "sample_rate": 0.25, "steps": 4}
    settings = {key: config[key] for key in ("lr", "optimizer", "momentum", "mu")}
    descent = SiteDescent.for_call(privacy, weights, settings, 120)
    result = job.call({"weights": weights, "rnd": 0, "privacy": privacy}, on_request=descent.answer)
    released = descent.release(result)
    assert descent.steps_done == 4 and released["val"]["num_samples"] == 40
    for name in weights:
        np.testing.assert_array_equal(released["weights"][name], result["weights"][name])
    assert any(not np.array_equal(released["weights"][k], weights[k]) for k in weights)
    pool.end_job("template-job")
