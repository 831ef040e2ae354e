"""Shared fixtures: a fixed federation secret, synthetic images, and a corpus of bad inputs.

Every image is generated here with Pillow/numpy under ``tmp_path``; nothing is
downloaded and nothing outside the test's temporary directories is touched.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasite_setup.convert.imaging import ImageSpec
from datasite_setup.convert.quarantine import Reason
from datasite_setup.convert.sources import SkipReason

pytest_plugins = ["tests.support.datasites"]

TEST_SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0"
assert len(TEST_SECRET) == 64

EXIF_ORIENTATION_TAG = 0x0112

_FORMAT_BY_SUFFIX = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
    ".gif": "GIF",
}


@pytest.fixture(autouse=True)
def federation_secret(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fixed 64-hex-char ``FEDIMG_SECRET``; ``XDG_CONFIG_HOME`` points at a fresh temporary dir."""
    config_home = tmp_path_factory.mktemp("xdg_config")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    monkeypatch.delenv("FEDIMG_SECRET_FILE", raising=False)
    monkeypatch.setenv("FEDIMG_SECRET", TEST_SECRET)
    return TEST_SECRET


def synthetic_pixels(size: tuple[int, int], mode: str, seed: int) -> Image.Image:
    """A deterministic image of ``size`` (width, height) in ``mode``; distinct seeds give distinct pixels."""
    width, height = size
    rng = np.random.default_rng(seed)
    if mode == "L":
        return Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), mode="L")
    if mode == "RGB":
        return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), mode="RGB")
    if mode == "RGBA":
        return Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), mode="RGBA")
    if mode == "P":
        image = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), mode="L").convert("P")
        image.putpalette(rng.integers(0, 256, 256 * 3, dtype=np.uint8).tobytes(), "RGB")
        return image
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    if mode == "CMYK":
        data = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
        return Image.frombytes("CMYK", (width, height), data.tobytes())
    raise ValueError(f"make_image: unsupported mode {mode!r}")


def write_image(
    path: Path,
    *,
    size: tuple[int, int] = (32, 24),
    mode: str = "RGB",
    format: str | None = None,
    seed: int = 0,
    exif_orientation: int | None = None,
    image: Image.Image | None = None,
) -> Path:
    """Write ``image`` (or a synthetic one) to ``path``; the format follows the suffix when not given."""
    path = Path(path)
    fmt = format or _FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"make_image: cannot infer the format of {path.name!r}; pass format=")
    image = image if image is not None else synthetic_pixels(size, mode, seed)
    params: dict = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION_TAG] = exif_orientation
        params["exif"] = exif.tobytes()
    if fmt == "JPEG":
        params["quality"] = 95
    if fmt == "WEBP":
        params["lossless"] = True
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt, **params)
    return path


@pytest.fixture
def make_image() -> Callable[..., Path]:
    """Factory ``make_image(path, *, size=(32, 24), mode="RGB", format=None, seed=0, exif_orientation=None)``.

    Writes a deterministic synthetic image (pixels drawn from ``seed``) as PNG, JPEG,
    BMP, TIFF, WEBP or GIF (inferred from the suffix, case-insensitively) in mode
    L, RGB, RGBA, P, I;16 or CMYK, creating parent folders. Returns the path.
    WEBP is written lossless, JPEG at quality 95. ``image=`` writes a given PIL image instead
    of synthetic pixels (``size``/``mode``/``seed`` are then ignored).
    """
    return write_image


def image_bytes(image: Image.Image, format: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **params)
    return buffer.getvalue()


# --- a corpus with one of every kind of bad input ------------------------------------------

BOMB_MAX_PIXELS = 10_000
"""``bad_corpus`` holds a 200x200 PNG (40,000 pixels): a decompression bomb only under
``ImageSpec(max_pixels=BAD_CORPUS_MAX_PIXELS)``; pass ``bad_corpus.spec`` (or that limit,
e.g. ``--max-pixels 10000``) when converting it. All good images are at most 32x24 = 768 pixels."""
BAD_CORPUS_MAX_PIXELS = BOMB_MAX_PIXELS


@dataclass
class BadCorpus:
    """A class-folder dataset under ``root`` mixing good images with every kind of bad input.

    Attributes:
        root: the source folder (``root/<label>/...``).
        outside: a folder beside ``root`` holding the target of the outside symlink.
        spec: the ImageSpec to convert with (its small ``max_pixels`` makes ``bomb.png`` a bomb).
        good: relative paths (POSIX) of images that must be accepted, with their labels
            (for a duplicate pair with agreeing labels only the kept copy is listed).
        expected: relative path -> Reason every rejected input must be quarantined with.
        skipped: SkipReason key -> how many files the scan must skip (not quarantine).
        scan_rejected: the subset of ``expected`` the scan itself rejects (no decoding needed).
        decode_rejected: the subset rejected when decoding/standardising.
        dedup_rejected: the subset rejected by duplicate resolution.
    """

    root: Path
    outside: Path
    spec: ImageSpec
    good: dict[str, str] = field(default_factory=dict)
    expected: dict[str, Reason] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    scan_rejected: dict[str, Reason] = field(default_factory=dict)
    decode_rejected: dict[str, Reason] = field(default_factory=dict)
    dedup_rejected: dict[str, Reason] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return sorted({rel.split("/", 1)[0] for rel in self.good})


def build_bad_corpus(base: Path) -> BadCorpus:
    root = base / "source"
    outside = base / "outside"
    corpus = BadCorpus(
        root=root, outside=outside, spec=ImageSpec(size=16, mode="RGB", max_pixels=BAD_CORPUS_MAX_PIXELS)
    )

    def good(rel: str, **kwargs) -> None:
        write_image(root / rel, **kwargs)
        corpus.good[rel] = rel.split("/", 1)[0]

    # Good images: several formats and modes, nested folders, unicode and spaces, upper-case extensions.
    good("cat/c1.png", seed=1)
    good("cat/c2.jpg", seed=2)
    good("cat/nested/deeper/c3.bmp", seed=3)
    good("cat/é 1.PNG", seed=4)
    good("dog/d1.TIFF", seed=5, mode="I;16")
    good("dog/d2.webp", seed=6, mode="RGBA")
    good("dog/d3.gif", seed=7, mode="P")
    good("dog/d4.JPEG", seed=8, mode="L")
    good("dog/d 5 ü.tif", seed=9, mode="CMYK")

    # Decode-time rejections.
    decode = corpus.decode_rejected
    (root / "cat").mkdir(parents=True, exist_ok=True)
    (root / "cat" / "empty.png").write_bytes(b"")
    decode["cat/empty.png"] = Reason.EMPTY_FILE
    jpeg = image_bytes(synthetic_pixels((32, 24), "RGB", 20), "JPEG", quality=95)
    (root / "cat" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    decode["cat/truncated.jpg"] = Reason.TRUNCATED
    png = image_bytes(synthetic_pixels((32, 24), "RGB", 21), "PNG")
    (root / "dog" / "truncated.png").write_bytes(png[: len(png) // 2])
    decode["dog/truncated.png"] = Reason.TRUNCATED
    (root / "dog" / "corrupt.png").write_bytes(_corrupt_png_data(synthetic_pixels((32, 24), "RGB", 22)))
    decode["dog/corrupt.png"] = Reason.CORRUPT
    (root / "dog" / "garbage.bmp").write_bytes(
        np.random.default_rng(23).integers(0, 256, 600, dtype=np.uint8).tobytes()
    )
    decode["dog/garbage.bmp"] = Reason.NOT_AN_IMAGE
    (root / "cat" / "text.jpg").write_text("this is a text file, not a JPEG\n", encoding="utf-8")
    decode["cat/text.jpg"] = Reason.NOT_AN_IMAGE
    write_image(root / "dog" / "bomb.png", size=(200, 200), mode="L", seed=24)
    decode["dog/bomb.png"] = Reason.DECOMPRESSION_BOMB

    # Scan-time rejections: a symlink that leaves the root, an image in no class folder.
    outside_target = write_image(outside / "secret.png", seed=30)
    os.symlink(outside_target, root / "cat" / "escape.png")
    corpus.scan_rejected["cat/escape.png"] = Reason.SYMLINK_OUTSIDE_ROOT
    write_image(root / "toplevel.png", seed=31)
    corpus.scan_rejected["toplevel.png"] = Reason.NO_LABEL

    # Skipped and counted: hidden/system files, non-image files, a symlinked directory.
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "cat" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    write_image(root / "dog" / ".hidden.png", seed=32)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    (root / "cat" / "notes.txt").write_text("notes about cats\n", encoding="utf-8")
    (root / "dog" / "README").write_text("no extension\n", encoding="utf-8")
    os.symlink(root / "cat" / "nested", root / "dog" / "linked_dir", target_is_directory=True)
    corpus.skipped = {
        SkipReason.HIDDEN_OR_SYSTEM: 4,  # .DS_Store, Thumbs.db, .hidden.png, .git/
        SkipReason.NOT_AN_IMAGE_FILE: 2,  # notes.txt, README
        SkipReason.SYMLINKED_DIRECTORY: 1,  # dog/linked_dir
    }

    # Exact duplicates: same bytes with the same label (the smallest path is kept) ...
    same = image_bytes(synthetic_pixels((32, 24), "RGB", 40), "PNG")
    (root / "cat" / "dup_a.png").write_bytes(same)
    (root / "cat" / "nested" / "dup_b.png").write_bytes(same)
    corpus.good["cat/dup_a.png"] = "cat"
    corpus.dedup_rejected["cat/nested/dup_b.png"] = Reason.DUPLICATE
    # ... and the same pixels in two formats under conflicting labels (all rejected).
    conflict = synthetic_pixels((32, 24), "RGB", 41)
    write_image(root / "cat" / "conflict.png", image=conflict)
    write_image(root / "dog" / "conflict.bmp", image=conflict)
    corpus.dedup_rejected["cat/conflict.png"] = Reason.DUPLICATE_CONFLICT
    corpus.dedup_rejected["dog/conflict.bmp"] = Reason.DUPLICATE_CONFLICT

    corpus.expected = {**corpus.scan_rejected, **corpus.decode_rejected, **corpus.dedup_rejected}
    return corpus


def _corrupt_png_data(image: Image.Image) -> bytes:
    """A PNG whose header is intact but whose compressed pixel data is garbage."""
    data = bytearray(image_bytes(image, "PNG"))
    start = data.index(b"IDAT") + 4 + 2  # keep the zlib header
    for i in range(start, min(start + 64, len(data) - 16)):
        data[i] ^= 0xA5
    return bytes(data)


@pytest.fixture
def bad_corpus(tmp_path: Path) -> BadCorpus:
    """A class-folder dataset (labels ``cat`` and ``dog``) with good images and one of each bad input.

    ``bad_corpus.expected`` maps each rejected relative path to its quarantine reason;
    convert it with ``bad_corpus.spec`` (``max_pixels=10_000``, so the 200x200
    ``dog/bomb.png`` is a decompression bomb). See ``BadCorpus`` for the other fields.
    """
    return build_bad_corpus(tmp_path)
