"""Federated format v1: the on-disk layout that ``fedimg convert`` writes.

```
OUT/
  federation.json                      the manifest of manifests (see ``build_federation_manifest``)
  quarantine.jsonl                     rejected inputs
  report.md, label_distribution.png    human-readable summary
  clients/<client>/
    images/<label>/<sample_id>.png     standardised images (ImageFolder layout)
    metadata.csv                       file_name,label,split,sample_id,group_id,source_sha256
    SHA256SUMS                         sha256 of every image, ``sha256sum -c`` compatible
```

Everything that must be reproducible (the manifests) is written in a canonical
order with no timestamps, so the same inputs, seed and secret give identical bytes.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from datasite_setup.errors import FedimgError

SCHEMA_VERSION = 1
FORMAT_NAME = "fedimg-federated"
FEDERATION_FILE = "federation.json"
QUARANTINE_FILE = "quarantine.jsonl"
REPORT_FILE = "report.md"
PLOT_FILE = "label_distribution.png"
CLIENTS_DIR = "clients"
IMAGES_DIR = "images"
METADATA_FILE = "metadata.csv"
CHECKSUMS_FILE = "SHA256SUMS"
METADATA_COLUMNS = ("file_name", "label", "split", "sample_id", "group_id", "source_sha256")
SPLITS = ("train", "val")
TOP_LEVEL_FILES = (FEDERATION_FILE, QUARANTINE_FILE, REPORT_FILE, PLOT_FILE)

_CLIENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class SampleRow:
    """One line of a client's ``metadata.csv``."""

    file_name: str
    label: str
    split: str
    sample_id: str
    group_id: str
    source_sha256: str


def check_client_name(name: str) -> str:
    """Return ``name`` if it is usable as a client directory and datasite name, else raise."""
    if not _CLIENT_NAME.fullmatch(name) or name in (".", ".."):
        raise FedimgError(
            f"client name {name!r} is not allowed: use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    return name


def check_label_name(label: str) -> str:
    """Return ``label`` if it can be a directory name under ``images/``, else raise."""
    bad = not label or label.startswith(".") or any(c in label for c in "/\\\x00") or label.strip() != label
    if bad:
        raise FedimgError(
            f"label {label!r} cannot be used as a folder name: labels must be non-empty, "
            "must not start with '.', contain '/', '\\' or NUL, or have leading/trailing spaces"
        )
    return label


def sample_file_name(label: str, sample_id: str) -> str:
    """Path of a sample's image relative to its client directory."""
    return f"{IMAGES_DIR}/{label}/{sample_id}.png"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def metadata_csv(rows: Sequence[SampleRow]) -> bytes:
    """Serialise rows sorted by ``file_name`` (label, then pseudonym: no trace of source order)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(METADATA_COLUMNS)
    for row in sorted(rows, key=lambda r: r.file_name):
        writer.writerow([getattr(row, column) for column in METADATA_COLUMNS])
    return buffer.getvalue().encode("utf-8")


def read_metadata_csv(data: bytes) -> list[SampleRow]:
    """Parse a ``metadata.csv``; raises ``ValueError`` naming the line when the schema is off."""
    reader = csv.reader(io.StringIO(data.decode("utf-8")))
    header = next(reader, None)
    if tuple(header or ()) != METADATA_COLUMNS:
        raise ValueError(f"header is {header!r}, expected {list(METADATA_COLUMNS)!r}")
    rows = []
    for line_number, values in enumerate(reader, start=2):
        if len(values) != len(METADATA_COLUMNS):
            raise ValueError(f"line {line_number}: {len(values)} fields, expected {len(METADATA_COLUMNS)}")
        rows.append(SampleRow(*values))
    return rows


def checksums_file(file_sha256: dict[str, str]) -> bytes:
    """``sha256sum``-compatible listing, sorted by path."""
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(file_sha256.items())).encode("utf-8")


def read_checksums_file(data: bytes) -> dict[str, str]:
    result = {}
    for line_number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ValueError(f"line {line_number}: expected '<sha256>  <path>'")
        result[name] = digest
    return result


def canonical_json(document: dict) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def load_federation(out: Path) -> dict:
    """Read ``federation.json``; a missing or unreadable manifest is a usage error (exit 2)."""
    path = out / FEDERATION_FILE
    if not path.is_file():
        raise FedimgError(f"{path}: not found; is {out} the output of 'fedimg convert'?")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FedimgError(f"{path}: cannot be read as JSON ({exc})") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise FedimgError(f'{path}: not a fedimg federation manifest (no "format": "{FORMAT_NAME}")')
    return document


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@contextmanager
def atomic_output_dir(out: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary sibling of ``out``; rename it to ``out`` only if the block completes.

    On any exception (including KeyboardInterrupt) the temporary directory is
    removed, so a half-done conversion never appears as ``out``.
    """
    out = out.absolute()
    if out.exists() and not overwrite:
        raise FedimgError(f"{out}: already exists; choose another output or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"
    try:
        # Created inside the try: a signal handled right after mkdir returns must still remove it.
        partial.mkdir()
        yield partial
        _replace_dir(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _replace_dir(new: Path, out: Path) -> None:
    """Put ``new`` at ``out``; at every instant one of the two complete outputs is at ``out``."""
    if not out.exists():
        os.rename(new, out)
        return
    if _exchange(new, out):  # one atomic swap: even SIGKILL cannot land between two renames
        retired = new
    else:
        retired = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
        with _signals_deferred():
            os.rename(out, retired)
            os.rename(new, out)
    if retired.is_dir() and not retired.is_symlink():
        shutil.rmtree(retired, ignore_errors=True)
    else:  # a file or a symlink was in the way: rmtree would leave it behind
        retired.unlink(missing_ok=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(error, os.strerror(error), str(b))


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP until the block ends, then deliver them (main thread only; elsewhere a no-op).

    The Python handlers are swapped for ones that only take note: a signal mask
    would not do, since a process-directed signal goes to any thread that does
    not block it (the worker pool has threads) and Python then raises in the main
    thread all the same.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {
        number: signal.signal(number, lambda number, frame: received.append(number))
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(
                number, signal.SIG_DFL if handler is None else handler
            )  # None: a handler not set from Python
        for number in dict.fromkeys(received):
            signal.raise_signal(number)


def client_summary(
    rows: Sequence[SampleRow], label_names: Sequence[str], metadata: bytes, checksums: bytes
) -> dict:
    """The ``clients.<name>`` entry of ``federation.json``: counts and manifest hashes."""
    label_counts = {split: {label: 0 for label in label_names} for split in SPLITS}
    for row in rows:
        label_counts[row.split][row.label] += 1
    return {
        "num_samples": len(rows),
        "split_counts": {split: sum(label_counts[split].values()) for split in SPLITS},
        "label_counts": label_counts,
        "num_groups": len({row.group_id for row in rows}),
        "metadata_sha256": sha256_bytes(metadata),
        "checksums_sha256": sha256_bytes(checksums),
    }


def federation_manifest(
    *,
    tool_version: str,
    image: dict,
    label_names: Sequence[str],
    partition: dict,
    pseudonyms: dict,
    inputs: dict,
    clients: dict[str, dict],
    quarantine_sha256: str,
) -> dict:
    """Assemble ``federation.json``. Its keys are the format's contract (schema_version 1)."""
    return {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "fedimg", "version": tool_version},
        "image": image,
        "label_map": {label: index for index, label in enumerate(label_names)},
        "partition": partition,
        "pseudonyms": pseudonyms,
        "inputs": inputs,
        "clients": clients,
        "totals": {
            "num_samples": sum(c["num_samples"] for c in clients.values()),
            "num_clients": len(clients),
        },
        "quarantine_sha256": quarantine_sha256,
    }
