"""Benchmark: ingesting one client's partition into a datasite, PySyft's client upload against fedimg's.

The same converted partition (one client of N distinct images, default 2,000,
at each of ``--sizes``, default 64 and 128 px RGB) is put into a fresh
in-process datasite by

* **PySyft client upload** (the plain way): an admin client logged in to the
  datasite (``worker.get_guest_client().login(...)``) calls
  ``client.upload_dataset(dataset)``: every array goes through the client API
  (serialised, signed, verified, deserialised, serialised again into blob storage);
* **fedimg server-side upload**: ``datasite_setup.site.ingest.upload_server_side``,
  the datasite's own dataset service called with the admin's context (what
  ``fedimg datasite serve`` does before it serves).

Both upload the same ``sy.Dataset`` (``datasite_setup.site.ingest.build_dataset``:
five assets, each with its mock twin), built from arrays already in memory;
only the upload is timed. A third row times fedimg's whole
``ingest_partition`` (read and check the client folder, generate the mock,
build, upload). Two context rows (``--no-context`` skips them) try other asset
representations: the images as lists of PNG bytes through the client path, and
the image arrays cut into shards of at most 16 MiB through fedimg's path (large
arrays cross size cliffs in PySyft's serialiser and glibc's allocator).

Every run uses a fresh datasite (new state dir) and is checked afterwards
through an admin client: the dataset is there with its five assets and the
private ``train_images`` equal the input, so a broken fast path cannot win.
Runs are interleaved (plain, fedimg, full ingest, context rows, per size, per
repeat) and the median of ``--repeats`` is reported.

Usage (from the repository root)::

    python -m benchmarks.bench_ingest [--images N] [--sizes 64,128] [--repeats 3] [--workdir benchmarks/_work]
                                      [--report PATH] [--record] [--quick] [--wait-load 1.5]

The report (markdown, plus a ``.json`` twin) goes to ``--report`` (default
``WORKDIR/ingest-report.md``); ``--record`` also adds it to the "Dataset ingest"
section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import logging
import os
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.bench_convert import (
    BENCH_SECRET,
    GENERATOR_VERSION,
    JPEG_QUALITY,
    NOISE_SIGMA,
    SOURCE_SIZE,
    _clean,
    generate_images,
)
from benchmarks.machine import (
    add_wait_options,
    contention,
    contention_line,
    cpu_snapshot,
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
    heading="## Dataset ingest",
    intro="fedimg's server-side ingest against PySyft's client upload (`.venv/bin/python -m benchmarks.bench_ingest --record`; how to read it: [README.md](README.md)).",
    marker="<!-- dataset ingest results: newest first; `python -m benchmarks.bench_ingest --record` inserts below -->",
)
SYFT_PACKAGES = ("syft", "numpy", "pandas")  # their versions go in the report beside machine_info()

SPEED_TARGET = 5.0  # fedimg's upload ≥ 5× PySyft's client upload, same partition, same run
ISSUE_PLAIN_MB_S = 7.0  # the issue's figure for PySyft's plain upload of one uint8 array, in-process
MAX_START_LOAD = 0.5  # flag a report whose 1-minute load at start was above this
MAX_END_LOAD = 1.5  # the benchmark keeps one core busy itself: flag only above this at the end

ADMIN_EMAIL = "bench.admin@fedimg.example"
ADMIN_PASSWORD = (
    "bench-ingest-password-0123"  # a throw-away datasite in the work folder, deleted after each run
)
ASSET_NAMES = ("metadata", "train_images", "train_labels", "val_images", "val_labels")

SHARD_BYTES = 16 * 2**20  # context row: image assets cut into shards of at most this many bytes

PLAIN = "PySyft client upload"
FEDIMG = "fedimg server-side upload"
FULL = "fedimg full ingest"
PNG = "PySyft client upload, PNG bytes"
SHARDED = "fedimg server-side upload, sharded"
LABELS = (PLAIN, FEDIMG, FULL, PNG, SHARDED)


class BenchmarkError(RuntimeError):
    """A run produced a wrong or incomplete dataset: its time would mean nothing."""


# --- inputs ---------------------------------------------------------------------------------


def prepare_federation(workdir: Path, images: int, size: int, *, seed: int = 0) -> Path:
    """A converted federation with one client holding ``images`` images at ``size`` px RGB, cached in ``workdir``.

    The sources are bench_convert's generated JPEGs (distinct 256-px digits),
    converted with ``fedimg convert``'s own code: ``--clients 1 --scheme iid``.
    Returns the client folder.
    """
    from datasite_setup.convert.imaging import ImageSpec
    from datasite_setup.convert.pipeline import ConvertOptions, convert
    from datasite_setup.private_file import write_private_file

    out = workdir / f"ingest-fed-n{images}-s{size}-seed{seed}-v{GENERATOR_VERSION}"
    done = out.parent / f"{out.name}.done"
    if not (done.is_file() and out.is_dir()):
        source = generate_images(workdir, images, seed=seed)
        secret = workdir / "ingest-secret"
        if not secret.exists():
            write_private_file(secret, (BENCH_SECRET + "\n").encode())
        result = convert(
            ConvertOptions(
                source=source,
                out=out,
                scheme="iid",
                num_clients=1,
                spec=ImageSpec(size=size, mode="RGB"),
                seed=seed,
                overwrite=True,
                secret_file=secret,
                show_progress=False,
            )
        )
        accepted = result.federation["inputs"]["accepted"]
        if result.exit_code != 0 or accepted != images:
            raise BenchmarkError(
                f"fedimg convert accepted {accepted} of {images} images; see {out / 'quarantine.jsonl'}"
            )
        done.write_text(
            json.dumps({"images": images, "size": size, "seed": seed, "generator_version": GENERATOR_VERSION})
            + "\n"
        )
    (client,) = sorted(p for p in (out / "clients").iterdir() if p.is_dir())
    return client


@dataclass
class Partition:
    """One size's input, in memory: the private partition, its mock, and (context row) the images as PNG bytes."""

    size: int
    client_dir: Path
    private: Any
    mock: Any
    read_seconds: float
    mock_seconds: float
    png: dict = field(default_factory=dict)  # split -> (private PNG bytes list, mock PNG bytes list)

    @property
    def images(self) -> int:
        return sum(len(split.labels) for split in self.private.splits.values())

    @property
    def payload_bytes(self) -> int:
        """Bytes of every array handed to the upload, private and mock twins (the metadata tables excluded)."""
        return sum(
            split.images.nbytes + split.labels.nbytes
            for p in (self.private, self.mock)
            for split in p.splits.values()
        )

    @property
    def png_payload_bytes(self) -> int:
        return sum(len(b) for private, mock in self.png.values() for b in (*private, *mock)) + sum(
            split.labels.nbytes for p in (self.private, self.mock) for split in p.splits.values()
        )


def load_partition(client_dir: Path, size: int, *, with_png: bool) -> Partition:
    from datasite_setup.convert.client_data import load_client_partition
    from datasite_setup.site.mock import mock_partition

    started = time.perf_counter()
    private = load_client_partition(client_dir)
    read_seconds = time.perf_counter() - started
    started = time.perf_counter()
    mock = mock_partition(private)
    mock_seconds = time.perf_counter() - started
    partition = Partition(size, client_dir, private, mock, read_seconds, mock_seconds)
    if with_png:
        partition.png = _png_bytes(client_dir, mock)
    return partition


def _png_bytes(client_dir: Path, mock: Any) -> dict:
    """The partition's own PNG files (in the private arrays' order) and the mock images PNG-encoded."""
    from PIL import Image

    from datasite_setup.convert.federated_format import METADATA_FILE, read_metadata_csv

    rows = read_metadata_csv((client_dir / METADATA_FILE).read_bytes())
    result = {}
    for split, data in mock.splits.items():
        private = [(client_dir / row.file_name).read_bytes() for row in rows if row.split == split]
        fake = []
        for array in data.images:
            buffer = io.BytesIO()
            Image.fromarray(array.transpose(1, 2, 0)).save(buffer, format="PNG")
            fake.append(buffer.getvalue())
        result[split] = (private, fake)
    return result


def build_png_dataset(partition: Partition) -> Any:
    """``build_dataset``'s five assets, with the images as lists of PNG bytes instead of uint8 arrays."""
    import syft as sy

    from datasite_setup.site.ingest import build_dataset

    dataset = build_dataset(partition.private, partition.mock)
    for i, asset in enumerate(dataset.asset_list):
        split, _, kind = asset.name.partition("_")
        if kind == "images":
            private, fake = partition.png[split]
            dataset.asset_list[i] = sy.Asset(
                name=asset.name,
                description=f"{split} images, PNG bytes, one per image",
                data=private,
                mock=fake,
            )
    return dataset


def build_sharded_dataset(partition: Partition, shard_bytes: int = SHARD_BYTES) -> Any:
    """``build_dataset``'s assets, each images array cut into ``<split>_images_NNN`` shards of at most ``shard_bytes``."""
    import syft as sy

    from datasite_setup.site.ingest import build_dataset

    base = build_dataset(partition.private, partition.mock)
    dataset = sy.Dataset(name=base.name, summary=base.summary, description=base.description)
    for asset in base.asset_list:
        split, _, kind = asset.name.partition("_")
        if kind != "images":
            dataset.add_asset(asset)
            continue
        real, fake = partition.private.splits[split].images, partition.mock.splits[split].images
        per_shard = max(1, shard_bytes // max(1, real[0].nbytes))
        for number, start in enumerate(range(0, len(real), per_shard)):
            stop = min(start + per_shard, len(real))
            dataset.add_asset(
                sy.Asset(
                    name=f"{asset.name}_{number:03d}",
                    description=f"{split} images {start}..{stop - 1}, uint8 (n, C, H, W)",
                    data=real[start:stop],
                    mock=fake[start:stop],
                )
            )
    return dataset


# --- one run --------------------------------------------------------------------------------


@dataclass
class Run:
    label: str
    size: int
    images: int
    payload_bytes: int
    seconds: float  # the timed part only (see the module docstring)
    cpu_seconds: float  # CPU time of this process (all its threads) in the timed part
    minor_faults: int  # page faults of this process in the timed part (fresh memory being mapped in)
    verified: str  # what the check after the run confirmed

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds

    @property
    def mb_per_second(self) -> float:
        return self.payload_bytes / 1e6 / self.seconds


class Stopwatch:
    """Wall time, CPU time and minor page faults of this process between ``start()`` and ``stop()``."""

    def start(self) -> None:
        gc.collect()
        self._faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        self.seconds, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu
        self.faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - self._faults


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow syft's prints, progress bars and its start-up log line (the signing key's hash, logged CRITICAL)."""
    syft_logger = logging.getLogger("syft")
    level = syft_logger.level
    syft_logger.setLevel(logging.CRITICAL + 1)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        syft_logger.setLevel(level)


def _credentials() -> Any:
    from datasite_setup.site.credentials import Credentials

    return Credentials(ADMIN_EMAIL, ADMIN_PASSWORD)


def _open(state_dir: Path, size: int) -> Any:
    from datasite_setup.site.datasite import open_datasite

    _clean(state_dir)
    with quiet():
        return open_datasite(f"bench-{size}", state_dir, _credentials())


def _admin_client(worker: Any) -> Any:
    credentials = _credentials()
    with quiet():
        return worker.get_guest_client(verbose=False).login(
            email=credentials.email, password=credentials.password
        )


def _close(worker: Any, state_dir: Path) -> None:
    """Stop the datasite, drop syft's process-wide references to it, delete its state (all outside the timed part)."""
    from syft.client.api import APIRegistry
    from syft.server.server import AuthServerContextRegistry

    worker.stop()
    engine = getattr(getattr(worker, "db", None), "engine", None)
    if engine is not None:
        engine.dispose()
    for key in [k for k in APIRegistry.__api_registry__ if k[0] == worker.id]:
        del APIRegistry.__api_registry__[key]
    prefix = f"{worker.id}-"
    for key in [k for k in AuthServerContextRegistry.__server_context_registry__ if k.startswith(prefix)]:
        del AuthServerContextRegistry.__server_context_registry__[key]
    gc.collect()
    _clean(state_dir)


def verify(client: Any, name: str, partition: Partition, *, kind: str = "array") -> str:
    """Raise ``BenchmarkError`` unless the datasite holds dataset ``name`` with every asset and the real train images.

    ``kind``: ``"array"`` (the five assets of ``build_dataset``), ``"png"`` (images as PNG bytes) or
    ``"sharded"`` (``build_sharded_dataset``: the train shards, concatenated, must equal the input).
    """
    import numpy as np

    with quiet():
        datasets = {dataset.name: dataset for dataset in client.datasets.get_all()}
        if name not in datasets:
            raise BenchmarkError(f"dataset {name} missing after the upload (datasets: {sorted(datasets)})")
        assets = sorted(asset.name for asset in datasets[name].assets)
        if kind == "sharded":
            expected_names = sorted(build_sharded_dataset_names(partition))
            if assets != expected_names:
                raise BenchmarkError(f"dataset {name} has assets {assets}, expected {expected_names}")
            shards = [
                datasets[name].assets[asset].data for asset in assets if asset.startswith("train_images_")
            ]
            stored = (
                np.concatenate(shards)
                if shards and all(isinstance(shard, np.ndarray) for shard in shards)
                else None
            )
        else:
            if assets != sorted(ASSET_NAMES):
                raise BenchmarkError(f"dataset {name} has assets {assets}, expected {sorted(ASSET_NAMES)}")
            stored = datasets[name].assets["train_images"].data
    if kind == "png":
        expected = partition.png["train"][0]
        if not isinstance(stored, list) or stored != expected:
            raise BenchmarkError(
                f"dataset {name}: the stored train PNG bytes differ from the input ({type(stored).__name__})"
            )
        return f"5 assets, {len(stored)} train PNGs equal"
    expected = partition.private.splits["train"].images
    if (
        not isinstance(stored, np.ndarray)
        or stored.dtype != expected.dtype
        or not np.array_equal(stored, expected)
    ):
        raise BenchmarkError(
            f"dataset {name}: the stored private train_images differ from the input ({type(stored).__name__})"
        )
    if kind == "sharded":
        return f"{len(assets)} assets, {len(shards)} train shards = train_images {stored.dtype} {tuple(stored.shape)} equal"
    return f"5 assets, train_images {stored.dtype} {tuple(stored.shape)} equal"


def build_sharded_dataset_names(partition: Partition, shard_bytes: int = SHARD_BYTES) -> list[str]:
    names = [name for name in ASSET_NAMES if not name.endswith("_images")]
    for split, data in partition.private.splits.items():
        per_shard = max(1, shard_bytes // max(1, data.images[0].nbytes))
        names += [f"{split}_images_{number:03d}" for number in range(-(-len(data.images) // per_shard))]
    return names


def run_plain(partition: Partition, state_dir: Path, *, png: bool = False) -> Run:
    """PySyft's own path: an admin client's ``upload_dataset``; the login is not timed."""
    from datasite_setup.site.ingest import build_dataset

    worker = _open(state_dir, partition.size)
    try:
        client = _admin_client(worker)
        dataset = build_png_dataset(partition) if png else build_dataset(partition.private, partition.mock)
        watch = Stopwatch()
        with quiet():
            watch.start()
            client.upload_dataset(dataset)
            watch.stop()
        checked = verify(client, dataset.name, partition, kind="png" if png else "array")
    finally:
        _close(worker, state_dir)
    payload = partition.png_payload_bytes if png else partition.payload_bytes
    return Run(
        PNG if png else PLAIN,
        partition.size,
        partition.images,
        payload,
        watch.seconds,
        watch.cpu,
        watch.faults,
        checked,
    )


def run_fedimg(partition: Partition, state_dir: Path, *, sharded: bool = False) -> Run:
    """fedimg's path: ``upload_server_side``. No client logs in before it, as in ``fedimg datasite serve``."""
    from datasite_setup.site.ingest import build_dataset, upload_server_side

    worker = _open(state_dir, partition.size)
    try:
        dataset = (
            build_sharded_dataset(partition) if sharded else build_dataset(partition.private, partition.mock)
        )
        watch = Stopwatch()
        with quiet():
            watch.start()
            upload_server_side(worker, dataset)
            watch.stop()
        checked = verify(
            _admin_client(worker), dataset.name, partition, kind="sharded" if sharded else "array"
        )
    finally:
        _close(worker, state_dir)
    return Run(
        SHARDED if sharded else FEDIMG,
        partition.size,
        partition.images,
        partition.payload_bytes,
        watch.seconds,
        watch.cpu,
        watch.faults,
        checked,
    )


def run_full_ingest(partition: Partition, state_dir: Path) -> Run:
    """fedimg's whole ``ingest_partition``: read + check the client folder, mock, build, upload."""
    from datasite_setup.site.ingest import ingest_partition

    worker = _open(state_dir, partition.size)
    try:
        watch = Stopwatch()
        with quiet():
            watch.start()
            result = ingest_partition(worker, partition.client_dir)
            watch.stop()
        if not result.created or result.num_samples != partition.images:
            raise BenchmarkError(f"ingest_partition: {result}")
        checked = verify(_admin_client(worker), result.dataset, partition)
    finally:
        _close(worker, state_dir)
    return Run(
        FULL,
        partition.size,
        partition.images,
        partition.payload_bytes,
        watch.seconds,
        watch.cpu,
        watch.faults,
        checked,
    )


# --- the benchmark ---------------------------------------------------------------------------


@dataclass
class Settings:
    images: int
    sizes: list
    repeats: int
    context: bool
    workdir: Path
    report: Path
    record: bool
    quick: bool
    seed: int = 0
    wait_load: float | None = None
    wait_timeout: float = 600.0


@dataclass
class Results(report.ReportHeader):
    waited: dict = field(default_factory=dict)  # the wait for a quiet machine before the timed runs
    preparation: dict = field(default_factory=dict)  # size -> convert / read / mock seconds
    runs: dict = field(default_factory=dict)  # "size|label" -> list[Run as dict]
    summary: dict = field(default_factory=dict)  # size -> label -> median row, plus ratios
    targets: list = field(default_factory=list)
    contention: dict = field(default_factory=dict)


def run_benchmark(settings: Settings, *, echo=print) -> Results:
    from datasite_setup.site.datasite import clear_syft_import_environment

    clear_syft_import_environment()  # before the first 'import syft' of this process
    settings.workdir.mkdir(parents=True, exist_ok=True)
    results = Results.begin(settings, machine_info() | package_versions(*SYFT_PACKAGES))
    partitions: dict[int, Partition] = {}
    for size in settings.sizes:
        echo(f"preparing {settings.images} images at {size} px RGB in {settings.workdir} (cached)…")
        started = time.perf_counter()
        client_dir = prepare_federation(settings.workdir, settings.images, size, seed=settings.seed)
        convert_seconds = time.perf_counter() - started
        partitions[size] = load_partition(client_dir, size, with_png=settings.context)
        p = partitions[size]
        if p.images != settings.images:
            raise BenchmarkError(f"{client_dir}: {p.images} images, expected {settings.images}")
        results.preparation[str(size)] = {
            "generate_and_convert_seconds": round(convert_seconds, 2),
            "read_seconds": round(p.read_seconds, 2),
            "mock_seconds": round(p.mock_seconds, 2),
            "payload_bytes": p.payload_bytes,
            "largest_array_bytes": max(split.images.nbytes for split in p.private.splits.values()),
            "png_payload_bytes": p.png_payload_bytes if settings.context else None,
        }
    with quiet():
        import syft  # noqa: F401  (imported once, outside every timed part)

    if settings.wait_load is not None:
        results.waited = wait_for_quiet_machine(settings.wait_load, settings.wait_timeout, echo)
    results.load_start = os.getloadavg()
    runs: dict[str, list[Run]] = {}
    state = settings.workdir / "ingest-state"
    cpu_before = cpu_snapshot()

    def record(run: Run) -> None:
        runs.setdefault(f"{run.size}|{run.label}", []).append(run)
        echo(
            f"  {run.size:>4} px  {run.label:<34} {run.images:>6} images  {run.seconds:7.2f} s  {run.mb_per_second:7.1f} MB/s  "
            f"{run.images_per_second:8.1f} images/s  ({run.verified})"
        )

    for repeat in range(settings.repeats):
        echo(f"repeat {repeat + 1}/{settings.repeats} (N = {settings.images})")
        for size in settings.sizes:
            partition = partitions[size]
            record(run_plain(partition, state / "plain"))
            record(run_fedimg(partition, state / "fedimg"))
            record(run_full_ingest(partition, state / "full"))
            if settings.context:
                record(run_plain(partition, state / "png", png=True))
                record(run_fedimg(partition, state / "sharded", sharded=True))
    results.load_end = os.getloadavg()
    results.contention = contention(cpu_before, cpu_snapshot())  # the benchmark is this one process
    shutil.rmtree(state, ignore_errors=True)
    results.runs = {
        key: [
            asdict(r) | {"images_per_second": r.images_per_second, "mb_per_second": r.mb_per_second}
            for r in group
        ]
        for key, group in runs.items()
    }
    results.summary, results.targets = _summarise(runs, settings)
    return results


def _median_row(group: list[Run]) -> dict:
    seconds = statistics.median(r.seconds for r in group)
    return {
        "images": group[0].images,
        "payload_bytes": group[0].payload_bytes,
        "seconds": seconds,
        "images_per_second": group[0].images / seconds,
        "mb_per_second": group[0].payload_bytes / 1e6 / seconds,
        "runs_images_per_second": [round(r.images_per_second, 1) for r in group],
        "cpu_seconds": statistics.median(r.cpu_seconds for r in group),
        "minor_faults": int(statistics.median(r.minor_faults for r in group)),
        "verified": group[-1].verified,
    }


def _summarise(runs: dict[str, list[Run]], settings: Settings) -> tuple[dict, list]:
    summary: dict = {}
    targets = []
    for size in settings.sizes:
        rows = {label: _median_row(runs[f"{size}|{label}"]) for label in LABELS if f"{size}|{label}" in runs}
        plain, fedimg, full = rows[PLAIN], rows[FEDIMG], rows[FULL]
        pairs = zip(runs[f"{size}|{PLAIN}"], runs[f"{size}|{FEDIMG}"])
        ratios = {
            "upload_ratio": fedimg["images_per_second"] / plain["images_per_second"],
            # runs of the same repeat ran back to back: their ratio cancels slow drift in machine load
            "upload_ratio_per_repeat": [round(p.seconds / f.seconds, 2) for p, f in pairs],
            "cpu_ratio": plain["cpu_seconds"] / fedimg["cpu_seconds"] if fedimg["cpu_seconds"] else None,
            "full_ingest_ratio": full["images_per_second"] / plain["images_per_second"],
        }
        if PNG in rows:
            ratios["png_ratio"] = rows[PNG]["images_per_second"] / plain["images_per_second"]
        if SHARDED in rows:
            ratios["sharded_ratio"] = rows[SHARDED]["images_per_second"] / plain["images_per_second"]
        summary[str(size)] = {"rows": rows, **ratios}
        targets.append(
            {
                "target": f"{FEDIMG} ≥ {SPEED_TARGET:g}× {PLAIN} at {size} px (images/s, same partition, same run)",
                "measured": f"{ratios['upload_ratio']:.2f}×",
                "result": "PASS" if ratios["upload_ratio"] >= SPEED_TARGET else "MISS",
            }
        )
    return summary, targets


# --- the report ----------------------------------------------------------------------------


def _mb(value: float) -> str:
    return f"{value / 1e6:.1f}"


def render_report(results: Results, *, heading: str = "##") -> str:
    m, s, summary = results.machine, results.settings, results.summary
    n = s["images"]
    lines = [
        f"{heading} fedimg ingest vs PySyft's client upload — {results.started}",
        "",
        machine_line(m),
        f"- **Software**: Python {m['python']}, PySyft {m['syft']}, numpy {m['numpy']}, pandas {m['pandas']}, Pillow {m['pillow']}, "
        f"fedimg {m['fedimg_version']} at commit {m['fedimg_commit']}",
        load_line(results.load_start, results.load_end, max_start=MAX_START_LOAD, max_end=MAX_END_LOAD),
    ]
    if results.waited:
        lines.append(waited_line(results.waited))
    lines += [
        contention_line(results.contention),
        f"- **Input**: one client of N = {n} distinct images (bench_convert's generated {SOURCE_SIZE}-px RGB JPEGs, quality {JPEG_QUALITY}, "
        f"digits tinted and noised σ={NOISE_SIGMA:g}), converted with `fedimg convert --clients 1 --scheme iid --mode RGB --size S` "
        f"(train/val 80/20) at S = {', '.join(f'{size} px' for size in s['sizes'])}",
        "- **Dataset**: `datasite_setup.site.ingest.build_dataset`: train/val images `uint8 (N, 3, S, S)`, train/val labels `int64`, "
        "a metadata table; every asset with its generated mock twin of the same shape. **Payload** = bytes of every array, "
        "private and mock (both are serialised and stored); MB = 10⁶ bytes",
        f"- **{PLAIN}**: admin client logged in to an in-process datasite (login not timed), `client.upload_dataset(dataset)`",
        f"- **{FEDIMG}**: `upload_server_side(worker, dataset)` (the datasite's dataset service with the admin's context; "
        "no client logged in before, as in `fedimg datasite serve`)",
        f"- **{FULL}**: `ingest_partition(worker, client_dir)`: read and check the client folder (sha256 of every file, PNG decode), "
        "generate the mock, build, upload",
        (
            f"- **Context rows** (not targets): *{PNG}*: the same dataset with the images as lists of PNG bytes "
            f"(the partition's own files; the mock PNG-encoded) through the client path; *{SHARDED}*: each images array cut into "
            f"assets `<split>_images_NNN` of at most {SHARD_BYTES // 2**20} MiB, through fedimg's path"
            if s["context"]
            else "- **Context rows** (PNG bytes, shards): skipped (`--no-context`)"
        ),
        f"- **Runs**: {s['repeats']} repeat(s), each on a fresh datasite (new state dir, SQLite + on-disk blobs), interleaved; "
        "median reported; only the upload (or the whole `ingest_partition`) is timed; after each run an admin client checks the dataset "
        "(5 assets, private `train_images` equal to the input); CPU and minor page faults are this process's during the timed part"
        + ("; quick mode" if s["quick"] else ""),
        "",
        "| size | way | images | payload (MB) | time (s) | MB/s | images/s | per run (images/s) | CPU (s) | page faults |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for size in s["sizes"]:
        for label, row in summary[str(size)]["rows"].items():
            lines.append(
                f"| {size} px | {label} | {row['images']} | {_mb(row['payload_bytes'])} | {row['seconds']:.2f} | {row['mb_per_second']:.1f} | "
                f"{row['images_per_second']:.1f} | {', '.join(f'{v:.1f}' for v in row['runs_images_per_second'])} | {row['cpu_seconds']:.1f} | {row['minor_faults'] / 1000:.0f} k |"
            )
    lines.append("")
    for size in s["sizes"]:
        entry, prep = summary[str(size)], results.preparation[str(size)]
        rows = entry["rows"]
        lines.append(
            f"- **{size} px** (largest array: train_images, {prep['largest_array_bytes'] / 1e6:.1f} MB): fedimg's upload {rows[FEDIMG]['mb_per_second']:.1f} MB/s ({rows[FEDIMG]['images_per_second']:.0f} images/s) "
            f"vs PySyft's client upload {rows[PLAIN]['mb_per_second']:.1f} MB/s ({rows[PLAIN]['images_per_second']:.0f} images/s): "
            f"**{entry['upload_ratio']:.2f}×** (per repeat {', '.join(f'{r:.2f}×' for r in entry['upload_ratio_per_repeat'])}"
            + (f"; CPU seconds {entry['cpu_ratio']:.2f}×" if entry.get("cpu_ratio") else "")
            + f"); the whole `ingest_partition` (read {prep['read_seconds']:.1f} s and mock {prep['mock_seconds']:.1f} s "
            f"when measured alone) {entry['full_ingest_ratio']:.2f}× the client upload alone"
            + (
                f"; PNG bytes through the client path {entry['png_ratio']:.2f}× the client upload of uint8 arrays"
                if "png_ratio" in entry
                else ""
            )
            + (
                f"; fedimg's path with {SHARD_BYTES // 2**20}-MiB shards {entry['sharded_ratio']:.2f}× it"
                if "sharded_ratio" in entry
                else ""
            )
        )
    lines.append(
        f"- **Reference** (the issue): PySyft's plain upload of one uint8 array, in-process, ~{ISSUE_PLAIN_MB_S:g} MB/s on this class of machine"
    )
    lines += ["", "| target | measured | result |", "| --- | ---: | :---: |"]
    lines += [f"| {t['target']} | {t['measured']} | **{t['result']}** |" for t in results.targets]
    return "\n".join(lines) + "\n"


# --- command line --------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sizes takes comma-separated pixel sizes, e.g. 64,128 (got {text!r})"
        ) from None
    if not sizes or any(not 8 <= size <= 1024 for size in sizes) or len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError(f"--sizes takes distinct sizes from 8 to 1024 px (got {text!r})")
    return sizes


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_ingest", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--images", type=int, help="N, images in the client's partition (default 2000; 60 with --quick)"
    )
    parser.add_argument(
        "--sizes", type=_sizes, help="image sizes in px, comma-separated (default 64,128; 64 with --quick)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        help="interleaved runs of each way; the median is reported (default 3; 1 with --quick)",
    )
    parser.add_argument(
        "--no-context",
        action="store_true",
        help="skip the context rows (PNG bytes through the client path, shards through fedimg's)",
    )
    report.add_report_options(
        parser,
        workdir_use="cache for generated inputs and scratch datasites",
        report_name="ingest-report.md",
        record_help="also add the report to the Dataset ingest section of benchmarks/RESULTS.md",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 60 images, 64 px, 1 repeat")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated images (default 0)")
    add_wait_options(parser, when="before the timed runs,")
    args = parser.parse_args(argv)
    images = args.images if args.images is not None else (60 if args.quick else 2000)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    sizes = args.sizes or ([64] if args.quick else [64, 128])
    if images < 10 or repeats < 1:
        parser.error("--images must be at least 10 (train and val both need images) and --repeats at least 1")
    workdir, report_path = report.output_paths(args)
    return Settings(
        images=images,
        sizes=sizes,
        repeats=repeats,
        context=not args.no_context,
        workdir=workdir,
        report=report_path,
        record=args.record,
        quick=args.quick,
        seed=args.seed,
        wait_load=wait_load(args),
        wait_timeout=args.wait_timeout,
    )


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    report.publish(
        run_benchmark(settings),
        render_report,
        title="dataset ingest",
        path=settings.report,
        section=SECTION,
        record=settings.record,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
