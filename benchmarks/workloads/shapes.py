"""Distinct RGB images of four shape classes at any size, generated on all cores and cached.

``bench_scale`` needs tens of thousands of images at 64 px (and thousands at 224 px),
labelled over a few classes, that fedimg's converter keeps: no two decode to the same
pixels (it would quarantine duplicates). Each image is a pure function of (seed, index):
a random background, one shape of its class (disc, square, horizontal or vertical bar)
in a random ink colour at a random place, and Gaussian noise. They are written as PNG at
the target size, so the conversion does not resize.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

SHAPES_VERSION = 1  # bump when the generated images change: invalidates the cache
CLASSES = ("disc", "square", "hbar", "vbar")
NOISE_SIGMA = 8.0

_state: dict = {}


def _init(out: str, size: int, seed: int) -> None:
    _state.update(out=Path(out), size=size, seed=seed)


def shape_image(seed: int, index: int, size: int):
    """One image: ``(label, uint8 array (size, size, 3))``, a pure function of its arguments.

    Parameters
    ----------
    seed, index : int
        Which image.
    size : int
        Its side in px.

    Returns
    -------
    tuple[int, np.ndarray]
        The class index (into ``CLASSES``) and the pixels.

    Examples
    --------
    >>> label, pixels = shape_image(0, 7, 16)
    >>> CLASSES[label] in CLASSES, pixels.shape, pixels.dtype.name
    (True, (16, 16, 3), 'uint8')
    >>> bool((shape_image(0, 7, 16)[1] == pixels).all()), bool((shape_image(0, 8, 16)[1] == pixels).all())
    (True, False)
    """
    import numpy as np

    rng = np.random.default_rng([seed, index])
    label = int(rng.integers(len(CLASSES)))
    half = max(2, int(size * rng.uniform(0.15, 0.3)))
    cy, cx = (int(v) for v in rng.integers(half, size - half + 1, size=2))
    y, x = np.mgrid[0:size, 0:size]
    if CLASSES[label] == "disc":
        mask = (y - cy) ** 2 + (x - cx) ** 2 <= half**2
    elif CLASSES[label] == "square":
        mask = (abs(y - cy) <= half) & (abs(x - cx) <= half)
    elif CLASSES[label] == "hbar":
        mask = (abs(y - cy) <= max(1, half // 3)) & (abs(x - cx) <= half)
    else:
        mask = (abs(y - cy) <= half) & (abs(x - cx) <= max(1, half // 3))
    background = rng.uniform(0, 110, size=3).astype(np.float32)
    ink = rng.uniform(140, 255, size=3).astype(np.float32)
    pixels = np.where(mask[..., None], ink, background)
    pixels = pixels + rng.normal(0.0, NOISE_SIGMA, size=pixels.shape).astype(np.float32)
    return label, np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _write_range(bounds: tuple[int, int]) -> int:
    from PIL import Image

    out, size, seed = _state["out"], _state["size"], _state["seed"]
    for index in range(*bounds):
        label, pixels = shape_image(seed, index, size)
        buffer = io.BytesIO()
        # level 1: these are only the converter's input, written once; it re-encodes them anyway
        Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG", compress_level=1)
        (out / CLASSES[label] / f"img_{index:06d}.png").write_bytes(buffer.getvalue())
    return bounds[1] - bounds[0]


def generate_shapes(workdir: Path, count: int, size: int, *, seed: int = 0) -> Path:
    """``count`` distinct ``size``-px RGB PNGs in one folder per class, cached by parameters.

    Parameters
    ----------
    workdir : Path
        The cache is ``shapes-n<count>-s<size>-seed<seed>-v<version>`` there.
    count : int
        How many images.
    size : int
        Their side in px.
    seed : int
        Each image is a pure function of (seed, its index).

    Returns
    -------
    Path
        The folder of class folders (``CLASSES``).

    Examples
    --------
    >>> source = generate_shapes(Path("work"), 12, 16)
    >>> sorted(p.name for p in source.iterdir()), len(list(source.rglob("*.png")))
    (['disc', 'hbar', 'square', 'vbar'], 12)
    """
    name = f"shapes-n{count}-s{size}-seed{seed}-v{SHAPES_VERSION}"
    source, done = workdir / name, workdir / f"{name}.done"
    if done.is_file() and source.is_dir():
        return source
    shutil.rmtree(source, ignore_errors=True)
    staging = workdir / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    for label in CLASSES:
        (staging / label).mkdir(parents=True)
    chunk = 500
    ranges = [(start, min(start + chunk, count)) for start in range(0, count, chunk)]
    workers = min(os.cpu_count() or 1, max(1, len(ranges)))
    if workers == 1:
        _init(str(staging), size, seed)
        written = sum(map(_write_range, ranges))
    else:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers, _init, (str(staging), size, seed)) as pool:
            written = sum(pool.imap_unordered(_write_range, ranges))
    assert written == count, (written, count)
    os.rename(staging, source)
    done.write_text(
        json.dumps({"count": count, "size": size, "seed": seed, "version": SHAPES_VERSION}) + "\n"
    )
    return source
