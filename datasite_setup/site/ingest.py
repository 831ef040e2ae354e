"""Ingest a client's partition into its datasite: one ``sy.Dataset``, five assets, each with a mock twin.

Assets (private data, mock twin of the same shape, dtype and label counts):

- ``train_images`` / ``val_images``: ``uint8`` arrays ``(N, C, H, W)``
- ``train_labels`` / ``val_labels``: ``int64`` arrays ``(N,)``, indices into the label map
- ``metadata``: a table of ``sample_id``, ``group_id`` (pseudonyms), ``label``, ``split``

The dataset is named ``fedimg-<client>-<version>`` where the version is derived
from the partition's manifests. Ingest is idempotent (the same version is never
uploaded twice); a changed partition is uploaded as a new dataset, and the old
versions are deleted only once the new one is complete. The dataset record is
written last, so an ingest killed halfway leaves no dataset visible; with a
``journal`` (what ``fedimg datasite serve`` passes: it ingests before it serves,
so nothing else writes blobs meanwhile) the blob files such an ingest had
written are removed when the site starts again.

Speed: PySyft's client upload (``client.upload_dataset``) serialises and signs
every array several times (~8 MB/s here). fedimg's datasite process owns the
server, so it adds the dataset through the server's own service with the admin's
context, skipping the client-side serialisation, signing and transport of every
array (syft still serialises each array twice on the server: once to size it,
once to store it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasite_setup.convert.client_data import ClientPartition, load_client_partition
from datasite_setup.dataset_contract import DATASET_PREFIX, describe_dataset
from datasite_setup.site.heap import heap_for_large_copies
from datasite_setup.site.mock import mock_partition

if TYPE_CHECKING:
    from syft.server.datasite import Datasite

log = logging.getLogger("fedimg.ingest")


@dataclass(frozen=True)
class IngestResult:
    dataset: str
    created: bool
    removed: tuple[str, ...]
    num_samples: int


def dataset_name(partition: ClientPartition) -> str:
    return f"{DATASET_PREFIX}{partition.name}-{partition.version}"


def dataset_info(partition: ClientPartition, extra: dict | None = None) -> dict:
    """What a researcher needs to know about the partition, machine-readable (also in the description).

    ``extra`` adds site facts such as the site's secure-aggregation public key.
    """
    image = partition.federation["image"]
    return (extra or {}) | {
        "client": partition.name,
        "version": partition.version,
        "image": {
            "size": image["size"],
            "mode": image["mode"],
            "channels": partition.channels,
            "layout": "NCHW",
            "dtype": "uint8",
        },
        "label_map": {label: index for index, label in enumerate(partition.label_names)},
        "split_counts": {split: len(data.labels) for split, data in partition.splits.items()},
        "label_counts": partition.label_counts,
        "partition": {
            key: partition.federation["partition"][key] for key in ("scheme", "seed", "val_fraction")
        },
    }


def build_dataset(private: ClientPartition, mock: ClientPartition, extra_info: dict | None = None) -> Any:
    """The ``sy.Dataset`` (not yet uploaded) for a partition and its mock twin."""
    import pandas as pd
    import syft as sy

    info = dataset_info(private, extra_info)
    description = describe_dataset(info, private.label_names)
    dataset = sy.Dataset(
        name=dataset_name(private),
        summary=f"fedimg partition {private.name} v{private.version}",
        description=description,
    )
    for split in private.splits:
        real, fake = private.splits[split], mock.splits[split]
        dataset.add_asset(
            sy.Asset(
                name=f"{split}_images",
                description=f"{split} images, uint8 (N, C, H, W)",
                data=real.images,
                mock=fake.images,
            )
        )
        dataset.add_asset(
            sy.Asset(
                name=f"{split}_labels",
                description=f"{split} labels, int64 indices into the label map",
                data=real.labels,
                mock=fake.labels,
            )
        )
    dataset.add_asset(
        sy.Asset(
            name="metadata",
            description="one row per sample: pseudonymous sample_id and group_id, label index, split",
            data=pd.DataFrame(private.metadata_table()),
            mock=pd.DataFrame(mock.metadata_table()),
        )
    )
    return dataset


def admin_context(worker: Datasite) -> Any:
    """The root admin's service context, registered so syft's helpers resolve to server-side calls."""
    from syft.server.server import AuthServerContextRegistry
    from syft.service.context import AuthedServiceContext
    from syft.service.user.user_roles import ServiceRole

    context = AuthedServiceContext(server=worker, credentials=worker.verify_key, role=ServiceRole.ADMIN)
    AuthServerContextRegistry.set_server_context(worker.id, context, worker.verify_key)
    return context


def list_datasets(worker: Datasite) -> dict[str, Any]:
    """Active datasets by name."""
    datasets = worker.services.dataset.get_all(admin_context(worker))
    return {
        dataset.name: dataset for dataset in (datasets.values() if hasattr(datasets, "values") else datasets)
    }


def upload_server_side(worker: Datasite, dataset: Any) -> None:
    """Add ``dataset`` through the server's own dataset service (each array serialised once, into blob storage)."""
    from syft.client.datasite_client import add_default_uploader

    context = admin_context(worker)
    admin = worker.services.user.get_current_user(context)
    dataset = add_default_uploader(admin, dataset)
    for i, asset in enumerate(dataset.asset_list):
        asset = add_default_uploader(admin, asset)
        asset.syft_server_location, asset.syft_client_verify_key = worker.id, worker.verify_key
        dataset.asset_list[i] = asset
    dataset.mb_size = sum(_megabytes(asset.data) for asset in dataset.asset_list)
    dataset.check()
    with heap_for_large_copies():
        worker.services.dataset.add(context, dataset)


def remove_interrupted_upload(worker: Datasite, blob_dir: Path, journal: Path) -> int:
    """Delete the blob files an interrupted upload wrote (those not listed in ``journal``); return how many.

    An upload killed after its dataset record was written (it completed, only the
    journal was left) removes nothing.
    """
    if not journal.exists():
        return 0
    record = json.loads(journal.read_text())
    leftovers: list[Path] = []
    if record["dataset"] not in list_datasets(worker):
        before = set(record["blob_files"])
        leftovers = (
            [path for path in blob_dir.iterdir() if path.name not in before] if blob_dir.is_dir() else []
        )
    for path in leftovers:
        path.unlink()
    journal.unlink()
    if leftovers:
        log.warning(
            "removed %d blob file(s) of an ingest of %s that was interrupted",
            len(leftovers),
            record["dataset"],
        )
    return len(leftovers)


@contextlib.contextmanager
def _journaled(blob_dir: Path | None, journal: Path | None, dataset: str) -> Iterator[None]:
    """Record ``dataset`` and the blob files that exist now in ``journal`` while the block runs (kept if it fails)."""
    if blob_dir is None or journal is None:
        yield
        return
    names = sorted(path.name for path in blob_dir.iterdir()) if blob_dir.is_dir() else []
    temporary = journal.with_name(journal.name + ".tmp")
    temporary.write_text(json.dumps({"dataset": dataset, "blob_files": names}))
    os.replace(temporary, journal)
    yield
    journal.unlink()


def _blob_dir(worker: Datasite) -> Path | None:
    """The on-disk blob folder of ``worker``; None for other blob stores."""
    directory = getattr(getattr(worker.blob_store_config, "client_config", None), "base_directory", None)
    return Path(directory) if directory is not None else None


def _megabytes(value: Any) -> float:
    nbytes = getattr(value, "nbytes", None)
    if nbytes is None and hasattr(value, "memory_usage"):
        nbytes = int(value.memory_usage(deep=True).sum())
    return (nbytes or 0) / 2**20


def ingest_partition(
    worker: Datasite,
    client_dir: Path,
    *,
    show_progress: bool = False,
    extra_info: dict | None = None,
    journal: Path | None = None,
) -> IngestResult:
    """Make the datasite hold exactly the current version of ``client_dir`` (see the module docstring).

    ``journal``: a file recording which blob files existed before an upload, kept
    until the upload completes; pass it only when no other writer can add blobs
    while ingest runs (before the site serves).
    """
    blob_dir = _blob_dir(worker) if journal is not None else None
    if blob_dir is not None:
        remove_interrupted_upload(worker, blob_dir, journal)
    partition = load_client_partition(client_dir, show_progress=show_progress)
    name = dataset_name(partition)
    existing = list_datasets(worker)
    created = name not in existing
    if created:
        with _journaled(blob_dir, journal, name):
            upload_server_side(worker, build_dataset(partition, mock_partition(partition), extra_info))
        log.info("ingested %s (%d samples)", name, sum(len(d.labels) for d in partition.splits.values()))
    stale = tuple(
        sorted(
            other
            for other in existing
            if other.startswith(f"{DATASET_PREFIX}{partition.name}-") and other != name
        )
    )
    context = admin_context(worker)
    for other in stale:
        worker.services.dataset.delete(context, uid=existing[other].id)
        log.info("removed the previous version %s", other)
    return IngestResult(name, created, stale, sum(len(d.labels) for d in partition.splits.values()))
