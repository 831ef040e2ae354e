"""``fedimg convert``: a source image collection becomes the federated format.

The pipeline streams: workers decode and standardise one image at a time and
write its PNG to a staging folder inside the (temporary) output, returning only
hashes. The main process keeps a few hundred bytes per image, deduplicates,
partitions, then moves staged PNGs into place and writes the manifests. The
output directory appears only when everything is written.
"""

from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.pool
import os
import shutil
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from datasite_setup import __version__
from datasite_setup.convert import federation_report
from datasite_setup.convert.dedup import resolve_duplicates
from datasite_setup.convert.federated_format import (
    CHECKSUMS_FILE,
    CLIENTS_DIR,
    FEDERATION_FILE,
    METADATA_FILE,
    QUARANTINE_FILE,
    SampleRow,
    atomic_output_dir,
    canonical_json,
    check_client_name,
    check_label_name,
    checksums_file,
    client_summary,
    federation_manifest,
    metadata_csv,
    redeliver,
    sample_file_name,
    sha256_bytes,
    write_bytes,
)
from datasite_setup.convert.imaging import ImageSpec, RejectedImage, standardise
from datasite_setup.convert.partition import (
    NaturalPartitioner,
    Partitioner,
    PartitionInput,
    build_partitioner,
    split_train_val,
)
from datasite_setup.convert.pseudonym import Pseudonymiser
from datasite_setup.convert.quarantine import QuarantineEntry, Reason, quarantine_jsonl
from datasite_setup.convert.release_warnings import small_client_warnings
from datasite_setup.convert.secret import load_secret
from datasite_setup.convert.sources import (
    CsvColumns,
    ScanResult,
    SourceRecord,
    scan_class_folders,
    scan_label_pattern,
    scan_labels_csv,
)
from datasite_setup.errors import FedimgError, PartitionError
from datasite_setup.progress import progress_bar


@dataclass(frozen=True)
class ConvertOptions:
    """Everything ``fedimg convert`` needs; each field is a flag of the command (see its help).

    Parameters
    ----------
    source : Path
        The image collection (``SRC``).
    out : Path
        The output folder (``OUT``); must not exist unless ``overwrite``.
    scheme : str
        The partition scheme (``--scheme``): iid, stratified, dirichlet, quantity, natural, shards.
    num_clients : int, optional
        ``--clients``; clients are then named ``client_0``, ``client_1``, ...
    client_names : sequence of str, optional
        ``--client-names``.
    labels_csv : Path, optional
        ``--labels``: a CSV with one row per image.
    columns : CsvColumns
        The CSV's path, label, group and client columns.
    label_pattern : str, optional
        ``--label-pattern``: a regex that finds the label in the file name.
    spec : ImageSpec
        The output images' size, mode and resize policy.
    alpha, min_partition_size, shards_per_client, self_balancing
        The scheme's parameters (None: the scheme's default).
    val_fraction : float, default 0.2
        Per-client validation share.
    seed : int, default 0
        Seed of every random choice.
    workers : int, default 0
        Decoding processes (0: all cores).
    overwrite : bool, default False
        Replace ``out`` once the new output is complete.
    secret_file : Path, optional
        The federation secret file (see ``load_secret``).
    show_progress : bool, default True
        Show progress bars on stderr.
    """

    source: Path
    out: Path
    scheme: str
    num_clients: int | None = None
    client_names: Sequence[str] | None = None
    labels_csv: Path | None = None
    columns: CsvColumns = field(default_factory=CsvColumns)
    label_pattern: str | None = None
    spec: ImageSpec = field(default_factory=ImageSpec)
    alpha: float | None = None
    min_partition_size: int | None = None
    shards_per_client: int | None = None
    self_balancing: bool = False
    val_fraction: float = 0.2
    seed: int = 0
    workers: int = 0
    overwrite: bool = False
    secret_file: Path | None = None
    show_progress: bool = True


@dataclass
class ConvertResult:
    """What a conversion wrote and what it left out.

    Parameters
    ----------
    out : Path
        The output folder.
    federation : dict
        Its ``federation.json`` manifest.
    quarantined : list of QuarantineEntry
        Every rejected input (also in ``quarantine.jsonl``).
    skipped : Counter
        Files that are not images, by ``SkipReason``.
    warnings : list of str
        Things the owner should know that reject nothing: the scan's, the natural scheme's moves
        between sites (``reassignment_notes``) and clients below the release minimum
        (``small_client_warnings``).
    """

    out: Path
    federation: dict[str, Any]
    quarantined: list[QuarantineEntry]
    skipped: Counter[str]
    warnings: list[str]

    @property
    def exit_code(self) -> int:
        """The CLI's exit code: 1 when inputs were rejected, else 0."""
        return 1 if self.quarantined else 0


@dataclass(slots=True)
class _Processed:
    """What the main process keeps per accepted image."""

    index: int
    rel_path: str
    label: str
    group_key: str | None
    client_key: str | None
    source_sha256: str
    pixel_sha256: str
    png_sha256: str


def convert(options: ConvertOptions) -> ConvertResult:
    """Run the whole conversion: scan, standardise, deduplicate, partition, write, report.

    The output folder appears only once everything is written; an error or an
    interrupt leaves nothing behind (and an overwritten output as it was).

    Parameters
    ----------
    options : ConvertOptions
        The request.

    Returns
    -------
    ConvertResult
        The manifest and the inputs that were rejected or skipped.

    Raises
    ------
    FedimgError
        Before anything is written, when the request is wrong (the CLI's exit 2);
        ``PartitionError`` when the partition cannot be made; when a decoding worker
        dies (the out-of-memory killer), leaving nothing written.

    Examples
    --------
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> for i in range(8):
    ...     Path(f"src/{i % 2}").mkdir(parents=True, exist_ok=True)
    ...     Image.new("L", (8, 8), 30 * i).save(f"src/{i % 2}/{i}.png")
    >>> _ = Path("src/0/notes.txt").write_text("not an image")
    >>> options = ConvertOptions(Path("src"), Path("fed"), "iid", num_clients=2, secret_file=Path("secret"),
    ...                          show_progress=False)
    >>> result = convert(options)
    >>> result.federation["totals"], dict(result.skipped), result.exit_code
    ({'num_samples': 8, 'num_clients': 2}, {'not_an_image_file': 1}, 0)
    >>> sorted(path.name for path in Path("fed").iterdir())
    ['clients', 'federation.json', 'label_distribution.png', 'quarantine.jsonl', 'report.md']
    """
    _check_options(options)
    scan = scan_source(options)
    clients = resolve_client_names(options, scan.records)
    partitioner = _partitioner(options, clients)
    _check_enough_groups(scan.records, clients)
    pseudonyms = Pseudonymiser(load_secret(options.secret_file))
    # Interrupts take effect only at the checks below (see _interrupts_deferred).
    with (
        _interrupts_deferred() as interrupts,
        atomic_output_dir(options.out, overwrite=options.overwrite) as partial,
    ):
        staging = partial / "_staging"
        staging.mkdir()
        processed, rejected = _standardise_all(options, scan.records, staging, interrupts)
        interrupts.check()
        kept, duplicates = resolve_duplicates(processed)
        quarantined = scan.rejected + rejected + duplicates
        federation = _write_federation(
            partial, staging, kept, clients, partitioner, pseudonyms, options, scan, quarantined, interrupts
        )
        interrupts.check()  # the last chance to leave nothing: next, the output appears
    warnings = [*scan.warnings, *reassignment_notes(federation), *small_client_warnings(federation)]
    return ConvertResult(options.out, federation, quarantined, scan.skipped, warnings)


def _check_options(options: ConvertOptions) -> None:
    if not options.source.is_dir():
        raise FedimgError(f"{options.source}: source folder not found")
    if options.labels_csv and options.label_pattern:
        raise FedimgError("--labels and --label-pattern are alternatives: give one")
    if options.labels_csv and not options.labels_csv.is_file():
        raise FedimgError(f"{options.labels_csv}: labels CSV not found")
    if options.workers < 0:
        raise FedimgError(f"--workers must be 0 (all cores) or more (got {options.workers})")
    if not 0 <= options.val_fraction < 1:
        raise FedimgError(f"--val-fraction must be in [0, 1) (got {options.val_fraction})")
    out, source = options.out.resolve(), options.source.resolve()
    if out.is_relative_to(source):
        raise FedimgError(f"{options.out}: the output must not be inside the source folder {options.source}")
    # --overwrite deletes the old OUT: it must not hold the inputs.
    for flag, path in (
        ("source folder", source),
        ("--labels", options.labels_csv.resolve() if options.labels_csv else None),
    ):
        if path is not None and path.is_relative_to(out):
            raise FedimgError(
                f"{options.out}: the output must not contain the {flag} {path}; choose an output outside it"
            )
    if options.out.exists() and not options.overwrite:
        raise FedimgError(f"{options.out}: already exists; choose another output or pass --overwrite")
    csv_columns = (("--group-column", options.columns.group), ("--client-column", options.columns.client))
    needs_csv = [flag for flag, name in csv_columns if name]
    if needs_csv and not options.labels_csv:
        raise FedimgError(f"{', '.join(needs_csv)} need --labels (a CSV with those columns)")


def scan_source(options: ConvertOptions) -> ScanResult:
    """Scan ``options.source`` in the layout the options name.

    ``labels_csv`` picks the CSV layout, ``label_pattern`` the file-name pattern,
    and neither the class folders.

    Parameters
    ----------
    options : ConvertOptions
        The request.

    Returns
    -------
    ScanResult
        The candidate images, the rejected and the skipped inputs.
    """
    if options.labels_csv:
        return scan_labels_csv(options.source, options.labels_csv, options.columns)
    if options.label_pattern:
        return scan_label_pattern(options.source, options.label_pattern)
    return scan_class_folders(options.source)


def resolve_client_names(options: ConvertOptions, records: Sequence[SourceRecord]) -> list[str]:
    """The clients' names, in client order.

    From ``--client-names``, ``--clients N`` (``client_0``, ...), or for ``--scheme
    natural`` the client column's values (sorted, or in ``--client-names`` order).

    Parameters
    ----------
    options : ConvertOptions
        The request.
    records : sequence of SourceRecord
        The scanned images (their ``client_key`` for the natural scheme).

    Returns
    -------
    list of str
        Valid, distinct client names.

    Raises
    ------
    FedimgError
        When the names are missing, invalid, duplicated or disagree with ``--clients``.

    Examples
    --------
    >>> from pathlib import Path
    >>> options = ConvertOptions(Path("src"), Path("fed"), "iid", num_clients=3)
    >>> resolve_client_names(options, [])
    ['client_0', 'client_1', 'client_2']
    """
    if options.scheme == "natural":
        return _natural_client_names(options, records)
    if options.client_names:
        names = [check_client_name(n) for n in options.client_names]
        if len(set(names)) != len(names):
            raise FedimgError(f"--client-names has duplicates: {names}")
        if options.num_clients is not None and options.num_clients != len(names):
            raise FedimgError(f"--clients {options.num_clients} disagrees with {len(names)} --client-names")
        return names
    if options.num_clients is None:
        raise FedimgError("say how many clients: --clients N or --client-names a,b,c")
    if options.num_clients < 1:
        raise FedimgError(f"--clients must be at least 1 (got {options.num_clients})")
    return [f"client_{i}" for i in range(options.num_clients)]


def _natural_client_names(options: ConvertOptions, records: Sequence[SourceRecord]) -> list[str]:
    column = options.columns.client
    if not column:
        raise FedimgError(
            "--scheme natural needs --client-column C: "
            "the labels CSV column (site, ward…) that decides each sample's client"
        )
    values = sorted({record.client_key for record in records if record.client_key})
    for value in values:
        check_client_name(value)
    if options.client_names:
        if sorted(options.client_names) != values:
            given = list(options.client_names)
            raise FedimgError(f"--client-names {given} must list exactly the values of {column!r}: {values}")
        values = list(options.client_names)
    if options.num_clients is not None and options.num_clients != len(values):
        raise FedimgError(
            f"--clients {options.num_clients}, but column {column!r} has {len(values)} values: {values}"
        )
    if not values:
        raise FedimgError(f"column {column!r} has no values for any image")
    return values


def _partitioner(options: ConvertOptions, clients: list[str]) -> Partitioner:
    return build_partitioner(
        options.scheme,
        len(clients),
        seed=options.seed,
        alpha=options.alpha,
        min_partition_size=options.min_partition_size,
        shards_per_client=options.shards_per_client,
        self_balancing=options.self_balancing,
        client_values=clients if options.scheme == "natural" else None,
    )


def _group_key(rel_path: str, group_key: str | None, source_sha256: str = "") -> str:
    # A sample without a patient id is its own group; the prefix keeps the two namespaces apart.
    if group_key is not None:
        return f"patient\x00{group_key}"
    return f"sample\x00{source_sha256 or rel_path}"


def _check_enough_groups(records: Sequence[SourceRecord], clients: list[str]) -> None:
    groups = len({_group_key(record.rel_path, record.group_key) for record in records})
    if groups < len(clients):
        raise PartitionError(
            f"cannot split {groups} groups (patients) into {len(clients)} clients: "
            f"a group never spans two clients; use at most {groups} clients"
        )


# --- interrupts ----------------------------------------------------------------------------

_INTERRUPTS = frozenset({signal.SIGINT, signal.SIGTERM})


class _Interrupts:
    """SIGINT and SIGTERM as recorded by ``_interrupts_deferred``, acted on by ``check``."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def record(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` here if an interrupt came since the block began."""
        if self.received:
            raise KeyboardInterrupt


@contextmanager
def _interrupts_deferred() -> Iterator[_Interrupts]:
    """For the block, SIGINT and SIGTERM are only recorded; the pipeline raises at its ``check`` calls.

    A ``KeyboardInterrupt`` raised by a handler lands at whatever instruction the main thread
    is at: inside ``multiprocessing.Pool`` (a lock just taken, ``terminate`` half done) it left
    the run hung, inside an import it came out as ``ImportError`` or ``RuntimeError`` (exit 1
    with a traceback). Checked between images and between steps, an interrupt takes effect
    within about a second. When the block ends, the handlers are restored and a recorded
    signal is delivered as they would have handled it (``KeyboardInterrupt`` for the CLI,
    termination for a default ``SIGTERM``). Outside the main thread, where no handler runs,
    nothing is swapped.
    """
    interrupts = _Interrupts()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in sorted(_INTERRUPTS):
            handler = signal.getsignal(signum)
            if handler is not signal.SIG_IGN and handler is not None:  # None: not set from Python
                previous[signum] = signal.signal(signum, interrupts.record)
    try:
        yield interrupts
    finally:
        for restored, handler in previous.items():
            signal.signal(restored, handler)
        if interrupts.received:
            first = interrupts.received[0]
            redeliver(first, previous.get(first, signal.SIG_DFL))


# --- decoding on all cores ---------------------------------------------------------------

# A task is (index into the scanned records, relative path).
_Task = tuple[int, str]


@dataclass(frozen=True, slots=True)
class _Accepted:
    """A worker's outcome for an image it standardised (the PNG is in the staging folder)."""

    index: int
    source_sha256: str
    pixel_sha256: str
    png_sha256: str


@dataclass(frozen=True, slots=True)
class _Refused:
    """A worker's outcome for an input that cannot become a sample."""

    index: int
    reason: Reason
    message: str


_Outcome = _Accepted | _Refused
_RunTasks = Callable[[list[_Task]], Iterable[_Outcome]]

# Tasks per message to a worker: fewer round trips than one by one.
_CHUNK = 16
# How often the main process looks for an interrupt while it waits for the workers.
_POLL_SECONDS = 0.05
# Pool.terminate normally takes well under a second; past this its workers are killed.
_POOL_STOP_SECONDS = 10.0

_worker_state: dict[str, Any] = {}


def _init_worker(root: Path, staging: Path, spec: ImageSpec) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the pool stops workers with SIGTERM
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    # Born blocked (see _start_pool): a SIGTERM the pool sent before this line is delivered now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _INTERRUPTS)
    _worker_state.update(root=root, staging=staging, spec=spec)


def _process(task: _Task) -> _Outcome:
    """Standardise one file into the staging folder; only hashes travel back."""
    index, rel_path = task
    try:
        data = (_worker_state["root"] / rel_path).read_bytes()
    except OSError as exc:
        return _Refused(index, Reason.UNREADABLE, f"cannot be read ({exc.strerror or exc})")
    try:
        result = standardise(data, _worker_state["spec"])
    except RejectedImage as exc:
        return _Refused(index, exc.reason, exc.message)
    (_worker_state["staging"] / f"{index}.png").write_bytes(result.png)
    return _Accepted(index, sha256_bytes(data), result.pixel_sha256, sha256_bytes(result.png))


@contextmanager
def _standardiser(
    options: ConvertOptions, staging: Path, num_tasks: int, interrupts: _Interrupts
) -> Iterator[_RunTasks]:
    """Yield a function mapping tasks to outcomes (unordered), on all cores when worth it.

    Either way ``interrupts`` is checked before each outcome. The pool is forked before
    any progress thread starts, so no lock is copied held.
    """
    workers = options.workers or os.cpu_count() or 1
    if workers == 1 or num_tasks < 64:
        _worker_state.update(root=options.source, staging=staging, spec=options.spec)

        def run_here(tasks: list[_Task]) -> Iterable[_Outcome]:
            for task in tasks:
                interrupts.check()
                yield _process(task)

        yield run_here
        return
    others = set(multiprocessing.active_children())
    pool = _start_pool(workers, (options.source, staging, options.spec))
    pool_workers = [child for child in multiprocessing.active_children() if child not in others]
    try:

        def run_on_pool(tasks: list[_Task]) -> Iterable[_Outcome]:
            chunks = [tasks[i : i + _CHUNK] for i in range(0, len(tasks), _CHUNK)]
            return _results(pool.imap_unordered(_process_chunk, chunks), interrupts, pool_workers)

        yield run_on_pool
    finally:
        _stop_pool(pool, pool_workers)


def _process_chunk(tasks: list[_Task]) -> list[_Outcome]:
    return [_process(task) for task in tasks]


def _results(
    chunks: multiprocessing.pool.IMapIterator[list[_Outcome]],
    interrupts: _Interrupts,
    workers: list[multiprocessing.process.BaseProcess],
) -> Iterator[_Outcome]:
    """The pool's outcomes, waited for in short slices: an interrupt or a dead worker is seen meanwhile."""
    while True:
        interrupts.check()
        try:
            # Pool.imap_unordered with a chunksize returns a plain generator, which cannot wait
            # with a timeout: the chunks are made here instead.
            chunk = chunks.next(timeout=_POLL_SECONDS)
        except multiprocessing.TimeoutError:
            _check_alive(workers)
            continue
        except StopIteration:
            return
        yield from chunk


def _check_alive(workers: list[multiprocessing.process.BaseProcess]) -> None:
    # The pool replaces a dead worker silently, but the images it held never come back: without
    # this check the run would wait for them forever.
    for worker in workers:
        if worker.exitcode is not None:
            killed = worker.exitcode == -signal.SIGKILL
            how = (
                "was killed (SIGKILL: the out-of-memory killer?)" if killed else f"exited ({worker.exitcode})"
            )
            raise FedimgError(
                f"an image-decoding worker {how}; nothing was written. Retry with fewer --workers "
                "(less memory at once), or look for an oversized image in the source"
            )


def _start_pool(workers: int, initargs: tuple[Path, Path, ImageSpec]) -> multiprocessing.pool.Pool:
    """A fork pool whose workers start with SIGINT and SIGTERM blocked.

    A forked worker runs with its parent's Python handlers until ``_init_worker`` resets
    them. A SIGTERM from ``Pool.terminate`` landing in that gap (the pool stopped right
    after it started, the worker not yet scheduled) went to the inherited handler, which
    swallowed it: the worker then waited on the task queue, whose lock ``terminate`` holds,
    while ``terminate`` waited for the worker — the CI hang. Blocked, the SIGTERM stays
    pending until ``_init_worker`` has restored the default and unblocks it. The pool's
    own threads, started here too, keep the block: signals go to the main thread.
    """
    context = multiprocessing.get_context("fork")
    # Objects alive now (the scanned records) move to a permanent generation: the workers'
    # garbage collector then never writes to them, so the forked pages stay shared.
    gc.freeze()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)
    try:
        return context.Pool(workers, initializer=_init_worker, initargs=initargs)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _stop_pool(pool: multiprocessing.pool.Pool, workers: list[multiprocessing.process.BaseProcess]) -> None:
    """``pool.terminate()``, waited for at most ``_POOL_STOP_SECONDS``; then ``workers`` are killed.

    ``terminate`` can wait forever on a queue lock that a worker killed from outside (the
    kernel's OOM killer) still holds; the run must end all the same.
    """
    stopper = threading.Thread(target=pool.terminate, name="fedimg-pool-stop", daemon=True)
    stopper.start()
    stopper.join(_POOL_STOP_SECONDS)
    if stopper.is_alive():
        for worker in workers:
            worker.kill()
            worker.join(1)


def _standardise_all(
    options: ConvertOptions, records: Sequence[SourceRecord], staging: Path, interrupts: _Interrupts
) -> tuple[list[_Processed], list[QuarantineEntry]]:
    tasks = [(index, record.rel_path) for index, record in enumerate(records)]
    processed: list[_Processed] = []
    rejected: list[QuarantineEntry] = []
    with _standardiser(options, staging, len(tasks), interrupts) as run:
        outcomes = progress_bar(
            run(tasks), total=len(tasks), description="Standardising images", enabled=options.show_progress
        )
        for outcome in outcomes:
            record = records[outcome.index]
            if isinstance(outcome, _Refused):
                rejected.append(QuarantineEntry(record.rel_path, outcome.reason, outcome.message))
                continue
            processed.append(
                _Processed(
                    outcome.index,
                    record.rel_path,
                    record.label,
                    record.group_key,
                    record.client_key,
                    outcome.source_sha256,
                    outcome.pixel_sha256,
                    outcome.png_sha256,
                )
            )
    return processed, rejected


# --- partition and write -------------------------------------------------------------------


def _partition_input(kept: Sequence[_Processed], label_names: list[str], natural: bool) -> PartitionInput:
    label_index = {label: i for i, label in enumerate(label_names)}
    # Group ids are numbered in order of first appearance.
    group_index: dict[str, int] = {}
    groups = []
    for sample in kept:
        key = _group_key(sample.rel_path, sample.group_key, sample.source_sha256)
        groups.append(group_index.setdefault(key, len(group_index)))
    natural_keys = np.array([sample.client_key for sample in kept], dtype=object) if natural else None
    return PartitionInput(
        labels=np.array([label_index[sample.label] for sample in kept], dtype=np.int64),
        groups=np.array(groups, dtype=np.int64),
        natural_keys=natural_keys,
    )


def _assign(
    kept: Sequence[_Processed], label_names: list[str], partitioner: Partitioner, options: ConvertOptions
) -> list[tuple[np.ndarray, np.ndarray]]:
    if not kept:
        raise PartitionError("no image was accepted: nothing to partition (see quarantine.jsonl)")
    data = _partition_input(kept, label_names, natural=options.scheme == "natural")
    parts = partitioner.partition(data)
    return [split_train_val(data, indices, options.val_fraction, seed=options.seed) for indices in parts]


def _write_federation(
    partial: Path,
    staging: Path,
    kept: list[_Processed],
    clients: list[str],
    partitioner: Partitioner,
    pseudonyms: Pseudonymiser,
    options: ConvertOptions,
    scan: ScanResult,
    quarantined: list[QuarantineEntry],
    interrupts: _Interrupts,
) -> dict[str, Any]:
    # Content order, not path order: the partition depends on neither file names nor the secret.
    kept.sort(key=lambda sample: sample.source_sha256)
    label_names = sorted({check_label_name(sample.label) for sample in kept})
    assignment = _assign(kept, label_names, partitioner, options)
    summaries = {}
    for name, splits in zip(clients, assignment, strict=True):
        interrupts.check()
        summaries[name] = _write_client(partial, staging, name, kept, splits, pseudonyms, label_names)
    shutil.rmtree(staging)
    quarantine = quarantine_jsonl(quarantined)
    write_bytes(partial / QUARANTINE_FILE, quarantine)
    federation = federation_manifest(
        tool_version=__version__,
        image=options.spec.to_manifest(),
        label_names=label_names,
        partition=_partition_manifest(options, partitioner),
        pseudonyms={
            "algorithm": "HMAC-SHA256",
            "secret_fingerprint": pseudonyms.fingerprint(),
            "source_hmac": "HMAC-SHA256(secret, 'source' NUL hex sha256 of the source file)",
        },
        inputs=_inputs_manifest(options, scan, quarantined, len(kept)),
        clients=summaries,
        quarantine_sha256=sha256_bytes(quarantine),
    )
    write_bytes(partial / FEDERATION_FILE, canonical_json(federation))
    interrupts.check()
    federation_report.write_report_files(partial, federation)
    return federation


def _write_client(
    partial: Path,
    staging: Path,
    name: str,
    kept: list[_Processed],
    splits: tuple[np.ndarray, np.ndarray],
    pseudonyms: Pseudonymiser,
    label_names: list[str],
) -> dict[str, Any]:
    client_dir = partial / CLIENTS_DIR / name
    rows: list[SampleRow] = []
    checksums: dict[str, str] = {}
    for split, indices in zip(("train", "val"), splits, strict=True):
        for i in indices:
            sample = kept[int(i)]
            row = _sample_row(sample, split, pseudonyms)
            target = client_dir / row.file_name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / f"{sample.index}.png", target)
            rows.append(row)
            checksums[row.file_name] = sample.png_sha256
    metadata, sums = metadata_csv(rows), checksums_file(checksums)
    write_bytes(client_dir / METADATA_FILE, metadata)
    write_bytes(client_dir / CHECKSUMS_FILE, sums)
    return client_summary(rows, label_names, metadata, sums)


def _sample_row(sample: _Processed, split: str, pseudonyms: Pseudonymiser) -> SampleRow:
    sample_id = pseudonyms.sample_id(sample.source_sha256)
    group_id = pseudonyms.group_id(_group_key(sample.rel_path, sample.group_key, sample.source_sha256))
    return SampleRow(
        sample_file_name(sample.label, sample_id),
        sample.label,
        split,
        sample_id,
        group_id,
        pseudonyms.source_hmac(sample.source_sha256),
    )


def _partition_manifest(options: ConvertOptions, partitioner: Partitioner) -> dict[str, Any]:
    document = {
        "scheme": options.scheme,
        "seed": options.seed,
        "val_fraction": options.val_fraction,
        "params": partitioner.params(),
        "group_aware": True,
    }
    if isinstance(partitioner, NaturalPartitioner):
        document["reassigned_groups"] = partitioner.reassigned_groups
        document["reassigned_samples"] = partitioner.reassigned_samples
        document["reassignments"] = partitioner.reassignments()
    return document


def reassignment_notes(federation: dict[str, Any]) -> list[str]:
    """What the natural scheme moved between sites, for the terminal: counts per pair of sites.

    A patient whose rows name two sites moves whole to the one holding most of their images.

    Parameters
    ----------
    federation : dict
        A ``federation.json`` manifest (its ``partition.reassignments``).

    Returns
    -------
    list of str
        One line, or none when nothing moved (or the scheme is not natural).

    Examples
    --------
    >>> moves = [{"from": "b", "to": "a", "groups": 2, "samples": 3}, {"from": "a", "to": "b", "groups": 1,
    ...           "samples": 1}]
    >>> federation = {"partition": {"reassigned_groups": 3, "reassigned_samples": 4, "reassignments": moves},
    ...               "totals": {"num_samples": 40}}
    >>> print(reassignment_notes(federation)[0])
    --scheme natural moved 4 of 40 images (3 patients with images at more than one site, each kept whole at
    the site holding most of their images): b -> a 3 images (2 patients), a -> b 1 image (1 patient);
    recorded in federation.json (partition.reassignments)
    """
    partition = federation.get("partition", {})
    moves = partition.get("reassignments") or []
    if not moves:
        return []
    pairs = ", ".join(
        f"{move['from']} -> {move['to']} {_count(move['samples'], 'image')} "
        f"({_count(move['groups'], 'patient')})"
        for move in moves
    )
    return [
        f"--scheme natural moved {partition['reassigned_samples']} of "
        f"{federation['totals']['num_samples']} images ({_count(partition['reassigned_groups'], 'patient')} "
        "with images at more than one site, each kept whole at the site holding most of their images): "
        f"{pairs}; recorded in federation.json (partition.reassignments)"
    ]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _inputs_manifest(
    options: ConvertOptions, scan: ScanResult, quarantined: Iterable[QuarantineEntry], accepted: int
) -> dict[str, Any]:
    if options.labels_csv:
        layout = "labels_csv"
    elif options.label_pattern:
        layout = "label_pattern"
    else:
        layout = "class_folders"
    reasons = Counter(entry.reason.value for entry in quarantined)
    return {
        "layout": layout,
        "files_seen": scan.files_seen,
        "accepted": accepted,
        "quarantined": dict(sorted(reasons.items())),
        "skipped": dict(sorted(scan.skipped.items())),
        "group_column": bool(options.columns.group) if options.labels_csv else False,
    }
