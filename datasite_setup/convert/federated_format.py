"""Federated format v2: the on-disk layout that ``fedimg convert`` writes.

```
OUT/
  federation.json                      the manifest of manifests (see ``federation_manifest``)
  quarantine.jsonl                     rejected inputs
  report.md, label_distribution.png    human-readable summary
  clients/<client>/
    images/<label>/<sample_id>.png     standardised images (ImageFolder layout)
    metadata.csv                       file_name,label,split,sample_id,group_id,source_hmac
    SHA256SUMS                         sha256 of every image, ``sha256sum -c`` compatible
```

Everything that must be reproducible (the manifests) is written in a canonical
order with no timestamps, so the same inputs, seed and secret give identical bytes.

Version 2 replaced v1's ``source_sha256`` column (a plain hash of the source
file, which linked each pseudonym to its original for anyone holding the
originals) with ``source_hmac``, keyed by the federation secret like the pseudonyms.
"""

from __future__ import annotations

import csv
import ctypes
import errno
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from datasite_setup.errors import FedimgError

SCHEMA_VERSION = 2
FORMAT_NAME = "fedimg-federated"
FEDERATION_FILE = "federation.json"
QUARANTINE_FILE = "quarantine.jsonl"
REPORT_FILE = "report.md"
PLOT_FILE = "label_distribution.png"
CLIENTS_DIR = "clients"
IMAGES_DIR = "images"
METADATA_FILE = "metadata.csv"
CHECKSUMS_FILE = "SHA256SUMS"
METADATA_COLUMNS = ("file_name", "label", "split", "sample_id", "group_id", "source_hmac")
_V1_METADATA_COLUMNS = ("file_name", "label", "split", "sample_id", "group_id", "source_sha256")
SPLITS = ("train", "val")
TOP_LEVEL_FILES = (FEDERATION_FILE, QUARANTINE_FILE, REPORT_FILE, PLOT_FILE)

_CLIENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class SampleRow:
    """One line of a client's ``metadata.csv``.

    Parameters
    ----------
    file_name : str
        The image's path relative to the client folder (``sample_file_name``).
    label : str
        The label name.
    split : str
        ``"train"`` or ``"val"``.
    sample_id : str
        The sample's pseudonym.
    group_id : str
        The group's (patient's) pseudonym.
    source_hmac : str
        HMAC-SHA256 of the source file's sha256, keyed by the federation secret
        (``Pseudonymiser.source_hmac``): an owner holding the secret and the originals can find
        the original; without the secret it links to nothing.
    """

    file_name: str
    label: str
    split: str
    sample_id: str
    group_id: str
    source_hmac: str


def check_client_name(name: str) -> str:
    """Check that ``name`` can be a client folder and a datasite name.

    Parameters
    ----------
    name : str
        A client name (``--client-names``, a natural column's value, a manifest key).

    Returns
    -------
    str
        ``name``, unchanged.

    Raises
    ------
    FedimgError
        When the name is not 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit.

    Examples
    --------
    >>> check_client_name("st_marys")
    'st_marys'
    >>> check_client_name("../etc")
    Traceback (most recent call last):
    ...
    datasite_setup.errors.FedimgError: client name '../etc' is not allowed: use 1-64 letters, digits, ...
    """
    if not _CLIENT_NAME.fullmatch(name) or name in (".", ".."):
        raise FedimgError(
            f"client name {name!r} is not allowed: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name


def check_label_name(label: str) -> str:
    """Check that ``label`` can be a folder name under ``images/``.

    Parameters
    ----------
    label : str
        A label name.

    Returns
    -------
    str
        ``label``, unchanged.

    Raises
    ------
    FedimgError
        When the label is empty, starts with '.', contains '/', '\\' or NUL, or has outer spaces.

    Examples
    --------
    >>> check_label_name("pneumonia")
    'pneumonia'
    >>> check_label_name("..")
    Traceback (most recent call last):
    ...
    datasite_setup.errors.FedimgError: label '..' cannot be used as a folder name: ...
    """
    has_separator = any(character in label for character in "/\\\x00")
    bad = not label or label.startswith(".") or has_separator or label.strip() != label
    if bad:
        raise FedimgError(
            f"label {label!r} cannot be used as a folder name: labels must be non-empty, "
            "must not start with '.', contain '/', '\\' or NUL, or have leading/trailing spaces"
        )
    return label


def sample_file_name(label: str, sample_id: str) -> str:
    """Path of a sample's image relative to its client directory.

    Parameters
    ----------
    label : str
        The sample's label.
    sample_id : str
        The sample's pseudonym.

    Returns
    -------
    str
        ``images/<label>/<sample_id>.png``.

    Examples
    --------
    >>> sample_file_name("cat", "0123456789abcdef0123")
    'images/cat/0123456789abcdef0123.png'
    """
    return f"{IMAGES_DIR}/{label}/{sample_id}.png"


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``.

    Parameters
    ----------
    data : bytes
        Any content.

    Returns
    -------
    str
        64 hex digits.

    Examples
    --------
    >>> sha256_bytes(b"")[:12]
    'e3b0c44298fc'
    """
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (images may be large).

    Parameters
    ----------
    path : Path
        The file.
    chunk_size : int, default 1 MiB
        Bytes read at a time.

    Returns
    -------
    str
        64 hex digits; equal to ``sha256_bytes`` of the content.

    Examples
    --------
    >>> from pathlib import Path
    >>> _ = Path("empty.bin").write_bytes(b"")
    >>> sha256_file(Path("empty.bin")) == sha256_bytes(b"")
    True
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def metadata_csv(rows: Sequence[SampleRow]) -> bytes:
    """Serialise rows sorted by ``file_name`` (label, then pseudonym: no trace of source order).

    Parameters
    ----------
    rows : sequence of SampleRow
        One client's samples, in any order.

    Returns
    -------
    bytes
        The content of ``metadata.csv`` (UTF-8, header ``METADATA_COLUMNS``, ``\\n`` line ends).

    Examples
    --------
    >>> row = SampleRow("images/cat/" + "a" * 20 + ".png", "cat", "train", "a" * 20, "b" * 20, "c" * 64)
    >>> read_metadata_csv(metadata_csv([row])) == [row]
    True
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(METADATA_COLUMNS)
    for row in sorted(rows, key=lambda r: r.file_name):
        writer.writerow([getattr(row, column) for column in METADATA_COLUMNS])
    return buffer.getvalue().encode("utf-8")


def read_metadata_csv(data: bytes) -> list[SampleRow]:
    """Parse a ``metadata.csv``.

    Parameters
    ----------
    data : bytes
        The file's content.

    Returns
    -------
    list of SampleRow
        The rows, in file order.

    Raises
    ------
    ValueError
        When the header or a line's field count is off; the message names the line.

    Examples
    --------
    >>> read_metadata_csv(b"file_name,label\\n")
    Traceback (most recent call last):
    ...
    ValueError: header is ['file_name', 'label'], expected ['file_name', 'label', 'split', ...]
    """
    reader = csv.reader(io.StringIO(data.decode("utf-8")))
    header = next(reader, None)
    if tuple(header or ()) == _V1_METADATA_COLUMNS:
        raise ValueError(
            "header is format v1's (an unkeyed source_sha256 column that links pseudonyms to the originals): "
            "convert the collection again with this fedimg"
        )
    if tuple(header or ()) != METADATA_COLUMNS:
        raise ValueError(f"header is {header!r}, expected {list(METADATA_COLUMNS)!r}")
    rows = []
    for line_number, values in enumerate(reader, start=2):
        if len(values) != len(METADATA_COLUMNS):
            raise ValueError(f"line {line_number}: {len(values)} fields, expected {len(METADATA_COLUMNS)}")
        rows.append(SampleRow(*values))
    return rows


def checksums_file(file_sha256: dict[str, str]) -> bytes:
    """A ``sha256sum``-compatible listing (``SHA256SUMS``), sorted by path.

    Parameters
    ----------
    file_sha256 : dict of str to str
        Hex sha256 of each file, by path relative to the client folder.

    Returns
    -------
    bytes
        One ``<sha256>  <path>`` line per file; ``sha256sum -c`` checks it.

    Examples
    --------
    >>> listing = checksums_file({"images/b.png": "b" * 64, "images/a.png": "a" * 64})
    >>> listing.decode().splitlines()[0] == "a" * 64 + "  images/a.png"
    True
    """
    lines = [f"{digest}  {name}\n" for name, digest in sorted(file_sha256.items())]
    return "".join(lines).encode("utf-8")


def read_checksums_file(data: bytes) -> dict[str, str]:
    """Parse a ``SHA256SUMS`` listing.

    Parameters
    ----------
    data : bytes
        The file's content.

    Returns
    -------
    dict of str to str
        Hex sha256 by path.

    Raises
    ------
    ValueError
        On a line that is not ``<sha256>  <path>``; the message names the line.

    Examples
    --------
    >>> read_checksums_file(checksums_file({"images/a.png": "a" * 64})) == {"images/a.png": "a" * 64}
    True
    """
    result = {}
    for line_number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ValueError(f"line {line_number}: expected '<sha256>  <path>'")
        result[name] = digest
    return result


def canonical_json(document: dict[str, Any]) -> bytes:
    """A manifest's bytes: sorted keys, two-space indent, UTF-8, so equal documents give equal bytes.

    Parameters
    ----------
    document : dict
        A JSON-serialisable manifest.

    Returns
    -------
    bytes
        The JSON text with a final newline.

    Examples
    --------
    >>> canonical_json({"b": 1, "a": "é"})
    b'{\\n  "a": "\\xc3\\xa9",\\n  "b": 1\\n}\\n'
    """
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def load_federation(out: Path) -> dict[str, Any]:
    """Read ``OUT/federation.json``.

    Parameters
    ----------
    out : Path
        The output folder of ``fedimg convert``.

    Returns
    -------
    dict
        The manifest (``federation_manifest``'s keys).

    Raises
    ------
    FedimgError
        When the manifest is missing, not JSON, or not a fedimg manifest (a usage error: exit 2).

    Examples
    --------
    >>> from pathlib import Path
    >>> load_federation(Path("no_such_output"))
    Traceback (most recent call last):
    ...
    datasite_setup.errors.FedimgError: no_such_output/federation.json: not found; is no_such_output the ...
    """
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
    """Write ``data`` to ``path``, creating its folders.

    Parameters
    ----------
    path : Path
        The file to write (replaced if it exists).
    data : bytes
        Its content.

    Examples
    --------
    >>> from pathlib import Path
    >>> write_bytes(Path("out/clients/a/SHA256SUMS"), b"")
    >>> Path("out/clients/a/SHA256SUMS").is_file()
    True
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@contextmanager
def atomic_output_dir(out: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary sibling of ``out``; rename it to ``out`` only if the block completes.

    On any exception (including KeyboardInterrupt) the temporary directory is
    removed, so a half-done conversion never appears as ``out``. An existing
    ``out`` (with ``overwrite``) is swapped for the new one in one step.

    Parameters
    ----------
    out : Path
        The output folder to create.
    overwrite : bool
        Replace an existing ``out``; without it an existing ``out`` is an error.

    Yields
    ------
    Path
        The temporary folder to write the output into.

    Raises
    ------
    FedimgError
        When ``out`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> from pathlib import Path
    >>> with atomic_output_dir(Path("fed"), overwrite=False) as partial:
    ...     _ = (partial / "federation.json").write_text("{}")
    ...     Path("fed").exists()
    False
    >>> sorted(path.name for path in Path("fed").iterdir())
    ['federation.json']
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
    """Hold SIGINT/SIGTERM/SIGHUP until the block ends, then deliver them.

    Only in the main thread (elsewhere a no-op: handlers can only be set there).
    The Python handlers are swapped for ones that only take note: a signal mask
    would not do, since a process-directed signal goes to any thread that does
    not block it (the worker pool has threads) and Python then raises in the main
    thread all the same.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def take_note(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    deferred = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous: dict[int, Any] = {signum: signal.signal(signum, take_note) for signum in deferred}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            # None: a handler that was not set from Python.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for pending in dict.fromkeys(received):  # each once, in the order they came
            redeliver(pending, previous[pending])


def redeliver(signum: int, handler: Any) -> None:
    """Deliver a held signal now, as ``handler`` (the one restored) would have handled it.

    A Python handler is called here, synchronously: ``signal.raise_signal`` would only
    flag it, and CPython runs the handler at some later instruction (the red CI runs saw
    ``with pool:`` fail on the terminated pool first, and a ``KeyboardInterrupt`` land
    after the block that should have raised it). Default and ignored dispositions go
    through the kernel.

    Parameters
    ----------
    signum : int
        The signal that arrived while it was held.
    handler : callable, ``signal.SIG_DFL``, ``signal.SIG_IGN`` or None
        Its disposition now (None: set outside Python, treated as the default).

    Examples
    --------
    >>> import signal
    >>> seen = []
    >>> redeliver(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    >>> seen == [signal.SIGUSR1]
    True
    >>> redeliver(signal.SIGUSR1, signal.SIG_IGN)  # ignored: nothing happens
    """
    if callable(handler):
        handler(signum, None)
    elif handler is not signal.SIG_IGN:
        signal.raise_signal(signum)


def client_summary(
    rows: Sequence[SampleRow], label_names: Sequence[str], metadata: bytes, checksums: bytes
) -> dict[str, Any]:
    """The ``clients.<name>`` entry of ``federation.json``: counts and manifest hashes.

    Parameters
    ----------
    rows : sequence of SampleRow
        The client's samples.
    label_names : sequence of str
        Every label of the federation (a label the client lacks counts 0).
    metadata : bytes
        The client's ``metadata.csv``.
    checksums : bytes
        The client's ``SHA256SUMS``.

    Returns
    -------
    dict
        ``num_samples``, ``split_counts``, ``label_counts`` (per split and label),
        ``num_groups``, ``metadata_sha256`` and ``checksums_sha256``.

    Examples
    --------
    >>> row = SampleRow("images/cat/" + "a" * 20 + ".png", "cat", "val", "a" * 20, "b" * 20, "c" * 64)
    >>> summary = client_summary([row], ["cat", "dog"], metadata_csv([row]), b"")
    >>> summary["split_counts"], summary["label_counts"]["val"]
    ({'train': 0, 'val': 1}, {'cat': 1, 'dog': 0})
    """
    label_counts = {split: dict.fromkeys(label_names, 0) for split in SPLITS}
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
    image: dict[str, Any],
    label_names: Sequence[str],
    partition: dict[str, Any],
    pseudonyms: dict[str, Any],
    inputs: dict[str, Any],
    clients: dict[str, dict[str, Any]],
    quarantine_sha256: str,
) -> dict[str, Any]:
    """Assemble ``federation.json``. Its keys are the format's contract (``SCHEMA_VERSION``).

    Parameters
    ----------
    tool_version : str
        The fedimg version that wrote it.
    image : dict
        The image spec (``ImageSpec.to_manifest``).
    label_names : sequence of str
        The labels, in label-index order (becomes ``label_map``).
    partition : dict
        Scheme, seed, validation fraction and the scheme's parameters.
    pseudonyms : dict
        The pseudonym algorithm and the secret's public fingerprint.
    inputs : dict
        Counts of files seen, accepted, quarantined and skipped.
    clients : dict of str to dict
        ``client_summary`` of each client, by name.
    quarantine_sha256 : str
        sha256 of ``quarantine.jsonl``.

    Returns
    -------
    dict
        The manifest; ``canonical_json`` gives its bytes.

    Examples
    --------
    >>> manifest = federation_manifest(
    ...     tool_version="0.1.0", image={}, label_names=["cat", "dog"], partition={}, pseudonyms={},
    ...     inputs={}, clients={"a": {"num_samples": 3}, "b": {"num_samples": 4}}, quarantine_sha256="",
    ... )
    >>> manifest["label_map"], manifest["totals"]
    ({'cat': 0, 'dog': 1}, {'num_samples': 7, 'num_clients': 2})
    """
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
