"""The baseline: the site's calls done in this process, on the partition's arrays read from disk.

The partition is read with ``load_client_partition`` (the converter's own reader;
timed, but not part of a call) and the job's rendered site function is called
directly, on the site's torch thread count: the training call (``rnd = 0``, the
initial weights) and the evaluation-only call (``rnd = rounds``, the weights the
site evaluated). A call's fixed overhead at the site is its time over HTTP minus
this.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.scale.partition import partition_bytes

WARM_UP_IMAGES = 128  # the untimed warm-up calls run on this many images of each split


def run_in_process(
    function: Callable[..., dict],
    client_dir: Path,
    *,
    initial: dict,
    final: dict,
    rounds: int,
    threads: int,
    repeats: int,
) -> dict:
    """Time the site's two calls in this process on ``threads`` torch threads.

    Parameters
    ----------
    function : Callable[..., dict]
        The job's site function (the very function the site runs).
    client_dir : Path
        The partition.
    initial, final : dict
        The weights of the training call and of the evaluation-only call.
    rounds : int
        The job's training rounds (the evaluation-only call is ``rnd = rounds``).
    threads : int
        torch's intra-op threads, as at the site.
    repeats : int
        Timed evaluation-only calls (the median is the baseline); the training call is timed once.

    Returns
    -------
    dict
        ``load_seconds``, the partition's sizes and bytes, ``training_seconds``,
        ``evaluation_seconds`` (median) and ``evaluation_runs``, and the evaluation's
        ``val_accuracy``.
    """
    import torch

    from datasite_setup.convert.client_data import load_client_partition

    started = time.perf_counter()
    partition = load_client_partition(client_dir)
    figures: dict = {"load_seconds": time.perf_counter() - started, **partition_bytes(partition)}
    train, val = partition.splits["train"], partition.splits["val"]

    def call(weights: dict, rnd: int, count: int | None = None) -> tuple[float, dict]:
        gc.collect()
        begun = time.perf_counter()
        output = function(
            train.images[:count], train.labels[:count], val.images[:count], val.labels[:count], weights, rnd
        )
        return time.perf_counter() - begun, output

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        # torch's first-use costs (forward, backward, the optimiser), untimed, on a few images
        call(initial, 0, WARM_UP_IMAGES)
        call(final, rounds, WARM_UP_IMAGES)
        figures["training_seconds"], _ = call(initial, 0)
        runs = [call(final, rounds) for _ in range(repeats)]
    finally:
        torch.set_num_threads(previous)
    figures["evaluation_runs"] = [seconds for seconds, _ in runs]
    figures["evaluation_seconds"] = statistics.median(figures["evaluation_runs"])
    figures["val_accuracy"] = runs[0][1]["val"]["accuracy"]
    return figures


def check_same_result(site_accuracy: float, local_accuracy: float, val: int) -> str | None:
    """Why the site's final evaluation and the one in this process disagree, or None when they agree.

    They run the same function on the same data and weights; torch's arithmetic may
    differ by a rounding, which can flip at most a couple of predictions.

    Parameters
    ----------
    site_accuracy, local_accuracy : float
        The val accuracy of the site's evaluation-only call and of this process's.
    val : int
        Val samples.

    Returns
    -------
    str or None
        The problem, or None.

    Examples
    --------
    >>> check_same_result(0.5, 0.5, 100) is None, check_same_result(0.5, 0.7, 100) is not None
    (True, True)
    """
    if abs(site_accuracy - local_accuracy) * max(1, val) <= 2:
        return None
    return (
        f"the site's final val accuracy {site_accuracy:.4f} differs from the same call in one process "
        f"({local_accuracy:.4f}): they did not compute the same thing"
    )
