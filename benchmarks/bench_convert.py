"""Benchmark: ``fedimg convert`` against a plain single-process Pillow loop.

The same set of N distinct 256×256 RGB JPEGs (default 2,000, generated from
scikit-learn's digits and cached in the work folder) is converted to 128-px RGB
PNGs by

* **plain loop**: one Python process, for each file ``Image.open → convert("RGB")
  → resize((128, 128), BICUBIC) → save PNG``. Its time is measured *inside* the
  process around the loop (file listing included, interpreter start excluded);
* **fedimg convert**: the real CLI (``fedimg convert SRC OUT --clients 3 --scheme
  iid --size 128 --mode RGB --seed 0 --quiet --overwrite``) in a subprocess. Its
  time is the *whole* subprocess wall time: interpreter start, imports, scan,
  decoding, dedup, partition, manifests and report included. This is
  deliberately conservative for fedimg.

Runs are interleaved (plain, fedimg, plain, fedimg, …) so drift in machine load
hits both; the median of ``--repeats`` runs is reported. Peak memory is the sum
of the RSS of the process and all its children, sampled every 50 ms, for
fedimg at N and at 10·N images (``--big-factor``).

Usage (from the repository root)::

    python -m benchmarks.bench_convert [--images N] [--repeats 3] [--workdir benchmarks/_work]
                                       [--report PATH] [--record] [--quick]

The report (markdown, plus a ``.json`` twin) goes to ``--report`` (default
``WORKDIR/report.md``); ``--record`` also adds it to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks import report
from benchmarks.machine import (
    contention,
    contention_line,
    cpu_snapshot,
    load_line,
    machine_info,
    machine_line,
)
from benchmarks.report import ResultsSection

REPO_ROOT = Path(__file__).resolve().parents[1]
SECTION = ResultsSection(  # where --record puts the report in benchmarks/RESULTS.md
    heading="## Conversion",
    intro="`fedimg convert` against a plain single-process Pillow loop (`.venv/bin/python -m benchmarks.bench_convert --record`; how to read it: [README.md](README.md)).",
    marker="<!-- results: newest first; `python -m benchmarks.bench_convert --record` inserts below -->",
)

GENERATOR_VERSION = 1  # bump when the generated images change: invalidates the cache
SOURCE_SIZE = 256
OUTPUT_SIZE = 128
JPEG_QUALITY = 90
NOISE_SIGMA = 5.0
BENCH_SECRET = "5eed" * 16  # 64 hex characters: a fixed federation secret, so runs do not touch ~/.config
SAMPLE_INTERVAL = 0.05  # seconds between RSS samples

SPEED_TARGET = 1.5  # fedimg ≥ 1.5× the plain loop (on a 2-core machine)
RSS_TARGET = 1.3  # peak RSS at 10·N ≤ 1.3× that at N
TARGET_CORES = 2
MAX_LOAD = 0.5  # flag a report whose 1-minute load at start or end was above this

FEDIMG_ARGS = [
    "--clients",
    "3",
    "--scheme",
    "iid",
    "--size",
    str(OUTPUT_SIZE),
    "--mode",
    "RGB",
    "--seed",
    "0",
    "--quiet",
    "--overwrite",
]


# --- generating the inputs ------------------------------------------------------------------

_generator_state: dict = {}


def _init_generator(digits, labels, out: str, seed: int) -> None:
    _generator_state.update(digits=digits, labels=labels, out=Path(out), seed=seed)


def _generate_range(bounds: tuple[int, int]) -> int:
    """Write images ``start..stop-1``; each is a pure function of (seed, index)."""
    import io

    import numpy as np
    from PIL import Image

    digits, labels, out, seed = (_generator_state[k] for k in ("digits", "labels", "out", "seed"))
    start, stop = bounds
    for index in range(start, stop):
        rng = np.random.default_rng([seed, index])
        k = int(rng.integers(len(digits)))
        glyph = Image.fromarray(digits[k], mode="L").resize(
            (SOURCE_SIZE, SOURCE_SIZE), Image.Resampling.BICUBIC
        )
        shade = np.asarray(glyph, dtype=np.float32)[..., None] / 255.0
        shade = np.roll(shade, tuple(int(s) for s in rng.integers(-24, 25, size=2)), axis=(0, 1))
        background = rng.uniform(0, 110, size=3).astype(np.float32)
        ink = rng.uniform(140, 255, size=3).astype(np.float32)
        pixels = background + (ink - background) * shade
        pixels += rng.normal(0.0, NOISE_SIGMA, size=pixels.shape).astype(np.float32)
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        target = out / str(int(labels[k])) / f"img_{index:06d}.jpg"
        target.write_bytes(buffer.getvalue())
    return stop - start


def generate_images(workdir: Path, count: int, *, seed: int = 0) -> Path:
    """``count`` distinct 256×256 RGB JPEGs in class folders (label = digit), cached by parameters.

    Each image is a digit from scikit-learn's digits, upscaled, shifted, tinted
    (random ink and background colours) and noised, so no two decode to the same
    pixels (duplicates would be quarantined by fedimg and skew the comparison).
    """
    name = f"src-n{count}-seed{seed}-v{GENERATOR_VERSION}"
    source, done = workdir / name, workdir / f"{name}.done"
    if done.is_file() and source.is_dir():
        return source
    shutil.rmtree(source, ignore_errors=True)
    from datasite_setup.convert.sample_data import load_digit_images

    digits, labels = load_digit_images()
    staging = workdir / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    for label in sorted({int(v) for v in labels}):
        (staging / str(label)).mkdir(parents=True)
    chunk = 250
    ranges = [(start, min(start + chunk, count)) for start in range(0, count, chunk)]
    workers = min(os.cpu_count() or 1, max(1, len(ranges)))
    if workers == 1:
        _init_generator(digits, labels, str(staging), seed)
        written = sum(map(_generate_range, ranges))
    else:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(
            workers, _init_generator, (digits, labels, str(staging), seed)
        ) as pool:
            written = sum(pool.imap_unordered(_generate_range, ranges))
    assert written == count, (written, count)
    os.rename(staging, source)
    done.write_text(json.dumps({"count": count, "seed": seed, "generator_version": GENERATOR_VERSION}) + "\n")
    return source


def _warm_page_cache(source: Path) -> int:
    """Read every source file once so neither contender pays for the first disk read."""
    total = 0
    for directory, _, files in os.walk(source):
        for name in files:
            with open(os.path.join(directory, name), "rb") as handle:
                total += len(handle.read())
    return total


# --- the plain loop (runs in its own process) ---------------------------------------------


def plain_loop(source: Path, out: Path, *, draft: bool = False) -> dict:
    """The baseline: single process, open → convert("RGB") → resize(128, BICUBIC) → save PNG.

    With ``draft`` the JPEG is decoded at a reduced DCT scale first (what fedimg
    does); that variant is context only, not the baseline of the target.
    """
    from PIL import Image

    started, cpu_started = time.perf_counter(), time.process_time()
    files = sorted(
        os.path.join(directory, name)
        for directory, _, names in os.walk(source)
        for name in names
        if name.lower().endswith((".jpg", ".jpeg"))
    )
    made_dirs: set[str] = set()
    for path in files:
        relative = os.path.relpath(path, source)
        target = os.path.join(out, os.path.splitext(relative)[0] + ".png")
        parent = os.path.dirname(target)
        if parent not in made_dirs:
            os.makedirs(parent, exist_ok=True)
            made_dirs.add(parent)
        with Image.open(path) as image:
            if draft:
                image.draft("RGB", (OUTPUT_SIZE, OUTPUT_SIZE))
            result = image.convert("RGB").resize((OUTPUT_SIZE, OUTPUT_SIZE), Image.Resampling.BICUBIC)
        result.save(target, format="PNG")
    return {
        "images": len(files),
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,
    }


def _plain_loop_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_convert _plain_loop")
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--draft", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(plain_loop(args.source, args.out, draft=args.draft)), flush=True)
    return 0


# --- running and measuring a subprocess -------------------------------------------------------


class TreeRssSampler(threading.Thread):
    """Samples the summed RSS of a process and all its descendants every ``interval`` seconds.

    Forked workers share copy-on-write pages with their parent, so the sum counts
    shared pages more than once: it is an upper bound on the memory really used,
    and the same yardstick at N and at 10·N.
    """

    def __init__(self, pid: int, interval: float = SAMPLE_INTERVAL) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = 0
        self.peak_processes = 0
        self.samples = 0
        self.high_water: dict[int, int] = {}  # pid -> VmHWM, the kernel's peak RSS of that process
        self._stop_event = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop_event.is_set():
            try:
                processes = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for process in processes:
                try:
                    total += process.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                high_water = _vm_hwm(process.pid)
                if high_water > self.high_water.get(process.pid, 0):
                    self.high_water[process.pid] = high_water
            if total > self.peak:
                self.peak, self.peak_processes = total, len(processes)
            self.samples += 1
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    @property
    def largest_process(self) -> int:
        """The highest peak RSS (VmHWM) of any single process of the tree, as last seen."""
        return max(self.high_water.values(), default=0)


def _vm_hwm(pid: int) -> int:
    """``VmHWM`` of ``/proc/PID/status`` in bytes (0 when unavailable).

    Unlike ``ru_maxrss`` this is per address space and starts afresh at exec, so it
    does not inherit the benchmark process's own size through fork.
    """
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass
class Run:
    """One measured subprocess run."""

    label: str
    images: int
    wall_seconds: float
    seconds: float  # the time the rate is computed from (see ``timing``)
    timing: str
    cpu_seconds: float
    peak_tree_rss: int
    peak_tree_processes: int
    max_single_rss: int  # VmHWM of the largest single process of the tree (kernel high-water mark)
    rss_samples: int
    returncode: int

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


def _run_measured(
    command: Sequence[str], *, env: dict, log: Path
) -> tuple[float, int, TreeRssSampler, object]:
    """Run ``command`` to completion; return (wall seconds, exit code, RSS sampler, rusage)."""
    with open(log, "wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(
            list(command), stdout=output, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT
        )
        sampler = TreeRssSampler(process.pid)
        sampler.start()
        try:
            # Wait without reaping, so the sampler never looks at a recycled pid; then reap for rusage.
            os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
        except BaseException:  # Ctrl-C: do not leave the contender running
            process.terminate()
            process.wait()
            raise
        finally:
            wall = time.perf_counter() - started
            sampler.stop()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    return wall, process.returncode, sampler, usage


def _cpu(usage) -> float:
    return usage.ru_utime + usage.ru_stime


def run_plain(source: Path, out: Path, images: int, log: Path, *, draft: bool = False) -> Run:
    _clean(out)
    command = [sys.executable, "-m", "benchmarks.bench_convert", "_plain_loop", str(source), str(out)] + (
        ["--draft"] if draft else []
    )
    wall, code, sampler, usage = _run_measured(command, env=dict(os.environ), log=log)
    if code != 0:
        raise RuntimeError(f"plain loop failed (exit {code}); see {log}")
    measured = json.loads(log.read_text().strip().splitlines()[-1])
    if measured["images"] != images:
        raise RuntimeError(f"plain loop converted {measured['images']} images, expected {images}; see {log}")
    _clean(out)
    label = "plain loop + JPEG draft" if draft else "plain loop"
    return Run(
        label,
        images,
        wall,
        measured["seconds"],
        "loop only",
        _cpu(usage),
        sampler.peak,
        sampler.peak_processes,
        sampler.largest_process,
        sampler.samples,
        code,
    )


def fedimg_command() -> list[str]:
    script = Path(sys.executable).parent / "fedimg"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "datasite_setup.cli"]


def run_fedimg(source: Path, out: Path, images: int, log: Path, *, workers: int | None = None) -> Run:
    _clean(out)
    env = dict(os.environ, FEDIMG_SECRET=BENCH_SECRET)
    env.pop("FEDIMG_SECRET_FILE", None)
    command = [*fedimg_command(), "convert", str(source), str(out), *FEDIMG_ARGS] + (
        ["--workers", str(workers)] if workers else []
    )
    wall, code, sampler, usage = _run_measured(command, env=env, log=log)
    if code != 0:
        raise RuntimeError(
            f"fedimg convert exited {code} (expected 0: every input should be accepted); see {log} and {out / 'quarantine.jsonl'}"
        )
    accepted = json.loads((out / "federation.json").read_text())["inputs"]["accepted"]
    if accepted != images:
        raise RuntimeError(
            f"fedimg convert accepted {accepted} of {images} images; see {out / 'quarantine.jsonl'}"
        )
    _clean(out)
    label = "fedimg convert" if workers is None else f"fedimg convert --workers {workers}"
    return Run(
        label,
        images,
        wall,
        wall,
        "full CLI wall time",
        _cpu(usage),
        sampler.peak,
        sampler.peak_processes,
        sampler.largest_process,
        sampler.samples,
        code,
    )


def _clean(path: Path) -> None:
    """Remove an output outside the timed window, and flush writeback so it does not land in the next run."""
    shutil.rmtree(path, ignore_errors=True)
    os.sync()


# --- the benchmark ---------------------------------------------------------------------------


@dataclass
class Settings:
    images: int
    repeats: int
    big_factor: int
    big_repeats: int
    context: bool
    workdir: Path
    report: Path
    record: bool
    quick: bool
    seed: int = 0


@dataclass
class Results(report.ReportHeader):
    generation_seconds: dict = field(default_factory=dict)
    runs: dict = field(default_factory=dict)  # label -> list[Run as dict]
    summary: dict = field(default_factory=dict)
    targets: list = field(default_factory=list)
    contention: dict = field(default_factory=dict)  # CPU used by other processes during the timed runs


def run_benchmark(settings: Settings, *, echo=print) -> Results:
    settings.workdir.mkdir(parents=True, exist_ok=True)
    logs = settings.workdir / "logs"
    logs.mkdir(exist_ok=True)
    results = Results.begin(settings, machine_info())
    results.load_start = os.getloadavg()
    n, big_n = settings.images, settings.images * settings.big_factor

    echo(f"generating {n} distinct {SOURCE_SIZE}px JPEGs in {settings.workdir} (cached)…")
    started = time.perf_counter()
    source = generate_images(settings.workdir, n, seed=settings.seed)
    results.generation_seconds[str(n)] = round(time.perf_counter() - started, 2)
    big_source = None
    if settings.big_factor > 1:
        echo(f"generating {big_n} distinct {SOURCE_SIZE}px JPEGs (cached)…")
        started = time.perf_counter()
        big_source = generate_images(settings.workdir, big_n, seed=settings.seed)
        results.generation_seconds[str(big_n)] = round(time.perf_counter() - started, 2)
    _warm_page_cache(source)

    runs: dict[str, list[Run]] = {}
    cpu_before = cpu_snapshot()

    def record(run: Run) -> None:
        runs.setdefault(run.label, []).append(run)
        echo(
            f"  {run.label:<32} {run.images:>6} images  {run.seconds:7.2f} s  {run.images_per_second:8.1f} images/s  peak RSS {_mib(run.peak_tree_rss)}"
        )

    work = settings.workdir
    for repeat in range(settings.repeats):
        echo(f"repeat {repeat + 1}/{settings.repeats} (N = {n})")
        record(run_plain(source, work / "out-plain", n, logs / f"plain-{repeat}.log"))
        record(run_fedimg(source, work / "out-fedimg", n, logs / f"fedimg-{repeat}.log"))
        if settings.context:
            record(
                run_plain(source, work / "out-plain-draft", n, logs / f"plain-draft-{repeat}.log", draft=True)
            )
            record(run_fedimg(source, work / "out-fedimg-w1", n, logs / f"fedimg-w1-{repeat}.log", workers=1))
    if big_source is not None:
        _warm_page_cache(big_source)
        echo(f"memory run at {settings.big_factor}·N = {big_n} images")
        for repeat in range(settings.big_repeats):
            run = run_fedimg(big_source, work / "out-fedimg-big", big_n, logs / f"fedimg-big-{repeat}.log")
            run.label = f"fedimg convert at {settings.big_factor}·N"
            record(run)
    results.load_end = os.getloadavg()
    children = sum(r.cpu_seconds for group in runs.values() for r in group)
    results.contention = contention(cpu_before, cpu_snapshot(), children_cpu_seconds=children)
    results.runs = {
        label: [asdict(r) | {"images_per_second": r.images_per_second} for r in group]
        for label, group in runs.items()
    }
    results.summary, results.targets = _summarise(runs, settings)
    return results


def _median_run(group: list[Run]) -> dict:
    seconds = statistics.median(r.seconds for r in group)
    return {
        "images": group[0].images,
        "seconds": seconds,
        "images_per_second": group[0].images / seconds,
        "runs_images_per_second": [round(r.images_per_second, 1) for r in group],
        "wall_seconds": statistics.median(r.wall_seconds for r in group),
        "cpu_seconds": statistics.median(r.cpu_seconds for r in group),
        "peak_tree_rss": int(statistics.median(r.peak_tree_rss for r in group)),
        "peak_tree_processes": max(r.peak_tree_processes for r in group),
        "max_single_rss": int(statistics.median(r.max_single_rss for r in group)),
        "timing": group[0].timing,
    }


def _summarise(runs: dict[str, list[Run]], settings: Settings) -> tuple[dict, list]:
    summary = {label: _median_run(group) for label, group in runs.items()}
    plain, fedimg = summary["plain loop"], summary["fedimg convert"]
    speed_ratio = fedimg["images_per_second"] / plain["images_per_second"]
    summary["speed_ratio"] = speed_ratio
    cores = os.cpu_count() or 1
    core_note = (
        ""
        if cores == TARGET_CORES
        else f" (measured on {cores} cores; the target is stated for {TARGET_CORES})"
    )
    targets = [
        {
            "target": f"fedimg convert ≥ {SPEED_TARGET}× the plain loop (images/s){core_note}",
            "measured": f"{speed_ratio:.2f}×",
            "result": "PASS" if speed_ratio >= SPEED_TARGET else "MISS",
        }
    ]
    big_label = f"fedimg convert at {settings.big_factor}·N"
    if big_label in summary:
        rss_ratio = summary[big_label]["peak_tree_rss"] / fedimg["peak_tree_rss"]
        summary["rss_ratio"] = rss_ratio
        summary["single_rss_ratio"] = summary[big_label]["max_single_rss"] / fedimg["max_single_rss"]
        note = (
            ""
            if settings.big_factor == 10
            else f" (measured at {settings.big_factor}·N, not 10·N: --quick or --big-factor)"
        )
        targets.append(
            {
                "target": f"peak RSS at 10·N ≤ {RSS_TARGET}× peak RSS at N{note}",
                "measured": f"{rss_ratio:.2f}×",
                "result": "PASS" if rss_ratio <= RSS_TARGET else "MISS",
            }
        )
    return summary, targets


# --- the report ----------------------------------------------------------------------------


def _mib(value: int | float) -> str:
    return f"{value / 2**20:.0f} MiB"


def render_report(results: Results, *, heading: str = "##") -> str:
    m, s, summary = results.machine, results.settings, results.summary
    n = s["images"]
    big_label = f"fedimg convert at {s['big_factor']}·N"
    plain, fedimg = summary["plain loop"], summary["fedimg convert"]
    lines = [
        f"{heading} fedimg convert vs a plain Pillow loop — {results.started}",
        "",
        machine_line(m),
        f"- **Software**: Python {m['python']}, Pillow {m['pillow']} (libjpeg{'-turbo' if m['libjpeg_turbo'] else ''} {m['libjpeg']}, zlib {m['zlib']}), "
        f"fedimg {m['fedimg_version']} at commit {m['fedimg_commit']}",
        load_line(results.load_start, results.load_end, max_start=MAX_LOAD, max_end=MAX_LOAD),
        contention_line(results.contention),
        f"- **Inputs**: N = {n} distinct {SOURCE_SIZE}×{SOURCE_SIZE} RGB JPEGs (quality {JPEG_QUALITY}; scikit-learn digits upscaled, shifted, "
        f"tinted, noised σ={NOISE_SIGMA:g}) in 10 class folders"
        + (
            f"; the memory run uses a set of {n * s['big_factor']} made the same way"
            if big_label in summary
            else ""
        ),
        f"- **Output**: {OUTPUT_SIZE}×{OUTPUT_SIZE} RGB PNG (Pillow defaults, bicubic)",
        f"- **Runs**: {s['repeats']} repeat(s) of each, interleaved plain/fedimg, median reported"
        + (f"; {s['big_repeats']} memory run(s) at {s['big_factor']}·N" if big_label in summary else "")
        + ("; quick mode" if s["quick"] else ""),
        f"- **Plain loop**: `open → convert('RGB') → resize(({OUTPUT_SIZE}, {OUTPUT_SIZE}), BICUBIC) → save PNG`, one process; "
        "time measured inside the process around the loop (file listing included, interpreter start excluded)",
        f"- **fedimg**: `fedimg convert SRC OUT {' '.join(FEDIMG_ARGS)}` (all cores); time = wall time of the whole CLI "
        "subprocess (interpreter start, imports, scan, decode, dedup, partition, manifests, report.md and plot included)",
        f"- **Peak RSS**: sum over the process and all its children, sampled every {SAMPLE_INTERVAL * 1000:.0f} ms "
        "(forked workers' shared pages count once per process: an upper bound, the same yardstick at every size); "
        '"largest process" is the kernel\'s high-water mark (VmHWM) of the biggest single process',
        "",
        "| measurement | images | time (s) | images/s | per run (images/s) | CPU (s) | peak RSS (tree) | processes | largest process |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for label, row in summary.items():
        if not isinstance(row, dict):
            continue
        lines.append(
            f"| {label} | {row['images']} | {row['seconds']:.2f} | {row['images_per_second']:.1f} | "
            f"{', '.join(f'{v:.1f}' for v in row['runs_images_per_second'])} | {row['cpu_seconds']:.1f} | "
            f"{_mib(row['peak_tree_rss'])} | {row['peak_tree_processes']} | {_mib(row['max_single_rss'])} |"
        )
    lines += [
        "",
        f"- **Speed**: fedimg convert {fedimg['images_per_second']:.1f} images/s vs plain loop {plain['images_per_second']:.1f} images/s: "
        f"**{summary['speed_ratio']:.2f}×**",
    ]
    if "rss_ratio" in summary:
        big = summary[big_label]
        lines.append(
            f"- **Memory**: fedimg peak RSS {_mib(fedimg['peak_tree_rss'])} at N = {n} and {_mib(big['peak_tree_rss'])} at "
            f"{s['big_factor']}·N = {big['images']}: **{summary['rss_ratio']:.2f}×** "
            f"(largest single process {_mib(fedimg['max_single_rss'])} → {_mib(big['max_single_rss'])}, {summary['single_rss_ratio']:.2f}×); "
            f"plain loop {_mib(plain['peak_tree_rss'])}"
        )
    if "plain loop + JPEG draft" in summary:
        draft, single = summary["plain loop + JPEG draft"], summary["fedimg convert --workers 1"]
        lines.append(
            f"- **Context** (not targets): the plain loop with JPEG draft decoding (what fedimg does) runs at "
            f"{draft['images_per_second']:.1f} images/s; fedimg on one worker at {single['images_per_second']:.1f} images/s, "
            f"so all cores give {fedimg['images_per_second'] / single['images_per_second']:.2f}× over one"
        )
    lines += ["", "| target | measured | result |", "| --- | ---: | :---: |"]
    lines += [f"| {t['target']} | {t['measured']} | **{t['result']}** |" for t in results.targets]
    return "\n".join(lines) + "\n"


# --- command line --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_convert", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--images", type=int, help="N, the number of images (default 2000; 200 with --quick)")
    parser.add_argument(
        "--repeats",
        type=int,
        help="interleaved runs of each contender; the median is reported (default 3; 1 with --quick)",
    )
    parser.add_argument(
        "--big-factor",
        type=int,
        help="the memory scale run converts this many times N (default 10; 2 with --quick; 1 skips it)",
    )
    parser.add_argument("--big-repeats", type=int, default=1, help="runs at big-factor·N (default 1)")
    parser.add_argument(
        "--no-context",
        action="store_true",
        help="skip the context runs (plain loop with JPEG draft, fedimg --workers 1)",
    )
    report.add_report_options(
        parser,
        workdir_use="cache for generated inputs and scratch outputs",
        report_name="report.md",
        record_help="also add the report to benchmarks/RESULTS.md",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 200 images, 1 repeat, scale run at 2·N"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated images (default 0)")
    args = parser.parse_args(argv)
    images = args.images if args.images is not None else (200 if args.quick else 2000)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    big_factor = args.big_factor if args.big_factor is not None else (2 if args.quick else 10)
    if images < 1 or repeats < 1 or big_factor < 1 or args.big_repeats < 1:
        parser.error("--images, --repeats, --big-factor and --big-repeats must be at least 1")
    workdir, report_path = report.output_paths(args)
    return Settings(
        images=images,
        repeats=repeats,
        big_factor=big_factor,
        big_repeats=args.big_repeats,
        context=not args.no_context,
        workdir=workdir,
        report=report_path,
        record=args.record,
        quick=args.quick,
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_plain_loop"]:
        return _plain_loop_main(argv[1:])
    settings = parse_args(argv)
    report.publish(
        run_benchmark(settings),
        render_report,
        title="fedimg convert",
        path=settings.report,
        section=SECTION,
        record=settings.record,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
