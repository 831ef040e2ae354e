"""The ways ``bench_ingest`` puts a partition into a fresh in-process datasite, each timed and then checked.

Every run opens a datasite on a fresh state dir, times only the upload (or the
whole ``ingest_partition``), checks the stored dataset through an admin client
(all assets there, the private train images equal to the input: a broken fast
path cannot win), and deletes the datasite, all outside the timed part.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import BenchmarkError, Stopwatch, clean, quiet
from benchmarks.ingest.partition import (
    ASSET_NAMES,
    Partition,
    build_png_dataset,
    build_sharded_dataset,
    sharded_asset_names,
)

ADMIN_EMAIL = "bench.admin@fedimg.example"
ADMIN_PASSWORD = (
    "bench-ingest-password-0123"  # a throw-away datasite in the work folder, deleted after each run
)

PLAIN = "PySyft client upload"
FEDIMG = "fedimg server-side upload"
FULL = "fedimg full ingest"
PNG = "PySyft client upload, PNG bytes"
SHARDED = "fedimg server-side upload, sharded"
LABELS = (PLAIN, FEDIMG, FULL, PNG, SHARDED)


@dataclass
class Run:
    """One timed upload of a partition, and what the check after it confirmed."""

    label: str
    size: int
    images: int
    payload_bytes: int
    seconds: float  # the timed part only (see the module docstring)
    cpu_seconds: float  # CPU time of this process (all its threads) in the timed part
    minor_faults: int  # page faults of this process in the timed part (fresh memory being mapped in)
    verified: str  # what the check after the run confirmed

    @classmethod
    def of(cls, label: str, partition: Partition, watch: Stopwatch, verified: str, payload: int) -> Run:
        """The run of ``partition`` that ``watch`` timed."""
        figures = (watch.seconds, watch.cpu, watch.faults)
        return cls(label, partition.size, partition.images, payload, *figures, verified)

    @property
    def images_per_second(self) -> float:
        """Images over the timed part's wall time."""
        return self.images / self.seconds

    @property
    def mb_per_second(self) -> float:
        """Payload (10⁶ bytes) over the timed part's wall time."""
        return self.payload_bytes / 1e6 / self.seconds


@contextlib.contextmanager
def _timed_quietly() -> Iterator[Stopwatch]:
    """Time the block with syft silenced (the silencing set up outside the timed part)."""
    watch = Stopwatch()
    with quiet():
        watch.start()
        yield watch
        watch.stop()


def _credentials() -> Any:
    from datasite_setup.site.credentials import Credentials

    return Credentials(ADMIN_EMAIL, ADMIN_PASSWORD)


def _open(state_dir: Path, size: int) -> Any:
    from datasite_setup.site.datasite import open_datasite

    clean(state_dir)
    with quiet():
        return open_datasite(f"bench-{size}", state_dir, _credentials())


def _admin_client(worker: Any) -> Any:
    credentials = _credentials()
    with quiet():
        return worker.get_guest_client(verbose=False).login(
            email=credentials.email, password=credentials.password
        )


def _close(worker: Any, state_dir: Path) -> None:
    """Stop the datasite, drop syft's process-wide references to it, delete its state: all untimed."""
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
    clean(state_dir)


def verify(client: Any, name: str, partition: Partition, *, kind: str = "array") -> str:
    """Check what the datasite stored: dataset ``name``, every asset, private train images equal to the input.

    Parameters
    ----------
    client : syft client
        An admin client of the datasite.
    name : str
        The dataset's name.
    partition : Partition
        What was uploaded.
    kind : str
        ``"array"`` (the five assets of ``build_dataset``), ``"png"`` (images as PNG
        bytes) or ``"sharded"`` (``build_sharded_dataset``: the train shards,
        concatenated, must equal the input).

    Returns
    -------
    str
        What the check confirmed (the run's ``verified``).

    Raises
    ------
    BenchmarkError
        When anything is missing or differs: the run's time would mean nothing.
    """
    import numpy as np

    with quiet():
        datasets = {dataset.name: dataset for dataset in client.datasets.get_all()}
        if name not in datasets:
            raise BenchmarkError(f"dataset {name} missing after the upload (datasets: {sorted(datasets)})")
        assets = sorted(asset.name for asset in datasets[name].assets)
        if kind == "sharded":
            expected_names = sorted(sharded_asset_names(partition))
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
    array = f"train_images {stored.dtype} {tuple(stored.shape)} equal"
    if kind == "sharded":
        return f"{len(assets)} assets, {len(shards)} train shards = {array}"
    return f"5 assets, {array}"


def run_plain(partition: Partition, state_dir: Path, *, png: bool = False) -> Run:
    """PySyft's own path: an admin client's ``upload_dataset``; the login is not timed."""
    from datasite_setup.site.ingest import build_dataset

    worker = _open(state_dir, partition.size)
    try:
        client = _admin_client(worker)
        dataset = build_png_dataset(partition) if png else build_dataset(partition.private, partition.mock)
        with _timed_quietly() as watch:
            client.upload_dataset(dataset)
        checked = verify(client, dataset.name, partition, kind="png" if png else "array")
    finally:
        _close(worker, state_dir)
    payload = partition.png_payload_bytes if png else partition.payload_bytes
    return Run.of(PNG if png else PLAIN, partition, watch, checked, payload)


def run_fedimg(partition: Partition, state_dir: Path, *, sharded: bool = False) -> Run:
    """fedimg's path: ``upload_server_side``. No client logs in before it, as in ``fedimg datasite serve``."""
    from datasite_setup.site.ingest import build_dataset, upload_server_side

    worker = _open(state_dir, partition.size)
    try:
        dataset = (
            build_sharded_dataset(partition) if sharded else build_dataset(partition.private, partition.mock)
        )
        with _timed_quietly() as watch:
            upload_server_side(worker, dataset)
        kind = "sharded" if sharded else "array"
        checked = verify(_admin_client(worker), dataset.name, partition, kind=kind)
    finally:
        _close(worker, state_dir)
    return Run.of(SHARDED if sharded else FEDIMG, partition, watch, checked, partition.payload_bytes)


def run_full_ingest(partition: Partition, state_dir: Path) -> Run:
    """fedimg's whole ``ingest_partition``: read + check the client folder, mock, build, upload."""
    from datasite_setup.site.ingest import ingest_partition

    worker = _open(state_dir, partition.size)
    try:
        with _timed_quietly() as watch:
            result = ingest_partition(worker, partition.client_dir)
        if not result.created or result.num_samples != partition.images:
            raise BenchmarkError(f"ingest_partition: {result}")
        checked = verify(_admin_client(worker), result.dataset, partition)
    finally:
        _close(worker, state_dir)
    return Run.of(FULL, partition, watch, checked, partition.payload_bytes)
