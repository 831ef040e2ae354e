"""Release rules: what may leave a site after approved code ran on its private data.

``check_release`` accepts only the output of fedimg's job template: a dict with
``round``, ``val`` (loss, accuracy, num_samples, a num_classes×num_classes
confusion matrix), and for training calls ``weights`` (exactly the names, shapes
and dtypes of the global weights the researcher sent), ``num_samples`` and
``train`` (loss, accuracy). Anything else — arrays sized like the data, extra
keys, strings, bytes, nested objects, non-finite numbers, an oversized output —
is refused with the reason, and so is a site below ``min_samples``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

TOP_KEYS = {"round", "val", "weights", "num_samples", "train"}
VAL_KEYS = {"loss", "accuracy", "num_samples", "confusion"}
TRAIN_KEYS = {"loss", "accuracy"}


class ReleaseRefused(Exception):
    """The output breaks the site's release rules; the message is safe to show to the researcher."""


def _scalar(value: Any, where: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(float(value))
    ):
        raise ReleaseRefused(f"{where} must be a finite number (got {type(value).__name__})")
    return float(value)


def _count(value: Any, where: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) <= maximum:
        raise ReleaseRefused(f"{where} must be an integer from 0 to {maximum}")
    return int(value)


def check_release(
    output: Any,
    *,
    global_weights: Mapping[str, Any] | None,
    num_train: int,
    num_val: int,
    num_classes: int,
    min_samples: int,
    max_output_bytes: int,
) -> None:
    """Raise ``ReleaseRefused`` unless ``output`` is an aggregate the template may release."""
    if num_train < min_samples:
        raise ReleaseRefused(
            f"this site has {num_train} training samples, fewer than its minimum of {min_samples}: it releases nothing"
        )
    if num_val < min_samples:
        raise ReleaseRefused(
            f"this site has {num_val} validation samples, fewer than its minimum of {min_samples}: it releases no evaluation"
        )
    _refuse_disguised(output, "the output")
    if not isinstance(output, dict) or not set(output) <= TOP_KEYS or not {"round", "val"} <= set(output):
        keys = sorted(output) if isinstance(output, dict) else type(output).__name__
        raise ReleaseRefused(f"the output must be a dict with keys {sorted(TOP_KEYS)} (got {keys})")
    _count(output["round"], "round", 10**6)
    _check_val(output["val"], num_val, num_classes)
    training = {"weights", "num_samples", "train"} & set(output)
    if training and training != {"weights", "num_samples", "train"}:
        raise ReleaseRefused("a training output needs weights, num_samples and train together")
    if training:
        _count(output["num_samples"], "num_samples", num_train)
        train = output["train"]
        if not isinstance(train, dict) or set(train) != TRAIN_KEYS:
            raise ReleaseRefused(f"train must hold exactly {sorted(TRAIN_KEYS)}")
        for key in TRAIN_KEYS:
            _scalar(train[key], f"train.{key}")
        _check_weights(output["weights"], global_weights)
    size = _nbytes(output)
    if size > max_output_bytes:
        raise ReleaseRefused(
            f"the output is {size / 2**20:.1f} MB, above this site's limit of {max_output_bytes / 2**20:.1f} MB"
        )


def _refuse_disguised(value: Any, where: str) -> None:
    """Refuse subclasses of dict, str, numpy arrays and numbers anywhere in the output.

    Their methods are the researcher's: an ndarray subclass can report the shape the checks want while holding
    (and serialising) the images, a dict subclass can hide a key from ``set(output)``.
    """
    bases = (dict, str, np.ndarray, int, float, np.generic)
    kind = type(value)
    if (
        isinstance(value, bases)
        and kind not in (dict, str, np.ndarray, int, float, bool)
        and not (isinstance(value, np.generic) and kind.__module__ == "numpy")
    ):
        base = next(b for b in bases if isinstance(value, b))
        raise ReleaseRefused(
            f"{where} is a {kind.__name__}, a subclass of {base.__name__}: a release holds only plain dicts, arrays and numbers"
        )
    if kind is dict:
        for key, item in value.items():
            _refuse_disguised(key, f"a key of {where}")
            _refuse_disguised(item, f"{where}[{key!r}]")


def _check_val(val: Any, num_val: int, num_classes: int) -> None:
    if not isinstance(val, dict) or set(val) != VAL_KEYS:
        raise ReleaseRefused(f"val must hold exactly {sorted(VAL_KEYS)}")
    _scalar(val["loss"], "val.loss")
    _scalar(val["accuracy"], "val.accuracy")
    _count(val["num_samples"], "val.num_samples", num_val)
    confusion = val["confusion"]
    if (
        not isinstance(confusion, np.ndarray)
        or confusion.shape != (num_classes, num_classes)
        or confusion.dtype.kind not in "iu"
    ):
        raise ReleaseRefused(f"val.confusion must be a {num_classes}x{num_classes} integer array")
    if int(confusion.sum()) != int(val["num_samples"]) or int(confusion.min()) < 0:
        raise ReleaseRefused(
            "val.confusion must count the val samples (non-negative, summing to val.num_samples)"
        )


def _check_weights(weights: Any, global_weights: Mapping[str, Any] | None) -> None:
    if not isinstance(weights, dict) or not isinstance(global_weights, Mapping):
        raise ReleaseRefused("weights must be a dict of arrays shaped like the global weights sent in")
    if list(weights) != list(global_weights):
        raise ReleaseRefused(
            "weights must have exactly the names of the global weights sent in, in the same order"
        )
    for name, value in weights.items():
        expected = np.asarray(global_weights[name])
        if isinstance(value, np.ndarray) and value.dtype.kind not in "biuf":
            # object, string, bytes and record arrays carry anything (and their nbytes hides their size)
            raise ReleaseRefused(f"weights[{name!r}] must be a numeric array (got dtype {value.dtype})")
        if (
            not isinstance(value, np.ndarray)
            or value.shape != expected.shape
            or value.dtype != expected.dtype
        ):
            raise ReleaseRefused(
                f"weights[{name!r}] must be an array of shape {expected.shape} and dtype {expected.dtype}"
            )
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise ReleaseRefused(f"weights[{name!r}] has non-finite values")


def _nbytes(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, dict):
        return sum(_nbytes(v) + len(str(k)) for k, v in value.items())
    return 8
