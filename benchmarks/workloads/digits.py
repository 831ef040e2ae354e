"""The digits accuracy protocol that ``bench_fedavg`` and ``bench_privacy`` both measure on.

scikit-learn's 1,797 digits are split (seeded, stratified by label:
``split_train_val``) into a held-out test set and a training pool; the pool is
written as class folders and converted with ``fedimg convert``'s own code into
hospitals; the test images go through the same ``standardise``. Training calls
the job's generated site function (``build_site_function``: the code a site runs)
in this process. The protocol's settings (``DigitsProtocol``: model, optimiser,
image size, hospitals, split shares) and their options are the same in both
benchmarks.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import SYFT_PACKAGES, BenchmarkError, package_versions, secret_file

DIGITS_VERSION = 1  # bump when the written digits change: invalidates the cache


@dataclass
class DigitsProtocol:
    """The model, optimiser and data settings of the protocol (part of a benchmark's Settings).

    Parameters
    ----------
    lr, momentum : float
        SGD's learning rate and momentum.
    batch_size : int
        The batch size.
    width : int
        ``SmallCNN``'s width.
    size : int
        Image size in px (a multiple of 4: ``SmallCNN`` pools twice).
    hospitals : int
        How many hospitals ``fedimg convert`` makes of the training pool.
    alpha : float
        The Dirichlet concentration of the ``dirichlet`` scheme.
    test_fraction : float
        The held-out test share of the digits.
    val_fraction : float
        Each hospital's val share.
    """

    lr: float
    momentum: float
    batch_size: int
    width: int
    size: int
    hospitals: int
    alpha: float
    test_fraction: float
    val_fraction: float

    @staticmethod
    def add_options(
        parser: argparse.ArgumentParser, *, part: str = "", lr_note: str = "", val_note: str = ""
    ) -> None:
        """Add ``--lr`` … ``--val-fraction``, the protocol's options.

        Parameters
        ----------
        parser : argparse.ArgumentParser
            The benchmark's parser.
        part : str
            Which part of the benchmark the size and hospitals are for (their help).
        lr_note, val_note : str
            Added to ``--lr``'s and ``--val-fraction``'s help.

        Examples
        --------
        >>> parser = argparse.ArgumentParser()
        >>> DigitsProtocol.add_options(parser)
        >>> DigitsProtocol.options(parser.parse_args(["--hospitals", "3"]))["hospitals"]
        3
        """
        parser.add_argument(
            "--lr", type=float, default=0.05, help=f"SGD learning rate (default 0.05{lr_note})"
        )
        parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
        parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
        parser.add_argument("--width", type=int, default=16, help="SmallCNN width (default 16)")
        parser.add_argument(
            "--size", type=int, default=16, help=f"image size{part}, px, a multiple of 4 (default 16)"
        )
        parser.add_argument("--hospitals", type=int, default=5, help=f"hospitals{part} (default 5)")
        parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (default 0.5)")
        parser.add_argument(
            "--test-fraction", type=float, default=0.2, help="held-out test share of the digits (default 0.2)"
        )
        parser.add_argument(
            "--val-fraction",
            type=float,
            default=0.2,
            help=f"each hospital's val share{val_note} (default 0.2)",
        )

    @staticmethod
    def options(args: argparse.Namespace) -> dict:
        """The protocol's fields from the parsed command line, as keyword arguments of a Settings."""
        return {field.name: getattr(args, field.name) for field in fields(DigitsProtocol)}

    def check_fractions(self, parser: argparse.ArgumentParser) -> None:
        """Stop with a usage error unless the test share is in (0, 1) and the val share in [0, 1)."""
        if not 0 < self.test_fraction < 1 or not 0 <= self.val_fraction < 1:
            parser.error("--test-fraction must be in (0, 1) and --val-fraction in [0, 1)")


@dataclass
class DigitsData:
    """The digits on disk, their labels and the federation secret, and a fresh scratch folder for hospitals.

    Parameters
    ----------
    source : Path
        ``digits_source``'s folder.
    labels : np.ndarray
        Every digit's label.
    secret : Path
        The federation secret's file (``fedimg convert`` needs one).
    work : Path
        The scratch folder: the hospitals' federations and the generated site functions.
    """

    source: Path
    labels: np.ndarray
    secret: Path
    work: Path

    @classmethod
    def prepare(cls, workdir: Path, scratch: str) -> DigitsData:
        """The digits (written once, cached in ``workdir``) and an emptied ``workdir/scratch``."""
        from datasite_setup.convert.sample_data import load_digit_images

        work = workdir / scratch
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        source = digits_source(workdir)
        secret = secret_file(workdir, "fedavg-secret")
        _, labels = load_digit_images()
        return cls(source, labels, secret, work)

    def split(self, settings: DigitsProtocol, seed: int) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """A seed's training pool (indices) and held-out test set (images through ``standardise``, labels)."""
        pool, held_out = held_out_split(self.labels, settings.test_fraction, seed)
        return pool, _test_set(self.source, held_out, self.labels, settings.size)

    def hospitals(self, pool: np.ndarray, scheme: str, seed: int, settings: DigitsProtocol) -> list[Any]:
        """The pool converted into ``settings.hospitals`` hospitals by ``scheme`` (``fedimg convert``)."""
        out = self.work / f"{scheme}-seed{seed}"
        return _convert_hospitals(self.source, pool, self.labels, out, scheme, seed, settings, self.secret)


def software() -> dict:
    """The versions of PySyft, numpy, pandas, torch and scikit-learn, and torch's threads (the "Software")."""
    info = package_versions(*SYFT_PACKAGES, "torch", "scikit-learn")
    import torch

    info["torch_threads"] = torch.get_num_threads()
    return info


# --- the model, the job's configuration and its site function ---------------------------------------------


def model_kwargs(channels: int, size: int, width: int) -> dict:
    """``SmallCNN``'s keyword arguments for 10 classes."""
    return {"channels": channels, "image_size": size, "num_classes": 10, "width": width}


def make_job(
    name: str,
    settings: DigitsProtocol,
    seed: int,
    *,
    rounds: int,
    local_epochs: int,
    size: int | None = None,
    mu: float = 0.0,
    min_sites: int = 1,
) -> Any:
    """The researcher's ``FedAvgJob`` on the grayscale digits (SmallCNN, SGD with momentum).

    Parameters
    ----------
    name : str
        The job's name.
    settings : DigitsProtocol
        Batch size, lr, momentum and width, and the image size.
    seed : int
        Seeds the initial weights.
    rounds, local_epochs : int
        The job's budget.
    size : int or None
        The image size, if not ``settings.size``.
    mu : float
        FedProx's μ (0: FedAvg).
    min_sites : int
        Sites that must answer every round.

    Returns
    -------
    researcher.FedAvgJob
        The job: its config, initial weights and site function.
    """
    from researcher import FedAvgJob
    from researcher.models import SmallCNN

    return FedAvgJob(
        SmallCNN,
        name=name,
        rounds=rounds,
        local_epochs=local_epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        optimizer="sgd",
        momentum=settings.momentum,
        mu=mu,
        min_sites=min_sites,
        seed=seed,
        model_kwargs=model_kwargs(1, settings.size if size is None else size, settings.width),
    )


def site_function(job: Any, folder: Path, **overrides: Any) -> Callable[..., dict]:
    """The job's generated site function (``build_site_function``, as ``FedAvgJob.site_function`` builds it).

    Parameters
    ----------
    job : researcher.FedAvgJob
        The job.
    folder : Path
        Where the generated module is written.
    **overrides
        Configuration values that replace the job's.

    Returns
    -------
    Callable[..., dict]
        The site function.
    """
    from researcher.site_function import build_site_function

    config = {**asdict(job.config), "num_classes": 10, **overrides}
    return build_site_function(f"fedimg_{job.name}", job.model_class, config, folder=folder).function


def _empty(channels: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, channels, size, size), dtype=np.uint8), np.zeros(0, dtype=np.int64)


def evaluate(
    function: Callable[..., dict], weights: dict, images: np.ndarray, labels: np.ndarray, rounds: int
) -> dict:
    """Accuracy of ``weights`` on (images, labels) through the site function's evaluation-only call.

    Parameters
    ----------
    function : Callable[..., dict]
        The site function.
    weights : dict
        The model's weights.
    images, labels : np.ndarray
        ``(N, C, S, S)`` uint8 and ``(N,)`` int64.
    rounds : int
        The job's rounds: the call with ``rnd == rounds`` only evaluates.

    Returns
    -------
    dict
        The call's val metrics (accuracy, loss, …) without the confusion matrix.
    """
    train_images, train_labels = _empty(images.shape[1], images.shape[2])
    result = function(train_images, train_labels, images, labels, weights, rounds)
    return {key: value for key, value in result["val"].items() if key != "confusion"}


# --- the data ----------------------------------------------------------------------------------------------


def digits_source(workdir: Path) -> Path:
    """All 1,797 digits as class folders (``write_digits``: ``<label>/digit_NNNN.png``, 8×8 grayscale).

    Written once, then cached in the work folder.

    Parameters
    ----------
    workdir : Path
        The benchmark's work folder.

    Returns
    -------
    Path
        The folder of class folders.
    """
    from datasite_setup.convert.sample_data import write_digits

    source = workdir / f"fedavg-digits-v{DIGITS_VERSION}"
    done = workdir / f"{source.name}.done"
    if not (done.is_file() and source.is_dir()):
        shutil.rmtree(source, ignore_errors=True)
        staging = workdir / f".{source.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        write_digits(staging, layout="folders")
        os.rename(staging, source)
        done.write_text(json.dumps({"version": DIGITS_VERSION}) + "\n")
    return source


def digit_file(source: Path, index: int, label: int) -> Path:
    """The file of digit ``index`` (of class ``label``) in ``digits_source``'s folder."""
    path = source / str(label) / f"digit_{index:04d}.png"
    if not path.is_file():
        raise BenchmarkError(
            f"{path}: missing (write_digits' file names changed?); delete {source} and rerun"
        )
    return path


def held_out_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training pool, test) indices: stratified by label, seeded (the project's own ``split_train_val``).

    Parameters
    ----------
    labels : np.ndarray
        Every digit's label.
    test_fraction : float
        The test share.
    seed : int
        Seeds the split.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        The pool's and the test set's indices.

    Examples
    --------
    >>> pool, test = held_out_split(np.repeat(np.arange(10), 10), 0.2, seed=0)
    >>> len(pool), len(test)
    (80, 20)
    """
    from datasite_setup.convert.partition import PartitionInput, split_train_val

    everything = np.arange(len(labels))
    return split_train_val(
        PartitionInput(labels=labels, groups=everything), everything, test_fraction, seed=seed
    )


def _test_set(
    source: Path, indices: np.ndarray, labels: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The held-out images through ``standardise`` (what ``fedimg convert`` does): ``(N, 1, S, S)`` uint8."""
    from PIL import Image

    from datasite_setup.convert.imaging import ImageSpec, standardise

    spec = ImageSpec(size=size, mode="L")
    images = np.empty((len(indices), 1, size, size), dtype=np.uint8)
    for row, index in enumerate(indices):
        png = standardise(digit_file(source, int(index), int(labels[index])).read_bytes(), spec).png
        with Image.open(io.BytesIO(png)) as image:
            images[row, 0] = np.asarray(image)
    return images, labels[indices].astype(np.int64)


def _convert_hospitals(
    source: Path,
    pool: np.ndarray,
    labels: np.ndarray,
    out: Path,
    scheme: str,
    seed: int,
    settings: DigitsProtocol,
    secret: Path,
) -> list[Any]:
    """Hard-link the pool's files into a folder, ``fedimg convert`` it into hospitals, read each one back.

    ``fedimg convert`` makes ``settings.hospitals`` hospitals by ``scheme``, at ``settings.size`` px
    grayscale, with ``settings.val_fraction`` of each as val, into ``out``; returns their partitions.
    """
    from datasite_setup.convert.client_data import load_client_partition
    from datasite_setup.convert.federated_format import CLIENTS_DIR
    from datasite_setup.convert.imaging import ImageSpec
    from datasite_setup.convert.pipeline import ConvertOptions, convert

    pool_dir = out.parent / f"{out.name}-pool"
    shutil.rmtree(pool_dir, ignore_errors=True)
    for index in pool:
        original = digit_file(source, int(index), int(labels[index]))
        target = pool_dir / original.parent.name / original.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(original, target)
    result = convert(
        ConvertOptions(
            source=pool_dir,
            out=out,
            scheme=scheme,
            num_clients=settings.hospitals,
            spec=ImageSpec(size=settings.size, mode="L"),
            alpha=settings.alpha if scheme == "dirichlet" else None,
            val_fraction=settings.val_fraction,
            seed=seed,
            overwrite=True,
            secret_file=secret,
            show_progress=False,
        )
    )
    accepted = result.federation["inputs"]["accepted"]
    if result.exit_code != 0 or accepted != len(pool):
        raise BenchmarkError(
            f"fedimg convert accepted {accepted} of {len(pool)} images; see {out / 'quarantine.jsonl'}"
        )
    shutil.rmtree(pool_dir)
    return [load_client_partition(out / CLIENTS_DIR / name) for name in sorted(result.federation["clients"])]


def hospital_stats(hospitals: list[Any]) -> dict:
    """Sizes and label skew of the hospitals' train splits.

    Parameters
    ----------
    hospitals : list
        The hospitals' partitions.

    Returns
    -------
    dict
        ``train_sizes``, ``val_sizes``, ``top_label_share`` (the most common
        label's share: ~10 % is IID), ``labels_with_5pct`` and ``train_label_counts``.
    """
    sizes = [len(h.splits["train"].labels) for h in hospitals]
    counts = [np.bincount(h.splits["train"].labels, minlength=10) for h in hospitals]
    return {
        "train_sizes": sizes,
        "val_sizes": [len(h.splits["val"].labels) for h in hospitals],
        "top_label_share": [round(float(c.max() / max(c.sum(), 1)), 3) for c in counts],
        "labels_with_5pct": [int((c >= 0.05 * c.sum()).sum()) for c in counts],
        "train_label_counts": [c.tolist() for c in counts],
    }
