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
from dataclasses import dataclass
from pathlib import Path

from datasite_setup.convert.federated_format import (
    CHECKSUMS_FILE,
    CLIENTS_DIR,
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


@dataclass(frozen=True)
class Problem:
    """One thing wrong with OUT: ``path`` is relative to OUT; ``kind`` is one of ``KINDS``."""

    path: str
    kind: str
    message: str


def verify_federation(out: Path, *, show_progress: bool = False) -> list[Problem]:
    """Return every problem found in ``out`` (empty when it verifies); ``FedimgError`` if it is no federation at all."""
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


def _check_manifest_schema(federation: dict) -> list[Problem]:
    path = "federation.json"
    missing = [key for key in _REQUIRED_KEYS if key not in federation]
    if missing:
        return [Problem(path, "schema", f"missing keys {missing}")]
    if federation["schema_version"] != SCHEMA_VERSION:
        return [
            Problem(
                path,
                "schema",
                f"schema_version {federation['schema_version']!r}, this fedimg reads {SCHEMA_VERSION}",
            )
        ]
    problems = []
    if not isinstance(federation["clients"], dict) or not federation["clients"]:
        return [Problem(path, "schema", "clients must be a non-empty object")]
    label_map = federation["label_map"]
    if not isinstance(label_map, dict) or sorted(label_map.values()) != list(range(len(label_map))):
        problems.append(Problem(path, "schema", "label_map must map each label to 0..n-1"))
    for name, client in federation["clients"].items():
        try:
            check_client_name(name)  # a name like "../x" would point verify outside OUT
        except FedimgError as exc:
            problems.append(Problem(path, "schema", str(exc)))
        if not isinstance(client, dict):
            problems.append(Problem(path, "schema", f"client {name!r} must be an object"))
            continue
        absent = [key for key in _CLIENT_KEYS if key not in client]
        if absent:
            problems.append(Problem(path, "schema", f"client {name!r} lacks {absent}"))
        mistyped = [
            key
            for key, kind in _CLIENT_KEY_TYPES.items()
            if key in client and not isinstance(client[key], kind)
        ]
        if mistyped:
            problems.append(
                Problem(path, "schema", f"client {name!r} has values of the wrong type for {mistyped}")
            )
    totals = federation["totals"]
    if not isinstance(totals, dict):
        problems.append(Problem(path, "schema", "totals must be an object"))
    if not problems and totals.get("num_samples") != sum(
        c["num_samples"] for c in federation["clients"].values()
    ):
        problems.append(
            Problem(
                path, "count", f"totals.num_samples {totals.get('num_samples')} is not the sum over clients"
            )
        )
    if not problems and totals.get("num_clients") != len(federation["clients"]):
        problems.append(
            Problem(
                path,
                "count",
                f"totals.num_clients {totals.get('num_clients')} but {len(federation['clients'])} clients listed",
            )
        )
    return problems


def _check_top_level(out: Path, federation: dict) -> list[Problem]:
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


def _check_client(out: Path, name: str, federation: dict, client_of_group: dict[str, str]) -> list[Problem]:
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
    parsed = {}
    for file_name, reader in ((METADATA_FILE, read_metadata_csv), (CHECKSUMS_FILE, read_checksums_file)):
        try:
            parsed[file_name] = reader(documents[file_name])
        except (ValueError, UnicodeDecodeError, csv.Error) as exc:  # each file blamed for its own errors
            problems.append(Problem(f"{base}/{file_name}", "schema", str(exc)))
    if len(parsed) < 2:
        return problems
    rows, checksums = parsed[METADATA_FILE], parsed[CHECKSUMS_FILE]
    problems += _check_rows(f"{base}/{METADATA_FILE}", rows, federation["label_map"])
    if {row.file_name for row in rows} != set(checksums):
        problems.append(Problem(f"{base}/{CHECKSUMS_FILE}", "count", "lists other images than metadata.csv"))
    problems += _check_counts(f"{base}/{METADATA_FILE}", rows, client, federation["label_map"])
    problems += _check_groups(base, name, rows, client_of_group)
    return problems


def _check_rows(path: str, rows: list[SampleRow], label_map: dict) -> list[Problem]:
    problems = []
    for line, row in enumerate(rows, start=2):
        wrong = []
        if row.label not in label_map:
            wrong.append(f"label {row.label!r} not in label_map")
        if row.split not in SPLITS:
            wrong.append(f"split {row.split!r} not one of {SPLITS}")
        if not _PSEUDONYM.match(row.sample_id) or not _PSEUDONYM.match(row.group_id):
            wrong.append("sample_id and group_id must be 20 hex digits")
        if not _SHA256.match(row.source_sha256):
            wrong.append("source_sha256 must be 64 hex digits")
        if not wrong and row.file_name != sample_file_name(row.label, row.sample_id):
            wrong.append(
                f"file_name {row.file_name!r} should be {sample_file_name(row.label, row.sample_id)!r}"
            )
        problems += [Problem(path, "schema", f"line {line}: {message}") for message in wrong]
    return problems


def _check_counts(path: str, rows: list[SampleRow], client: dict, label_map: dict) -> list[Problem]:
    counts = Counter((row.split, row.label) for row in rows)
    actual = {split: {label: counts[(split, label)] for label in label_map} for split in SPLITS}
    problems = []
    if len(rows) != client["num_samples"]:
        problems.append(
            Problem(path, "count", f"{len(rows)} rows, federation.json says {client['num_samples']}")
        )
    if actual != client["label_counts"]:
        problems.append(Problem(path, "count", "samples per split and label differ from federation.json"))
    if {split: sum(actual[split].values()) for split in SPLITS} != client["split_counts"]:
        problems.append(
            Problem(path, "count", "samples per split differ from federation.json (split_counts)")
        )
    if len({row.group_id for row in rows}) != client["num_groups"]:
        problems.append(
            Problem(
                path,
                "count",
                f"{len({row.group_id for row in rows})} groups, federation.json says {client['num_groups']}",
            )
        )
    return problems


def _check_groups(
    base: str, name: str, rows: list[SampleRow], client_of_group: dict[str, str]
) -> list[Problem]:
    problems, split_of_group = [], {}
    for row in rows:
        if split_of_group.setdefault(row.group_id, row.split) != row.split:
            problems.append(
                Problem(f"{base}/{METADATA_FILE}", "leak", f"group {row.group_id} is in both train and val")
            )
            split_of_group[row.group_id] = row.split
    for group in split_of_group:
        other = client_of_group.setdefault(group, name)
        if other != name:
            problems.append(
                Problem(f"{base}/{METADATA_FILE}", "leak", f"group {group} is also in client {other!r}")
            )
    return problems


def _check_client_dirs(out: Path, clients: dict) -> list[Problem]:
    root = out / CLIENTS_DIR
    if not root.is_dir():
        return [Problem(CLIENTS_DIR, "missing", "folder not found")]
    return [
        Problem(f"{CLIENTS_DIR}/{entry.name}", "extra", "client not in federation.json")
        for entry in sorted(root.iterdir())
        if entry.name not in clients
    ]


def _check_images(out: Path, clients: dict, show_progress: bool) -> list[Problem]:
    expected: dict[str, str] = {}
    for name in clients:
        sums = out / CLIENTS_DIR / name / CHECKSUMS_FILE
        try:
            listed = read_checksums_file(sums.read_bytes())
        except (OSError, ValueError, UnicodeDecodeError):
            continue  # already reported by _check_client
        expected.update({f"{CLIENTS_DIR}/{name}/{file}": digest for file, digest in listed.items()})
    problems = []
    for relative in progress_bar(
        sorted(expected), total=len(expected), description="Verifying images", enabled=show_progress
    ):
        path = out / relative
        if not path.is_file():
            problems.append(Problem(relative, "missing", "image listed in SHA256SUMS not found"))
        elif sha256_file(path) != expected[relative]:
            problems.append(Problem(relative, "altered", "sha256 differs from SHA256SUMS"))
    for name in clients:
        client_dir = out / CLIENTS_DIR / name
        manifests = {f"{CLIENTS_DIR}/{name}/{METADATA_FILE}", f"{CLIENTS_DIR}/{name}/{CHECKSUMS_FILE}"}
        for path in sorted(client_dir.rglob("*")) if client_dir.is_dir() else ():
            relative = path.relative_to(out).as_posix()
            if not path.is_dir() and relative not in expected and relative not in manifests:
                problems.append(Problem(relative, "extra", "file not listed in SHA256SUMS"))
    return problems
