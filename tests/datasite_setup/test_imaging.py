"""Decoding, validating and standardising one image (``datasite_setup.convert.imaging``)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, PngImagePlugin

from datasite_setup.convert.imaging import ImageSpec, RejectedImage, decode, encode_png, standardise
from datasite_setup.convert.quarantine import Reason
from datasite_setup.errors import FedimgError
from tests.conftest import image_bytes, synthetic_pixels

# Every (suffix, source mode) pair the contract lists that the format can hold.
FORMAT_MODES = [
    (".png", "L"),
    (".png", "RGB"),
    (".png", "RGBA"),
    (".png", "P"),
    (".png", "I;16"),
    (".jpg", "L"),
    (".jpg", "RGB"),
    (".jpg", "CMYK"),
    (".bmp", "L"),
    (".bmp", "RGB"),
    (".bmp", "P"),
    (".tif", "L"),
    (".tif", "RGB"),
    (".tif", "RGBA"),
    (".tif", "P"),
    (".tif", "I;16"),
    (".tif", "CMYK"),
    (".webp", "RGB"),
    (".webp", "RGBA"),
    (".gif", "L"),
    (".gif", "P"),
]


def png_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image


def png_chunks(data: bytes) -> list[str]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        chunks.append(data[offset + 4 : offset + 8].decode("ascii"))
        offset += 12 + length
    return chunks


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(png_image(data)).astype(np.int64)


def reference_rgb(image: Image.Image) -> np.ndarray:
    """What the contract says the decoded source looks like in RGB, computed with numpy."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        value = (np.asarray(image).astype(np.int64).clip(0, 65535) * 255 + 32767) // 65535
        return np.repeat(value[..., None], 3, axis=2)
    if image.mode == "L":
        return np.repeat(np.asarray(image).astype(np.int64)[..., None], 3, axis=2)
    if image.mode == "RGB":
        return np.asarray(image).astype(np.int64)
    if image.mode == "RGBA":
        rgba = np.asarray(image).astype(np.float64)
        return np.rint(rgba[..., :3] * rgba[..., 3:] / 255).astype(np.int64)
    if image.mode == "P":
        palette = np.array(image.getpalette("RGB"), dtype=np.int64).reshape(-1, 3)
        index = np.asarray(image).astype(np.int64)
        rgb = palette[index]
        transparency = image.info.get("transparency")
        if isinstance(transparency, int):
            rgb[index == transparency] = 0
        return rgb
    if image.mode == "CMYK":
        cmyk = np.asarray(image).astype(np.float64)
        white = 255 - cmyk[..., 3:]
        return np.rint(white - cmyk[..., :3] * white / 255).astype(np.int64)
    raise AssertionError(f"no reference for mode {image.mode}")


def luma(rgb: np.ndarray) -> np.ndarray:
    return np.rint(rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114).astype(np.int64)


# --- ImageSpec -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"size": 0}, "--size"),
        ({"size": 4097}, "--size"),
        ({"size": 12.5}, "--size"),
        ({"mode": "RGBA"}, "--mode"),
        ({"mode": "CMYK"}, "--mode"),
        ({"resize": "fit"}, "--resize"),
        ({"max_pixels": 0}, "--max-pixels"),
    ],
)
def test_image_spec_rejects_bad_settings(kwargs: dict, fragment: str) -> None:
    with pytest.raises(FedimgError, match=fragment):
        ImageSpec(**kwargs)


def test_image_spec_defaults_and_manifest() -> None:
    spec = ImageSpec()
    assert (spec.size, spec.mode, spec.resize) == (128, "RGB", "letterbox")
    assert spec.to_manifest() == {
        "size": 128,
        "mode": "RGB",
        "resize": "letterbox",
        "max_pixels": spec.max_pixels,
        "format": "PNG",
        "channels": 3,
        "pad_value": 0,
    }
    assert ImageSpec(size=32, mode="L").to_manifest()["channels"] == 1


# --- every format and mode -------------------------------------------------------------------


@pytest.mark.parametrize("out_mode", ["RGB", "L"])
@pytest.mark.parametrize("suffix, src_mode", FORMAT_MODES)
def test_every_format_and_mode_standardises_to_the_expected_pixels(
    tmp_path: Path, make_image, suffix, src_mode, out_mode
) -> None:
    # A square source at the output size: no resampling, so the pixels must match the
    # contract's conversion exactly (within rounding).
    path = make_image(tmp_path / f"src{suffix}", size=(16, 16), mode=src_mode, seed=7)
    with Image.open(path) as source:
        source.load()
        expected_rgb = reference_rgb(source)
        source_mode = source.mode
    result = standardise(path.read_bytes(), ImageSpec(size=16, mode=out_mode))
    out = png_image(result.png)
    assert out.mode == out_mode and out.size == (16, 16)
    got = np.asarray(out).astype(np.int64)
    if out_mode == "RGB":
        assert np.abs(got - expected_rgb).max() <= 1
    elif source_mode in ("L", "I;16", "I;16B"):
        assert np.array_equal(got, expected_rgb[..., 0])  # grey stays exactly grey
    else:
        assert np.abs(got - luma(expected_rgb)).max() <= 2
    assert len(result.pixel_sha256) == 64 and int(result.pixel_sha256, 16) >= 0


@pytest.mark.parametrize("out_mode", ["L", "RGB"])
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_maps_the_full_range_linearly(tmp_path: Path, suffix: str, out_mode: str) -> None:
    values = np.array(
        [[0, 1, 128, 129], [257, 32767, 32768, 65278], [65279, 65534, 65535, 25700], [255, 256, 1000, 60000]],
        dtype=np.uint16,
    )
    path = tmp_path / f"deep{suffix}"
    Image.fromarray(values).save(path)
    with Image.open(path) as check:
        assert check.mode == "I;16"
    got = pixels(standardise(path.read_bytes(), ImageSpec(size=4, mode=out_mode)).png)
    # 0 -> 0, 65535 -> 255, 257*k -> k, rounded to nearest; Pillow's own convert would clip
    # everything from 255 up to white.
    expected = np.array([[0, 0, 0, 1], [1, 127, 128, 254], [254, 255, 255, 100], [1, 1, 4, 233]])
    if out_mode == "RGB":
        expected = np.repeat(expected[..., None], 3, axis=2)
    assert np.array_equal(got, expected)


def test_sixteen_bit_big_endian_tiff(tmp_path: Path) -> None:
    path = tmp_path / "be.tif"
    Image.fromarray(np.full((4, 4), 1000, dtype=np.uint16).astype(">u2")).save(path)
    got = pixels(standardise(path.read_bytes(), ImageSpec(size=4, mode="L")).png)
    assert np.all(got == (1000 * 255 + 32767) // 65535)


@pytest.mark.parametrize("suffix", [".tif", ".jpg"])
def test_cmyk_pure_inks_become_the_right_rgb(tmp_path: Path, suffix: str) -> None:
    inks = np.zeros((8, 32, 4), dtype=np.uint8)
    inks[:, 0:8, 0] = 255  # cyan
    inks[:, 8:16, 1] = 255  # magenta
    inks[:, 16:24, 2] = 255  # yellow
    inks[:, 24:32, 3] = 255  # black
    path = tmp_path / f"cmyk{suffix}"
    Image.frombytes("CMYK", (32, 8), inks.tobytes()).save(
        path, **({"quality": 100} if suffix == ".jpg" else {})
    )
    got = pixels(standardise(path.read_bytes(), ImageSpec(size=32, mode="RGB", resize="stretch")).png)
    tolerance = 0 if suffix == ".tif" else 40
    for column, rgb in ((3, (0, 255, 255)), (11, (255, 0, 255)), (19, (255, 255, 0)), (28, (0, 0, 0))):
        for row in (2, 16, 29):
            assert np.abs(got[row, column] - np.array(rgb)).max() <= tolerance, (
                suffix,
                column,
                got[row, column],
            )


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_is_composited_on_black(tmp_path: Path, fmt: str) -> None:
    index = np.zeros((8, 8), dtype=np.uint8)
    index[:, 4:] = 1
    image = Image.fromarray(index, mode="P")
    image.putpalette([200, 100, 50] + [10, 220, 30] + [0, 0, 0] * 254)
    path = tmp_path / f"p.{fmt.lower()}"
    image.save(path, format=fmt, transparency=1)
    with Image.open(path) as check:
        assert check.mode == "P" and check.info.get("transparency") == 1
    for mode, left in (("RGB", [200, 100, 50]), ("L", [int(round(200 * 0.299 + 100 * 0.587 + 50 * 0.114))])):
        got = pixels(standardise(path.read_bytes(), ImageSpec(size=8, mode=mode)).png)
        got = got.reshape(8, 8, -1)
        assert np.abs(got[:, :4] - np.array(left)).max() <= 1
        assert np.all(got[:, 4:] == 0), "the transparent index must be black, not its palette colour"


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_png_colour_key_transparency_is_composited_and_not_copied(tmp_path: Path, mode: str) -> None:
    if mode == "L":
        source = Image.fromarray(np.array([[0, 255], [100, 255]], dtype=np.uint8), mode="L")
        key = 255
    else:
        source = Image.fromarray(
            np.array([[[10, 20, 30], [1, 2, 3]], [[1, 2, 3], [90, 80, 70]]], dtype=np.uint8), mode="RGB"
        )
        key = (1, 2, 3)
    data = image_bytes(source, "PNG", transparency=key)
    result = standardise(data, ImageSpec(size=2, mode=mode))
    assert png_chunks(result.png) == ["IHDR", "IDAT", "IEND"]
    got = pixels(result.png)
    if mode == "L":
        assert got.tolist() == [[0, 0], [100, 0]]
    else:
        assert got.tolist() == [[[10, 20, 30], [0, 0, 0]], [[0, 0, 0], [90, 80, 70]]]


def test_grey_with_alpha_and_bilevel(tmp_path: Path) -> None:
    la = Image.fromarray(
        np.array([[[200, 255], [200, 0]], [[100, 128], [50, 255]]], dtype=np.uint8), mode="LA"
    )
    got = pixels(standardise(image_bytes(la), ImageSpec(size=2, mode="L")).png)
    assert np.abs(got - np.array([[200, 0], [50, 50]])).max() <= 1
    bilevel = Image.fromarray(np.array([[0, 1], [1, 0]], dtype=bool))
    assert bilevel.mode == "1"
    got = pixels(standardise(image_bytes(bilevel, "PNG"), ImageSpec(size=2, mode="L")).png)
    assert got.tolist() == [[0, 255], [255, 0]]


def test_gif_first_frame_only(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 3
    got = pixels(standardise(path.read_bytes(), ImageSpec(size=8, mode="RGB")).png)
    assert np.all(np.abs(got - np.array([250, 0, 0])) <= 2)


def test_animated_webp_first_frame_only(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((0, 0, 250), (250, 0, 0))]
    path = tmp_path / "anim.webp"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, lossless=True)
    got = pixels(standardise(path.read_bytes(), ImageSpec(size=8, mode="RGB")).png)
    assert np.all(np.abs(got - np.array([0, 0, 250])) <= 2)


def test_multi_page_tiff_first_page_only(tmp_path: Path) -> None:
    pages = [Image.new("L", (8, 8), value) for value in (30, 220)]
    path = tmp_path / "pages.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    assert np.all(pixels(standardise(path.read_bytes(), ImageSpec(size=8, mode="L")).png) == 30)


# --- EXIF orientation --------------------------------------------------------------------------

ORIENTATIONS = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1, :],
    5: lambda a: a.T,
    6: lambda a: np.rot90(a, k=-1),
    7: lambda a: a.T[::-1, ::-1],
    8: lambda a: np.rot90(a, k=1),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_decode_applies_every_exif_orientation(tmp_path: Path, make_image, orientation: int) -> None:
    path = make_image(tmp_path / "o.png", size=(12, 8), mode="L", seed=3, exif_orientation=orientation)
    with Image.open(path) as stored:
        raw = np.asarray(stored)
    upright = decode(path.read_bytes(), ImageSpec(size=12))
    assert np.array_equal(np.asarray(upright), ORIENTATIONS[orientation](raw))


def half_white(width: int = 64, height: int = 32) -> Image.Image:
    """Left half white, right half black."""
    image = Image.new("RGB", (width, height), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, width // 2, height))
    return image


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_exif_orientation_six_turns_the_output_upright(tmp_path: Path, make_image, suffix: str) -> None:
    plain = make_image(tmp_path / f"plain{suffix}", image=half_white())
    rotated = make_image(tmp_path / f"rotated{suffix}", image=half_white(), exif_orientation=6)
    spec = ImageSpec(size=16, mode="L", resize="letterbox")
    wide = pixels(standardise(plain.read_bytes(), spec).png)
    tall = pixels(standardise(rotated.read_bytes(), spec).png)
    # Without rotation: a 16x8 band in rows 4..11, white on the left.
    assert np.all(wide[:4] == 0) and np.all(wide[12:] == 0)
    assert wide[5:11, 1:6].min() > 200 and wide[5:11, 10:15].max() < 50
    # Rotated 90 degrees clockwise: an 8x16 band in columns 4..11, white on top.
    assert np.all(tall[:, :4] == 0) and np.all(tall[:, 12:] == 0)
    assert tall[1:6, 5:11].min() > 200 and tall[10:15, 5:11].max() < 50
    assert decode(rotated.read_bytes(), ImageSpec(size=64)).size == (32, 64)


def test_exif_orientation_is_applied_with_jpeg_draft_decoding(tmp_path: Path, make_image) -> None:
    path = make_image(tmp_path / "big.jpg", image=half_white(256, 128), exif_orientation=8)
    image = decode(path.read_bytes(), ImageSpec(size=32))
    assert image.size == (16, 32)  # decoded at 1/8, then turned upright
    array = np.asarray(image.convert("L")).astype(np.int64)
    # Orientation 8 turns counter-clockwise: the white left half ends at the bottom.
    assert array[:12].max() < 60 and array[20:].min() > 195


# --- resizing ------------------------------------------------------------------------------------


def three_bands() -> bytes:
    """40x20: red columns 0..9, green 10..29, blue 30..39."""
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :10, 0] = 255
    array[:, 10:30, 1] = 255
    array[:, 30:, 2] = 255
    return image_bytes(Image.fromarray(array, mode="RGB"))


def test_letterbox_fits_inside_and_pads_with_black() -> None:
    got = pixels(standardise(three_bands(), ImageSpec(size=20, mode="RGB", resize="letterbox")).png)
    assert got.shape == (20, 20, 3)
    assert np.all(got[:5] == 0) and np.all(got[15:] == 0)
    band = got[5:15]
    assert np.all(band[:, 0:3, 0] > 200) and np.all(band[:, 0:3, 1:] < 40)
    assert np.all(band[:, 8:12, 1] > 200) and np.all(band[:, 8:12, 0::2] < 40)
    assert np.all(band[:, 17:, 2] > 200) and np.all(band[:, 17:, :2] < 40)


def test_crop_fills_and_keeps_the_centre() -> None:
    got = pixels(standardise(three_bands(), ImageSpec(size=20, mode="RGB", resize="crop")).png)
    assert got.shape == (20, 20, 3)
    assert np.all(got == np.array([0, 255, 0]))


def test_stretch_ignores_the_aspect_ratio() -> None:
    got = pixels(standardise(three_bands(), ImageSpec(size=20, mode="RGB", resize="stretch")).png)
    assert got.shape == (20, 20, 3)
    assert np.all(got[:, 0:3, 0] > 200) and np.all(got[:, 8:12, 1] > 200) and np.all(got[:, 17:, 2] > 200)
    assert got[:, :, :].sum(axis=2).min() > 200, "no black padding anywhere"


def test_letterbox_odd_padding_and_upscaling() -> None:
    white = image_bytes(Image.new("L", (30, 20), 255))
    got = pixels(standardise(white, ImageSpec(size=16, mode="L")).png)
    # 30x20 -> 16x11, 5 rows of padding: 2 above, 3 below.
    assert np.all(got[:2] == 0) and np.all(got[2:13] == 255) and np.all(got[13:] == 0)
    small = image_bytes(Image.new("L", (8, 4), 90))
    got = pixels(standardise(small, ImageSpec(size=32, mode="L")).png)
    assert np.all(got[:8] == 0) and np.all(got[8:24] == 90) and np.all(got[24:] == 0)


@pytest.mark.parametrize("resize", ["letterbox", "crop", "stretch"])
@pytest.mark.parametrize("size", [(100, 1), (1, 100), (1, 1), (37, 23)])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_output_is_always_the_square_size_and_mode(size, resize, mode) -> None:
    data = image_bytes(synthetic_pixels(size, "RGB", 1))
    out = png_image(standardise(data, ImageSpec(size=16, mode=mode, resize=resize)).png)
    assert out.size == (16, 16) and out.mode == mode


def test_letterbox_of_a_one_pixel_high_image_keeps_one_row() -> None:
    got = pixels(standardise(image_bytes(Image.new("L", (100, 1), 255)), ImageSpec(size=16, mode="L")).png)
    assert np.all(got[7] == 255)
    assert np.all(np.delete(got, 7, axis=0) == 0)


@pytest.mark.parametrize(
    "resize, expected", [("letterbox", (32, 16)), ("crop", (64, 32)), ("stretch", (64, 32))]
)
def test_jpeg_draft_decodes_at_the_smallest_scale_covering_the_output(resize, expected) -> None:
    data = image_bytes(synthetic_pixels((256, 128), "RGB", 2), "JPEG", quality=90)
    assert decode(data, ImageSpec(size=32, resize=resize)).size == expected
    assert decode(data, ImageSpec(size=300, resize=resize)).size == (256, 128)
    out = png_image(standardise(data, ImageSpec(size=32, resize=resize)).png)
    assert out.size == (32, 32)


# --- output: PNG without metadata, deterministic ----------------------------------------------


def test_output_png_has_no_metadata_chunks() -> None:
    exif = Image.Exif()
    exif[0x010F] = "Hospital Scanner Co"  # Make
    exif[0x0112] = 1
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    info = PngImagePlugin.PngInfo()
    info.add_text("PatientName", "Jane Doe")
    info.add_itxt("Comment", "secret")
    source = synthetic_pixels((20, 16), "RGB", 5)
    sources = {
        "png": image_bytes(source, "PNG", pnginfo=info, exif=exif.tobytes(), icc_profile=icc, dpi=(300, 300)),
        "jpeg": image_bytes(
            source, "JPEG", exif=exif.tobytes(), icc_profile=icc, dpi=(300, 300), comment=b"Jane Doe"
        ),
        "tiff": image_bytes(source, "TIFF", exif=exif.tobytes(), icc_profile=icc, description="Jane Doe"),
        "webp": image_bytes(source, "WEBP", exif=exif.tobytes(), icc_profile=icc, lossless=True),
    }
    for name, data in sources.items():
        for mode in ("RGB", "L"):
            for resize in ("letterbox", "crop", "stretch"):
                png = standardise(data, ImageSpec(size=16, mode=mode, resize=resize)).png
                assert png_chunks(png) == ["IHDR", "IDAT", "IEND"], (name, mode, resize)
                assert b"Jane" not in png and b"Hospital" not in png


def test_encode_png_does_not_change_its_argument() -> None:
    image = Image.new("L", (4, 4), 7)
    image.info["icc_profile"] = b"not really"
    png = encode_png(image)
    assert png_chunks(png) == ["IHDR", "IDAT", "IEND"]
    assert image.info == {"icc_profile": b"not really"}


@pytest.mark.parametrize("suffix, mode", [(".jpg", "RGB"), (".png", "RGBA"), (".tif", "I;16"), (".gif", "P")])
def test_standardise_is_deterministic(tmp_path: Path, make_image, suffix: str, mode: str) -> None:
    data = make_image(tmp_path / f"x{suffix}", size=(40, 30), mode=mode, seed=11).read_bytes()
    spec = ImageSpec(size=24, mode="RGB")
    first, second = standardise(data, spec), standardise(bytes(data), spec)
    assert first == second
    assert first.png == second.png and first.pixel_sha256 == second.pixel_sha256


def test_pixel_fingerprint_is_the_same_for_the_same_pixels_in_lossless_formats(
    tmp_path: Path, make_image
) -> None:
    picture = synthetic_pixels((20, 12), "RGB", 9)
    spec = ImageSpec(size=16)
    fingerprints = {
        suffix: standardise(
            make_image(tmp_path / f"same{suffix}", image=picture).read_bytes(), spec
        ).pixel_sha256
        for suffix in (".png", ".bmp", ".tif", ".webp")
    }
    assert len(set(fingerprints.values())) == 1, fingerprints
    other = standardise(
        make_image(tmp_path / "other.png", size=(20, 12), seed=10).read_bytes(), spec
    ).pixel_sha256
    assert other not in fingerprints.values()
    # One pixel different is a different image.
    changed = np.asarray(picture).copy()
    changed[0, 0, 0] ^= 1
    changed_sha = standardise(image_bytes(Image.fromarray(changed, mode="RGB")), spec).pixel_sha256
    assert changed_sha != fingerprints[".png"]


def test_pixel_fingerprint_does_not_depend_on_the_output_spec() -> None:
    data = image_bytes(synthetic_pixels((20, 12), "RGB", 9))
    shas = {
        standardise(data, ImageSpec(size=size, mode=mode, resize=resize)).pixel_sha256
        for size in (8, 64)
        for mode in ("L", "RGB")
        for resize in ("letterbox", "crop")
    }
    assert len(shas) == 1


# --- rejections ----------------------------------------------------------------------------------


def rejection(data: bytes, spec: ImageSpec | None = None) -> RejectedImage:
    with pytest.raises(RejectedImage) as info:
        standardise(data, spec or ImageSpec(size=16))
    assert info.value.message and str(info.value) == info.value.message
    return info.value


def test_bad_corpus_decode_rejections(bad_corpus) -> None:
    for rel, reason in sorted(bad_corpus.decode_rejected.items()):
        error = rejection((bad_corpus.root / rel).read_bytes(), bad_corpus.spec)
        assert error.reason is reason, (rel, error.reason, error.message)
    for rel in sorted(bad_corpus.good):
        out = png_image(standardise((bad_corpus.root / rel).read_bytes(), bad_corpus.spec).png)
        assert out.size == (16, 16) and out.mode == "RGB"


def test_empty_file() -> None:
    assert rejection(b"").reason is Reason.EMPTY_FILE


@pytest.mark.parametrize(
    "fmt, mode",
    [("PNG", "RGB"), ("PNG", "I;16"), ("JPEG", "RGB"), ("BMP", "RGB"), ("TIFF", "RGB"), ("GIF", "P")],
)
@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_truncated_files(fmt: str, mode: str, fraction: float) -> None:
    data = image_bytes(synthetic_pixels((64, 48), mode, 1), fmt)
    assert rejection(data[: int(len(data) * fraction)]).reason is Reason.TRUNCATED


def test_truncated_webp_is_corrupt() -> None:
    # libwebp reports only a generic decoder failure, so a cut WEBP cannot be told from a damaged one.
    data = image_bytes(synthetic_pixels((64, 48), "RGB", 1), "WEBP", lossless=True)
    assert rejection(data[: len(data) // 2]).reason is Reason.CORRUPT


def test_corrupt_pixel_data_with_an_intact_header() -> None:
    data = bytearray(image_bytes(synthetic_pixels((32, 24), "RGB", 3)))
    start = data.index(b"IDAT") + 6
    for i in range(start, start + 64):
        data[i] ^= 0xA5
    assert rejection(bytes(data)).reason is Reason.CORRUPT


@pytest.mark.parametrize(
    "data",
    [
        b"this is a text file, not a JPEG\n",
        b"\x00" * 100,
        bytes(range(256)) * 3,
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n",
        b"\x89PNG\r\n",  # a signature alone
    ],
)
def test_not_an_image(data: bytes) -> None:
    assert rejection(data).reason is Reason.NOT_AN_IMAGE


def test_unsupported_pixel_mode() -> None:
    data = image_bytes(Image.fromarray(np.ones((4, 4), dtype=np.float32)), "TIFF")
    error = rejection(data)
    assert error.reason is Reason.UNSUPPORTED_MODE and "'F'" in error.message


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "TIFF", "BMP"])
def test_decompression_bomb_over_twice_the_limit(fmt: str) -> None:
    data = image_bytes(Image.new("L", (200, 200), 9), fmt)  # 40,000 pixels
    previous = Image.MAX_IMAGE_PIXELS
    error = rejection(data, ImageSpec(size=16, max_pixels=10_000))
    assert error.reason is Reason.DECOMPRESSION_BOMB and "10000" in error.message
    assert Image.MAX_IMAGE_PIXELS == previous, "the global Pillow limit must be restored"


def test_decompression_bomb_just_over_the_limit_and_exactly_at_it() -> None:
    data = image_bytes(Image.new("L", (100, 100), 9))  # 10,000 pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a bomb warning must become a rejection, not leak out
        assert rejection(data, ImageSpec(size=16, max_pixels=9_999)).reason is Reason.DECOMPRESSION_BOMB
        assert rejection(data, ImageSpec(size=16, max_pixels=6_000)).reason is Reason.DECOMPRESSION_BOMB
        out = png_image(standardise(data, ImageSpec(size=16, max_pixels=10_000)).png)
    assert out.size == (16, 16)


def test_default_limit_accepts_ordinary_images_and_restores_pillow_state() -> None:
    previous = Image.MAX_IMAGE_PIXELS
    standardise(image_bytes(Image.new("RGB", (300, 200))), ImageSpec(size=16))
    assert Image.MAX_IMAGE_PIXELS == previous


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    "fmt, mode",
    [
        ("PNG", "RGB"),
        ("JPEG", "RGB"),
        ("BMP", "P"),
        ("TIFF", "I;16"),
        ("TIFF", "CMYK"),
        ("WEBP", "RGBA"),
        ("GIF", "P"),
    ],
)
def test_damaged_files_are_either_standardised_or_rejected_never_crash(fmt: str, mode: str) -> None:
    params = {"lossless": True} if fmt == "WEBP" else {}
    data = image_bytes(synthetic_pixels((24, 16), mode, 1), fmt, **params)
    rng = np.random.default_rng(1234)
    spec = ImageSpec(size=8)
    for trial in range(60):
        damaged = bytearray(data)
        for _ in range(int(rng.integers(1, 6))):
            damaged[int(rng.integers(0, len(damaged)))] = int(rng.integers(0, 256))
        if trial % 3 == 0:
            damaged = damaged[: int(rng.integers(1, len(damaged)))]
        try:
            out = png_image(standardise(bytes(damaged), spec).png)
        except RejectedImage as exc:
            assert isinstance(exc.reason, Reason) and exc.message
        else:
            assert out.size == (8, 8) and out.mode == "RGB"


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "TGA", "PCX", "EPS", "JPEG2000"])
def test_formats_outside_the_contract_are_not_images_whatever_the_extension(fmt: str) -> None:
    # Pillow could decode these, but only PNG/JPEG/BMP/TIFF/WEBP/GIF are accepted (an EPS
    # would be handed to Ghostscript).
    if fmt == "EPS":
        data = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n"
    else:
        data = image_bytes(Image.new("RGB", (8, 8), (9, 9, 9)), fmt)
    error = rejection(data)
    assert error.reason is Reason.NOT_AN_IMAGE


def test_multi_picture_camera_jpeg_is_a_jpeg() -> None:
    first = Image.new("RGB", (8, 8), (200, 10, 10))
    data = image_bytes(first, "MPO", save_all=True, append_images=[Image.new("RGB", (8, 8), (10, 200, 10))])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    got = pixels(standardise(data, ImageSpec(size=8)).png)
    assert np.abs(got - np.array([200, 10, 10])).max() <= 8
