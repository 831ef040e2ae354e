"""``bench_ingest``'s input: one client's converted partition, in memory, and the datasets built from it.

The partition is ``bench_convert``'s generated JPEGs converted with ``fedimg
convert``'s own code (one client, IID), read back with its mock; the datasets
are ``build_dataset``'s five assets, and two context representations: the images
as PNG bytes, and the image arrays cut into shards.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness import BenchmarkError, secret_file
from benchmarks.workloads.images import GENERATOR_VERSION, generate_images
from datasite_setup.convert.federated_format import SCHEMA_VERSION  # a new format: convert again

ASSET_NAMES = ("metadata", "train_images", "train_labels", "val_images", "val_labels")
SHARD_BYTES = 16 * 2**20  # context row: image assets cut into shards of at most this many bytes


def prepare_federation(workdir: Path, images: int, size: int, *, seed: int = 0) -> Path:
    """A converted federation with one client of ``images`` images at ``size`` px RGB, cached in ``workdir``.

    The sources are bench_convert's generated JPEGs (distinct 256-px digits),
    converted with ``fedimg convert``'s own code: ``--clients 1 --scheme iid``.

    Parameters
    ----------
    workdir : Path
        The benchmark's work folder.
    images : int
        The client's images.
    size : int
        Image size in px.
    seed : int
        Seeds the generated images and the conversion.

    Returns
    -------
    Path
        The client folder.
    """
    from datasite_setup.convert.imaging import ImageSpec
    from datasite_setup.convert.pipeline import ConvertOptions, convert

    out = workdir / f"ingest-fed-n{images}-s{size}-seed{seed}-v{GENERATOR_VERSION}-f{SCHEMA_VERSION}"
    done = out.parent / f"{out.name}.done"
    if not (done.is_file() and out.is_dir()):
        source = generate_images(workdir, images, seed=seed)
        result = convert(
            ConvertOptions(
                source=source,
                out=out,
                scheme="iid",
                num_clients=1,
                spec=ImageSpec(size=size, mode="RGB"),
                seed=seed,
                overwrite=True,
                secret_file=secret_file(workdir, "ingest-secret"),
                show_progress=False,
            )
        )
        accepted = result.federation["inputs"]["accepted"]
        if result.exit_code != 0 or accepted != images:
            raise BenchmarkError(
                f"fedimg convert accepted {accepted} of {images} images; see {out / 'quarantine.jsonl'}"
            )
        cached = {"images": images, "size": size, "seed": seed, "generator_version": GENERATOR_VERSION}
        done.write_text(json.dumps(cached) + "\n")
    (client,) = sorted(p for p in (out / "clients").iterdir() if p.is_dir())
    return client


@dataclass
class Partition:
    """One size's input, in memory: the private partition, its mock, (context row) the images as PNG bytes."""

    size: int
    client_dir: Path
    private: Any
    mock: Any
    read_seconds: float
    mock_seconds: float
    png: dict = field(default_factory=dict)  # split -> (private PNG bytes list, mock PNG bytes list)

    @property
    def images(self) -> int:
        """Images in the partition, train and val."""
        return sum(len(split.labels) for split in self.private.splits.values())

    @property
    def payload_bytes(self) -> int:
        """Bytes of every array handed to the upload, private and mock twins (not the metadata tables)."""
        return sum(
            split.images.nbytes + split.labels.nbytes
            for p in (self.private, self.mock)
            for split in p.splits.values()
        )

    @property
    def png_payload_bytes(self) -> int:
        """The same with the images as PNG bytes."""
        png = sum(len(b) for private, mock in self.png.values() for b in (*private, *mock))
        labels = sum(split.labels.nbytes for p in (self.private, self.mock) for split in p.splits.values())
        return png + labels


def load_partition(client_dir: Path, size: int, *, with_png: bool) -> Partition:
    """Read a client folder and make its mock, timing both; ``with_png``: also the images as PNG bytes."""
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
    """``build_dataset``'s assets, each images array cut into ``<split>_images_NNN`` shards.

    A shard holds at most ``shard_bytes`` of images (at least one image).
    """
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


def sharded_asset_names(partition: Partition, shard_bytes: int = SHARD_BYTES) -> list[str]:
    """The asset names ``build_sharded_dataset`` gives the partition."""
    names = [name for name in ASSET_NAMES if not name.endswith("_images")]
    for split, data in partition.private.splits.items():
        per_shard = max(1, shard_bytes // max(1, data.images[0].nbytes))
        names += [f"{split}_images_{number:03d}" for number in range(-(-len(data.images) // per_shard))]
    return names
