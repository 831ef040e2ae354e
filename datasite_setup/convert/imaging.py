"""Decoding, validating and standardising one image.

``standardise(data, spec)`` is the whole path from source bytes to the PNG that
goes into the federated format; it raises ``RejectedImage`` with a reason code
for anything that cannot be used. It is pure (bytes in, bytes out) and
deterministic, so it can run in worker processes and be tested alone.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from datasite_setup.convert.quarantine import Reason
from datasite_setup.errors import FedimgError

MODES = ("L", "RGB")
RESIZE_POLICIES = ("letterbox", "crop", "stretch")
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold
_RESAMPLE = Image.Resampling.BICUBIC
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_CONVERTIBLE_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")
# Only the contract's formats are decoded (Pillow's JPEG opener also yields multi-picture
# "MPO" camera JPEGs); anything else, whatever its extension, is not an image. This also
# keeps Pillow from handing an EPS disguised as a .png to Ghostscript.
SUPPORTED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF")


class RejectedImage(Exception):
    """The input cannot become a sample; ``reason`` goes to the quarantine report.

    Parameters
    ----------
    reason : Reason
        The reason code (``quarantine.jsonl``'s ``reason``).
    message : str
        What is wrong with the input, for the data owner.

    Examples
    --------
    >>> error = RejectedImage(Reason.TRUNCATED, "the image data ends early")
    >>> error.reason.value, str(error)
    ('truncated', 'the image data ends early')
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ImageSpec:
    """What every output image looks like.

    Parameters
    ----------
    size : int, default 128
        Width and height of the square output, in pixels (1 to 4096).
    mode : str, default "RGB"
        ``"L"`` (grayscale) or ``"RGB"``.
    resize : str, default "letterbox"
        ``"letterbox"`` (fit inside, pad with black), ``"crop"`` (fill,
        centre-crop) or ``"stretch"`` (ignore the aspect ratio).
    max_pixels : int, default 89,478,485
        Inputs with more pixels are rejected as decompression bombs.

    Raises
    ------
    FedimgError
        When a field is outside what is allowed; the message names the flag.

    Examples
    --------
    >>> ImageSpec(size=32, mode="L").to_manifest()["channels"]
    1
    >>> ImageSpec(mode="CMYK")
    Traceback (most recent call last):
    ...
    datasite_setup.errors.FedimgError: --mode must be one of L, RGB (got 'CMYK')
    """

    size: int = 128
    mode: str = "RGB"
    resize: str = "letterbox"
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or not 1 <= self.size <= 4096:
            raise FedimgError(f"--size must be an integer from 1 to 4096 pixels (got {self.size!r})")
        if self.mode not in MODES:
            raise FedimgError(f"--mode must be one of {', '.join(MODES)} (got {self.mode!r})")
        if self.resize not in RESIZE_POLICIES:
            raise FedimgError(f"--resize must be one of {', '.join(RESIZE_POLICIES)} (got {self.resize!r})")
        if self.max_pixels < 1:
            raise FedimgError(f"--max-pixels must be positive (got {self.max_pixels})")

    def to_manifest(self) -> dict[str, Any]:
        """The ``image`` entry of ``federation.json``: the spec plus format, channels and pad value."""
        document = asdict(self)
        document.update(format="PNG", channels=1 if self.mode == "L" else 3, pad_value=0)
        return document


@dataclass(frozen=True, slots=True)
class Standardised:
    """The output PNG and the fingerprint of the decoded pixels (for duplicate detection).

    Parameters
    ----------
    png : bytes
        The standardised image, PNG with no metadata chunks.
    pixel_sha256 : str
        sha256 of the decoded (upright) pixels, mode and size: equal for identical images.
    """

    png: bytes
    pixel_sha256: str


def standardise(data: bytes, spec: ImageSpec) -> Standardised:
    """Decode ``data``, apply EXIF orientation, convert, resize and encode as PNG.

    Pure and deterministic (bytes in, bytes out), so it runs in worker processes.

    Parameters
    ----------
    data : bytes
        The source file's content.
    spec : ImageSpec
        What the output looks like.

    Returns
    -------
    Standardised
        The PNG and the decoded pixels' fingerprint.

    Raises
    ------
    RejectedImage
        When the input cannot become a sample; its ``reason`` says why.

    Examples
    --------
    >>> import io
    >>> from PIL import Image
    >>> source = io.BytesIO()
    >>> Image.new("RGB", (40, 20), "red").save(source, format="JPEG")
    >>> result = standardise(source.getvalue(), ImageSpec(size=32, mode="L"))
    >>> output = Image.open(io.BytesIO(result.png))
    >>> output.format, output.size, output.mode, len(result.pixel_sha256)
    ('PNG', (32, 32), 'L', 64)
    """
    image = decode(data, spec)
    pixel_sha256 = _pixel_fingerprint(image)
    image = fit(to_mode(image, spec.mode), spec)
    return Standardised(encode_png(image), pixel_sha256)


def decode(data: bytes, spec: ImageSpec) -> Image.Image:
    """Fully decode the first frame, oriented upright.

    JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still covers the
    target size: the output is as sharp and several times cheaper to produce.

    Parameters
    ----------
    data : bytes
        The source file's content.
    spec : ImageSpec
        The output spec (its size picks the JPEG scale; ``max_pixels`` the bomb limit).

    Returns
    -------
    PIL.Image.Image
        The loaded image, in its own mode.

    Raises
    ------
    RejectedImage
        When the input is empty, not a supported format, damaged or too large.

    Examples
    --------
    >>> try:
    ...     decode(b"%PDF-1.7", ImageSpec())
    ... except RejectedImage as error:
    ...     print(error.reason.value, "-", error.message)
    not_an_image - not a readable image in any supported format
    >>> decode(b"", ImageSpec())
    Traceback (most recent call last):
    ...
    datasite_setup.convert.imaging.RejectedImage: the file is empty (0 bytes)
    """
    if not data:
        raise RejectedImage(Reason.EMPTY_FILE, "the file is empty (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = _open_and_load(data, spec)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise RejectedImage(
                Reason.DECOMPRESSION_BOMB, f"more than --max-pixels={spec.max_pixels} pixels ({exc})"
            ) from exc
    return image


def _open_and_load(data: bytes, spec: ImageSpec) -> Image.Image:
    previous_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = spec.max_pixels
    try:
        image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except UnidentifiedImageError as exc:
        raise RejectedImage(Reason.NOT_AN_IMAGE, "not a readable image in any supported format") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise RejectedImage(Reason.CORRUPT, f"the image header is damaged ({exc})") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit
    _draft_for(image, spec)
    try:
        image.load()
        return ImageOps.exif_transpose(image)
    except OSError as exc:
        reason = Reason.TRUNCATED if "truncated" in str(exc).lower() else Reason.CORRUPT
        raise RejectedImage(reason, f"the image data cannot be decoded ({exc})") from exc
    except (ValueError, SyntaxError, IndexError, TypeError, EOFError) as exc:
        raise RejectedImage(Reason.CORRUPT, f"the image data cannot be decoded ({exc})") from exc


def _draft_for(image: Image.Image, spec: ImageSpec) -> None:
    if image.format != "JPEG":
        return
    width, height = image.size
    # The scale draft picks is uniform, so the request is symmetric under EXIF rotation.
    reference = min(width, height) if spec.resize != "letterbox" else max(width, height)
    scale = spec.size / max(reference, 1)
    image.draft(None, (max(1, int(width * scale + 0.999)), max(1, int(height * scale + 0.999))))


def _pixel_fingerprint(image: Image.Image) -> str:
    digest = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert to ``mode``: 16-bit scaled to 8-bit, transparency composited on black, CMYK to RGB.

    Parameters
    ----------
    image : PIL.Image.Image
        A decoded image.
    mode : str
        ``"L"`` or ``"RGB"``.

    Returns
    -------
    PIL.Image.Image
        The image in ``mode``.

    Raises
    ------
    RejectedImage
        For a pixel mode fedimg does not convert.

    Examples
    --------
    >>> from PIL import Image
    >>> deep = Image.new("I;16", (1, 1), 65535)
    >>> to_mode(deep, "L").getpixel((0, 0))  # the full 16-bit range maps onto 0..255
    255
    >>> to_mode(Image.new("RGBA", (1, 1), (255, 255, 255, 0)), "RGB").getpixel((0, 0))
    (0, 0, 0)
    """
    if image.mode in _SIXTEEN_BIT_MODES:
        image = _sixteen_to_eight_bit(image)
    elif image.mode not in _CONVERTIBLE_MODES:
        raise RejectedImage(Reason.UNSUPPORTED_MODE, f"pixel mode {image.mode!r} is not supported")
    # A tRNS colour key (P, and also L or RGB PNGs) is transparency too: composite it like alpha.
    if image.mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in image.info:
        image = _flatten_alpha(image.convert("RGBA"))
    return image if image.mode == mode else image.convert(mode)


def _sixteen_to_eight_bit(image: Image.Image) -> Image.Image:
    """Map the full 16-bit range linearly onto 0..255 (Pillow's own convert clips at 255)."""
    array = np.asarray(image, dtype=np.int64)
    scaled = (np.clip(array, 0, 65535) * 255 + 32767) // 65535
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def _flatten_alpha(image: Image.Image) -> Image.Image:
    background = Image.new("RGBA", image.size, (0, 0, 0, 255))
    return Image.alpha_composite(background, image).convert("RGB")


def fit(image: Image.Image, spec: ImageSpec) -> Image.Image:
    """Resize to ``spec.size`` square by the spec's resize policy (bicubic).

    Parameters
    ----------
    image : PIL.Image.Image
        An image already in the output mode.
    spec : ImageSpec
        Its ``size`` and ``resize`` policy apply.

    Returns
    -------
    PIL.Image.Image
        A ``spec.size`` x ``spec.size`` image.

    Examples
    --------
    >>> from PIL import Image
    >>> wide = Image.new("L", (40, 20), 255)
    >>> boxed = fit(wide, ImageSpec(size=8, mode="L"))
    >>> boxed.size, boxed.getpixel((0, 0)), boxed.getpixel((4, 4))  # black bars above and below
    ((8, 8), 0, 255)
    """
    size = spec.size
    if spec.resize == "stretch":
        return image.resize((size, size), _RESAMPLE, reducing_gap=3.0)
    if spec.resize == "crop":
        return ImageOps.fit(image, (size, size), method=_RESAMPLE, centering=(0.5, 0.5))
    return _letterbox(image, size)


def _letterbox(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    scale = size / max(width, height)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if new_size != image.size:
        image = image.resize(new_size, _RESAMPLE, reducing_gap=3.0)
    if new_size == (size, size):
        return image
    canvas = Image.new(image.mode, (size, size), 0)
    canvas.paste(image, ((size - new_size[0]) // 2, (size - new_size[1]) // 2))
    return canvas


def encode_png(image: Image.Image) -> bytes:
    """Encode as PNG with no metadata chunks (no EXIF, no text): only pixels leave this function.

    Parameters
    ----------
    image : PIL.Image.Image
        The standardised image; its ``info`` is dropped.

    Returns
    -------
    bytes
        The PNG file.

    Examples
    --------
    >>> import io
    >>> from PIL import Image
    >>> image = Image.new("L", (4, 4))
    >>> image.info["comment"] = "patient: Jane Doe"
    >>> b"Jane" in encode_png(image), Image.open(io.BytesIO(encode_png(image))).size
    (False, (4, 4))
    """
    if image.info:
        # Pillow's PNG writer copies some of ``info`` (ICC profile, tRNS) into the file.
        image = image.copy()
        image.info = {}
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
