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
    """Return (images uint8 (n, 8, 8) scaled to 0..255, labels int (n,))."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(np.rint(digits.images * (255 / 16)), 0, 255).astype(np.uint8)
    return images, digits.target.astype(np.int64)


def synthetic_patients(num_images: int, *, seed: int = 0) -> np.ndarray:
    """Assign images to synthetic patients with 1–4 images each (patient index per image)."""
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
    """A site per patient, with a label-dependent preference so sites differ naturally."""
    rng = np.random.default_rng(seed + 1)
    site_of_patient: dict[int, str] = {}
    for label, patient in zip(labels, patients):
        if int(patient) not in site_of_patient:
            preferred = int(label) % len(SITES)
            weights = np.full(len(SITES), 0.2)
            weights[preferred] = 0.6
            site_of_patient[int(patient)] = SITES[int(rng.choice(len(SITES), p=weights / weights.sum()))]
    return [site_of_patient[int(p)] for p in patients]


def write_digits(out: Path, *, layout: str = "folders", image_format: str = "png", seed: int = 0) -> Path:
    """Write the digits as ``out/<label>/digit_NNNN.<ext>`` or ``out/images/scan_NNNN.<ext>`` + ``out/labels.csv``."""
    if layout not in ("folders", "csv"):
        raise ValueError(f"layout must be 'folders' or 'csv' (got {layout!r})")
    images, labels = load_digit_images()
    out.mkdir(parents=True, exist_ok=True)
    if layout == "folders":
        for i, (pixels, label) in enumerate(zip(images, labels)):
            _save(pixels, out / str(label) / f"digit_{i:04d}.{image_format}")
        return out
    patients = synthetic_patients(len(labels), seed=seed)
    sites = patient_sites(labels, patients, seed=seed)
    with open(out / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "patient_id", "site"])
        for i, (pixels, label) in enumerate(zip(images, labels)):
            rel = f"images/scan_{i:04d}.{image_format}"
            _save(pixels, out / rel)
            writer.writerow([rel, int(label), f"P{patients[i]:05d}", sites[i]])
    return out


def _save(pixels: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="L").save(path)
