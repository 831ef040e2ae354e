"""Release rules: the template's aggregates go out; anything else is refused with a reason that says what is wrong."""

from __future__ import annotations

import re

import numpy as np
import pytest

from policies.release import ReleaseRefused, check_release
from tests.support.job_config import job_config

NUM_TRAIN, NUM_VAL, NUM_CLASSES = 120, 30, 3


def global_weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "conv.weight": rng.normal(size=(4, 1, 3, 3)).astype(np.float32),
        "conv.bias": np.zeros(4, np.float32),
        "bn.num_batches_tracked": np.array(0, np.int64),
        "head.weight": rng.normal(size=(NUM_CLASSES, 16)).astype(np.float32),
    }


def evaluation_output() -> dict:
    confusion = np.array([[8, 1, 1], [2, 7, 1], [0, 0, 10]], dtype=np.int64)
    return {"round": 2, "val": {"loss": 0.71, "accuracy": 25 / 30, "num_samples": 30, "confusion": confusion}}


def training_output() -> dict:
    output = evaluation_output()
    output["weights"] = {
        name: np.asarray(value + 1, dtype=value.dtype) for name, value in global_weights().items()
    }
    output["num_samples"] = NUM_TRAIN
    output["train"] = {"loss": 0.5, "accuracy": 0.8}
    return output


def check(
    output, *, weights=None, num_train=NUM_TRAIN, num_val=NUM_VAL, min_samples=20, max_output_bytes=2**20
) -> None:
    check_release(
        output,
        global_weights=global_weights() if weights is None else weights,
        num_train=num_train,
        num_val=num_val,
        num_classes=NUM_CLASSES,
        min_samples=min_samples,
        max_output_bytes=max_output_bytes,
    )


def refused(output, match: str, **kwargs) -> None:
    with pytest.raises(ReleaseRefused, match=match):
        check(output, **kwargs)


def test_training_output_is_released() -> None:
    check(training_output())


def test_evaluation_only_output_is_released() -> None:
    check(evaluation_output())


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0", "cuda:15"])
def test_the_device_a_call_ran_on_is_released(device: str) -> None:
    check({**training_output(), "device": device})
    check({**evaluation_output(), "device": device})


class DeviceName(str):
    pass


@pytest.mark.parametrize(
    "device",
    [
        "gpu",
        "cuda:100",  # a GPU index says at most two digits
        "cpu\n",
        "cuda:\u0663",  # a non-ASCII digit
        "cpu" * 6,
        "",
        5,
        b"cpu",
        None,
        DeviceName("cpu"),  # str subclasses are refused with the other disguises
    ],
)
def test_any_other_device_value_is_refused(device) -> None:
    refused({**evaluation_output(), "device": device}, "device|subclass of str")


def test_numpy_scalars_are_numbers() -> None:
    output = training_output()
    output["num_samples"] = np.int64(NUM_TRAIN)
    output["val"]["loss"] = np.float32(0.5)
    output["val"]["num_samples"] = np.int64(30)
    check(output)


def test_the_real_template_output_is_released(tmp_path) -> None:
    """The output of the generated site function itself (SmallCNN, one short round)."""
    import torch

    from researcher.models import SmallCNN
    from researcher.site_function import build_site_function

    config = job_config(
        num_classes=NUM_CLASSES,
        image_size=8,
    )
    site = build_site_function("fedimg_release_test", SmallCNN, config, folder=tmp_path)
    rng = np.random.default_rng(0)
    train_images, val_images = (
        rng.integers(0, 255, (40, 1, 8, 8), dtype=np.uint8),
        rng.integers(0, 255, (24, 1, 8, 8), dtype=np.uint8),
    )
    train_labels, val_labels = rng.integers(0, NUM_CLASSES, 40), rng.integers(0, NUM_CLASSES, 24)
    torch.manual_seed(0)
    weights = {
        k: v.numpy()
        for k, v in SmallCNN(channels=1, image_size=8, num_classes=NUM_CLASSES).state_dict().items()
    }
    kwargs = dict(
        global_weights=weights,
        num_train=40,
        num_val=24,
        num_classes=NUM_CLASSES,
        min_samples=20,
        max_output_bytes=2**20,
    )
    trained = site.function(train_images, train_labels, val_images, val_labels, weights, 0)
    check_release(trained, **kwargs)
    final = site.function(train_images, train_labels, val_images, val_labels, trained["weights"], 1)
    check_release(final, **kwargs)
    assert set(final) == {"round", "val", "device"} and final["device"] == "cpu"


@pytest.mark.parametrize("output", [None, [1, 2], "weights", np.zeros(3), 42])
def test_non_dict_is_refused(output) -> None:
    refused(output, "must be a dict")


def test_extra_or_missing_top_level_key() -> None:
    output = training_output()
    output["note"] = "hello"
    refused(output, r"must be a dict with keys .*got \[.*'note'")
    output = evaluation_output()
    del output["val"]
    refused(output, "must be a dict with keys")


def images() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (NUM_VAL, 1, 8, 8), dtype=np.uint8)


@pytest.mark.parametrize(
    "place, match",
    [
        (lambda o: o.__setitem__("images", images()), "must be a dict with keys"),
        (lambda o: o.__setitem__("round", images()), "round must be an integer"),
        (lambda o: o["val"].__setitem__("images", images()), "val must hold exactly"),
        (lambda o: o["val"].__setitem__("confusion", images()), "val.confusion must be a 3x3 integer array"),
        (lambda o: o["val"].__setitem__("loss", images()), "val.loss must be a finite number"),
        (lambda o: o["train"].__setitem__("accuracy", images()), "train.accuracy must be a finite number"),
        (lambda o: o["train"].__setitem__("images", images()), "train must hold exactly"),
        (lambda o: o.__setitem__("num_samples", images()), "num_samples must be an integer"),
        (lambda o: o["weights"].__setitem__("images", images()), "exactly the names of the global weights"),
        (
            lambda o: o["weights"].__setitem__("head.weight", images()),
            r"weights\['head.weight'\] must be an array of shape \(3, 16\) and dtype float32",
        ),
    ],
)
def test_images_in_any_key_are_refused(place, match: str) -> None:
    output = training_output()
    place(output)
    refused(output, match)


def test_strings_and_nested_objects_are_refused() -> None:
    output = evaluation_output()
    output["val"]["loss"] = "0.5"
    refused(output, r"val.loss must be a finite number \(got str\)")
    output = training_output()
    output["train"] = [0.5, 0.8]
    refused(output, "train must hold exactly")
    output = training_output()
    output["val"]["accuracy"] = {"per_sample": [1, 0, 1]}
    refused(output, "val.accuracy must be a finite number")


def test_training_keys_come_together() -> None:
    output = training_output()
    del output["train"]
    refused(output, "needs weights, num_samples and train together")
    output = evaluation_output()
    output["num_samples"] = NUM_TRAIN
    refused(output, "needs weights, num_samples and train together")


def test_weights_with_wrong_names() -> None:
    output = training_output()
    output["weights"]["conv.weight2"] = output["weights"].pop("conv.weight")
    refused(output, "exactly the names of the global weights")
    output = training_output()
    del output["weights"]["conv.bias"]
    refused(output, "exactly the names of the global weights")
    output = training_output()
    output["weights"] = dict(reversed(list(output["weights"].items())))
    refused(output, "in the same order")


def test_weights_with_wrong_shape_or_dtype() -> None:
    output = training_output()
    output["weights"]["conv.bias"] = np.zeros(5, np.float32)
    refused(output, r"weights\['conv.bias'\] must be an array of shape \(4,\) and dtype float32")
    output = training_output()
    output["weights"]["conv.bias"] = np.zeros(4, np.float64)
    refused(output, r"weights\['conv.bias'\] must be an array of shape \(4,\) and dtype float32")
    output = training_output()
    output["weights"]["conv.bias"] = [0.0] * 4
    refused(output, r"weights\['conv.bias'\] must be an array")
    output = training_output()
    output["weights"] = [v for v in output["weights"].values()]
    refused(output, "weights must be a dict of arrays")


def test_weights_without_global_weights_are_refused() -> None:
    with pytest.raises(
        ReleaseRefused, match="weights must be a dict of arrays shaped like the global weights"
    ):
        check_release(
            training_output(),
            global_weights=None,
            num_train=NUM_TRAIN,
            num_val=NUM_VAL,
            num_classes=NUM_CLASSES,
            min_samples=20,
            max_output_bytes=2**20,
        )


@pytest.mark.parametrize("dtype", [object, "U8", "S8", "V8"])
def test_non_numeric_weights_are_refused_even_if_the_global_ones_were_too(dtype) -> None:
    """The researcher sends the global weights: object or string arrays there must not open a channel back."""
    weights = global_weights()
    weights["extra"] = np.zeros(4, dtype=dtype)
    output = training_output()
    output["weights"]["extra"] = (
        np.array([b"ab", {"x": 1}, "secret", 3], dtype=object).astype(dtype)
        if dtype is object
        else np.zeros(4, dtype=dtype)
    )
    refused(output, r"weights\['extra'\] must be a numeric array", weights=weights)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad) -> None:
    output = training_output()
    output["weights"]["conv.weight"][0, 0, 0, 0] = bad
    refused(output, r"weights\['conv.weight'\] has non-finite values")
    output = training_output()
    output["train"]["loss"] = bad
    refused(output, "train.loss must be a finite number")
    output = evaluation_output()
    output["val"]["accuracy"] = bad
    refused(output, "val.accuracy must be a finite number")


def test_confusion_matrix_rules() -> None:
    output = evaluation_output()
    output["val"]["confusion"] = np.zeros((NUM_CLASSES, NUM_CLASSES + 1), np.int64)
    refused(output, "val.confusion must be a 3x3 integer array")
    output = evaluation_output()
    output["val"]["confusion"] = output["val"]["confusion"].astype(np.float64)
    refused(output, "val.confusion must be a 3x3 integer array")
    output = evaluation_output()
    output["val"]["confusion"] = output["val"]["confusion"].tolist()
    refused(output, "val.confusion must be a 3x3 integer array")
    output = evaluation_output()
    output["val"]["confusion"][0, 0] += 1  # 31 counted, 30 declared
    refused(output, "summing to val.num_samples")
    output = evaluation_output()
    output["val"]["confusion"][0, 0] += 2
    output["val"]["confusion"][0, 1] -= 2  # still sums to 30, one cell negative
    assert output["val"]["confusion"].sum() == 30
    refused(output, "non-negative")


def test_counts_larger_than_the_data_are_refused() -> None:
    output = training_output()
    output["num_samples"] = NUM_TRAIN + 1
    refused(output, f"num_samples must be an integer from 0 to {NUM_TRAIN}")
    output = training_output()
    output["num_samples"] = -1
    refused(output, "num_samples must be an integer from 0")
    output = evaluation_output()
    output["val"]["num_samples"] = NUM_VAL + 1
    output["val"]["confusion"][0, 0] += 1
    refused(output, f"val.num_samples must be an integer from 0 to {NUM_VAL}")
    output = training_output()
    output["num_samples"] = float(NUM_TRAIN)
    refused(output, "num_samples must be an integer")
    output = training_output()
    output["num_samples"] = True
    refused(output, "num_samples must be an integer")


def test_a_site_below_min_samples_releases_nothing() -> None:
    message = "this site has 19 training samples, fewer than its minimum of 20: it releases nothing"
    refused(training_output(), re.escape(message), num_train=19)
    refused(evaluation_output(), re.escape(message), num_train=19)
    check(evaluation_output(), num_train=20)


def test_oversize_output_is_refused() -> None:
    output = training_output()
    size = sum(v.nbytes for v in output["weights"].values())
    check(output, max_output_bytes=size + 1024)
    refused(output, r"the output is 0\.0 MB, above this site's limit of 0\.0 MB", max_output_bytes=size // 2)
    big = {"w": np.zeros((600, 1000), np.float32)}  # 2.3 MB
    output = evaluation_output()
    output.update(weights={"w": big["w"] + 1}, num_samples=10, train={"loss": 1.0, "accuracy": 0.5})
    refused(output, r"the output is 2\.3 MB, above this site's limit of 1\.0 MB", weights=big)


def test_a_val_split_below_the_minimum_releases_no_evaluation() -> None:
    with pytest.raises(ReleaseRefused, match="5 validation samples, fewer than its minimum of 20"):
        check_release(
            training_output(),
            global_weights=global_weights(),
            num_train=NUM_TRAIN,
            num_val=5,
            num_classes=NUM_CLASSES,
            min_samples=20,
            max_output_bytes=2**20,
        )
