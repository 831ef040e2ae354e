"""Read one client's partition of the federated format into arrays, checking it as it goes.

This is what a datasite ingests: decoded images as ``uint8`` arrays in
``(N, C, H, W)`` order (what ``torch.nn.Conv2d`` takes), integer labels in the
federation's label map, and a metadata table with no source names.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datasite_setup.convert.federated_format import (
    CHECKSUMS_FILE,
    METADATA_FILE,
    SPLITS,
    SampleRow,
    load_federation,
    read_checksums_file,
    read_metadata_csv,
    sha256_bytes,
)
from datasite_setup.errors import FedimgError
from datasite_setup.progress import progress_bar

METADATA_TABLE_COLUMNS = ("sample_id", "group_id", "label", "split")


@dataclass
class SplitData:
    """One split of a client: its images, labels and pseudonyms, in the same order.

    Parameters
    ----------
    images : np.ndarray
        ``(N, C, H, W)`` uint8.
    labels : np.ndarray
        ``(N,)`` int64, indices into the federation's label map.
    sample_ids : list of str
        Each sample's pseudonym.
    group_ids : list of str
        Each sample's group (patient) pseudonym.
    """

    images: np.ndarray
    labels: np.ndarray
    sample_ids: list[str] = field(default_factory=list)
    group_ids: list[str] = field(default_factory=list)


@dataclass
class ClientPartition:
    """Everything a datasite ingests for one client.

    Parameters
    ----------
    name : str
        The client's name.
    image_size : int
        Width and height of every image.
    channels : int
        1 (``L``) or 3 (``RGB``).
    label_names : list of str
        The labels, in label-index order.
    splits : dict of str to SplitData
        ``"train"`` and ``"val"``.
    version : str
        16 hex digits of the sha256 of the client's manifests: changes whenever the partition does.
    federation : dict
        The whole ``federation.json`` manifest.
    """

    name: str
    image_size: int
    channels: int
    label_names: list[str]
    splits: dict[str, SplitData]
    version: str
    federation: dict[str, Any]

    @property
    def label_counts(self) -> dict[str, list[int]]:
        """Samples per label index, for each split."""
        return {
            split: np.bincount(data.labels, minlength=len(self.label_names)).tolist()
            for split, data in self.splits.items()
        }

    def metadata_table(self) -> dict[str, list[Any]]:
        """Columns of the non-identifying metadata asset (pseudonyms, label index, split).

        Returns
        -------
        dict of str to list
            ``METADATA_TABLE_COLUMNS``, each a list with one entry per sample (train first).
        """
        table: dict[str, list[Any]] = {column: [] for column in METADATA_TABLE_COLUMNS}
        for split, data in self.splits.items():
            table["sample_id"] += data.sample_ids
            table["group_id"] += data.group_ids
            table["label"] += data.labels.tolist()
            table["split"] += [split] * len(data.labels)
        return table


def find_federation_root(client_dir: Path) -> Path:
    """The federation's output folder of a client folder.

    Parameters
    ----------
    client_dir : Path
        ``OUT/clients/<name>``.

    Returns
    -------
    Path
        ``OUT``, absolute.

    Examples
    --------
    >>> from pathlib import Path
    >>> find_federation_root(Path("/data/fed/clients/st_marys"))
    PosixPath('/data/fed')
    """
    return client_dir.absolute().parent.parent


def load_client_partition(
    client_dir: Path, *, show_progress: bool = False, progress: Callable[..., Iterable[Any]] | None = None
) -> ClientPartition:
    """Read and check one client's partition, ``OUT/clients/<name>``.

    Every file is checked against the manifests as it is read (sha256, image size).

    Parameters
    ----------
    client_dir : Path
        The client's folder in the output of ``fedimg convert``.
    show_progress : bool, default False
        Show a progress bar per split.
    progress : callable, optional
        ``progress(items, *, total, description, enabled)`` yielding ``items``, in place of
        ``progress_bar`` (a site's start-up reporter counts the images it has read).

    Returns
    -------
    ClientPartition
        The decoded images, labels and pseudonyms of both splits.

    Raises
    ------
    FedimgError
        Naming the file, when anything is missing, altered or not of this federation.

    Examples
    --------
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from datasite_setup.convert.pipeline import ConvertOptions, convert
    >>> from datasite_setup.convert.imaging import ImageSpec
    >>> for i in range(8):
    ...     Path(f"src/{i % 2}").mkdir(parents=True, exist_ok=True)
    ...     Image.new("L", (8, 8), 30 * i).save(f"src/{i % 2}/{i}.png")
    >>> options = ConvertOptions(Path("src"), Path("fed"), "iid", num_clients=2, val_fraction=0.25,
    ...                          spec=ImageSpec(size=16, mode="L"), secret_file=Path("secret"),
    ...                          show_progress=False)
    >>> _ = convert(options)
    >>> partition = load_client_partition(Path("fed/clients/client_0"))
    >>> partition.splits["train"].images.shape, partition.splits["val"].images.dtype
    ((3, 1, 16, 16), dtype('uint8'))
    >>> partition.label_names, sum(len(split.labels) for split in partition.splits.values())
    (['0', '1'], 4)
    """
    client_dir = Path(client_dir)
    federation = load_federation(find_federation_root(client_dir))
    name = client_dir.absolute().name
    if name not in federation["clients"]:
        raise FedimgError(
            f"{client_dir}: not a client of this federation (clients: {', '.join(federation['clients'])})"
        )
    summary = federation["clients"][name]
    metadata = _read_checked(client_dir / METADATA_FILE, summary["metadata_sha256"])
    sums = _read_checked(client_dir / CHECKSUMS_FILE, summary["checksums_sha256"])
    rows, checksums = read_metadata_csv(metadata), read_checksums_file(sums)
    label_map = federation["label_map"]
    size, channels = federation["image"]["size"], 1 if federation["image"]["mode"] == "L" else 3
    splits = {}
    for split in SPLITS:
        split_rows = [row for row in rows if row.split == split]
        images = np.empty((len(split_rows), channels, size, size), dtype=np.uint8)
        shown = (progress or progress_bar)(
            split_rows, total=len(split_rows), description=f"Reading {name} {split}", enabled=show_progress
        )
        for i, row in enumerate(shown):
            images[i] = _read_image(client_dir, row.file_name, checksums.get(row.file_name), size, channels)
        splits[split] = _split_data(images, split_rows, label_map)
    # Changes whenever the partition does: a site re-ingests on a new version.
    version = sha256_bytes((summary["metadata_sha256"] + summary["checksums_sha256"]).encode())[:16]
    label_names = sorted(label_map, key=label_map.get)
    return ClientPartition(name, size, channels, label_names, splits, version, federation)


def _split_data(images: np.ndarray, rows: list[SampleRow], label_map: dict[str, int]) -> SplitData:
    labels = np.array([label_map[row.label] for row in rows], dtype=np.int64)
    return SplitData(images, labels, [row.sample_id for row in rows], [row.group_id for row in rows])


def _read_checked(path: Path, expected_sha256: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FedimgError(
            f"{path}: cannot be read ({exc.strerror}); run 'fedimg verify' on the federation"
        ) from exc
    if sha256_bytes(data) != expected_sha256:
        raise FedimgError(
            f"{path}: sha256 differs from federation.json; run 'fedimg verify' on the federation"
        )
    return data


def _read_image(
    client_dir: Path, file_name: str, expected_sha256: str | None, size: int, channels: int
) -> np.ndarray:
    path = client_dir / file_name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FedimgError(
            f"{path}: cannot be read ({exc.strerror}); run 'fedimg verify' on the federation"
        ) from exc
    if sha256_bytes(data) != expected_sha256:
        raise FedimgError(f"{path}: sha256 differs from SHA256SUMS; run 'fedimg verify' on the federation")
    with Image.open(io.BytesIO(data)) as image:
        array = np.asarray(image)
    if array.shape[:2] != (size, size):
        raise FedimgError(
            f"{path}: {array.shape[1]}x{array.shape[0]} pixels, federation.json says {size}x{size}"
        )
    return array[None] if channels == 1 else array.transpose(2, 0, 1)
