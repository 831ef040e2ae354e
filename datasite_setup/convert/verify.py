"""``fedimg verify``: is OUT exactly what ``fedimg convert`` wrote?

Checks every file against the manifests (missing, extra, altered), the
manifests against ``federation.json`` (hashes, counts) and the schema of each
manifest, and that no group (patient) spans two clients or two splits. Every
problem names the file, relative to OUT.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from datasite_setup.convert.federated_format import (
    CHECKSUMS_FILE,
    CLIENTS_DIR,
    FEDERATION_FILE,
    METADATA_FILE,
    QUARANTINE_FILE,
    SCHEMA_VERSION,
    SPLITS,
    TOP_LEVEL_FILES,
    SampleRow,
    check_client_name,
    load_federation,
    read_checksums_file,
    read_metadata_csv,
    sample_file_name,
    sha256_bytes,
    sha256_file,
)
from datasite_setup.convert.quarantine import read_quarantine
from datasite_setup.errors import FedimgError
from datasite_setup.progress import progress_bar

KINDS = ("missing", "extra", "altered", "schema", "count", "leak")
"""The kinds of ``Problem``: a file missing, extra or altered; a manifest's schema, a count, a group leak."""
_PSEUDONYM = re.compile(r"^[0-9a-f]{20}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REQUIRED_KEYS = (
    "schema_version",
    "tool",
    "image",
    "label_map",
    "partition",
    "pseudonyms",
    "inputs",
    "clients",
    "totals",
    "quarantine_sha256",
)
_CLIENT_KEYS = (
    "num_samples",
    "split_counts",
    "label_counts",
    "num_groups",
    "metadata_sha256",
    "checksums_sha256",
)
_CLIENT_KEY_TYPES = {
    "num_samples": int,
    "split_counts": dict,
    "label_counts": dict,
    "num_groups": int,
    "metadata_sha256": str,
    "checksums_sha256": str,
}
_Parsed = TypeVar("_Parsed")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with OUT.

    Parameters
    ----------
    path : str
        The file at fault, relative to OUT.
    kind : str
        One of ``KINDS``: missing, extra, altered, schema, count or leak.
    message : str
        What is wrong with it.
    """

    path: str
    kind: str
    message: str


def verify_federation(out: Path, *, show_progress: bool = False) -> list[Problem]:
    """Check that ``out`` is exactly what ``fedimg convert`` wrote.

    Every file is checked against the manifests (missing, extra, altered), the
    manifests against ``federation.json`` (hashes, counts) and their schema, and
    no group (patient) may span two clients or two splits.

    Parameters
    ----------
    out : Path
        The output folder of ``fedimg convert``.
    show_progress : bool, default False
        Show a progress bar while hashing the images.

    Returns
    -------
    list of Problem
        Every problem found; empty when ``out`` verifies.

    Raises
    ------
    FedimgError
        When ``out`` has no readable ``federation.json`` at all.

    Examples
    --------
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from datasite_setup.convert.pipeline import ConvertOptions, convert
    >>> for i in range(8):
    ...     Path(f"src/{i % 2}").mkdir(parents=True, exist_ok=True)
    ...     Image.new("L", (8, 8), 30 * i).save(f"src/{i % 2}/{i}.png")
    >>> options = ConvertOptions(Path("src"), Path("fed"), "iid", num_clients=2,
    ...                          secret_file=Path("secret"), show_progress=False)
    >>> _ = convert(options)
    >>> verify_federation(Path("fed"))
    []
    >>> _ = Path("fed/clients/client_0/notes.txt").write_text("not part of the output")
    >>> verify_federation(Path("fed"))
    [Problem(path='clients/client_0/notes.txt', kind='extra', message='file not listed in SHA256SUMS')]
    """
    federation = load_federation(out)
    problems = _check_manifest_schema(federation)
    if problems:
        return problems
    problems += _check_top_level(out, federation)
    client_of_group: dict[str, str] = {}
    clients = federation["clients"]
    for name in clients:
        problems += _check_client(out, name, federation, client_of_group)
    problems += _check_client_dirs(out, clients)
    problems += _check_images(out, clients, show_progress)
    return problems


def _check_manifest_schema(federation: dict[str, Any]) -> list[Problem]:
    missing = [key for key in _REQUIRED_KEYS if key not in federation]
    if missing:
        return [Problem(FEDERATION_FILE, "schema", f"missing keys {missing}")]
    version = federation["schema_version"]
    if version != SCHEMA_VERSION:
        message = (
            f"schema_version {version!r}, this fedimg reads {SCHEMA_VERSION}: convert the collection again"
        )
        if version == 1:
            message += " (v1's source_sha256 column links each pseudonym to its original file)"
        return [Problem(FEDERATION_FILE, "schema", message)]
    clients = federation["clients"]
    if not isinstance(clients, dict) or not clients:
        return [Problem(FEDERATION_FILE, "schema", "clients must be a non-empty object")]
    problems = _check_label_map(federation["label_map"])
    for name, client in clients.items():
        problems += _check_client_entry(name, client)
    totals = federation["totals"]
    if not isinstance(totals, dict):
        problems.append(Problem(FEDERATION_FILE, "schema", "totals must be an object"))
    if not problems:
        problems += _check_totals(totals, clients)
    return problems


def _check_label_map(label_map: object) -> list[Problem]:
    if isinstance(label_map, dict) and sorted(label_map.values()) == list(range(len(label_map))):
        return []
    return [Problem(FEDERATION_FILE, "schema", "label_map must map each label to 0..n-1")]


def _check_client_entry(name: str, client: object) -> list[Problem]:
    problems = []
    try:
        check_client_name(name)  # a name like "../x" would point verify outside OUT
    except FedimgError as exc:
        problems.append(Problem(FEDERATION_FILE, "schema", str(exc)))
    if not isinstance(client, dict):
        problems.append(Problem(FEDERATION_FILE, "schema", f"client {name!r} must be an object"))
        return problems
    absent = [key for key in _CLIENT_KEYS if key not in client]
    if absent:
        problems.append(Problem(FEDERATION_FILE, "schema", f"client {name!r} lacks {absent}"))
    mistyped = [
        key for key, kind in _CLIENT_KEY_TYPES.items() if key in client and not isinstance(client[key], kind)
    ]
    if mistyped:
        message = f"client {name!r} has values of the wrong type for {mistyped}"
        problems.append(Problem(FEDERATION_FILE, "schema", message))
    return problems


def _check_totals(totals: dict[str, Any], clients: dict[str, Any]) -> list[Problem]:
    num_samples = sum(client["num_samples"] for client in clients.values())
    if totals.get("num_samples") != num_samples:
        message = f"totals.num_samples {totals.get('num_samples')} is not the sum over clients"
        return [Problem(FEDERATION_FILE, "count", message)]
    if totals.get("num_clients") != len(clients):
        message = f"totals.num_clients {totals.get('num_clients')} but {len(clients)} clients listed"
        return [Problem(FEDERATION_FILE, "count", message)]
    return []


def _check_top_level(out: Path, federation: dict[str, Any]) -> list[Problem]:
    problems = [
        Problem(name, "missing", "file not found") for name in TOP_LEVEL_FILES if not (out / name).is_file()
    ]
    expected = set(TOP_LEVEL_FILES) | {CLIENTS_DIR}
    problems += [
        Problem(entry.name, "extra", "not part of the federated format")
        for entry in sorted(out.iterdir())
        if entry.name not in expected
    ]
    quarantine = out / QUARANTINE_FILE
    if quarantine.is_file():
        data = quarantine.read_bytes()
        if sha256_bytes(data) != federation["quarantine_sha256"]:
            problems.append(Problem(QUARANTINE_FILE, "altered", "sha256 differs from federation.json"))
        try:
            read_quarantine(data)
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(Problem(QUARANTINE_FILE, "schema", str(exc)))
    return problems


def _check_client(
    out: Path, name: str, federation: dict[str, Any], client_of_group: dict[str, str]
) -> list[Problem]:
    client, base = federation["clients"][name], f"{CLIENTS_DIR}/{name}"
    problems: list[Problem] = []
    documents = {}
    for file_name, key in ((METADATA_FILE, "metadata_sha256"), (CHECKSUMS_FILE, "checksums_sha256")):
        path = out / CLIENTS_DIR / name / file_name
        if not path.is_file():
            problems.append(Problem(f"{base}/{file_name}", "missing", "file not found"))
            continue
        documents[file_name] = path.read_bytes()
        if sha256_bytes(documents[file_name]) != client[key]:
            problems.append(Problem(f"{base}/{file_name}", "altered", "sha256 differs from federation.json"))
    if len(documents) < 2:
        return problems
    # Both are parsed, each blamed for its own errors.
    rows = _parse(read_metadata_csv, documents[METADATA_FILE], f"{base}/{METADATA_FILE}", problems)
    checksums = _parse(read_checksums_file, documents[CHECKSUMS_FILE], f"{base}/{CHECKSUMS_FILE}", problems)
    if rows is None or checksums is None:
        return problems
    problems += _check_rows(f"{base}/{METADATA_FILE}", rows, federation["label_map"])
    if {row.file_name for row in rows} != set(checksums):
        problems.append(Problem(f"{base}/{CHECKSUMS_FILE}", "count", "lists other images than metadata.csv"))
    problems += _check_counts(f"{base}/{METADATA_FILE}", rows, client, federation["label_map"])
    problems += _check_groups(base, name, rows, client_of_group)
    return problems


def _parse(
    reader: Callable[[bytes], _Parsed], data: bytes, path: str, problems: list[Problem]
) -> _Parsed | None:
    """``reader(data)``, or None with a schema problem for ``path`` appended to ``problems``."""
    try:
        return reader(data)
    except (ValueError, UnicodeDecodeError, csv.Error) as exc:
        problems.append(Problem(path, "schema", str(exc)))
        return None


def _check_rows(path: str, rows: list[SampleRow], label_map: dict[str, int]) -> list[Problem]:
    problems = []
    for line, row in enumerate(rows, start=2):
        wrong = []
        if row.label not in label_map:
            wrong.append(f"label {row.label!r} not in label_map")
        if row.split not in SPLITS:
            wrong.append(f"split {row.split!r} not one of {SPLITS}")
        if not _PSEUDONYM.match(row.sample_id) or not _PSEUDONYM.match(row.group_id):
            wrong.append("sample_id and group_id must be 20 hex digits")
        if not _SHA256.match(row.source_hmac):
            wrong.append("source_hmac must be 64 hex digits")
        expected_name = sample_file_name(row.label, row.sample_id)
        if not wrong and row.file_name != expected_name:
            wrong.append(f"file_name {row.file_name!r} should be {expected_name!r}")
        problems += [Problem(path, "schema", f"line {line}: {message}") for message in wrong]
    return problems


def _check_counts(
    path: str, rows: list[SampleRow], client: dict[str, Any], label_map: dict[str, int]
) -> list[Problem]:
    counts = Counter((row.split, row.label) for row in rows)
    label_counts = {split: {label: counts[(split, label)] for label in label_map} for split in SPLITS}
    split_counts = {split: sum(label_counts[split].values()) for split in SPLITS}
    num_groups = len({row.group_id for row in rows})
    problems = []
    if len(rows) != client["num_samples"]:
        message = f"{len(rows)} rows, federation.json says {client['num_samples']}"
        problems.append(Problem(path, "count", message))
    if label_counts != client["label_counts"]:
        problems.append(Problem(path, "count", "samples per split and label differ from federation.json"))
    if split_counts != client["split_counts"]:
        message = "samples per split differ from federation.json (split_counts)"
        problems.append(Problem(path, "count", message))
    if num_groups != client["num_groups"]:
        message = f"{num_groups} groups, federation.json says {client['num_groups']}"
        problems.append(Problem(path, "count", message))
    return problems


def _check_groups(
    base: str, name: str, rows: list[SampleRow], client_of_group: dict[str, str]
) -> list[Problem]:
    path = f"{base}/{METADATA_FILE}"
    problems: list[Problem] = []
    split_of_group: dict[str, str] = {}
    for row in rows:
        if split_of_group.setdefault(row.group_id, row.split) != row.split:
            problems.append(Problem(path, "leak", f"group {row.group_id} is in both train and val"))
            split_of_group[row.group_id] = row.split
    for group in split_of_group:
        other = client_of_group.setdefault(group, name)
        if other != name:
            problems.append(Problem(path, "leak", f"group {group} is also in client {other!r}"))
    return problems


def _check_client_dirs(out: Path, clients: dict[str, Any]) -> list[Problem]:
    root = out / CLIENTS_DIR
    if not root.is_dir():
        return [Problem(CLIENTS_DIR, "missing", "folder not found")]
    return [
        Problem(f"{CLIENTS_DIR}/{entry.name}", "extra", "client not in federation.json")
        for entry in sorted(root.iterdir())
        if entry.name not in clients
    ]


def _check_images(out: Path, clients: dict[str, Any], show_progress: bool) -> list[Problem]:
    expected: dict[str, str] = {}
    for name in clients:
        sums = out / CLIENTS_DIR / name / CHECKSUMS_FILE
        try:
            listed = read_checksums_file(sums.read_bytes())
        except (OSError, ValueError, UnicodeDecodeError):
            continue  # already reported by _check_client
        expected.update({f"{CLIENTS_DIR}/{name}/{file}": digest for file, digest in listed.items()})
    problems = []
    listed_images = progress_bar(
        sorted(expected), total=len(expected), description="Verifying images", enabled=show_progress
    )
    for relative in listed_images:
        path = out / relative
        if not path.is_file():
            problems.append(Problem(relative, "missing", "image listed in SHA256SUMS not found"))
        elif sha256_file(path) != expected[relative]:
            problems.append(Problem(relative, "altered", "sha256 differs from SHA256SUMS"))
    for name in clients:
        problems += _check_unlisted_files(out, name, expected)
    return problems


def _check_unlisted_files(out: Path, name: str, expected: dict[str, str]) -> list[Problem]:
    client_dir = out / CLIENTS_DIR / name
    if not client_dir.is_dir():
        return []
    manifests = {f"{CLIENTS_DIR}/{name}/{METADATA_FILE}", f"{CLIENTS_DIR}/{name}/{CHECKSUMS_FILE}"}
    problems = []
    for path in sorted(client_dir.rglob("*")):
        relative = path.relative_to(out).as_posix()
        if not path.is_dir() and relative not in expected and relative not in manifests:
            problems.append(Problem(relative, "extra", "file not listed in SHA256SUMS"))
    return problems
