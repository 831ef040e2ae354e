"""The job template on read-only memory maps: batch reads only, no whole-split copy, the seed's batches."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from researcher.models import SmallCNN
from researcher.site_function import build_site_function
from tests.support.job_config import job_config

CONFIG = job_config(num_classes=2, image_size=8, rounds=2, local_epochs=2, batch_size=16)


def arrays(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.integers(0, 60, (n, 1, 8, 8)).astype(np.uint8)
    images[labels == 1, :, :4] += 150  # an easy, learnable signal
    return images, labels


def initial(seed: int = 0) -> dict[str, np.ndarray]:
    torch.manual_seed(seed)
    return {k: v.numpy() for k, v in SmallCNN(channels=1, image_size=8, num_classes=2).state_dict().items()}


def mapped(tmp_path, name: str, array: np.ndarray) -> np.memmap:
    """``array`` as the site hands it over: a read-only memory map of a ``.npy`` file."""
    np.save(tmp_path / f"{name}.npy", array)
    return np.load(tmp_path / f"{name}.npy", mmap_mode="r")


class Untouchable:
    """Train data an evaluation-only call must not read: any use fails the test."""

    def _touched(self, *args, **kwargs):
        raise AssertionError("the evaluation-only call read the train split")

    __getitem__ = __len__ = __array__ = __iter__ = _touched


class Reads:
    """An array that records the rows each read takes (what a memory map would page in)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.reads: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, key):
        self.reads.append(np.arange(len(self.array))[key])
        return self.array[key]


@pytest.fixture
def site(tmp_path):
    return build_site_function("fedimg_maps_job", SmallCNN, CONFIG, folder=tmp_path)


def test_training_on_memory_maps_equals_training_on_arrays_and_learns(site, tmp_path) -> None:
    train_images, train_labels = arrays(200)
    val_images, val_labels = arrays(80, seed=1)
    maps = [
        mapped(tmp_path, name, array)
        for name, array in zip(
            ("train_images", "train_labels", "val_images", "val_labels"),
            (train_images, train_labels, val_images, val_labels),
            strict=True,
        )
    ]
    assert all(isinstance(m, np.memmap) and not m.flags.writeable for m in maps)
    in_memory = site.function(train_images, train_labels, val_images, val_labels, initial(), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's "non-writable array": a map handed to torch as is
        first = site.function(*maps, initial(), 0)
        final = site.function(*maps, first["weights"], CONFIG["rounds"])
    assert all(np.array_equal(first["weights"][k], in_memory["weights"][k]) for k in in_memory["weights"])
    assert first["train"] == in_memory["train"] and first["num_samples"] == 200
    assert first["device"] == final["device"] == "cpu"
    assert final["val"]["accuracy"] > first["val"]["accuracy"] and final["val"]["accuracy"] > 0.9


def test_an_evaluation_only_call_never_reads_the_train_split(site) -> None:
    val_images, val_labels = arrays(40, seed=1)
    final = site.function(Untouchable(), Untouchable(), val_images, val_labels, initial(), CONFIG["rounds"])
    assert set(final) == {"round", "val", "device"} and final["val"]["num_samples"] == 40
    with pytest.raises(AssertionError, match="read the train split"):  # the guard does catch a read
        site.function(Untouchable(), Untouchable(), val_images, val_labels, initial(), 0)


def test_training_reads_one_batch_at_a_time_in_file_order_and_every_row_once_per_epoch(site) -> None:
    train_images, train_labels = arrays(100)
    images = Reads(train_images)
    output = site.function(images, train_labels, train_images[:8], train_labels[:8], initial(), 0)
    batch_size, epochs = CONFIG["batch_size"], CONFIG["local_epochs"]
    per_epoch = math.ceil(100 / batch_size)
    assert len(images.reads) == epochs * per_epoch and output["num_samples"] == 100
    assert all(len(rows) <= batch_size and np.all(np.diff(rows) > 0) for rows in images.reads)
    for epoch in range(epochs):
        rows = np.concatenate(images.reads[epoch * per_epoch : (epoch + 1) * per_epoch])
        assert np.array_equal(np.sort(rows), np.arange(100))


def test_evaluation_reads_chunks_of_the_batch_size(site) -> None:
    val_images, val_labels = arrays(1100, seed=1)
    images = Reads(val_images)
    final = site.function(Untouchable(), Untouchable(), images, val_labels, initial(), CONFIG["rounds"])
    batch = CONFIG["batch_size"]  # 16: a 512-image chunk at 224 px was ~0.8 GB of activations per layer
    expected = [batch] * (1100 // batch) + [1100 % batch]
    assert [len(rows) for rows in images.reads] == expected and final["val"]["num_samples"] == 1100


def whole_split_training(weights: dict, images: np.ndarray, labels: np.ndarray, rnd: int) -> dict:
    """fedavg-3's loop (SGD, no FedProx): the whole split as floats, batches in ``randperm`` order."""
    torch.manual_seed(CONFIG["seed"] * 100003 + rnd)
    model = SmallCNN(**CONFIG["model_kwargs"])
    model.load_state_dict({name: torch.as_tensor(value) for name, value in weights.items()})
    inputs = torch.as_tensor(images, dtype=torch.float32) / 255.0
    targets = torch.as_tensor(labels, dtype=torch.int64)
    optimizer = torch.optim.SGD(model.parameters(), lr=CONFIG["lr"], momentum=CONFIG["momentum"])
    generator = torch.Generator().manual_seed(CONFIG["seed"] * 100003 + rnd)
    model.train()
    for _ in range(CONFIG["local_epochs"]):
        order = torch.randperm(len(targets), generator=generator)
        for start in range(0, len(targets), CONFIG["batch_size"]):
            batch = order[start : start + CONFIG["batch_size"]]
            optimizer.zero_grad()
            F.cross_entropy(model(inputs[batch]), targets[batch]).backward()
            optimizer.step()
    return {name: value.detach().numpy() for name, value in model.state_dict().items()}


@pytest.mark.parametrize("rnd", [0, 1])
def test_the_batches_are_those_of_the_previous_template(site, rnd: int) -> None:
    """Same seed, same batches as fedavg-3: only each batch's row order (file order) and float rounding differ."""
    train_images, train_labels = arrays(100)
    weights = initial()
    output = site.function(train_images, train_labels, train_images[:8], train_labels[:8], weights, rnd)
    expected = whole_split_training(weights, train_images, train_labels, rnd)
    for name, value in expected.items():
        np.testing.assert_allclose(output["weights"][name], value, rtol=1e-4, atol=1e-6, err_msg=name)
    assert max(float(np.abs(output["weights"][k] - weights[k]).max()) for k in weights) > 1e-3  # it trained


@pytest.mark.parametrize("device", [None, "cpu"])
def test_the_site_device_is_used_and_reported(site, device) -> None:
    train_images, train_labels = arrays(40)
    first = site.function(train_images, train_labels, train_images, train_labels, initial(), 0, device=device)
    assert first["device"] == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU visible")
def test_on_cuda_the_update_matches_the_cpu_one(site) -> None:
    train_images, train_labels = arrays(64)
    args = (train_images, train_labels, train_images[:8], train_labels[:8], initial(), 0)
    on_gpu, on_cpu = site.function(*args, device="cuda"), site.function(*args)
    assert on_gpu["device"] == "cuda" and all(isinstance(v, np.ndarray) for v in on_gpu["weights"].values())
    for name, value in on_cpu["weights"].items():
        np.testing.assert_allclose(on_gpu["weights"][name], value, rtol=1e-3, atol=1e-5, err_msg=name)
