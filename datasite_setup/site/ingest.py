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

With a ``state_dir``, ingest also keeps the partition's numeric assets as read-only
memory maps (``asset_maps``): written after an upload, and rewritten when the
version is already there but its maps are missing, name other assets, or fail
their checks (size, header, sha256, mode). The mock maps hold exactly the mocks
syft stores: the ones just uploaded, or (on a rewrite) the ones read back from syft.

Speed: PySyft's client upload (``client.upload_dataset``) serialises and signs
every array several times (~8 MB/s here). fedimg's datasite process owns the
server, so it adds the dataset through the server's own service with the admin's
context, skipping the client-side serialisation, signing and transport of every
array (syft still serialises each array twice on the server: once to size it,
once to store it).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from datasite_setup.convert.client_data import ClientPartition, load_client_partition
from datasite_setup.dataset_contract import DATASET_PREFIX, describe_dataset
from datasite_setup.errors import FedimgError
from datasite_setup.progress import progress_bar
from datasite_setup.site.asset_maps import ProgressFn, load_asset_index, verify_asset_maps, write_asset_maps
from datasite_setup.site.heap import heap_for_large_copies
from datasite_setup.site.mock import mock_partition

if TYPE_CHECKING:
    from syft.server.datasite import Datasite

log = logging.getLogger("fedimg.ingest")


@dataclass(frozen=True)
class IngestResult:
    """What ``ingest_partition`` did.

    Parameters
    ----------
    dataset : str
        The name of the dataset that holds the partition now.
    created : bool
        Whether it was uploaded now (False: this version was already there).
    removed : tuple of str
        The previous versions deleted, by name.
    num_samples : int
        Samples in the partition, all splits together.
    maps_written : bool, default False
        Whether the asset maps were (re)written now (``ingest_partition``'s ``state_dir``).
    """

    dataset: str
    created: bool
    removed: tuple[str, ...]
    num_samples: int
    maps_written: bool = False


def dataset_name(partition: ClientPartition) -> str:
    """The name of a partition's dataset: ``fedimg-<client>-<version>``.

    Parameters
    ----------
    partition : ClientPartition
        The client's partition.

    Returns
    -------
    str
        A new name for every version of the partition.

    Examples
    --------
    >>> from datasite_setup.convert.client_data import ClientPartition
    >>> dataset_name(ClientPartition("hospital_a", 8, 1, ["cat", "dog"], {}, "1a2b3c", {}))
    'fedimg-hospital_a-1a2b3c'
    """
    return f"{DATASET_PREFIX}{partition.name}-{partition.version}"


def dataset_info(partition: ClientPartition, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a researcher needs to know about a partition, machine-readable (also in the description).

    Parameters
    ----------
    partition : ClientPartition
        The client's (private) partition.
    extra : dict, optional
        Site facts to publish with it, such as the site's secure-aggregation public key.

    Returns
    -------
    dict
        ``extra`` plus the client and version, the image spec (size, mode, channels,
        ``NCHW`` layout, ``uint8``), the label map, samples and label counts per
        split, and how the federation was partitioned.

    Examples
    --------
    >>> import numpy as np
    >>> from datasite_setup.convert.client_data import ClientPartition, SplitData
    >>> train = SplitData(np.zeros((3, 1, 8, 8), np.uint8), np.array([0, 1, 1]))
    >>> val = SplitData(np.zeros((1, 1, 8, 8), np.uint8), np.array([0]))
    >>> federation = {
    ...     "image": {"size": 8, "mode": "L"},
    ...     "partition": {"scheme": "iid", "seed": 0, "val_fraction": 0.25},
    ... }
    >>> partition = ClientPartition(
    ...     "hospital_a", 8, 1, ["cat", "dog"], {"train": train, "val": val}, "1a2b3c", federation
    ... )
    >>> info = dataset_info(partition, {"secure_aggregation_public_key": "ab12"})
    >>> info["label_map"], info["split_counts"], info["label_counts"]
    ({'cat': 0, 'dog': 1}, {'train': 3, 'val': 1}, {'train': [1, 2], 'val': [1, 0]})
    >>> info["image"]["layout"], info["secure_aggregation_public_key"]
    ('NCHW', 'ab12')
    """
    image = partition.federation["image"]
    partitioning = partition.federation["partition"]
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
        "partition": {key: partitioning[key] for key in ("scheme", "seed", "val_fraction")},
    }


def build_dataset(
    private: ClientPartition, mock: ClientPartition, extra_info: dict[str, Any] | None = None
) -> Any:
    """The ``sy.Dataset`` (not yet uploaded) for a partition and its mock twin.

    Parameters
    ----------
    private : ClientPartition
        The client's partition: the assets' private data.
    mock : ClientPartition
        Its mock twin (``mock_partition``): the assets' mocks.
    extra_info : dict, optional
        Site facts published in the description (``dataset_info``).

    Returns
    -------
    syft.Dataset
        Named ``dataset_name(private)``, with ``<split>_images``, ``<split>_labels``
        per split and ``metadata``; each asset with its mock.
    """
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
    """The root admin's service context, registered so syft's helpers resolve to server-side calls.

    Parameters
    ----------
    worker : syft Datasite
        The server this process runs.

    Returns
    -------
    syft AuthedServiceContext
        An ADMIN context with the server's own key.
    """
    from syft.server.server import AuthServerContextRegistry
    from syft.service.context import AuthedServiceContext
    from syft.service.user.user_roles import ServiceRole

    context = AuthedServiceContext(server=worker, credentials=worker.verify_key, role=ServiceRole.ADMIN)
    AuthServerContextRegistry.set_server_context(worker.id, context, worker.verify_key)
    return context


def list_datasets(worker: Datasite) -> dict[str, Any]:
    """The server's active datasets, by name.

    Parameters
    ----------
    worker : syft Datasite
        The server this process runs.

    Returns
    -------
    dict of str to syft Dataset
        Deleted datasets are left out.
    """
    found = worker.services.dataset.get_all(admin_context(worker))
    datasets = found.values() if hasattr(found, "values") else found  # syft's DictTuple, or a plain list
    return {dataset.name: dataset for dataset in datasets}


def upload_server_side(worker: Datasite, dataset: Any) -> None:
    """Add a dataset through the server's own dataset service, as its admin.

    Each array is serialised on the server only (no client-side serialisation,
    signing or transport), with large copies served from the heap
    (``heap_for_large_copies``).

    Parameters
    ----------
    worker : syft Datasite
        The server this process runs.
    dataset : syft.Dataset
        The dataset to add (``build_dataset``).
    """
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
    """Delete the blob files an interrupted upload wrote (those not listed in ``journal``).

    An upload killed after its dataset record was written (it completed, only the
    journal was left) removes nothing. The journal is removed either way.

    Parameters
    ----------
    worker : syft Datasite
        The server this process runs, not yet serving.
    blob_dir : pathlib.Path
        The server's on-disk blob folder.
    journal : pathlib.Path
        The journal an upload left (``ingest_partition``); nothing is done when it does not exist.

    Returns
    -------
    int
        How many blob files were deleted.
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
    """Record ``dataset`` and the blob files that exist now in ``journal`` while the block runs.

    The journal is kept if the block fails, for ``remove_interrupted_upload``.
    """
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
    extra_info: dict[str, Any] | None = None,
    journal: Path | None = None,
    state_dir: Path | None = None,
    progress: ProgressFn | None = None,
) -> IngestResult:
    """Make the datasite hold exactly the current version of a client's partition (see the module docstring).

    Parameters
    ----------
    worker : syft Datasite
        The server this process runs.
    client_dir : pathlib.Path
        The client's folder of the federated format, ``OUT/clients/<name>``.
    show_progress : bool, default False
        Show a progress bar while the partition is read.
    extra_info : dict, optional
        Site facts to publish in the dataset's description (``dataset_info``).
    journal : pathlib.Path, optional
        A file recording which blob files existed before an upload, kept until the
        upload completes; pass it only when no other writer can add blobs while
        ingest runs (before the site serves).
    state_dir : pathlib.Path, optional
        The site's state dir: keep the partition's memory maps up to date in
        ``<state_dir>/asset-maps`` (``asset_maps``); None writes no maps.
    progress : callable, optional
        ``progress(items, *, total, description, enabled)`` yielding ``items``, in place of
        ``progress_bar`` while the partition is read and its maps written (``fedimg up``
        shows a site's ``ingesting n/N`` from ``StartReporter.bar``).

    Returns
    -------
    IngestResult
        The dataset's name, whether it was uploaded now, the previous versions removed,
        and whether the memory maps were (re)written.

    Raises
    ------
    FedimgError
        When the client's folder fails its checks (``load_client_partition``).
    """
    blob_dir = _blob_dir(worker) if journal is not None else None
    if journal is not None and blob_dir is not None:
        remove_interrupted_upload(worker, blob_dir, journal)
    partition = load_client_partition(client_dir, show_progress=show_progress, progress=progress)
    name = dataset_name(partition)
    num_samples = sum(len(data.labels) for data in partition.splits.values())
    existing = list_datasets(worker)
    created = name not in existing
    mock = None
    if created:
        mock = mock_partition(partition)
        with _journaled(blob_dir, journal, name):
            upload_server_side(worker, build_dataset(partition, mock, extra_info))
        log.info("ingested %s (%d samples)", name, num_samples)
    stale = _older_versions(existing, partition.name, name)
    context = admin_context(worker)
    for other in stale:
        worker.services.dataset.delete(context, uid=existing[other].id)
        log.info("removed the previous version %s", other)
    maps_written = False
    if state_dir is not None:
        maps_written = _update_asset_maps(
            worker,
            state_dir,
            partition,
            list_datasets(worker)[name],
            mock,
            progress=_shown(progress, show_progress),
        )
    return IngestResult(name, created, stale, num_samples, maps_written)


def partition_arrays(partition: ClientPartition) -> dict[str, np.ndarray]:
    """A partition's numeric assets by name: ``<split>_images`` and ``<split>_labels`` (as ``build_dataset``).

    Parameters
    ----------
    partition : ClientPartition
        A partition or its mock twin.

    Returns
    -------
    dict of str to numpy.ndarray
        The arrays themselves (no copy), split by split.

    Examples
    --------
    >>> import numpy as np
    >>> from datasite_setup.convert.client_data import ClientPartition, SplitData
    >>> train = SplitData(np.zeros((3, 1, 8, 8), np.uint8), np.array([0, 1, 1]))
    >>> partition = ClientPartition("a", 8, 1, ["cat", "dog"], {"train": train}, "v1", {})
    >>> {name: array.shape for name, array in partition_arrays(partition).items()}
    {'train_images': (3, 1, 8, 8), 'train_labels': (3,)}
    """
    arrays = {}
    for split, data in partition.splits.items():
        arrays[f"{split}_images"] = data.images
        arrays[f"{split}_labels"] = data.labels
    return arrays


def _update_asset_maps(
    worker: Datasite,
    state_dir: Path,
    partition: ClientPartition,
    dataset: Any,
    mock: ClientPartition | None,
    *,
    progress: ProgressFn | None,
) -> bool:
    """(Re)write the memory maps of ``dataset`` when they are not exactly its assets, intact; True if written.

    ``mock`` is the mock twin just uploaded; None reads each mock back from syft, so a
    map always holds the mock syft serves, whatever generated it.
    """
    private = partition_arrays(partition)
    action_ids = {asset.name: str(asset.action_id) for asset in dataset.asset_list if asset.name in private}
    reason = "new dataset" if mock is not None else _maps_out_of_date(state_dir, dataset.name, action_ids)
    if reason is None:
        log.info("memory maps of %s are up to date", dataset.name)
        return False
    log.info("writing the memory maps of %s (%s)", dataset.name, reason)
    mocks = partition_arrays(mock) if mock is not None else _stored_mocks(worker, action_ids)
    write_asset_maps(
        state_dir,
        dataset.name,
        {name: (action_ids[name], private[name], mocks[name]) for name in action_ids},
        progress=progress,
    )
    return True


def _shown(progress: ProgressFn | None, show_progress: bool) -> ProgressFn | None:
    """The maps' progress: ``progress`` (its display switched by ``show_progress``), else a bar or none."""
    if progress is not None:
        return functools.partial(progress, enabled=show_progress)
    return progress_bar if show_progress else None


def _maps_out_of_date(state_dir: Path, dataset: str, action_ids: dict[str, str]) -> str | None:
    """Why the maps in ``state_dir`` are not the intact maps of ``action_ids`` (by asset); None if so."""
    try:
        index = load_asset_index(state_dir)
    except FedimgError as exc:
        return str(exc)
    if not index:
        return "no index"
    found = {(entry.dataset, entry.asset, action_id) for action_id, entry in index.items()}
    if found != {(dataset, asset, action_id) for asset, action_id in action_ids.items()}:
        return "the index names other assets"
    problems = verify_asset_maps(state_dir)
    return "; ".join(problems) if problems else None


def _stored_mocks(worker: Datasite, action_ids: dict[str, str]) -> dict[str, np.ndarray]:
    """Each asset's mock as syft stores it: its action object's blob, read and deserialised.

    This is the body of syft's ``blob_storage.read`` service method without its
    service decorator, which walks every byte of the blob in Python (~2 MB/s here,
    against ~50 MB/s for the read and deserialisation).
    """
    from syft.types.uid import UID

    context = admin_context(worker)
    mocks = {}
    for asset, action_id in action_ids.items():
        twin = worker.services.action.stash.get(uid=UID(action_id), credentials=context.credentials).unwrap()
        blob = twin.mock_obj.syft_blob_storage_entry_id
        if blob is None:  # small objects are stored inline, already deserialised
            mocks[asset] = np.asarray(twin.mock_obj.syft_action_data_cache)
            continue
        entry = worker.services.blob_storage.stash.get_by_uid(context.credentials, uid=blob).unwrap()
        with worker.blob_storage_client.connect() as connection:
            retrieval = connection.read(entry.location, entry.type_, bucket_name=entry.bucket_name)
            mocks[asset] = np.asarray(retrieval.read())
    return mocks


def _older_versions(existing: dict[str, Any], client: str, current: str) -> tuple[str, ...]:
    """The names of ``client``'s datasets other than ``current``, sorted."""
    prefix = f"{DATASET_PREFIX}{client}-"
    return tuple(sorted(other for other in existing if other.startswith(prefix) and other != current))
