"""Read-only ``.npy`` copies of a site's partition, one per asset and per twin, with a checksummed index.

An approved call must not make PySyft load and deserialise every asset (~5 MB/s);
its inputs reach the sandbox worker as these files instead, opened by the site and
memory-mapped read-only. They live in ``<state_dir>/asset-maps`` (mode 0700, files
0600), written at ingest:

- each array is written C-contiguous in NumPy's ``.npy`` format (no pickle), under a
  temporary name, fsynced and renamed to a name no earlier write used;
- the index (``index.json``: the dataset, and per asset its action id, file names,
  sha256 of each file, shape and dtype) is written last and atomically, so an ingest
  killed halfway leaves the previous index, whose files are all still there;
- files the new index does not name (older versions, leftovers of a killed write)
  are removed only once the new index is in place.

The action id of an entry is ``str(asset.action_id)``: what PySyft's input policy
holds for an asset argument, so a call's inputs are looked up by it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasite_setup.errors import FedimgError
from datasite_setup.private_file import write_private_file

MAPS_DIR = "asset-maps"
INDEX_FILE = "index.json"
INDEX_FORMAT = "fedimg-asset-maps"
INDEX_VERSION = 1
NUMERIC_KINDS = frozenset("biuf")  # bool, signed/unsigned integers, floats: what a worker can map
CHUNK_BYTES = 8 * 2**20  # written and hashed this much at a time: bounded extra memory, a live progress bar
_REWRITE = "run `fedimg datasite serve` again to rewrite the maps"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

log = logging.getLogger("fedimg.asset_maps")

ProgressFn = Callable[..., Iterable[Any]]
"""``progress(items, *, total, description)``, yielding ``items``: ``progress.progress_bar`` fits."""


@dataclass(frozen=True)
class AssetMap:
    """One asset's read-only files: its private data and its mock twin (same shape and dtype).

    Parameters
    ----------
    action_id : str
        ``str(UID)`` of the asset's action object (``asset.action_id``).
    dataset : str
        The dataset's name.
    asset : str
        The asset's name, e.g. ``"train_images"``.
    private : pathlib.Path
        The ``.npy`` file of the private data.
    mock : pathlib.Path
        The ``.npy`` file of its mock twin.
    sha256 : str
        Hex sha256 of the whole private file (header included).
    mock_sha256 : str
        Hex sha256 of the whole mock file.
    shape : tuple of int
        The array's shape (both twins).
    dtype : str
        The array's dtype, as ``numpy.dtype.str`` (e.g. ``"|u1"``, ``"<i8"``).
    """

    action_id: str
    dataset: str
    asset: str
    private: Path
    mock: Path
    sha256: str
    mock_sha256: str
    shape: tuple[int, ...]
    dtype: str


def maps_dir(state_dir: Path) -> Path:
    """The folder of a site's asset maps.

    Parameters
    ----------
    state_dir : pathlib.Path
        The site's state dir.

    Returns
    -------
    pathlib.Path
        ``<state_dir>/asset-maps``.

    Examples
    --------
    >>> from pathlib import Path
    >>> maps_dir(Path("state")).as_posix()
    'state/asset-maps'
    """
    return Path(state_dir) / MAPS_DIR


def write_asset_maps(
    state_dir: Path,
    dataset: str,
    assets: dict[str, tuple[str, np.ndarray, np.ndarray]],
    *,
    progress: ProgressFn | None = None,
) -> list[AssetMap]:
    """Write the maps of ``dataset``'s numeric assets and make them the site's index (module docstring).

    Parameters
    ----------
    state_dir : pathlib.Path
        The site's state dir; the maps go to ``<state_dir>/asset-maps``.
    dataset : str
        The dataset's name (letters, digits, ``.``, ``_``, ``-``).
    assets : dict of str to (str, numpy.ndarray, numpy.ndarray)
        Asset name to (action id, private array, mock array). Arrays whose dtype is not
        bool, integer or float (or that are not arrays, e.g. a metadata table) are skipped.
    progress : callable, optional
        Wraps the write loop to show it, called as ``progress(chunks, total=n, description=...)``
        (``datasite_setup.progress.progress_bar`` fits); None shows nothing.

    Returns
    -------
    list of AssetMap
        The entries of the new index, in the order of ``assets``.

    Raises
    ------
    FedimgError
        When a name cannot be a file name, or a mock's shape or dtype differs from its private array.

    Examples
    --------
    >>> import numpy as np
    >>> from pathlib import Path
    >>> labels = np.array([0, 1, 1])
    >>> assets = {"train_labels": ("1f2e", labels, labels[::-1]), "notes": ("3c4d", np.array(["x"]), None)}
    >>> (entry,) = write_asset_maps(Path("state"), "fedimg-a-v1", assets)
    >>> entry.asset, entry.shape, entry.dtype, oct(entry.private.stat().st_mode & 0o777)
    ('train_labels', (3,), '<i8', '0o600')
    >>> open_map(entry, mock=True).tolist()
    [1, 1, 0]
    """
    _check_name(dataset, "dataset name")
    directory = _make_private_dir(maps_dir(state_dir))
    generation = secrets.token_hex(4)  # a fresh name per write: the old index's files stay untouched
    jobs: list[tuple[str, str, np.ndarray, np.ndarray]] = []
    for asset, (action_id, private, mock) in assets.items():
        if not _is_numeric(private):
            log.info("%s: no memory map for asset %s (not a numeric array)", dataset, asset)
            continue
        _check_name(asset, "asset name")
        if not isinstance(mock, np.ndarray) or mock.shape != private.shape or mock.dtype != private.dtype:
            raise FedimgError(
                f"{dataset}/{asset}: the mock must have the private array's shape {private.shape} and dtype "
                f"{private.dtype}, got {getattr(mock, 'shape', None)} {getattr(mock, 'dtype', type(mock))}"
            )
        jobs.append((asset, str(action_id), private, mock))
    files = [
        (directory / f"{dataset}--{asset}--{generation}{suffix}.npy", array)
        for asset, _, private, mock in jobs
        for suffix, array in (("", private), (".mock", mock))
    ]
    total = sum(max(1, math.ceil(array.nbytes / CHUNK_BYTES)) for _, array in files)
    digests: dict[Path, str] = {}
    steps: Iterable[Any] = _write_files(files, digests)
    if progress is not None:
        steps = progress(steps, total=total, description="Writing memory maps")
    for _ in steps:
        pass
    entries = [
        AssetMap(
            action_id=action_id,
            dataset=dataset,
            asset=asset,
            private=directory / f"{dataset}--{asset}--{generation}.npy",
            mock=directory / f"{dataset}--{asset}--{generation}.mock.npy",
            sha256=digests[directory / f"{dataset}--{asset}--{generation}.npy"],
            mock_sha256=digests[directory / f"{dataset}--{asset}--{generation}.mock.npy"],
            shape=tuple(int(n) for n in private.shape),
            dtype=private.dtype.str,
        )
        for asset, action_id, private, _ in jobs
    ]
    _write_index(directory, dataset, entries)
    _remove_unindexed(directory, entries)
    log.info("%s: wrote %d memory map(s) to %s", dataset, len(entries), directory)
    return entries


def load_asset_index(state_dir: Path) -> dict[str, AssetMap]:
    """The site's asset maps, by action id, as its index names them (the files are not read).

    Parameters
    ----------
    state_dir : pathlib.Path
        The site's state dir.

    Returns
    -------
    dict of str to AssetMap
        Empty when no maps were written.

    Raises
    ------
    FedimgError
        When the index is not one ``write_asset_maps`` writes; the message names the file and the fix.

    Examples
    --------
    >>> import numpy as np
    >>> from pathlib import Path
    >>> load_asset_index(Path("empty-state"))
    {}
    >>> assets = {"val_labels": ("9a8b", np.arange(4), np.zeros(4, int))}
    >>> _ = write_asset_maps(Path("state"), "fedimg-a-v1", assets)
    >>> index = load_asset_index(Path("state"))
    >>> list(index), index["9a8b"].asset, index["9a8b"].dataset
    (['9a8b'], 'val_labels', 'fedimg-a-v1')
    >>> _ = Path("state/asset-maps/index.json").write_text("{")
    >>> load_asset_index(Path("state"))
    Traceback (most recent call last):
    ...
    datasite_setup.errors.FedimgError: state/asset-maps/index.json: malformed asset-map index (not JSON: ...
    """
    path = maps_dir(state_dir) / INDEX_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise _malformed(path, f"not JSON: {exc}") from exc
    try:
        entries = _parse_index(record, path.parent)
    except (KeyError, TypeError, ValueError) as exc:
        raise _malformed(path, f"{type(exc).__name__}: {exc}") from exc
    return {entry.action_id: entry for entry in entries}


def verify_asset_maps(state_dir: Path) -> list[str]:
    """Check every file the index names: present, owner-only, the right header and size, the right sha256.

    Every byte of every file is hashed (about 1 s per 500 MB here, files in the page cache).

    Parameters
    ----------
    state_dir : pathlib.Path
        The site's state dir.

    Returns
    -------
    list of str
        One line per problem, each naming its file; empty when all is well. A missing
        or malformed index is a problem.

    Examples
    --------
    >>> import numpy as np
    >>> from pathlib import Path
    >>> (entry,) = write_asset_maps(Path("state"), "fedimg-a-v1", {"a": ("7e", np.arange(5), np.arange(5))})
    >>> verify_asset_maps(Path("state"))
    []
    >>> entry.mock.chmod(0o644)
    >>> print(*verify_asset_maps(Path("state")))
    state/asset-maps/fedimg-a-v1--a--....mock.npy: mode 644, wider than 600; run 'chmod 600 state/...'
    >>> entry.mock.chmod(0o600)
    >>> with open(entry.private, "r+b") as handle:  # one byte of the data changed
    ...     _ = handle.seek(-1, 2), handle.write(bytes([255]))
    >>> print(*verify_asset_maps(Path("state")))
    state/asset-maps/fedimg-a-v1--a--....npy: sha256 differs from the index (the file changed); run ...
    """
    directory = maps_dir(state_dir)
    index = directory / INDEX_FILE
    try:
        entries = load_asset_index(state_dir)
    except FedimgError as exc:
        return [str(exc)]
    if not entries:
        return [f"{index}: no asset-map index; {_REWRITE}"]
    problems = _mode_problems(directory, 0o700) + _mode_problems(index, 0o600)
    for entry in entries.values():
        for path, digest in ((entry.private, entry.sha256), (entry.mock, entry.mock_sha256)):
            problems += _file_problems(path, digest, entry.shape, np.dtype(entry.dtype))
    return problems


def open_map(entry: AssetMap, *, mock: bool = False) -> np.ndarray:
    """An asset's private data (or its mock) as a read-only memory map.

    Parameters
    ----------
    entry : AssetMap
        The asset's index entry.
    mock : bool, default False
        Open the mock twin instead of the private data.

    Returns
    -------
    numpy.ndarray
        A ``numpy.memmap`` opened ``mmap_mode="r"``: nothing is read until used, and it cannot be written.

    Raises
    ------
    FedimgError
        When the file is missing or its shape or dtype differs from the index.

    Examples
    --------
    >>> import numpy as np
    >>> from pathlib import Path
    >>> assets = {"a": ("7e", np.arange(5), np.ones(5, int))}
    >>> (entry,) = write_asset_maps(Path("state"), "fedimg-a-v1", assets)
    >>> labels = open_map(entry)
    >>> len(labels), int(labels.sum()), labels.flags.writeable
    (5, 10, False)
    """
    path = entry.mock if mock else entry.private
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise FedimgError(f"{path}: cannot open the memory map ({exc}); {_REWRITE}") from exc
    if array.shape != entry.shape or array.dtype != np.dtype(entry.dtype):
        raise FedimgError(
            f"{path}: holds {array.shape} {array.dtype.str}, the index says {entry.shape} {entry.dtype}; "
            + _REWRITE
        )
    return array


def _is_numeric(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind in NUMERIC_KINDS


def _check_name(name: str, what: str) -> None:
    if not _SAFE_NAME.fullmatch(name) or "--" in name:
        raise FedimgError(
            f"{name!r}: not usable as a {what} in a memory map's file name "
            "(use letters, digits, '.', '_' and single '-')"
        )


def _make_private_dir(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)  # also when it existed with a wider mode
    return directory


def _write_files(files: list[tuple[Path, np.ndarray]], digests: dict[Path, str]) -> Iterator[None]:
    """Write each array to its path (temporary name, fsync, rename), noting its sha256; yields per chunk."""
    for path, array in files:
        temporary = path.with_name(f".{path.name}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                digest = hashlib.sha256()
                for chunk in _npy_chunks(array):
                    handle.write(chunk)
                    digest.update(chunk)
                    yield
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        digests[path] = digest.hexdigest()
    if files:
        _fsync_dir(files[0][0].parent)


def _npy_chunks(array: np.ndarray) -> Iterator[memoryview]:
    """The bytes of ``array`` as a version-1.0 ``.npy`` file (C order, no pickle): the header, then the data.

    The first chunk carries the header; an empty array still yields one chunk.
    """
    data = np.ascontiguousarray(array)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(data))
    flat = data.reshape(-1).view(np.uint8).data if data.size else memoryview(b"")
    first = min(len(flat), CHUNK_BYTES)
    yield memoryview(header.getvalue() + bytes(flat[:first]))
    for start in range(first, len(flat), CHUNK_BYTES):
        yield flat[start : start + CHUNK_BYTES]


def _write_index(directory: Path, dataset: str, entries: list[AssetMap]) -> None:
    record = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "dataset": dataset,
        "maps": [
            {
                "action_id": entry.action_id,
                "asset": entry.asset,
                "private": entry.private.name,
                "mock": entry.mock.name,
                "sha256": entry.sha256,
                "mock_sha256": entry.mock_sha256,
                "shape": list(entry.shape),
                "dtype": entry.dtype,
            }
            for entry in entries
        ],
    }
    write_private_file(directory / INDEX_FILE, (json.dumps(record, indent=1) + "\n").encode(), replace=True)
    _fsync_dir(directory)


def _parse_index(record: Any, directory: Path) -> list[AssetMap]:
    if not isinstance(record, dict) or record.get("format") != INDEX_FORMAT:
        raise ValueError(f"'format' is not {INDEX_FORMAT!r}")
    if record.get("version") != INDEX_VERSION:
        raise ValueError(f"version {record.get('version')!r}, this fedimg reads version {INDEX_VERSION}")
    dataset = record["dataset"]
    _require(isinstance(dataset, str), "'dataset' is not a string")
    entries = []
    for item in record["maps"]:
        private, mock = item["private"], item["mock"]
        for name in (private, mock):
            _require(
                isinstance(name, str) and _SAFE_NAME.fullmatch(name) is not None, f"bad file name {name!r}"
            )
        shape = tuple(item["shape"])
        _require(all(isinstance(n, int) and n >= 0 for n in shape), f"bad shape {item['shape']!r}")
        dtype = np.dtype(item["dtype"])
        _require(dtype.kind in NUMERIC_KINDS, f"dtype {item['dtype']!r} is not numeric")
        for key in ("action_id", "asset", "sha256", "mock_sha256"):
            _require(isinstance(item[key], str), f"{key!r} is not a string")
        entries.append(
            AssetMap(
                action_id=item["action_id"],
                dataset=dataset,
                asset=item["asset"],
                private=directory / private,
                mock=directory / mock,
                sha256=item["sha256"],
                mock_sha256=item["mock_sha256"],
                shape=shape,
                dtype=dtype.str,
            )
        )
    return entries


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _malformed(path: Path, reason: str) -> FedimgError:
    return FedimgError(f"{path}: malformed asset-map index ({reason}); {_REWRITE}")


def _remove_unindexed(directory: Path, entries: list[AssetMap]) -> None:
    """Delete the folder's files the index does not name: older versions and leftovers of killed writes."""
    keep = {INDEX_FILE} | {entry.private.name for entry in entries} | {entry.mock.name for entry in entries}
    for path in directory.iterdir():
        if path.name not in keep and (path.is_file() or path.is_symlink()):
            path.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    """Make the renames in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mode_problems(path: Path, allowed: int) -> list[str]:
    try:
        mode = stat.S_IMODE(path.lstat().st_mode)
    except FileNotFoundError:
        return [f"{path}: missing; {_REWRITE}"]
    if mode & ~allowed:
        return [f"{path}: mode {mode:o}, wider than {allowed:o}; run 'chmod {allowed:o} {path}'"]
    return []


def _file_problems(path: Path, digest: str, shape: tuple[int, ...], dtype: np.dtype) -> list[str]:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return [f"{path}: missing; {_REWRITE}"]
    if not stat.S_ISREG(info.st_mode):
        return [f"{path}: not a regular file; {_REWRITE}"]
    problems = _mode_problems(path, 0o600)
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            found_shape, fortran, found_dtype = read_header(handle)
        except ValueError as exc:
            return problems + [f"{path}: not a .npy file ({exc}); {_REWRITE}"]
        if found_shape != shape or found_dtype != dtype or fortran:
            problems.append(
                f"{path}: header says {found_shape} {found_dtype.str}{' Fortran order' if fortran else ''}, "
                f"the index says {shape} {dtype.str}; {_REWRITE}"
            )
        expected = handle.tell() + math.prod(shape) * dtype.itemsize
        if info.st_size != expected:
            problems.append(f"{path}: {info.st_size} bytes, expected {expected}; {_REWRITE}")
        handle.seek(0)
        found = hashlib.sha256()
        while block := handle.read(CHUNK_BYTES):
            found.update(block)
    if found.hexdigest() != digest:
        problems.append(f"{path}: sha256 differs from the index (the file changed); {_REWRITE}")
    return problems
