"""Distinct 256×256 RGB JPEGs made from scikit-learn's digits, generated on all cores and cached.

``bench_convert`` converts them; ``bench_ingest`` converts them once more into the
partition it uploads. No two decode to the same pixels: fedimg would quarantine
duplicates and skew the comparison.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

GENERATOR_VERSION = 1  # bump when the generated images change: invalidates the cache
SOURCE_SIZE = 256
JPEG_QUALITY = 90
NOISE_SIGMA = 5.0

_generator_state: dict = {}


def _init_generator(digits, labels, out: str, seed: int) -> None:
    _generator_state.update(digits=digits, labels=labels, out=Path(out), seed=seed)


def _generate_range(bounds: tuple[int, int]) -> int:
    """Write images ``start..stop-1``; each is a pure function of (seed, index)."""
    import numpy as np
    from PIL import Image

    digits, labels, out, seed = (_generator_state[k] for k in ("digits", "labels", "out", "seed"))
    start, stop = bounds
    for index in range(start, stop):
        rng = np.random.default_rng([seed, index])
        k = int(rng.integers(len(digits)))
        glyph = Image.fromarray(digits[k], mode="L").resize(
            (SOURCE_SIZE, SOURCE_SIZE), Image.Resampling.BICUBIC
        )
        shade = np.asarray(glyph, dtype=np.float32)[..., None] / 255.0
        shade = np.roll(shade, tuple(int(s) for s in rng.integers(-24, 25, size=2)), axis=(0, 1))
        background = rng.uniform(0, 110, size=3).astype(np.float32)
        ink = rng.uniform(140, 255, size=3).astype(np.float32)
        pixels = background + (ink - background) * shade
        pixels += rng.normal(0.0, NOISE_SIGMA, size=pixels.shape).astype(np.float32)
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        target = out / str(int(labels[k])) / f"img_{index:06d}.jpg"
        target.write_bytes(buffer.getvalue())
    return stop - start


def generate_images(workdir: Path, count: int, *, seed: int = 0) -> Path:
    """``count`` distinct 256×256 RGB JPEGs in class folders (label = digit), cached by parameters.

    Each image is a digit from scikit-learn's digits, upscaled, shifted, tinted
    (random ink and background colours) and noised, so no two decode to the same
    pixels.

    Parameters
    ----------
    workdir : Path
        The benchmark's work folder: the cache is ``src-n<count>-seed<seed>-v<version>`` there.
    count : int
        How many images.
    seed : int
        Each image is a pure function of (seed, its index).

    Returns
    -------
    Path
        The folder of class folders ``0`` … ``9``.

    Examples
    --------
    >>> source = generate_images(Path("work"), 12)
    >>> sorted(p.name for p in source.iterdir())[:3], len(list(source.rglob("*.jpg")))
    (['0', '1', '2'], 12)
    """
    name = f"src-n{count}-seed{seed}-v{GENERATOR_VERSION}"
    source, done = workdir / name, workdir / f"{name}.done"
    if done.is_file() and source.is_dir():
        return source
    shutil.rmtree(source, ignore_errors=True)
    from datasite_setup.convert.sample_data import load_digit_images

    digits, labels = load_digit_images()
    staging = workdir / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    for label in sorted({int(v) for v in labels}):
        (staging / str(label)).mkdir(parents=True)
    chunk = 250
    ranges = [(start, min(start + chunk, count)) for start in range(0, count, chunk)]
    workers = min(os.cpu_count() or 1, max(1, len(ranges)))
    if workers == 1:
        _init_generator(digits, labels, str(staging), seed)
        written = sum(map(_generate_range, ranges))
    else:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(
            workers, _init_generator, (digits, labels, str(staging), seed)
        ) as pool:
            written = sum(pool.imap_unordered(_generate_range, ranges))
    assert written == count, (written, count)
    os.rename(staging, source)
    done.write_text(json.dumps({"count": count, "seed": seed, "generator_version": GENERATOR_VERSION}) + "\n")
    return source
