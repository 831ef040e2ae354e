"""Release rules: what may leave a site after approved code ran on its private data.

``check_release`` accepts only the output of fedimg's job template: a dict with
``round``, ``val`` (loss, accuracy, num_samples, a num_classes×num_classes
confusion matrix), and for training calls ``weights`` (exactly the names, shapes
and dtypes of the global weights the researcher sent), ``num_samples`` and
``train`` (loss, accuracy), and optionally ``device`` (where the site ran the call:
``"cpu"``, ``"cuda"`` or ``"cuda:N"``). Anything else — arrays sized like the data, extra
keys, strings, bytes, nested objects, non-finite numbers, an oversized output —
is refused with the reason, and so is a site below ``min_samples``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

TOP_KEYS = {"round", "val", "weights", "num_samples", "train", "device"}
VAL_KEYS = {"loss", "accuracy", "num_samples", "confusion"}
TRAIN_KEYS = {"loss", "accuracy"}
TRAINING_KEYS = {"weights", "num_samples", "train"}  # a training call releases all three, or none
# Where the call ran: a string, so only these few values may leave (ASCII digits, a GPU index below 100).
DEVICE_NAME = re.compile(r"cpu|cuda(:[0-9]{1,2})?")


class ReleaseRefused(Exception):
    """The output breaks the site's release rules; the message is safe to show to the researcher.

    Examples
    --------
    >>> str(ReleaseRefused("val.loss must be a finite number (got str)"))
    'val.loss must be a finite number (got str)'
    """


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
    """Refuse ``output`` unless it is an aggregate the job template may release.

    Parameters
    ----------
    output : Any
        What the approved code returned at the site.
    global_weights : Mapping of str to array-like, or None
        The global weights the researcher sent in: released weights must have exactly their names,
        order, shapes and dtypes.
    num_train, num_val : int
        The site's number of training and validation samples.
    num_classes : int
        The number of labels (the confusion matrix is ``num_classes × num_classes``).
    min_samples : int
        Below this many training (or validation) samples a site releases nothing.
    max_output_bytes : int
        The largest output released.

    Raises
    ------
    ReleaseRefused
        With the reason, which is safe to show to the researcher.

    Examples
    --------
    >>> import numpy as np
    >>> val = {"loss": 0.5, "accuracy": 0.75, "num_samples": 4, "confusion": np.array([[2, 1], [0, 1]])}
    >>> site = dict(num_train=40, num_val=4, num_classes=2, min_samples=1, max_output_bytes=2**20)
    >>> check_release({"round": 3, "val": val}, global_weights=None, **site)  # a final evaluation
    >>> check_release({"round": 3, "val": val, "device": "cuda"}, global_weights=None, **site)
    >>> check_release({"round": 3, "val": val, "device": "cpu, label 7"}, global_weights=None, **site)
    Traceback (most recent call last):
    ...
    policies.release.ReleaseRefused: device must be "cpu", "cuda" or "cuda:N" ... (got 'cpu, label 7')
    >>> check_release({"round": 3, "val": val, "images": np.zeros(4)}, global_weights=None, **site)
    Traceback (most recent call last):
    ...
    policies.release.ReleaseRefused: the output must be a dict with keys [...] (got ['images', ...])
    """
    _refuse_small_site(num_train, num_val, min_samples)
    _refuse_disguised(output, "the output")
    _check_keys(output)
    _count(output["round"], "round", 10**6)
    _check_val(output["val"], num_val, num_classes)
    if "device" in output:
        _check_device(output["device"])
    training = TRAINING_KEYS & set(output)
    if training and training != TRAINING_KEYS:
        raise ReleaseRefused("a training output needs weights, num_samples and train together")
    if training:
        _check_training(output, global_weights, num_train)
    size = _nbytes(output)
    if size > max_output_bytes:
        size_mb, limit_mb = size / 2**20, max_output_bytes / 2**20
        raise ReleaseRefused(f"the output is {size_mb:.1f} MB, above this site's limit of {limit_mb:.1f} MB")


def _refuse_small_site(num_train: int, num_val: int, min_samples: int) -> None:
    if num_train < min_samples:
        raise ReleaseRefused(
            f"this site has {num_train} training samples, fewer than its minimum of {min_samples}: "
            "it releases nothing"
        )
    if num_val < min_samples:
        raise ReleaseRefused(
            f"this site has {num_val} validation samples, fewer than its minimum of {min_samples}: "
            "it releases no evaluation"
        )


def _check_keys(output: Any) -> None:
    """A plain dict with ``round`` and ``val`` and nothing outside ``TOP_KEYS``."""
    if not isinstance(output, dict) or not set(output) <= TOP_KEYS or not {"round", "val"} <= set(output):
        keys = sorted(output) if isinstance(output, dict) else type(output).__name__
        raise ReleaseRefused(f"the output must be a dict with keys {sorted(TOP_KEYS)} (got {keys})")


def _check_device(device: Any) -> None:
    """``device`` names where the call ran; any other string could carry data out."""
    if not isinstance(device, str) or DEVICE_NAME.fullmatch(device) is None:
        shown = repr(device[:16]) if isinstance(device, str) else type(device).__name__
        raise ReleaseRefused(f'device must be "cpu", "cuda" or "cuda:N" with N below 100 (got {shown})')


def _check_training(output: dict, global_weights: Mapping[str, Any] | None, num_train: int) -> None:
    _count(output["num_samples"], "num_samples", num_train)
    train = output["train"]
    if not isinstance(train, dict) or set(train) != TRAIN_KEYS:
        raise ReleaseRefused(f"train must hold exactly {sorted(TRAIN_KEYS)}")
    for key in TRAIN_KEYS:
        _scalar(train[key], f"train.{key}")
    _check_weights(output["weights"], global_weights)


def _refuse_disguised(value: Any, where: str) -> None:
    """Refuse subclasses of dict, str, numpy arrays and numbers anywhere in the output.

    Their methods are the researcher's: an ndarray subclass can report the shape the checks want while
    holding (and serialising) the images, a dict subclass can hide a key from ``set(output)``.
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
            f"{where} is a {kind.__name__}, a subclass of {base.__name__}: "
            "a release holds only plain dicts, arrays and numbers"
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
