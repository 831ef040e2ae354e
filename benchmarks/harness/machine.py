"""The machine a benchmark ran on: what it is, how loaded it was, and waiting for it to be quiet.

Every benchmark report states its machine and its load, because the same code
gives different figures on a different or busy machine; these functions make
those statements the same way in every report.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NamedTuple

REPO_ROOT = Path(__file__).resolve().parents[2]

# --- what machine ----------------------------------------------------------------------------


def machine_info() -> dict:
    """The report's "Machine" facts: CPU, cores, RAM, OS, Python, Pillow (with its libjpeg and zlib), fedimg.

    Returns
    -------
    dict
        ``cpu_model``, ``logical_cpus``, ``usable_cpus``, ``physical_cores``,
        ``ram_bytes``, ``os``, ``python``, ``pillow``, ``libjpeg_turbo``,
        ``libjpeg``, ``zlib``, ``fedimg_version`` and ``fedimg_commit``, in that
        order (the JSON twin keeps it).

    Examples
    --------
    >>> info = machine_info()
    >>> info["logical_cpus"] == os.cpu_count() and info["ram_bytes"] > 0
    True
    """
    import psutil
    from PIL import __version__ as pillow_version
    from PIL import features

    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_bytes": psutil.virtual_memory().total,
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "pillow": pillow_version,
        "libjpeg_turbo": bool(features.check_feature("libjpeg_turbo")),
        "libjpeg": features.version("jpg"),
        "zlib": features.version("zlib"),
        "fedimg_version": fedimg_version(),
        "fedimg_commit": git_commit(),
    }


def package_versions(*packages: str) -> dict[str, str]:
    """The installed version of each package, in the order given.

    Parameters
    ----------
    *packages : str
        Distribution names, as ``pip`` knows them.

    Returns
    -------
    dict[str, str]
        Package name to version; ``"unknown"`` for a package that is not installed.

    Examples
    --------
    >>> package_versions("no-such-package-fedimg")
    {'no-such-package-fedimg': 'unknown'}
    """
    info = {}
    for package in packages:
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = "unknown"
    return info


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fedimg_version() -> str:
    """``datasite_setup.__version__``, or ``"unknown"`` if the package cannot be imported."""
    try:
        from datasite_setup import __version__

        return __version__
    except ImportError:
        return "unknown"


def _git(*arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def git_commit() -> str:
    """The checkout's short commit, marked when tracked files have uncommitted changes.

    Figures belong to exact code.
    """
    try:
        commit = _git("rev-parse", "--short=12", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return commit + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_line(machine: dict) -> str:
    """The report's "Machine" bullet.

    Parameters
    ----------
    machine : dict
        ``machine_info()``'s facts (at least the CPU, cores, RAM and OS ones).

    Returns
    -------
    str
        The "Machine" bullet.

    Examples
    --------
    >>> machine_line({"cpu_model": "Test CPU", "logical_cpus": 4, "usable_cpus": 2, "physical_cores": 2,
    ...               "ram_bytes": 8 * 2**30, "os": "Linux 6 x86_64"})
    '- **Machine**: Test CPU, 4 logical CPUs (2 usable, 2 physical cores), 8.0 GiB RAM, Linux 6 x86_64'
    """
    m = machine
    return (
        f"- **Machine**: {m['cpu_model']}, {m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable, "
        f"{m['physical_cores']} physical cores), {m['ram_bytes'] / 2**30:.1f} GiB RAM, {m['os']}"
    )


# --- its load --------------------------------------------------------------------------------

BUSY_NOTE = "the machine was not idle (other processes, or a run just before): figures may be pessimistic"


def format_load(values: Sequence[float]) -> str:
    """A load average triple as the reports write it.

    Parameters
    ----------
    values : Sequence[float]
        ``os.getloadavg()``, or empty when it was not taken.

    Returns
    -------
    str
        ``0.12/0.34/0.56``, or ``n/a``.

    Examples
    --------
    >>> format_load((0.1, 0.25, 1))
    '0.10/0.25/1.00'
    >>> format_load(())
    'n/a'
    """
    return "/".join(f"{v:.2f}" for v in values) if values else "n/a"


def load_line(
    start: Sequence[float],
    end: Sequence[float],
    *,
    max_start: float,
    max_end: float,
    busy_note: str = BUSY_NOTE,
) -> str:
    """The report's "Load average" bullet, flagged when the machine was busy.

    Parameters
    ----------
    start, end : Sequence[float]
        The load average triples when the measured part started and ended.
    max_start, max_end : float
        The 1-minute load above which the start (or end) counts as busy.
    busy_note : str
        What the flag says.

    Returns
    -------
    str
        The "Load average" bullet, ending with ``  — busy_note`` when busy.

    Examples
    --------
    >>> load_line((0.1, 0.2, 0.3), (2.0, 0.5, 0.3), max_start=0.5, max_end=1.5, busy_note="busy")
    '- **Load average** (1/5/15 min): start 0.10/0.20/0.30, end 2.00/0.50/0.30  — busy'
    """
    busy = bool(start and end and (start[0] > max_start or end[0] > max_end))
    return f"- **Load average** (1/5/15 min): start {format_load(start)}, end {format_load(end)}" + (
        f"  — {busy_note}" if busy else ""
    )


# --- waiting for a quiet machine ---------------------------------------------------------------


def wait_for_quiet_machine(max_load: float, timeout: float, echo: Callable[[str], object] = print) -> dict:
    """Poll the 1-minute load average until it is below ``max_load`` or ``timeout`` seconds have passed.

    Timings from a busy machine are pessimistic, so benchmarks wait before recording.

    Parameters
    ----------
    max_load : float
        The 1-minute load average to wait for.
    timeout : float
        Seconds after which to give up (and say so in the report).
    echo : Callable[[str], object]
        Where the one "waiting for …" line goes.

    Returns
    -------
    dict
        ``max_load``, ``timeout``, ``seconds`` waited, the last ``load`` and
        whether the machine was ``quiet``: the report's "Waited" line.

    Examples
    --------
    >>> wait_for_quiet_machine(1e9, 0)["quiet"]
    True
    """
    started = time.monotonic()
    load = os.getloadavg()[0]
    announced = False
    while load >= max_load and time.monotonic() - started < timeout:
        if not announced:
            echo(
                f"waiting for the 1-minute load ({load:.2f}) to drop below {max_load} "
                f"(up to {timeout:.0f} s)…"
            )
            announced = True
        time.sleep(10)
        load = os.getloadavg()[0]
    return {
        "max_load": max_load,
        "timeout": timeout,
        "seconds": round(time.monotonic() - started, 1),
        "load": round(load, 2),
        "quiet": load < max_load,
    }


def waited_line(waited: dict) -> str:
    """The report's "Waited" bullet.

    Parameters
    ----------
    waited : dict
        ``wait_for_quiet_machine``'s result.

    Returns
    -------
    str
        The "Waited" bullet.

    Examples
    --------
    >>> waited_line({"max_load": 1.5, "timeout": 600, "seconds": 12.3, "load": 2.0, "quiet": False})
    '- **Waited** 12 s for the 1-minute load to drop below 1.5 (it did not within 600 s: 2.00)'
    """
    return (
        f"- **Waited** {waited['seconds']:.0f} s for the 1-minute load to drop below {waited['max_load']:g}"
        + ("" if waited["quiet"] else f" (it did not within {waited['timeout']:.0f} s: {waited['load']:.2f})")
    )


def add_wait_options(
    parser: argparse.ArgumentParser, *, when: str = "first", record_default: float | None = None
) -> None:
    """Add ``--wait-load`` and ``--wait-timeout`` to a benchmark's command line.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The benchmark's parser.
    when : str
        How ``--wait-load``'s help starts (when the benchmark waits).
    record_default : float or None
        The ``--wait-load`` that ``--record`` implies; None: recording does not wait.

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_wait_options(parser)
    >>> parser.parse_args(["--wait-load", "2"]).wait_timeout
    600.0
    """
    implied = f" (default {record_default:g} with --record)" if record_default is not None else ""
    parser.add_argument(
        "--wait-load", type=float, help=f"{when} wait until the 1-minute load average is below this{implied}"
    )
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=600.0,
        help="give up waiting for --wait-load after this many seconds (default 600)",
    )


def wait_load(args: argparse.Namespace, record_default: float | None = None) -> float | None:
    """The load to wait for, from the parsed command line.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments with ``--wait-load`` (and maybe ``--record``).
    record_default : float or None
        The load ``--record`` implies when ``--wait-load`` is not given.

    Returns
    -------
    float or None
        ``--wait-load`` if given, else ``record_default`` when recording, else None (do not wait).

    Examples
    --------
    >>> wait_load(argparse.Namespace(wait_load=None, record=True), 1.5)
    1.5
    >>> wait_load(argparse.Namespace(wait_load=None, record=False), 1.5) is None
    True
    """
    if args.wait_load is not None:
        return args.wait_load
    return record_default if getattr(args, "record", False) else None


# --- CPU contention --------------------------------------------------------------------------


class CpuSnapshot(NamedTuple):
    """CPU seconds so far: busy time of the whole machine, of this process, hypervisor steal; and when."""

    machine_busy: float
    own: float
    steal: float
    wall: float  # time.perf_counter()


def cpu_snapshot() -> CpuSnapshot:
    """The machine's busy CPU seconds, this process's CPU seconds and steal seconds now.

    Two snapshots bracket a timed part (``contention``).

    Returns
    -------
    CpuSnapshot
        The counters, and ``time.perf_counter()``.

    Examples
    --------
    >>> before, after = cpu_snapshot(), cpu_snapshot()
    >>> after.wall >= before.wall and after.own >= before.own
    True
    """
    import psutil

    machine = psutil.cpu_times()
    steal = getattr(machine, "steal", 0.0)
    # guest time is already counted in user time on Linux; idle, iowait and steal are not ours to use.
    not_busy = (
        machine.idle
        + getattr(machine, "iowait", 0.0)
        + steal
        + getattr(machine, "guest", 0.0)
        + getattr(machine, "guest_nice", 0.0)
    )
    own = os.times()
    return CpuSnapshot(sum(machine) - not_busy, own.user + own.system, steal, time.perf_counter())


def contention(before: CpuSnapshot, after: CpuSnapshot, *, children_cpu_seconds: float = 0.0) -> dict:
    """How much CPU everything but the benchmark used between two ``cpu_snapshot()``s (kernel threads too).

    Other work slows the contenders unevenly, so the report says how much there was.

    Parameters
    ----------
    before, after : CpuSnapshot
        The snapshots that bracket the timed part.
    children_cpu_seconds : float
        CPU time of the subprocesses the benchmark measured; the benchmark is
        this process plus them.

    Returns
    -------
    dict
        ``wall_seconds``, ``benchmark_cpu_seconds``, ``other_cpu_seconds``, and
        the ``other_share`` and ``steal_share`` of the machine's capacity.

    Examples
    --------
    >>> cores = os.cpu_count()
    >>> contention(CpuSnapshot(0.0, 0.0, 0.0, 0.0), CpuSnapshot(3.0 * cores, 0.0, 0.0, 10.0))["other_share"]
    0.3
    """
    wall = after.wall - before.wall
    ours = children_cpu_seconds + (after.own - before.own)
    others = max(0.0, (after.machine_busy - before.machine_busy) - ours)
    capacity = wall * (os.cpu_count() or 1)
    return {
        "wall_seconds": round(wall, 1),
        "benchmark_cpu_seconds": round(ours, 1),
        "other_cpu_seconds": round(others, 1),
        "other_share": round(others / capacity, 4) if capacity else 0.0,
        "steal_share": round((after.steal - before.steal) / capacity, 4) if capacity else 0.0,
    }


def contention_line(measured: dict) -> str:
    """The report's "Other load during the timed runs" bullet.

    Parameters
    ----------
    measured : dict
        ``contention()``'s result; ``{}`` when it was not measured.

    Returns
    -------
    str
        The "Other load during the timed runs" bullet.

    Examples
    --------
    >>> contention_line({})
    '- **Other load during the timed runs**: not measured'
    """
    if not measured:
        return "- **Other load during the timed runs**: not measured"
    return (
        f"- **Other load during the timed runs**: {measured['other_cpu_seconds']:.1f} CPU-seconds used by "
        f"other processes in {measured['wall_seconds']:.0f} s, {measured['other_share']:.0%} of the machine "
        f"(the benchmark itself: {measured['benchmark_cpu_seconds']:.1f} CPU-seconds)"
        + (
            f"; hypervisor steal {measured['steal_share']:.0%}"
            if measured.get("steal_share", 0) >= 0.01
            else ""
        )
    )
