"""A sample collection that needs no download: scikit-learn's bundled handwritten digits.

1,797 real 8×8 scans of handwritten digits (UCI ML digits), written out either as
class sub-folders or as a flat folder plus ``labels.csv`` with synthetic patient
and site columns, so every input layout of ``fedimg convert`` can be tried.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

SITES = ("hospital_a", "hospital_b", "hospital_c")


def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as 8-bit images.

    Returns
    -------
    tuple of np.ndarray
        ``(images, labels)``: images ``(1797, 8, 8)`` uint8 scaled from 0..16 to 0..255,
        labels ``(1797,)`` int64 (0 to 9).

    Examples
    --------
    >>> images, labels = load_digit_images()
    >>> images.shape, images.dtype, int(images.max()), sorted(set(labels.tolist()))[:3]
    ((1797, 8, 8), dtype('uint8'), 255, [0, 1, 2])
    """
    # Imported here: scikit-learn is slow to import and only the sample needs it.
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(np.rint(digits.images * (255 / 16)), 0, 255).astype(np.uint8)
    return images, digits.target.astype(np.int64)


def synthetic_patients(num_images: int, *, seed: int = 0) -> np.ndarray:
    """Assign images to synthetic patients with 1–4 images each, at random.

    Parameters
    ----------
    num_images : int
        How many images there are.
    seed : int, default 0
        Seed of the draw.

    Returns
    -------
    np.ndarray
        The patient index (0, 1, ...) of every image.

    Examples
    --------
    >>> patients = synthetic_patients(100, seed=1)
    >>> len(patients), int(np.bincount(patients).min()) >= 1, int(np.bincount(patients).max()) <= 4
    (100, True, True)
    """
    rng = np.random.default_rng(seed)
    patients = np.empty(num_images, dtype=np.int64)
    order = rng.permutation(num_images)
    start, patient = 0, 0
    while start < num_images:
        count = int(rng.integers(1, 5))
        patients[order[start : start + count]] = patient
        start, patient = start + count, patient + 1
    return patients


def patient_sites(labels: np.ndarray, patients: np.ndarray, *, seed: int = 0) -> list[str]:
    """A site per patient, with a label-dependent preference so sites differ naturally.

    A patient's site is drawn once, at their first image: the site ``label % 3`` of
    ``SITES`` with probability 0.6, each other site with 0.2.

    Parameters
    ----------
    labels : np.ndarray
        Each image's label.
    patients : np.ndarray
        Each image's patient index (``synthetic_patients``).
    seed : int, default 0
        Seed of the draw.

    Returns
    -------
    list of str
        The site of every image (the same for all images of a patient).

    Examples
    --------
    >>> sites = patient_sites(np.array([0, 0, 1]), np.array([0, 0, 1]), seed=0)
    >>> sites[0] == sites[1], set(sites) <= set(SITES)
    (True, True)
    """
    rng = np.random.default_rng(seed + 1)
    site_of_patient: dict[int, str] = {}
    for label, patient in zip(labels, patients, strict=False):
        if int(patient) not in site_of_patient:
            preferred = int(label) % len(SITES)
            weights = np.full(len(SITES), 0.2)
            weights[preferred] = 0.6
            site = int(rng.choice(len(SITES), p=weights / weights.sum()))
            site_of_patient[int(patient)] = SITES[site]
    return [site_of_patient[int(p)] for p in patients]


def write_digits(out: Path, *, layout: str = "folders", image_format: str = "png", seed: int = 0) -> Path:
    """Write the digits sample as image files (``fedimg sample digits``).

    Parameters
    ----------
    out : Path
        The folder to write into (created when missing).
    layout : str, default "folders"
        ``"folders"``: ``out/<label>/digit_NNNN.<ext>``; ``"csv"``:
        ``out/images/scan_NNNN.<ext>`` plus ``out/labels.csv`` with the columns
        ``path``, ``label``, ``patient_id`` and ``site``.
    image_format : str, default "png"
        The files' extension (and so their format): png, jpg, bmp or tif.
    seed : int, default 0
        Seed of the synthetic patients and sites (``"csv"`` layout).

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ValueError
        For an unknown ``layout``.

    Examples
    --------
    >>> from pathlib import Path
    >>> out = write_digits(Path("digits"), layout="csv")
    >>> len(list((out / "images").iterdir())), (out / "labels.csv").read_text().splitlines()[0]
    (1797, 'path,label,patient_id,site')
    """
    if layout not in ("folders", "csv"):
        raise ValueError(f"layout must be 'folders' or 'csv' (got {layout!r})")
    images, labels = load_digit_images()
    out.mkdir(parents=True, exist_ok=True)
    if layout == "folders":
        for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
            _save(pixels, out / str(label) / f"digit_{i:04d}.{image_format}")
        return out
    patients = synthetic_patients(len(labels), seed=seed)
    sites = patient_sites(labels, patients, seed=seed)
    with open(out / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "patient_id", "site"])
        for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
            rel = f"images/scan_{i:04d}.{image_format}"
            _save(pixels, out / rel)
            writer.writerow([rel, int(label), f"P{patients[i]:05d}", sites[i]])
    return out


def _save(pixels: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="L").save(path)
