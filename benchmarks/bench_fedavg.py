"""Benchmark: FedAvg's accuracy against centralised training, and the overhead of a round over HTTP datasites.

**Accuracy.** scikit-learn's 1,797 digits are split (seeded, stratified by
label: ``split_train_val``) into a held-out test set (20 %) and a training
pool. The pool is written as class folders (``write_digits``' files) and
converted with ``fedimg convert``'s own code into 5 hospitals, ``--scheme iid``
and ``--scheme dirichlet --alpha 0.5`` (16 px grayscale, each hospital split
80/20 into train/val); the test images go through the same ``standardise``.
FedAvg calls the generated site function (``build_site_function``: the exact
code a site runs) for every hospital in this process and averages with
``researcher.aggregation.fedavg``; the transport does not change accuracy.
The centralised baseline is the same site function (same model, optimiser, lr,
batch size) trained once on the union of the hospitals' train splits for
rounds × local epochs epochs. Both start from the same initial weights and are
evaluated on the same held-out test set, for several seeds (each seed redraws
the test split, the partition and the initial weights).

**Overhead.** Three real datasites (``fedimg datasite serve`` subprocesses over
HTTP, the digits converted into 3 clients at 32 px, torch on one thread each:
three sites share two cores here) run a ``FedAvgJob`` submitted by a researcher
and approved by the owners. Each training round's wall time (the job's own
round: send the weights, train at the sites in parallel, fetch the results,
FedAvg, checkpoint) is compared with the same three site-function calls done
one after another in this process, on the same partitions, before and after
the HTTP job, with torch on its default threads and on one thread: the faster
is the baseline. Local epochs are calibrated so that every site's call is
about 3 s of compute. A context run restarts the sites on torch's default
threads (oversubscribed) for one round.

Usage (from the repository root)::

    python -m benchmarks.bench_fedavg [--quick] [--record] [--seeds 3] [--skip-overhead] [--skip-accuracy]
                                      [--workdir benchmarks/_work] [--report PATH] [--wait-load 1.5]

The report (markdown, plus a ``.json`` twin) goes to ``--report`` (default
``WORKDIR/fedavg-report.md``); ``--record`` also adds it to the "FedAvg accuracy
and overhead" section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import report
from benchmarks.bench_convert import BENCH_SECRET
from benchmarks.bench_ingest import SYFT_PACKAGES, quiet
from benchmarks.machine import (
    add_wait_options,
    cpu_snapshot,
    format_load,
    load_line,
    machine_info,
    machine_line,
    package_versions,
    wait_for_quiet_machine,
    wait_load,
    waited_line,
)
from benchmarks.report import ResultsSection

SECTION = ResultsSection(  # where --record puts the report in benchmarks/RESULTS.md
    heading="## FedAvg accuracy and overhead",
    intro="FedAvg against centralised training on the digits, and a round over HTTP datasites against the same training in one process "
    "(`.venv/bin/python -m benchmarks.bench_fedavg --record`; how to read it: [README.md](README.md)).",
    marker="<!-- fedavg results: newest first; `python -m benchmarks.bench_fedavg --record` inserts below -->",
)
RECORD_WAIT_LOAD = 1.5  # --record waits for a 1-minute load below this unless --wait-load says otherwise
BUSY_NOTE = (
    "the machine was not idle (other processes, or the benchmark's own sites): timings may be pessimistic"
)
DIGITS_VERSION = 1  # bump when the written digits change: invalidates the cache

IID_TARGET = 2.0  # FedAvg within 2 accuracy points of centralised on IID
DIRICHLET_TARGET = 4.0  # … and within 4 points on Dirichlet α = 0.5
OVERHEAD_TARGET = 1.3  # a round over 3 HTTP datasites ≤ 1.3× the same local training in one process
MIN_COMPUTE_SECONDS = (
    2.0  # the overhead target is stated for rounds with at least this much compute per site call
)
CALIBRATION_TARGET_SECONDS = 3.0  # local epochs are chosen so a site's call is about this long in-process
CONTEXT_ROUNDS = 2  # the context jobs' training rounds: the first is cold, the second is the one reported
MAX_START_LOAD = 0.5
MAX_END_LOAD = 1.5  # the benchmark keeps the machine busy itself: flag the end load only above this

RESEARCHER_EMAIL = "bench.researcher@fedimg.example"
RESEARCHER_PASSWORD = (
    "bench-fedavg-researcher-0123"  # throw-away sites in the work folder, deleted after the run
)
SCHEMES = ("iid", "dirichlet")


class BenchmarkError(RuntimeError):
    """A run produced something wrong or incomplete: its figures would mean nothing."""


@dataclass
class Settings:
    seeds: int
    rounds: int
    local_epochs: int
    lr: float
    momentum: float
    batch_size: int
    width: int
    size: int
    hospitals: int
    alpha: float
    test_fraction: float
    val_fraction: float
    fedprox_mu: float
    accuracy: bool
    overhead: bool
    overhead_rounds: int
    overhead_epochs: int | None  # None: calibrated
    overhead_size: int
    overhead_sites: int
    site_threads: int  # torch threads per site process (OMP_NUM_THREADS); 0: this process's torch default
    context: bool
    workdir: Path
    report: Path
    record: bool
    quick: bool
    wait_load: float | None = None
    wait_timeout: float = 600.0


@dataclass
class Results(report.ReportHeader):
    waited: dict = field(default_factory=dict)
    accuracy: dict = field(default_factory=dict)
    overhead: dict = field(default_factory=dict)
    targets: list = field(default_factory=list)


# --- shared: the model, the job's configuration and its site function --------------------------------------


def model_kwargs(channels: int, size: int, width: int) -> dict:
    return {"channels": channels, "image_size": size, "num_classes": 10, "width": width}


def make_job(
    name: str,
    *,
    channels: int,
    size: int,
    settings: Settings,
    seed: int,
    rounds: int,
    local_epochs: int,
    mu: float = 0.0,
    min_sites: int = 1,
) -> Any:
    """The researcher's ``FedAvgJob`` (SmallCNN, SGD with momentum): its config, initial weights and site function."""
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
        model_kwargs=model_kwargs(channels, size, settings.width),
    )


def site_function(job: Any, folder: Path, **overrides: Any) -> Callable[..., dict]:
    """The job's generated site function (``build_site_function``, as ``FedAvgJob.site_function`` builds it), with config overrides."""
    from researcher.site_function import build_site_function

    config = {**asdict(job.config), "num_classes": 10, **overrides}
    return build_site_function(f"fedimg_{job.name}", job.model_class, config, folder=folder).function


def _empty(channels: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, channels, size, size), dtype=np.uint8), np.zeros(0, dtype=np.int64)


def evaluate(
    function: Callable[..., dict], weights: dict, images: np.ndarray, labels: np.ndarray, rounds: int
) -> dict:
    """Accuracy of ``weights`` on (images, labels) through the site function's evaluation-only call (``rnd == rounds``)."""
    train_images, train_labels = _empty(images.shape[1], images.shape[2])
    result = function(train_images, train_labels, images, labels, weights, rounds)
    return {key: value for key, value in result["val"].items() if key != "confusion"}


# --- accuracy: inputs -------------------------------------------------------------------------------------


def digits_source(workdir: Path) -> Path:
    """All 1,797 digits as class folders (``write_digits``: ``<label>/digit_NNNN.png``, 8×8 grayscale), cached."""
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
    path = source / str(label) / f"digit_{index:04d}.png"
    if not path.is_file():
        raise BenchmarkError(
            f"{path}: missing (write_digits' file names changed?); delete {source} and rerun"
        )
    return path


def held_out_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training pool, test) indices: stratified by label, seeded (the project's own ``split_train_val``)."""
    from datasite_setup.convert.partition import PartitionInput, split_train_val

    everything = np.arange(len(labels))
    return split_train_val(
        PartitionInput(labels=labels, groups=everything), everything, test_fraction, seed=seed
    )


def test_set(
    source: Path, indices: np.ndarray, labels: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The held-out images through ``standardise`` (what ``fedimg convert`` does to every input), as ``(N, 1, S, S)`` uint8."""
    from PIL import Image

    from datasite_setup.convert.imaging import ImageSpec, standardise

    spec = ImageSpec(size=size, mode="L")
    images = np.empty((len(indices), 1, size, size), dtype=np.uint8)
    for row, index in enumerate(indices):
        png = standardise(digit_file(source, int(index), int(labels[index])).read_bytes(), spec).png
        with Image.open(io.BytesIO(png)) as image:
            images[row, 0] = np.asarray(image)
    return images, labels[indices].astype(np.int64)


def convert_hospitals(
    source: Path,
    pool: np.ndarray,
    labels: np.ndarray,
    out: Path,
    scheme: str,
    seed: int,
    settings: Settings,
    secret: Path,
) -> list[Any]:
    """Hard-link the pool's files into a source folder, ``fedimg convert`` it into hospitals, read each one back."""
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


def _secret(workdir: Path) -> Path:
    from datasite_setup.private_file import write_private_file

    secret = workdir / "fedavg-secret"
    if not secret.exists():
        write_private_file(secret, (BENCH_SECRET + "\n").encode())
    return secret


def hospital_stats(hospitals: list[Any]) -> dict:
    """Sizes and label skew of the hospitals' train splits."""
    sizes = [len(h.splits["train"].labels) for h in hospitals]
    counts = [np.bincount(h.splits["train"].labels, minlength=10) for h in hospitals]
    return {
        "train_sizes": sizes,
        "val_sizes": [len(h.splits["val"].labels) for h in hospitals],
        "top_label_share": [round(float(c.max() / max(c.sum(), 1)), 3) for c in counts],
        "labels_with_5pct": [int((c >= 0.05 * c.sum()).sum()) for c in counts],
        "train_label_counts": [c.tolist() for c in counts],
    }


# --- accuracy: training -----------------------------------------------------------------------------------


def checkpoints(rounds: int) -> list[int]:
    """The rounds at which the budget table compares FedAvg with centralised training: R/4, R/2, R."""
    return sorted({max(1, rounds // 4), max(1, rounds // 2), rounds})


def train_fedavg(
    function: Callable[..., dict],
    hospitals: list[Any],
    weights: dict,
    rounds: int,
    test: tuple[np.ndarray, np.ndarray],
) -> dict:
    """``rounds`` of FedAvg: every hospital's site-function call in turn, then ``fedavg``; test accuracy after each round.

    ``val_curve[r]`` is the hospitals' pooled val accuracy of the model after ``r`` rounds (``r = 0 … rounds``), as the job's history reports it.
    """
    from researcher.aggregation import fedavg

    curve, val_curve = [], []
    started = time.perf_counter()
    for rnd in range(rounds):
        updates, correct, seen = [], 0.0, 0
        for hospital in hospitals:
            train, val = hospital.splits["train"], hospital.splits["val"]
            output = function(train.images, train.labels, val.images, val.labels, weights, rnd)
            updates.append((output["weights"], output["num_samples"]))
            correct += output["val"]["accuracy"] * output["val"]["num_samples"]
            seen += output["val"]["num_samples"]
        val_curve.append(correct / max(seen, 1))
        weights = fedavg(updates)
        curve.append(evaluate(function, weights, *test, rounds)["accuracy"])
    val_images = np.concatenate([h.splits["val"].images for h in hospitals])
    val_labels = np.concatenate([h.splits["val"].labels for h in hospitals])
    val_curve.append(evaluate(function, weights, val_images, val_labels, rounds)["accuracy"])
    return {
        "accuracy": curve[-1],
        "curve": [round(a, 4) for a in curve],
        "val_curve": [round(a, 4) for a in val_curve],
        "seconds": round(time.perf_counter() - started, 2),
    }


def train_centralised(
    job: Any,
    folder: Path,
    hospitals: list[Any],
    weights: dict,
    budgets: Sequence[int],
    test: tuple[np.ndarray, np.ndarray],
) -> dict:
    """The same site function, one call on the union of the hospitals' train splits, for each budget (epochs)."""
    images = np.concatenate([h.splits["train"].images for h in hospitals])
    labels = np.concatenate([h.splits["train"].labels for h in hospitals])
    started = time.perf_counter()
    accuracy = {}
    for epochs in budgets:
        function = site_function(job, folder, rounds=1, local_epochs=epochs)
        trained = function(images, labels, *test, weights, 0)["weights"]
        accuracy[epochs] = evaluate(function, trained, *test, 1)["accuracy"]
    return {
        "accuracy": accuracy[max(budgets)],
        "by_epochs": {str(k): v for k, v in accuracy.items()},
        "train_samples": int(len(labels)),
        "seconds": round(time.perf_counter() - started, 2),
    }


def run_accuracy(settings: Settings, echo: Callable[..., None]) -> dict:
    from datasite_setup.convert.sample_data import load_digit_images

    work = settings.workdir / "fedavg-accuracy"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    source = digits_source(settings.workdir)
    secret = _secret(settings.workdir)
    _, labels = load_digit_images()
    variants = [("fedavg", 0.0)] + ([("fedprox", settings.fedprox_mu)] if settings.fedprox_mu > 0 else [])
    runs: list[dict] = []
    for seed in range(settings.seeds):
        pool, held_out = held_out_split(labels, settings.test_fraction, seed)
        test = test_set(source, held_out, labels, settings.size)
        for scheme in SCHEMES:
            hospitals = convert_hospitals(
                source, pool, labels, work / f"{scheme}-seed{seed}", scheme, seed, settings, secret
            )
            job = make_job(
                f"acc_{scheme}_{seed}",
                channels=1,
                size=settings.size,
                settings=settings,
                seed=seed,
                rounds=settings.rounds,
                local_epochs=settings.local_epochs,
            )
            initial = job.initial_weights()
            central = train_centralised(
                job,
                work / "functions",
                hospitals,
                initial,
                [k * settings.local_epochs for k in checkpoints(settings.rounds)],
                test,
            )
            run = {
                "seed": seed,
                "scheme": scheme,
                "test_samples": int(len(test[1])),
                "pool_samples": int(len(pool)),
                "hospitals": hospital_stats(hospitals),
                "centralised": central,
            }
            for variant, mu in variants:
                function = site_function(job, work / "functions", mu=mu)
                run[variant] = train_fedavg(function, hospitals, initial, settings.rounds, test)
            runs.append(run)
            echo(
                f"  seed {seed}  {scheme:<9}  centralised {central['accuracy']:.2%}  FedAvg {run['fedavg']['accuracy']:.2%}"
                + (f"  FedProx {run['fedprox']['accuracy']:.2%}" if "fedprox" in run else "")
                + f"  (train sizes {run['hospitals']['train_sizes']})"
            )
    return {"runs": runs, "summary": summarise_accuracy(runs, settings)}


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return float(statistics.mean(values)), float(statistics.stdev(values)) if len(values) > 1 else 0.0


def summarise_accuracy(runs: list[dict], settings: Settings) -> dict:
    summary = {}
    for scheme in SCHEMES:
        chosen = [r for r in runs if r["scheme"] == scheme]
        central = [100 * r["centralised"]["accuracy"] for r in chosen]
        entry: dict = {"centralised": _mean_std(central), "budgets": {}}
        for variant in ("fedavg", "fedprox"):
            if variant not in chosen[0]:
                continue
            accuracy = [100 * r[variant]["accuracy"] for r in chosen]
            entry[variant] = _mean_std(accuracy)
            entry[f"{variant}_gap"] = _mean_std([c - a for c, a in zip(central, accuracy)])
        for rounds in checkpoints(settings.rounds):
            epochs = rounds * settings.local_epochs
            c = [100 * r["centralised"]["by_epochs"][str(epochs)] for r in chosen]
            f = [100 * r["fedavg"]["curve"][rounds - 1] for r in chosen]
            entry["budgets"][str(rounds)] = {
                "epochs": epochs,
                "centralised": _mean_std(c),
                "fedavg": _mean_std(f),
                "gap": _mean_std([a - b for a, b in zip(c, f)]),
            }
        quarter = max(1, settings.rounds // 4)
        entry["val_last_quarter_change"] = _mean_std(
            [100 * (r["fedavg"]["val_curve"][-1] - r["fedavg"]["val_curve"][-1 - quarter]) for r in chosen]
        )
        summary[scheme] = entry
    return summary


# --- overhead: three HTTP datasites -------------------------------------------------------------------------


def overhead_federation(workdir: Path, sites: int, size: int) -> Path:
    """The digits (synthetic patients kept whole) converted into ``sites`` clients at ``size`` px grayscale, cached."""
    from tests.support.datasites import convert_sample

    out = workdir / f"fedavg-overhead-c{sites}-s{size}-v{DIGITS_VERSION}"
    done = workdir / f"{out.name}.done"
    if not (done.is_file() and out.is_dir()):
        convert_sample(out, clients=sites, size=size)
        done.write_text(json.dumps({"clients": sites, "size": size}) + "\n")
    return out


def _process_tree_usage(pids: Sequence[int]) -> tuple[float, float, int]:
    """(user CPU s, system CPU s, minor page faults) of these processes and their descendants, so far."""
    import psutil

    user = system = 0.0
    faults = 0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                times = process.cpu_times()
                user, system = user + times.user, system + times.system
                faults += _minor_faults(process.pid)
        except psutil.NoSuchProcess:
            continue
    return user, system, faults


def _minor_faults(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[1].split()[7])  # field 10, minflt
    except (OSError, ValueError, IndexError):
        return 0


def run_local(
    function: Callable[..., dict], partitions: dict[str, Any], weights: dict, rounds: int
) -> list[dict]:
    """The baseline: the job's rounds with every site's call one after another in this process (and FedAvg between rounds)."""
    from researcher.aggregation import fedavg

    rows = []
    for rnd in range(rounds + 1):
        calls, updates = {}, []
        started, cpu_started = time.perf_counter(), time.process_time()
        for name, partition in partitions.items():
            train, val = partition.splits["train"], partition.splits["val"]
            call_started, call_cpu = time.perf_counter(), time.process_time()
            output = function(train.images, train.labels, val.images, val.labels, weights, rnd)
            calls[name] = {
                "seconds": time.perf_counter() - call_started,
                "cpu_seconds": time.process_time() - call_cpu,
            }
            if "weights" in output:
                updates.append((output["weights"], output["num_samples"]))
            calls[name]["val_accuracy"] = output["val"]["accuracy"]
        if updates:
            weights = fedavg(updates)
        rows.append(
            {
                "round": rnd,
                "training": rnd < rounds,
                "seconds": time.perf_counter() - started,
                "cpu_seconds": time.process_time() - cpu_started,
                "calls": calls,
            }
        )
    return rows


def calibrate_epochs(job_factory: Callable[[int], Any], folder: Path, partitions: dict[str, Any]) -> dict:
    """Local epochs so the largest site's in-process call takes about CALIBRATION_TARGET_SECONDS.

    A call costs a fixed part (model, evaluation) plus a part per epoch: both come from the
    median times of 1-epoch and 3-epoch calls.
    """
    name = max(partitions, key=lambda n: len(partitions[n].splits["train"].labels))
    train, val = partitions[name].splits["train"], partitions[name].splits["val"]
    medians = {}
    for epochs in (1, 3):
        job = job_factory(epochs)
        function = site_function(job, folder)
        weights = job.initial_weights()
        function(train.images, train.labels, val.images, val.labels, weights, 0)  # warm-up
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            function(train.images, train.labels, val.images, val.labels, weights, 0)
            timings.append(time.perf_counter() - started)
        medians[epochs] = statistics.median(timings)
    per_epoch = max((medians[3] - medians[1]) / 2, medians[1] / 10, 1e-4)
    fixed = max(0.0, medians[1] - per_epoch)
    epochs = max(1, math.ceil((CALIBRATION_TARGET_SECONDS - fixed) / per_epoch))
    return {
        "site": name,
        "one_epoch_call_seconds": round(medians[1], 3),
        "three_epoch_call_seconds": round(medians[3], 3),
        "per_epoch_seconds": round(per_epoch, 4),
        "local_epochs": epochs,
    }


def _serialisation(weights: dict, output: dict) -> dict:
    """Size and time of syft's serialisation of what travels each way: the weights (in), the site's output (out)."""
    import syft as sy

    figures = {}
    for key, value in (("weights", weights), ("output", output)):
        timings, size = [], 0
        for _ in range(5):
            started = time.perf_counter()
            blob = sy.serialize(value, to_bytes=True)
            sy.deserialize(blob, from_bytes=True)
            timings.append(time.perf_counter() - started)
            size = len(blob)
        figures[key] = {
            "bytes": size,
            "array_bytes": int(
                sum(np.asarray(v).nbytes for v in (value if key == "weights" else value["weights"]).values())
            ),
            "seconds": statistics.median(timings),
        }
    return figures


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run torch in this process on ``count`` intra-op threads (None: leave it alone)."""
    import torch

    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def start_sites(sites: Sequence[Any]) -> float:
    """Start every site at once, wait until all answer; returns the seconds it took."""
    started = time.perf_counter()
    for site in sites:
        site.start(wait=False)
    for site in sites:
        site.wait_until_answering()
    return round(time.perf_counter() - started, 1)


def connect(sites: Sequence[Any]) -> Any:
    from researcher import Federation

    with quiet():
        return Federation.from_urls(
            {s.name: s.url for s in sites}, RESEARCHER_EMAIL, {s.name: RESEARCHER_PASSWORD for s in sites}
        )


def http_job(job: Any, federation: Any, sites: Sequence[Any], checkpoint: Path) -> dict:
    """Submit ``job``, approve it as every site's owner, run it; time each of the job's own rounds from outside.

    The job's ``_run_round`` and ``_call_sites`` are wrapped (on this instance only) to time the whole
    round and its call phase, and to read the CPU the site processes and this process used meanwhile.
    """
    from datasite_setup.site.code_requests import approve, requests
    from datasite_setup.site.site_admin import login

    names = [site.name for site in sites]
    with quiet():
        job.submit(federation, reason="bench_fedavg overhead")
    for site in sites:
        admin = login(site.url, site.admin)
        for request in requests(admin):
            approve(admin, request.id)
    with quiet():
        approved = job.wait_for_approval(federation, timeout=120, poll_seconds=0.5, show=False)
    if sorted(approved) != sorted(names):
        raise BenchmarkError(f"only {approved} of {names} approved the job")

    pids = [site.process.pid for site in sites]
    rounds, calls = [], []
    run_round, call_sites = job._run_round, job._call_sites

    def timed_call_sites(*args: Any, **kwargs: Any) -> Any:
        begun = time.perf_counter()
        outcome = call_sites(*args, **kwargs)
        calls.append(time.perf_counter() - begun)
        return outcome

    def timed_round(*args: Any, **kwargs: Any) -> Any:
        sites_before, own_cpu, machine = _process_tree_usage(pids), time.process_time(), cpu_snapshot()
        begun = time.perf_counter()
        outcome = run_round(*args, **kwargs)
        wall = time.perf_counter() - begun
        after = cpu_snapshot()
        sites_after, own_used = _process_tree_usage(pids), time.process_time() - own_cpu
        user, system, faults = (a - b for a, b in zip(sites_after, sites_before))
        rounds.append(
            {
                "seconds": wall,
                "sites_cpu_seconds": user + system,
                "sites_user_seconds": user,
                "sites_system_seconds": system,
                "sites_minor_faults": int(faults),
                "researcher_cpu_seconds": own_used,
                "other_cpu_seconds": max(
                    0.0, (after.machine_busy - machine.machine_busy) - user - system - own_used
                ),
            }
        )
        return outcome

    job._call_sites, job._run_round = timed_call_sites, timed_round
    try:
        training = job.run(federation, checkpoint)
    finally:
        del job._call_sites, job._run_round
    for number, (row, call_seconds) in enumerate(zip(rounds, calls)):
        record = training.history[number]
        row.update(
            round=number,
            training=number < job.config.rounds,
            call_phase_seconds=call_seconds,
            site_seconds={name: entry.get("seconds") for name, entry in record.sites.items()},
            statuses={name: entry["status"] for name, entry in record.sites.items()},
        )
    if len(rounds) != job.config.rounds + 1 or any(
        status != "ok" for row in rounds for status in row["statuses"].values()
    ):
        raise BenchmarkError(
            f"the job did not run every round at every site: {[row['statuses'] for row in rounds]}; see the sites' logs"
        )
    return {"rounds": rounds, "final_accuracy": training.final_accuracy}


def run_overhead(settings: Settings, echo: Callable[..., None]) -> dict:
    import torch

    from datasite_setup.convert.client_data import load_client_partition
    from datasite_setup.convert.federated_format import CLIENTS_DIR
    from datasite_setup.site.site_admin import ensure_researcher, login
    from tests.support.datasites import RunningSite, free_port

    size, count = settings.overhead_size, settings.overhead_sites
    default_threads = torch.get_num_threads()
    site_threads = settings.site_threads or default_threads
    context_threads = default_threads if site_threads != default_threads else 1
    echo(f"overhead: the digits converted into {count} clients at {size} px (cached)…")
    federation_dir = overhead_federation(settings.workdir, count, size)
    names = sorted(p.name for p in (federation_dir / CLIENTS_DIR).iterdir() if p.is_dir())
    partitions = {name: load_client_partition(federation_dir / CLIENTS_DIR / name) for name in names}
    work = settings.workdir / "fedavg-overhead"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    stamp = datetime.now(UTC).strftime("%H%M%S")

    def job_factory(local_epochs: int, tag: str = "", rounds: int = settings.overhead_rounds) -> Any:
        return make_job(
            f"overhead_{stamp}{tag}",
            channels=1,
            size=size,
            settings=settings,
            seed=0,
            rounds=rounds,
            local_epochs=local_epochs,
            min_sites=count,
        )

    if settings.overhead_epochs is None:
        # on both thread settings, the faster decides: every call of the faster baseline must reach MIN_COMPUTE_SECONDS
        trials = {}
        for threads in sorted({site_threads, default_threads}):
            with torch_threads(threads):
                trials[threads] = calibrate_epochs(job_factory, work / "functions", partitions)
        fastest = min(trials, key=lambda threads: trials[threads]["per_epoch_seconds"])
        calibration = trials[fastest] | {
            "threads": fastest,
            "trials": {str(k): v["per_epoch_seconds"] for k, v in trials.items()},
        }
        local_epochs = calibration["local_epochs"]
        echo(
            f"  calibration: an epoch on {calibration['site']} takes {calibration['per_epoch_seconds']:.3f} s in-process on {_threads(calibration['threads'])} → {local_epochs} local epochs"
        )
    else:
        calibration, local_epochs = {}, settings.overhead_epochs
    job = job_factory(local_epochs)

    sites = [
        RunningSite(
            name,
            federation_dir / CLIENTS_DIR / name,
            work / f"state-{name}",
            free_port(),
            {"OMP_NUM_THREADS": str(site_threads)},
        )
        for name in names
    ]
    result: dict = {
        "sites": names,
        "local_epochs": local_epochs,
        "calibration": calibration,
        "image_size": size,
        "rounds": settings.overhead_rounds,
        "default_threads": default_threads,
        "site_threads": site_threads,
        "partitions": {
            name: {split: len(p.splits[split].labels) for split in ("train", "val")}
            for name, p in partitions.items()
        },
    }
    try:
        result["sites_start_seconds"] = start_sites(sites)
        echo(
            f"  {count} datasites (torch on {site_threads} thread(s) each) answering after {result['sites_start_seconds']:.0f} s"
        )
        for site in sites:
            ensure_researcher(
                login(site.url, site.admin),
                email=RESEARCHER_EMAIL,
                name="Bench Researcher",
                password=RESEARCHER_PASSWORD,
            )
        federation = connect(sites)
        function = job.site_function(federation).function  # the very function the sites will run
        initial = job.initial_weights()

        baselines = {f"default_{default_threads}": default_threads}
        if site_threads != default_threads:
            baselines[f"site_{site_threads}"] = site_threads
        warm = partitions[names[0]].splits
        function(
            warm["train"].images, warm["train"].labels, warm["val"].images, warm["val"].labels, initial, 0
        )  # torch's first-use costs, untimed
        result["local"] = {key: [] for key in baselines}
        for when in ("before", "after"):
            for key, threads in baselines.items():
                echo(f"  in-process baseline on {_threads(threads)} ({when})…")
                with torch_threads(threads):
                    result["local"][key] += run_local(function, partitions, initial, settings.overhead_rounds)
            if when == "before":
                echo(
                    f"  FedAvg job over HTTP: {settings.overhead_rounds} training round(s) + the final evaluation…"
                )
                main = http_job(job, federation, sites, work / "checkpoint")
                result.update(http_rounds=main["rounds"], http_final_accuracy=main["final_accuracy"])
        same_threads = (
            f"site_{site_threads}" if site_threads != default_threads else f"default_{default_threads}"
        )
        result["local_final_accuracy"] = _val_accuracy(
            result["local"][same_threads][-1], partitions
        )  # the sites' thread count: the same arithmetic
        echo(f"  the sites' calls in-process on {_threads(site_threads)} (their CPU)…")
        with torch_threads(site_threads):
            result["local_private_same_threads"] = run_local(function, partitions, initial, 1)
        train, val = warm["train"], warm["val"]
        result["serialisation"] = _serialisation(
            initial, function(train.images, train.labels, val.images, val.labels, initial, 0)
        )

        result["contexts"] = []
        contexts = [
            (f"torch on {_threads(context_threads)} per site", {"OMP_NUM_THREADS": str(context_threads)})
        ]
        for number, (label, env) in enumerate(contexts if settings.context else []):
            echo(f"  context: the sites restarted with {label}, a {CONTEXT_ROUNDS}-round job…")
            for site in sites:
                site.stop()
                site.env = env
            start_sites(sites)
            federation = connect(sites)
            other = http_job(
                job_factory(local_epochs, f"_c{number}", rounds=CONTEXT_ROUNDS),
                federation,
                sites,
                work / f"checkpoint-context{number}",
            )
            result["contexts"].append(
                {
                    "label": label,
                    "env": env,
                    "http_rounds": other["rounds"],
                    "http_final_accuracy": other["final_accuracy"],
                }
            )
    finally:
        for site in sites:
            site.stop()
    for site in sites:  # their logs (next to each state dir) stay for inspection
        shutil.rmtree(site.state_dir, ignore_errors=True)
    shutil.rmtree(work / "functions", ignore_errors=True)
    result["summary"] = summarise_overhead(result, settings)
    return result


def _val_accuracy(row: dict, partitions: dict[str, Any]) -> float:
    """Sample-weighted val accuracy of a local evaluation round (what the job's history reports)."""
    counts = {name: len(p.splits["val"].labels) for name, p in partitions.items()}
    return sum(row["calls"][name]["val_accuracy"] * counts[name] for name in counts) / sum(counts.values())


def _summarise_runs(http_rounds: list[dict], local_rows: list[dict], names: Sequence[str]) -> dict:
    """Medians of one HTTP job's warm training rounds (all but the first, when there are several) against in-process rounds of the same job."""
    training = [r for r in http_rounds if r["training"]]
    http = training[1:] if len(training) > 1 else training
    evaluation = [r for r in http_rounds if not r["training"]]
    local = [r for r in local_rows if r["training"]]
    local_eval = [r for r in local_rows if not r["training"]]
    median = statistics.median
    summary = {
        "local_round_seconds": median(r["seconds"] for r in local),
        "local_round_runs": [round(r["seconds"], 2) for r in local],
        "local_round_cpu_seconds": median(r["cpu_seconds"] for r in local),
        "local_site_seconds": {name: median(r["calls"][name]["seconds"] for r in local) for name in names},
        "local_eval_call_seconds": median(r["calls"][name]["seconds"] for r in local_eval for name in names),
        "http_round_seconds": median(r["seconds"] for r in http),
        "http_round_runs": [round(r["seconds"], 2) for r in http],
        "http_first_round_seconds": training[0]["seconds"],
        "http_warm_rounds": len(training) > 1,
        "http_call_phase_seconds": median(r["call_phase_seconds"] for r in http),
        "http_site_seconds": {name: median(r["site_seconds"][name] for r in http) for name in names},
        "http_sites_cpu_seconds": median(r["sites_cpu_seconds"] for r in http),
        "http_sites_user_seconds": median(r["sites_user_seconds"] for r in http),
        "http_sites_system_seconds": median(r["sites_system_seconds"] for r in http),
        "http_sites_minor_faults": int(median(r["sites_minor_faults"] for r in http)),
        "http_researcher_cpu_seconds": median(r["researcher_cpu_seconds"] for r in http),
        "http_other_cpu_seconds": median(r["other_cpu_seconds"] for r in http),
        "http_eval_round_seconds": evaluation[0]["seconds"],
        "http_eval_call_seconds": median(evaluation[0]["site_seconds"].values()),
    }
    summary["ratio"] = summary["http_round_seconds"] / summary["local_round_seconds"]
    summary["first_round_ratio"] = summary["http_first_round_seconds"] / summary["local_round_seconds"]
    summary["researcher_after_calls_seconds"] = (
        summary["http_round_seconds"] - summary["http_call_phase_seconds"]
    )
    summary["fixed_call_seconds"] = summary["http_eval_call_seconds"] - summary["local_eval_call_seconds"]
    summary["min_site_compute_seconds"] = min(summary["local_site_seconds"].values())
    summary["extra_cpu_seconds"] = (
        summary["http_sites_cpu_seconds"]
        + summary["http_researcher_cpu_seconds"]
        - summary["local_round_cpu_seconds"]
    )
    summary["cpu_bound_seconds"] = (
        summary["http_sites_cpu_seconds"] + summary["http_researcher_cpu_seconds"]
    ) / (os.cpu_count() or 1)
    return summary


def summarise_overhead(result: dict, settings: Settings) -> dict:
    """Against each in-process baseline; the target uses the faster one (median training round)."""
    runs = {
        key: _summarise_runs(result["http_rounds"], rows, result["sites"])
        for key, rows in result["local"].items()
    }
    chosen = min(runs, key=lambda key: runs[key]["local_round_seconds"])
    summary = dict(runs[chosen])
    summary["baseline"] = chosen
    summary["baseline_threads"] = int(chosen.rsplit("_", 1)[1])
    summary["baselines"] = {
        key: {
            "round_seconds": run["local_round_seconds"],
            "round_runs": run["local_round_runs"],
            "ratio": run["ratio"],
        }
        for key, run in runs.items()
    }
    summary["contexts"] = [
        _summarise_runs(c["http_rounds"], result["local"][chosen], result["sites"])
        for c in result.get("contexts", [])
    ]
    if "local_private_same_threads" in result:
        private = result["local_private_same_threads"][0]
        summary["site_threads"] = {
            "private_round_seconds": private["seconds"],
            "private_round_cpu_seconds": private["cpu_seconds"],
        }
    return summary


# --- the benchmark ---------------------------------------------------------------------------------------------


def _software() -> dict:
    """The versions of PySyft, numpy, pandas, torch and scikit-learn, and torch's thread count (the report's "Software" line)."""
    info = package_versions(*SYFT_PACKAGES, "torch", "scikit-learn")
    import torch

    info["torch_threads"] = torch.get_num_threads()
    return info


def run_benchmark(settings: Settings, *, echo: Callable[..., None] = print) -> Results:
    from datasite_setup.site.datasite import clear_syft_import_environment

    clear_syft_import_environment()  # before the first 'import syft' of this process
    settings.workdir.mkdir(parents=True, exist_ok=True)
    results = Results.begin(settings, machine_info() | _software())
    if settings.wait_load is not None:
        results.waited = wait_for_quiet_machine(settings.wait_load, settings.wait_timeout, echo)
    results.load_start = os.getloadavg()
    if settings.accuracy:
        import torch

        echo(
            f"accuracy: {settings.seeds} seed(s) × {len(SCHEMES)} schemes, {settings.rounds} rounds × {settings.local_epochs} local epoch(s)…"
        )
        threads = torch.get_num_threads()
        torch.set_num_threads(
            1
        )  # reproducible, and robust on a busy machine; only the overhead part's timings matter
        try:
            results.accuracy = run_accuracy(settings, echo)
        finally:
            torch.set_num_threads(threads)
    if settings.overhead:
        load = os.getloadavg()
        results.overhead = run_overhead(settings, echo)
        results.overhead["load_start"] = load
        results.overhead["load_end"] = os.getloadavg()
    results.load_end = os.getloadavg()
    results.targets = targets(results, settings)
    return results


def targets(results: Results, settings: Settings) -> list[dict]:
    rows = []
    note = "" if not settings.quick else " (quick mode: too few rounds/seeds to judge)"
    if results.accuracy:
        for scheme, limit, label in (
            ("iid", IID_TARGET, "IID"),
            ("dirichlet", DIRICHLET_TARGET, f"Dirichlet α={settings.alpha:g}"),
        ):
            gap, spread = results.accuracy["summary"][scheme]["fedavg_gap"]
            rows.append(
                {
                    "target": f"FedAvg within {limit:g} points of centralised, {label} (mean gap over {settings.seeds} seed(s)){note}",
                    "measured": f"{gap:+.2f} ± {spread:.2f} points",
                    "result": "PASS" if gap <= limit else "MISS",
                }
            )
    if results.overhead:
        summary = results.overhead["summary"]
        precondition = summary["min_site_compute_seconds"] >= MIN_COMPUTE_SECONDS
        extra = (
            ""
            if precondition
            else f" (every site's call is under {MIN_COMPUTE_SECONDS:g} s of compute here: the target does not apply)"
        )
        rows.append(
            {
                "target": f"a training round over {len(results.overhead['sites'])} HTTP datasites (torch on {_threads(results.overhead['site_threads'])} per site) "
                f"≤ {OVERHEAD_TARGET:g}× the same local training in one process (median warm round){extra}",
                "measured": f"{summary['ratio']:.2f}×",
                "result": ("PASS" if summary["ratio"] <= OVERHEAD_TARGET else "MISS")
                if precondition
                else "n/a",
            }
        )
    return rows


# --- the report ------------------------------------------------------------------------------------------------


def _pm(pair: Sequence[float], digits: int = 2) -> str:
    return f"{round(pair[0], digits) + 0.0:.{digits}f} ± {pair[1]:.{digits}f}"


def render_report(results: Results, *, heading: str = "##") -> str:
    m, s = results.machine, results.settings
    lines = [
        f"{heading} FedAvg: accuracy against centralised training, overhead of a round over HTTP — {results.started}",
        "",
        machine_line(m),
        f"- **Software**: Python {m['python']}, torch {m['torch']} ({m['torch_threads']} intra-op threads), PySyft {m['syft']}, numpy {m['numpy']}, "
        f"scikit-learn {m['scikit-learn']}, fedimg {m['fedimg_version']} at commit {m['fedimg_commit']}",
        load_line(
            results.load_start,
            results.load_end,
            max_start=MAX_START_LOAD,
            max_end=MAX_END_LOAD,
            busy_note=BUSY_NOTE,
        ),
    ]
    if results.waited:
        lines.append(waited_line(results.waited))
    if s["quick"]:
        lines.append("- **Quick mode**: a smoke run; its figures do not judge the targets")
    if results.accuracy:
        lines += ["", *_accuracy_section(results, heading + "#")]
    if results.overhead:
        lines += ["", *_overhead_section(results, heading + "#")]
    lines += ["", "| target | measured | result |", "| --- | ---: | :---: |"]
    lines += [f"| {t['target']} | {t['measured']} | **{t['result']}** |" for t in results.targets]
    return "\n".join(lines) + "\n"


def _accuracy_section(results: Results, heading: str) -> list[str]:
    s, accuracy = results.settings, results.accuracy
    summary, runs = accuracy["summary"], accuracy["runs"]
    epochs = s["rounds"] * s["local_epochs"]
    first = runs[0]
    fedprox = s["fedprox_mu"] > 0
    lines = [
        f"{heading} Accuracy: FedAvg vs centralised training on the digits",
        "",
        f"- **Data**: scikit-learn's 1,797 digits (8×8 scans). Per seed: a held-out test set of {s['test_fraction']:.0%} "
        f"({first['test_samples']} images; stratified by label, `split_train_val`) and a training pool of {first['pool_samples']}, "
        f"converted with `fedimg convert` (`--clients {s['hospitals']} --size {s['size']} --mode L --val-fraction {s['val_fraction']:g}`, "
        f"each image its own group) into {s['hospitals']} hospitals, `--scheme iid` and `--scheme dirichlet --alpha {s['alpha']:g}`; "
        "the test images go through the same `standardise` (8 → "
        f"{s['size']} px, bicubic)",
        f"- **Model and optimiser**: `SmallCNN(width={s['width']})`, SGD lr {s['lr']:g}, momentum {s['momentum']:g}, batch {s['batch_size']}, "
        "cross-entropy; every seed redraws the test split, the partition and the initial weights (shared by both contenders)",
        f"- **FedAvg**: {s['rounds']} rounds × {s['local_epochs']} local epoch(s); each round calls the generated site function "
        "(`build_site_function`, the code the sites run) for every hospital in this process, then `researcher.aggregation.fedavg` "
        "(sample-weighted); no HTTP (the transport does not change the arithmetic)"
        + (f"; **FedProx** (context): the same with μ = {s['fedprox_mu']:g}" if fedprox else ""),
        f"- **Centralised**: the same site function, one call on the union of the hospitals' train splits for {epochs} epochs "
        f"(= rounds × local epochs); the val splits are used by neither",
        f"- **Seeds**: {s['seeds']}; mean ± standard deviation over seeds; accuracy on the held-out test set, in %; "
        "gap = centralised − FedAvg, in points (positive: FedAvg is worse)",
        "",
        "| scheme | centralised acc (%) | FedAvg acc (%) | gap (points) | target | result |"
        + (" FedProx acc (%) | FedProx gap |" if fedprox else ""),
        "| --- | ---: | ---: | ---: | ---: | :---: |" + (" ---: | ---: |" if fedprox else ""),
    ]
    for scheme, limit, label in (
        ("iid", IID_TARGET, "IID"),
        ("dirichlet", DIRICHLET_TARGET, f"Dirichlet α={s['alpha']:g}"),
    ):
        entry = summary[scheme]
        gap = entry["fedavg_gap"][0]
        lines.append(
            f"| {label} | {_pm(entry['centralised'])} | {_pm(entry['fedavg'])} | {_pm(entry['fedavg_gap'])} | ≤ {limit:g} | "
            f"**{'PASS' if gap <= limit else 'MISS'}** |"
            + (f" {_pm(entry['fedprox'])} | {_pm(entry['fedprox_gap'])} |" if fedprox else "")
        )
    lines += [
        "",
        "| seed | scheme | hospitals' train sizes | top label's share per hospital | centralised (%) | FedAvg (%) | gap |"
        + (" FedProx (%) |" if fedprox else ""),
        "| ---: | --- | --- | --- | ---: | ---: | ---: |" + (" ---: |" if fedprox else ""),
    ]
    for run in runs:
        hospitals = run["hospitals"]
        central, fed = 100 * run["centralised"]["accuracy"], 100 * run["fedavg"]["accuracy"]
        lines.append(
            f"| {run['seed']} | {run['scheme']} | {', '.join(map(str, hospitals['train_sizes']))} | "
            f"{', '.join(f'{v:.0%}' for v in hospitals['top_label_share'])} | {central:.2f} | {fed:.2f} | {central - fed:+.2f} |"
            + (f" {100 * run['fedprox']['accuracy']:.2f} |" if fedprox else "")
        )
    labels = {"iid": "IID", "dirichlet": f"Dirichlet α={s['alpha']:g}"}
    lines += [
        "",
        "Gap by budget (the FedAvg run's test accuracy after R rounds; centralised trained afresh for R × local epochs epochs):",
        "",
        "| rounds | epochs | "
        + " | ".join(f"{labels[scheme]}: centralised (%) | FedAvg (%) | gap" for scheme in SCHEMES)
        + " |",
        "| ---: | ---: | " + " | ".join("---: | ---: | ---:" for _ in SCHEMES) + " |",
    ]
    for rounds in checkpoints(s["rounds"]):
        cells = []
        for scheme in SCHEMES:
            budget = summary[scheme]["budgets"][str(rounds)]
            cells.append(f"{_pm(budget['centralised'])} | {_pm(budget['fedavg'])} | {_pm(budget['gap'])}")
        lines.append(
            f"| {rounds} | {summary['iid']['budgets'][str(rounds)]['epochs']} | " + " | ".join(cells) + " |"
        )
    quarter = max(1, s["rounds"] // 4)
    seconds = [r["fedavg"]["seconds"] for r in runs], [r["centralised"]["seconds"] for r in runs]
    lines += [
        "",
        "- **Convergence**: the hospitals' pooled val accuracy (the job's own metric, not the test set) moved by "
        + ", ".join(
            f"{_pm(summary[scheme]['val_last_quarter_change'])} points ({labels[scheme]})"
            for scheme in SCHEMES
        )
        + f" over FedAvg's last {quarter} round(s)",
        f"- **Time** (torch on one thread in this part): a FedAvg run takes {statistics.median(seconds[0]):.1f} s in-process (with a test "
        f"evaluation after every round), the centralised runs at every budget {statistics.median(seconds[1]):.1f} s (medians)",
    ]
    return lines


def _threads(count: int) -> str:
    return f"{count} thread{'s' if count != 1 else ''}"


def _overhead_section(results: Results, heading: str) -> list[str]:
    s, o = results.settings, results.overhead
    summary = o["summary"]
    names = o["sites"]
    cores = results.machine["usable_cpus"]
    ser = o["serialisation"]
    calibration = o["calibration"]
    default, at_site = o["default_threads"], o["site_threads"]
    sizes = ", ".join(f"{name} {counts['train']}/{counts['val']}" for name, counts in o["partitions"].items())
    lines = [
        f"{heading} Overhead: a round over {len(names)} HTTP datasites vs the same local training in one process",
        "",
        f"- **Data**: the digits (synthetic patients kept whole) converted into {len(names)} clients at {o['image_size']} px grayscale "
        f"(train/val: {sizes})",
        f"- **Job**: `FedAvgJob(SmallCNN(width={s['width']}))`, {o['rounds']} training round(s) + the final evaluation, "
        f"{o['local_epochs']} local epochs, SGD lr {s['lr']:g} momentum {s['momentum']:g}, batch {s['batch_size']}"
        + (
            f"; local epochs calibrated so the largest site's call takes ~{CALIBRATION_TARGET_SECONDS:g} s in-process "
            f"on the faster thread setting (an epoch on {calibration['site']}: "
            + ", ".join(
                f"{seconds:.3f} s on {_threads(int(threads))}"
                for threads, seconds in calibration["trials"].items()
            )
            + ")"
            if calibration
            else " (set by --overhead-epochs)"
        ),
        f"- **Over HTTP**: {len(names)} `fedimg datasite serve` subprocesses on 127.0.0.1 (SQLite, on-disk blobs; started in "
        f"{o['sites_start_seconds']:.0f} s), torch on **{_threads(at_site)} per site** (`OMP_NUM_THREADS={at_site}`), a researcher account, "
        "`job.submit`, every owner approves (`datasite_setup.site.code_requests.approve`), `job.run`. A round is the job's own round "
        "(`FedAvgJob._run_round`, timed from outside): the global weights go to every site, the sites evaluate and train **in parallel** "
        "(one thread per site at the researcher), the results come back, FedAvg, checkpoint",
        f"- **In one process** (the baseline): the same generated function on the same partitions, the {len(names)} sites' calls "
        f"**one after another**, FedAvg between rounds; with torch on its default {_threads(default)}"
        + (f" and on {_threads(at_site)} (as at each site)" if at_site != default else "")
        + ", each before and after the HTTP job; the baseline is the faster setting (median round of both runs)",
        f"- **Cores**: {cores} usable for {len(names)} site processes. torch's default in every process is {_threads(default)}: "
        f"{len(names)} sites would run {len(names) * default} busy-waiting OpenMP threads on {cores} cores, so the sites get "
        f"{_threads(at_site)} each (one site per machine, as in a real federation, has no such contention); a context line shows the other setting",
        f"- **Same work**: final val accuracy over HTTP {o['http_final_accuracy']:.2%} vs in-process on {_threads(at_site)} {o['local_final_accuracy']:.2%}"
        f"; load average around the part: {format_load(o['load_start'])} → {format_load(o['load_end'])}",
        "",
        "| round | over HTTP (s) | in one process (s) | ratio | call phase (s) | researcher after calls (s) | CPU at sites (s) | researcher CPU (s) | other processes' CPU (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    chosen = o["local"][summary["baseline"]]
    for row in o["http_rounds"]:
        local = statistics.median(r["seconds"] for r in chosen if r["round"] == row["round"])
        kind = (
            f"{row['round']} (training{', first' if row['round'] == 0 else ''})"
            if row["training"]
            else f"{row['round']} (evaluation only)"
        )
        lines.append(
            f"| {kind} | {row['seconds']:.2f} | {local:.2f} | {row['seconds'] / local:.2f}× | {row['call_phase_seconds']:.2f} | "
            f"{row['seconds'] - row['call_phase_seconds']:.2f} | {row['sites_cpu_seconds']:.1f} | {row['researcher_cpu_seconds']:.1f} | {row['other_cpu_seconds']:.1f} |"
        )
    lines += [
        "",
        "| site | training call in one process (s) | the same call over HTTP, seen by the researcher (s) |",
        "| --- | ---: | ---: |",
    ]
    for name in names:
        lines.append(
            f"| {name} | {summary['local_site_seconds'][name]:.2f} | {summary['http_site_seconds'][name]:.2f} |"
        )
    local, http = summary["local_round_seconds"], summary["http_round_seconds"]
    slowest = max(summary["http_site_seconds"].values())
    others = "; ".join(
        f"on {_threads(int(key.rsplit('_', 1)[1]))}: {b['round_seconds']:.2f} s per round ({', '.join(f'{v:.2f}' for v in b['round_runs'])}), {b['ratio']:.2f}×"
        for key, b in summary["baselines"].items()
    )
    lines += [
        "",
        f"- **Ratio**: median {'warm training round (rounds 1…, the first is cold)' if summary['http_warm_rounds'] else 'training round (only the cold first)'} "
        f"{http:.2f} s over HTTP (rounds: {', '.join(f'{v:.2f}' for v in summary['http_round_runs'])}) vs "
        f"{local:.2f} s in one process on {_threads(summary['baseline_threads'])}: **{summary['ratio']:.2f}×**; "
        f"the first round (cold: the sites load the approved code) {summary['http_first_round_seconds']:.2f} s, {summary['first_round_ratio']:.2f}×. "
        f"In-process baselines, {others}: the faster one is the baseline",
        "",
        "Where the time goes, per training round (medians; CPU in CPU-seconds):",
        "",
        "| what | seconds | measured how |",
        "| --- | ---: | --- |",
        f"| the baseline: the sites' calls one after another in one process ({_threads(summary['baseline_threads'])}) | {local:.2f} | wall time |",
    ]
    same = summary.get("site_threads")
    if same:
        lines.append(
            f"| the same calls in one process on {_threads(at_site)} (CPU) | {same['private_round_cpu_seconds']:.2f} | CPU time |"
        )
    lines += [
        f"| CPU the sites used: user | {summary['http_sites_user_seconds']:.2f} | psutil, the site processes |",
        f"| CPU the sites used: system ({summary['http_sites_minor_faults'] / 1e6:.2f} M minor page faults) | {summary['http_sites_system_seconds']:.2f} | psutil, `/proc/PID/stat` |",
        f"| CPU the researcher used (HTTP client, (de)serialising, FedAvg, checkpoint) | {summary['http_researcher_cpu_seconds']:.2f} | process time |",
        f"| lower bound on the round: all that CPU spread over {cores} cores | {summary['cpu_bound_seconds']:.2f} | (sites + researcher CPU) ÷ cores |",
        f"| a call's fixed cost (evaluation-only round over HTTP − in-process: transport, syft's checks, assets, results) | {summary['fixed_call_seconds']:.2f} | per call, paid in parallel |",
        f"| the call phase (all sites in parallel; slowest site {slowest:.2f}) | {summary['http_call_phase_seconds']:.2f} | wall time |",
        f"| the researcher after the calls (FedAvg, checkpoint) | {summary['researcher_after_calls_seconds']:.2f} | wall time |",
        f"| **the round over HTTP** | **{http:.2f}** | wall time |",
        "",
    ]
    expected = same["private_round_cpu_seconds"] if same else float("nan")
    lines += [
        f"- **Reading it**: the sites' user CPU is {summary['http_sites_user_seconds'] / expected:.2f}× what the same calls take in one process "
        f"({expected:.2f} CPU-seconds); their system CPU {summary['http_sites_system_seconds']:.2f} s "
        f"({summary['http_sites_minor_faults'] / 1e6:.2f} M page faults per round). The sites run each approved call once: PySyft 0.9.5 would run it "
        "again on the mock twins (doubling the work; `policies.enforcement` skips that run), and glibc would fault freed training buffers in "
        "again after ingest (`datasite_setup.site.heap`; both fixed at commit eecba71, measured at 4.8–7.1× before). Other processes took "
        f"{summary['http_other_cpu_seconds']:.1f} CPU-seconds per round",
        *_context_lines(o, summary),
        f"- **Payload** (syft serialisation, in-process): the global weights {ser['weights']['bytes'] / 1e3:.0f} kB "
        f"({ser['weights']['array_bytes'] / 1e3:.0f} kB of arrays), serialise + deserialise {1e3 * ser['weights']['seconds']:.1f} ms; "
        f"a site's output {ser['output']['bytes'] / 1e3:.0f} kB, {1e3 * ser['output']['seconds']:.1f} ms: negligible against the round",
    ]
    return lines


def _context_lines(o: dict, summary: dict) -> list[str]:
    lines = []
    for context, c in zip(o.get("contexts", []), summary.get("contexts", [])):
        lines.append(
            f"- **Context: {context['label']}** (not the target: the sites restarted with "
            + ", ".join(f"`{k}={v}`" for k, v in context["env"].items())
            + f", a {CONTEXT_ROUNDS}-round job of the same configuration, final val accuracy {context['http_final_accuracy']:.2%}): the "
            + ("warm (second) training round" if c["http_warm_rounds"] else "(cold, only) training round")
            + f" took "
            f"{c['http_round_seconds']:.2f} s, **{c['ratio']:.2f}×** the baseline; the sites used {c['http_sites_user_seconds']:.1f} s user + "
            f"{c['http_sites_system_seconds']:.1f} s system CPU ({c['http_sites_minor_faults'] / 1e6:.2f} M minor faults); per site over HTTP "
            + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in c["http_site_seconds"].items())
            + f"; an evaluation-only call {c['http_eval_call_seconds']:.2f} s"
        )
    return lines


# --- command line ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_fedavg", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seeds", type=int, help="seeds of the accuracy part (default 3; 1 with --quick)")
    parser.add_argument(
        "--rounds",
        type=int,
        help="FedAvg rounds (default 20; 2 with --quick); centralised trains rounds × local epochs epochs",
    )
    parser.add_argument("--local-epochs", type=int, help="local epochs per round (default 2; 1 with --quick)")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (default 0.05)")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--width", type=int, default=16, help="SmallCNN width (default 16)")
    parser.add_argument(
        "--size",
        type=int,
        default=16,
        help="image size of the accuracy part, px, a multiple of 4 (default 16)",
    )
    parser.add_argument("--hospitals", type=int, default=5, help="hospitals of the accuracy part (default 5)")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (default 0.5)")
    parser.add_argument(
        "--test-fraction", type=float, default=0.2, help="held-out test share of the digits (default 0.2)"
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="each hospital's val share, as fedimg convert --val-fraction (default 0.2)",
    )
    parser.add_argument(
        "--fedprox-mu",
        type=float,
        default=0.0,
        help="also run FedProx with this μ as a context column (default 0: off)",
    )
    parser.add_argument("--skip-accuracy", action="store_true", help="skip the accuracy part")
    parser.add_argument(
        "--skip-overhead", action="store_true", help="skip the overhead part (no datasites are started)"
    )
    parser.add_argument(
        "--overhead-rounds", type=int, help="training rounds of the HTTP job (default 3; 1 with --quick)"
    )
    parser.add_argument(
        "--overhead-epochs",
        type=int,
        help="local epochs of the HTTP job (default: calibrated to ~3 s per site call; 1 with --quick)",
    )
    parser.add_argument(
        "--overhead-size", type=int, help="image size of the overhead part, px (default 32; 16 with --quick)"
    )
    parser.add_argument("--overhead-sites", type=int, default=3, help="HTTP datasites (default 3)")
    parser.add_argument(
        "--site-threads",
        type=int,
        default=1,
        help="torch threads per site process, as OMP_NUM_THREADS (default 1: three sites share two cores; 0: torch's default)",
    )
    parser.add_argument(
        "--no-context",
        action="store_true",
        help="skip the overhead part's context run (one round with the sites on the other thread setting)",
    )
    report.add_report_options(
        parser,
        workdir_use="cache and scratch folder",
        report_name="fedavg-report.md",
        record_help="also add the report to the FedAvg section of benchmarks/RESULTS.md",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 seed, 2 rounds of 1 epoch; overhead 1 round, 1 epoch, 16 px",
    )
    add_wait_options(parser, record_default=RECORD_WAIT_LOAD)
    args = parser.parse_args(argv)
    quick = args.quick
    workdir, report_path = report.output_paths(args)
    settings = Settings(
        seeds=args.seeds if args.seeds is not None else (1 if quick else 3),
        rounds=args.rounds if args.rounds is not None else (2 if quick else 20),
        local_epochs=args.local_epochs if args.local_epochs is not None else (1 if quick else 2),
        lr=args.lr,
        momentum=args.momentum,
        batch_size=args.batch_size,
        width=args.width,
        size=args.size,
        hospitals=args.hospitals,
        alpha=args.alpha,
        test_fraction=args.test_fraction,
        val_fraction=args.val_fraction,
        fedprox_mu=args.fedprox_mu,
        accuracy=not args.skip_accuracy,
        overhead=not args.skip_overhead,
        overhead_rounds=args.overhead_rounds if args.overhead_rounds is not None else (1 if quick else 3),
        overhead_epochs=args.overhead_epochs if args.overhead_epochs is not None else (1 if quick else None),
        overhead_size=args.overhead_size if args.overhead_size is not None else (16 if quick else 32),
        overhead_sites=args.overhead_sites,
        site_threads=args.site_threads,
        context=not args.no_context,
        workdir=workdir,
        report=report_path,
        record=args.record,
        quick=quick,
        wait_load=wait_load(args, RECORD_WAIT_LOAD),
        wait_timeout=args.wait_timeout,
    )
    if not (settings.accuracy or settings.overhead):
        parser.error("--skip-accuracy and --skip-overhead together leave nothing to run")
    positive = {
        "--seeds": settings.seeds,
        "--rounds": settings.rounds,
        "--local-epochs": settings.local_epochs,
        "--hospitals": settings.hospitals,
        "--overhead-rounds": settings.overhead_rounds,
    }
    for flag, value in positive.items():
        if value < 1:
            parser.error(f"{flag} must be at least 1")
    if settings.overhead_sites < 2:
        parser.error("--overhead-sites must be at least 2")
    if settings.site_threads < 0:
        parser.error("--site-threads must be at least 0 (0: torch's default)")
    if settings.overhead_epochs is not None and settings.overhead_epochs < 1:
        parser.error("--overhead-epochs must be at least 1")
    for flag, value in (("--size", settings.size), ("--overhead-size", settings.overhead_size)):
        if value < 4 or value % 4:
            parser.error(f"{flag} must be a multiple of 4 (SmallCNN pools twice)")
    if not 0 < settings.test_fraction < 1 or not 0 <= settings.val_fraction < 1:
        parser.error("--test-fraction must be in (0, 1) and --val-fraction in [0, 1)")
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    report.publish(
        run_benchmark(settings),
        render_report,
        title="FedAvg",
        path=settings.report,
        section=SECTION,
        record=settings.record,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
