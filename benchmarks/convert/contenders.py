"""``bench_convert``'s contenders, the plain Pillow loop and ``fedimg convert``, measured in subprocesses.

The plain loop's time is measured inside its own process, around the loop (file
listing included, interpreter start excluded); fedimg's is the whole subprocess's
wall time. Both runs' peak memory is the sampled RSS of the process tree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import harness

OUTPUT_SIZE = 128
FEDIMG_ARGS = f"--clients 3 --scheme iid --size {OUTPUT_SIZE} --mode RGB --seed 0 --quiet --overwrite".split()


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


def plain_loop_main(argv: Sequence[str]) -> int:
    """``python -m benchmarks.bench_convert _plain_loop SOURCE OUT [--draft]``: prints the loop's figures."""
    parser = argparse.ArgumentParser(prog="bench_convert _plain_loop")
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--draft", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(plain_loop(args.source, args.out, draft=args.draft)), flush=True)
    return 0


# --- one measured run of a contender ---------------------------------------------------------


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

    @classmethod
    def of(cls, label: str, images: int, measured: harness.Measured, *, seconds: float, timing: str) -> Run:
        """The run of a finished subprocess; its rate is computed from ``seconds``."""
        sampler = measured.sampler
        memory = (sampler.peak, sampler.peak_processes, sampler.largest_process, sampler.samples)
        return cls(
            label, images, measured.wall, seconds, timing, measured.cpu_seconds, *memory, measured.returncode
        )

    @property
    def images_per_second(self) -> float:
        """Images over the time the rate is computed from (NaN for a zero time)."""
        return self.images / self.seconds if self.seconds > 0 else float("nan")


def run_plain(source: Path, out: Path, images: int, log: Path, *, draft: bool = False) -> Run:
    """The plain loop in a subprocess; its time is the loop's own, measured inside the process."""
    harness.clean(out)
    command = [sys.executable, "-m", "benchmarks.bench_convert", "_plain_loop", str(source), str(out)] + (
        ["--draft"] if draft else []
    )
    measured = harness.run_measured(command, env=dict(os.environ), log=log)
    if measured.returncode != 0:
        raise RuntimeError(f"plain loop failed (exit {measured.returncode}); see {log}")
    loop = json.loads(log.read_text().strip().splitlines()[-1])
    if loop["images"] != images:
        raise RuntimeError(f"plain loop converted {loop['images']} images, expected {images}; see {log}")
    harness.clean(out)
    label = "plain loop + JPEG draft" if draft else "plain loop"
    return Run.of(label, images, measured, seconds=loop["seconds"], timing="loop only")


def fedimg_command() -> list[str]:
    """The ``fedimg`` command of this virtualenv (``python -m datasite_setup.cli`` without its script)."""
    script = Path(sys.executable).parent / "fedimg"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "datasite_setup.cli"]


def run_fedimg(source: Path, out: Path, images: int, log: Path, *, workers: int | None = None) -> Run:
    """``fedimg convert`` in a subprocess; its time is the whole subprocess's wall time."""
    harness.clean(out)
    env = dict(os.environ, FEDIMG_SECRET=harness.BENCH_SECRET)
    env.pop("FEDIMG_SECRET_FILE", None)
    command = [*fedimg_command(), "convert", str(source), str(out), *FEDIMG_ARGS] + (
        ["--workers", str(workers)] if workers else []
    )
    measured = harness.run_measured(command, env=env, log=log)
    if measured.returncode != 0:
        raise RuntimeError(
            f"fedimg convert exited {measured.returncode} (expected 0: every input should be accepted); "
            f"see {log} and {out / 'quarantine.jsonl'}"
        )
    accepted = json.loads((out / "federation.json").read_text())["inputs"]["accepted"]
    if accepted != images:
        raise RuntimeError(
            f"fedimg convert accepted {accepted} of {images} images; see {out / 'quarantine.jsonl'}"
        )
    harness.clean(out)
    label = "fedimg convert" if workers is None else f"fedimg convert --workers {workers}"
    return Run.of(label, images, measured, seconds=measured.wall, timing="full CLI wall time")
