"""``bench_scale``'s input: one site's converted partition of N shape images, and what it weighs.

The images are ``workloads.shapes``' generated PNGs (four classes), converted with
``fedimg convert``'s own code into one client (``--clients 1 --scheme iid --mode RGB``,
train/val 80/20) and cached in the work folder; the generated source is deleted once
the conversion is cached (only the converted partition is read again).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from benchmarks.harness import BenchmarkError, secret_file
from benchmarks.workloads.shapes import SHAPES_VERSION, generate_shapes
from datasite_setup.convert.federated_format import SCHEMA_VERSION  # a new format: convert again


def scale_federation(workdir: Path, images: int, size: int, *, seed: int = 0) -> Path:
    """A converted federation with one client of ``images`` shape images at ``size`` px RGB, cached.

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

    Raises
    ------
    BenchmarkError
        When the converter did not accept every image.
    """
    from datasite_setup.convert.imaging import ImageSpec
    from datasite_setup.convert.pipeline import ConvertOptions, convert

    out = workdir / f"scale-fed-n{images}-s{size}-seed{seed}-v{SHAPES_VERSION}-f{SCHEMA_VERSION}"
    done = out.parent / f"{out.name}.done"
    if not (done.is_file() and out.is_dir()):
        source = generate_shapes(workdir, images, size, seed=seed)
        result = convert(
            ConvertOptions(
                source=source,
                out=out,
                scheme="iid",
                num_clients=1,
                spec=ImageSpec(size=size, mode="RGB"),
                seed=seed,
                overwrite=True,
                secret_file=secret_file(workdir, "scale-secret"),
                show_progress=False,
            )
        )
        accepted = result.federation["inputs"]["accepted"]
        if result.exit_code != 0 or accepted != images:
            raise BenchmarkError(
                f"fedimg convert accepted {accepted} of {images} images; see {out / 'quarantine.jsonl'}"
            )
        done.write_text(json.dumps({"images": images, "size": size, "seed": seed}) + "\n")
        shutil.rmtree(source, ignore_errors=True)
        source.with_name(f"{source.name}.done").unlink(missing_ok=True)
    (client,) = sorted(p for p in (out / "clients").iterdir() if p.is_dir())
    return client


def label_count(client_dir: Path) -> int:
    """The number of labels of the federation ``client_dir`` belongs to (its ``label_map``)."""
    from datasite_setup.convert.client_data import find_federation_root
    from datasite_setup.convert.federated_format import load_federation

    return len(load_federation(find_federation_root(client_dir))["label_map"])


def partition_bytes(partition) -> dict:
    """Bytes of a loaded partition's private arrays: images and labels, per split and in all.

    Parameters
    ----------
    partition : ClientPartition
        ``load_client_partition``'s result.

    Returns
    -------
    dict
        ``images`` (the count), ``train``, ``val`` (sample counts), ``image_bytes`` and ``bytes``
        (images and labels of both splits: what "the partition's bytes" means in the targets).
    """
    splits = partition.splits
    return {
        "images": sum(len(s.labels) for s in splits.values()),
        "train": len(splits["train"].labels),
        "val": len(splits["val"].labels),
        "image_bytes": sum(s.images.nbytes for s in splits.values()),
        "bytes": sum(s.images.nbytes + s.labels.nbytes for s in splits.values()),
    }
