"""Mock twins of a client's private data: same shapes, dtypes, label space and label mix, no real pixel.

A researcher explores and debugs against the mock before asking to run on the
private data, so the mock must *look* like the data to code (array shapes,
dtypes, label counts per split, the metadata table's columns) while telling
nothing about any patient. Mock images are generated from a seed alone — one
smooth random pattern per label plus per-sample noise and shifts — and are never
computed from private images; mock pseudonyms are random.
"""

from __future__ import annotations

import hashlib

import numpy as np

from datasite_setup.convert.client_data import ClientPartition, SplitData

_BATCH = 512  # images generated at a time: bounded float memory for large partitions
_NOISE = 48  # standard deviation of the per-pixel noise, in grey levels


def mock_partition(private: ClientPartition, *, seed: int | None = None) -> ClientPartition:
    """The mock twin of a client's partition: generated, deterministic for a client name (or ``seed``).

    Parameters
    ----------
    private : ClientPartition
        The private partition; only its shapes, label names and label counts are read, never its pixels.
    seed : int, optional
        Seed of the generator; by default one derived from the client's name, so the
        same client always gets the same mock.

    Returns
    -------
    ClientPartition
        Same name, version, image size, channels and label names, and per split the
        same number of samples and label counts (in another order), with generated
        images and random ``mock…`` pseudonyms.

    Examples
    --------
    >>> import numpy as np
    >>> from datasite_setup.convert.client_data import ClientPartition, SplitData
    >>> images, labels = np.zeros((3, 1, 8, 8), np.uint8), np.array([0, 1, 1])
    >>> train = SplitData(images, labels, ["s1", "s2", "s3"], ["g1", "g2", "g3"])
    >>> private = ClientPartition("a", 8, 1, ["cat", "dog"], {"train": train}, "v1", {})
    >>> mock = mock_partition(private).splits["train"]
    >>> mock.images.shape, mock.images.dtype, sorted(mock.labels.tolist())
    ((3, 1, 8, 8), dtype('uint8'), [0, 1, 1])
    >>> mock.sample_ids[0].startswith("mock")
    True
    """
    rng = np.random.default_rng(seed if seed is not None else _name_seed(private.name))
    templates = _label_templates(rng, len(private.label_names), private.channels, private.image_size)
    splits = {}
    for split, data in private.splits.items():
        labels = rng.permutation(data.labels)  # same label counts, order unrelated to the private one
        images = _mock_images(rng, templates, labels)
        sample_ids = [f"mock{value:016x}" for value in rng.integers(0, 2**63, len(labels))]
        group_ids = [f"mock{value:016x}" for value in rng.integers(0, 2**63, len(labels))]
        splits[split] = SplitData(images, labels, sample_ids, group_ids)
    return ClientPartition(
        private.name,
        private.image_size,
        private.channels,
        private.label_names,
        splits,
        private.version,
        private.federation,
    )


def _name_seed(name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"fedimg-mock\x00{name}".encode()).digest()[:8], "big")


def _label_templates(rng: np.random.Generator, num_labels: int, channels: int, size: int) -> np.ndarray:
    """One smooth pattern per label: an 8x8 random grid upsampled to ``size`` (float, 0..255)."""
    coarse = rng.uniform(0, 255, (num_labels, channels, 8, 8))
    positions = np.linspace(0, 7, size)
    low = np.floor(positions).astype(int).clip(0, 6)
    weight = positions - low
    rows = (
        coarse[:, :, low, :] * (1 - weight)[None, None, :, None]
        + coarse[:, :, low + 1, :] * weight[None, None, :, None]
    )
    return rows[..., low] * (1 - weight) + rows[..., low + 1] * weight


def _mock_images(rng: np.random.Generator, templates: np.ndarray, labels: np.ndarray) -> np.ndarray:
    num, (channels, size) = len(labels), templates.shape[1:3]
    images = np.empty((num, channels, size, size), dtype=np.uint8)
    for start in range(0, num, _BATCH):
        batch = labels[start : start + _BATCH]
        images[start : start + len(batch)] = _mock_batch(rng, templates, batch)
    return images


def _mock_batch(rng: np.random.Generator, templates: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """Each label's pattern, shifted by up to 1/8 of the image each way, plus Gaussian noise; uint8."""
    size = templates.shape[-1]
    shifts = rng.integers(-size // 8, size // 8 + 1, (len(batch), 2))
    shifted = [
        np.roll(templates[label], tuple(shift), axis=(1, 2))
        for label, shift in zip(batch, shifts, strict=True)
    ]
    patterns = np.stack(shifted).astype(np.float32)
    noise = rng.standard_normal(patterns.shape, dtype=np.float32) * np.float32(_NOISE)
    noisy = patterns + noise
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
