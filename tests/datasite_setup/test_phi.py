"""No personal data survives conversion: every byte of OUT is searched for the sources' names and metadata.

The sources carry distinctive strings in folder names, file names, CSV patient ids,
EXIF (camera make/model, ImageDescription, Artist, UserComment, GPS), JPEG/GIF
comments, PNG text chunks and TIFF tags. All of them are accepted inputs, so
``quarantine.jsonl`` (which may name *rejected* inputs) must be empty too.
"""

from __future__ import annotations

import csv
import io
import struct
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from datasite_setup.convert.pipeline import convert
from datasite_setup.convert.sources import CsvColumns
from tests.datasite_setup.test_convert import options, read_outputs, run_cli

UNICODE_NAME = "Ünïcödé name"
# Strings that must not appear anywhere in OUT, in any of the forms of ``forms``.
PHI = [
    "SMITH_JOHN_1970",
    "MRN12345",
    "MRN67890",
    UNICODE_NAME,
    "DOE^JANE",
    "ZyxCamCorp",
    "CamModelZX9",
    "PhiSoftware 9.9",
    "Dr Quackenbush",
    "chest_pa_view",
    "St Elsewhere Ward 7",
]
LABELS = ("benign", "malignant")


def forms(text: str) -> set[bytes]:
    """The byte strings ``text`` could hide as: case variants, NFC/NFD, UTF-8/UTF-16/Latin-1."""
    variants = set()
    for cased in {text, text.lower(), text.upper()}:
        for normal in {unicodedata.normalize("NFC", cased), unicodedata.normalize("NFD", cased)}:
            for encoding in ("utf-8", "utf-16-le", "utf-16-be", "latin-1"):
                try:
                    variants.add(normal.encode(encoding))
                except UnicodeEncodeError:
                    pass
    return variants


def exif_bytes(seed: int) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "ZyxCamCorp"  # Make
    exif[0x0110] = "CamModelZX9"  # Model
    exif[0x010E] = f"PATIENT SMITH_JOHN_1970 MRN12345 seed {seed}"  # ImageDescription
    exif[0x0131] = "PhiSoftware 9.9"  # Software
    exif[0x013B] = "Dr Quackenbush"  # Artist
    exif[0x0112] = 1 + seed % 8  # Orientation (applied, then dropped)
    exif.get_ifd(0x8769)[0x9286] = b"ASCII\x00\x00\x00St Elsewhere Ward 7 DOE^JANE"  # UserComment
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (51.0, 30.0, 26.5), "W", (0.0, 7.0, 39.0)
    return exif.tobytes()


def pixels(seed: int, mode: str = "RGB", size: tuple[int, int] = (24, 18)) -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)


def write_phi_image(path: Path, seed: int) -> None:
    """An image in the suffix's format, carrying every kind of metadata that format can hold."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    image = pixels(seed)
    if suffix == ".jpg":
        image.save(path, "JPEG", quality=95, exif=exif_bytes(seed), comment=b"MRN12345 SMITH_JOHN_1970")
    elif suffix == ".png":
        info = PngImagePlugin.PngInfo()
        info.add_text("Patient", "SMITH_JOHN_1970")
        info.add_text("Comment", "MRN67890 chest_pa_view", zip=True)
        info.add_itxt("Author", UNICODE_NAME, lang="en", tkey="Autor")
        image.save(path, "PNG", pnginfo=info, exif=exif_bytes(seed))
    elif suffix == ".tif":
        image.save(
            path,
            "TIFF",
            tiffinfo={270: "SMITH_JOHN_1970 MRN12345", 315: "Dr Quackenbush", 305: "PhiSoftware 9.9"},
        )
    elif suffix == ".webp":
        image.save(path, "WEBP", lossless=True, exif=exif_bytes(seed))
    elif suffix == ".gif":
        image.convert("P").save(path, "GIF", comment=b"DOE^JANE MRN67890")
    else:
        raise ValueError(suffix)


# Relative paths under the patient folders; every format that can carry metadata.
FILE_NAMES = [
    "MRN12345_chest_pa_view.jpg",
    "SMITH_JOHN_1970 lateral.png",
    f"{UNICODE_NAME} scan.tif",
    "DOE^JANE_MRN67890.webp",
    "St Elsewhere Ward 7.gif",
]
PATIENTS = ["SMITH_JOHN_1970", "MRN12345", UNICODE_NAME, "DOE^JANE", "MRN67890", "St Elsewhere Ward 7"]


def assert_no_phi(out: Path) -> None:
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert any(p.name == "report.md" for p in files) and any(
        p.name == "label_distribution.png" for p in files
    )
    needles = {needle: text for text in PHI for needle in forms(text)}
    for path in files:
        data = path.read_bytes()
        name = path.relative_to(out).as_posix().encode("utf-8")
        for needle, text in needles.items():
            assert needle not in data, f"{text!r} found in {path.relative_to(out)}"
            assert needle not in name, f"{text!r} found in the file name {path.relative_to(out)}"
    assert (out / "quarantine.jsonl").read_bytes() == b""  # every PHI-bearing input was accepted


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, position = [], 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        chunks.append(data[position + 4 : position + 8])
        position += 12 + length
    return chunks


def assert_sample_pngs_are_bare(out: Path, count: int) -> None:
    pngs = sorted((out / "clients").rglob("*.png"))
    assert len(pngs) == count
    for png in pngs:
        data = png.read_bytes()
        assert set(png_chunks(data)) <= {b"IHDR", b"PLTE", b"IDAT", b"IEND"}, png
        with Image.open(io.BytesIO(data)) as image:
            assert not image.getexif()
            assert not image.info, image.info


@pytest.fixture(scope="module")
def phi_sources(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Patient folders full of PHI-named, metadata-laden images, plus a labels CSV naming the patients."""
    base = tmp_path_factory.mktemp("phi")
    src = base / "src"
    rows = []
    seed = 0
    for p, patient in enumerate(PATIENTS):
        label = LABELS[p % 2]
        for name in FILE_NAMES[p % 2 :: 2] + [FILE_NAMES[(p + 2) % len(FILE_NAMES)]]:
            seed += 1
            rel = f"{patient}/{seed:02d} {name}"
            write_phi_image(src / rel, seed)
            rows.append((rel, label, patient, "site_a" if p < 3 else "site_b", rel))
    # A folder whose name is stored decomposed (NFD, as macOS writes it) while the CSV names it composed.
    nfd_rel = f"{unicodedata.normalize('NFD', UNICODE_NAME)}/nfd {UNICODE_NAME}.png"
    write_phi_image(src / nfd_rel, seed + 1)
    rows.append((unicodedata.normalize("NFC", nfd_rel), "benign", UNICODE_NAME, "site_a", nfd_rel))
    with open(base / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "patient_id", "site"])
        writer.writerows(row[:4] for row in rows)  # the fifth field is the name on disk
        writer.writerow(rows[0][:4])  # a duplicate row: warned about on stderr, never written
    return {"base": base, "src": src, "labels": base / "labels.csv", "rows": rows}


def test_the_sources_really_carry_the_phi(phi_sources: dict) -> None:
    # Guard against a fixture that silently stopped writing metadata.
    everything = b"".join(p.read_bytes() for p in phi_sources["src"].rglob("*") if p.is_file())
    for text in (
        "CamModelZX9",
        "Dr Quackenbush",
        "St Elsewhere Ward 7",
        "SMITH_JOHN_1970",
        "DOE^JANE",
        "MRN67890",
    ):
        assert text.encode() in everything
    assert UNICODE_NAME.encode("latin-1") in everything or UNICODE_NAME.encode() in everything


def test_csv_layout_with_patient_ids_leaves_no_phi(phi_sources: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        [
            "convert",
            phi_sources["src"],
            out,
            "--labels",
            phi_sources["labels"],
            "--group-column",
            "patient_id",
            "--clients",
            "2",
            "--scheme",
            "iid",
            "--size",
            "16",
            "--mode",
            "RGB",
            "--quiet",
        ]
    )
    assert code == 0, err
    assert "duplicate row" in err  # the warning goes to the terminal, not into OUT
    assert_no_phi(out)
    assert_sample_pngs_are_bare(out, len(phi_sources["rows"]))
    # The patient is still a group: one group_id per patient id.
    groups = {row.group_id for rows in read_outputs(out).values() for row in rows}
    assert len(groups) == len(PATIENTS)


def test_natural_scheme_leaves_no_phi(phi_sources: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = convert(
        options(
            phi_sources["src"],
            out,
            scheme="natural",
            labels_csv=phi_sources["labels"],
            columns=CsvColumns(group="patient_id", client="site"),
        )
    )
    assert result.exit_code == 0
    assert_no_phi(out)


def test_class_folders_with_patient_subfolders_leave_no_phi(phi_sources: dict, tmp_path: Path) -> None:
    # <label>/<patient>/<file>: the label survives (it is the class), the patient folder must not.
    src = tmp_path / "src"
    count = 0
    for _, label, _, _, rel in phi_sources["rows"]:
        target = src / label / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((phi_sources["src"] / rel).read_bytes())
        count += 1
    result = convert(options(src, tmp_path / "out", scheme="stratified", num_clients=2, workers=1))
    assert result.exit_code == 0
    assert_no_phi(tmp_path / "out")
    assert_sample_pngs_are_bare(tmp_path / "out", count)


def test_label_pattern_layout_leaves_no_phi(phi_sources: dict, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for _, label, _, _, rel in phi_sources["rows"]:
        folder, name = rel.split("/", 1)
        target = src / folder / f"{Path(name).stem}__{label}{Path(name).suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((phi_sources["src"] / rel).read_bytes())
    out = tmp_path / "out"
    code, _, err = run_cli(
        [
            "convert",
            src,
            out,
            "--label-pattern",
            r"__(?P<label>[a-z]+)\.",
            "--clients",
            "2",
            "--scheme",
            "iid",
            "--size",
            "16",
            "--quiet",
        ]
    )
    assert code == 0, err
    assert_no_phi(out)


def test_the_phi_check_itself_finds_a_planted_name(phi_sources: dict, tmp_path: Path) -> None:
    # The grep must be able to fail: plant a name in a copy of a real output and expect it to be caught.
    out = tmp_path / "out"
    convert(
        options(
            phi_sources["src"],
            out,
            scheme="iid",
            num_clients=2,
            labels_csv=phi_sources["labels"],
            columns=CsvColumns(group="patient_id"),
        )
    )
    report = out / "report.md"
    report.write_bytes(report.read_bytes() + UNICODE_NAME.lower().encode("utf-16-le"))
    with pytest.raises(AssertionError, match="report.md"):
        assert_no_phi(out)
