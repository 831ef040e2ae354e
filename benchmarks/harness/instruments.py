"""Measuring instruments: a subprocess's wall time, CPU and peak memory; a process tree's CPU; this process's.

The benchmarks time different things (a CLI in a subprocess, an upload in this
process, datasites serving in their own processes), with the same few tools.
"""

from __future__ import annotations

import gc
import os
import resource
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks.harness.machine import REPO_ROOT

SAMPLE_INTERVAL = 0.05  # seconds between RSS samples


class TreeRssSampler(threading.Thread):
    """Samples the summed RSS of a process and all its descendants every ``interval`` seconds.

    Forked workers share copy-on-write pages with their parent, so the sum counts
    shared pages more than once: it is an upper bound on the memory really used,
    and the same yardstick at every input size.

    Parameters
    ----------
    pid : int
        The root process.
    interval : float
        Seconds between samples.

    Examples
    --------
    >>> sampler = TreeRssSampler(os.getpid())
    >>> sampler.start(); time.sleep(0.2); sampler.stop()
    >>> sampler.peak > 0 and sampler.samples >= 1 and sampler.largest_process > 0
    True
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
        """Sample until ``stop()`` (or until the root process is gone)."""
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
                high_water = vm_hwm(process.pid)
                if high_water > self.high_water.get(process.pid, 0):
                    self.high_water[process.pid] = high_water
            if total > self.peak:
                self.peak, self.peak_processes = total, len(processes)
            self.samples += 1
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._stop_event.set()
        self.join()

    @property
    def largest_process(self) -> int:
        """The highest peak RSS (VmHWM) of any single process of the tree, as last seen."""
        return max(self.high_water.values(), default=0)


def vm_hwm(pid: int) -> int:
    """``VmHWM`` of ``/proc/PID/status`` in bytes (0 when unavailable).

    Unlike ``ru_maxrss`` this is per address space and starts afresh at exec, so it
    does not inherit the benchmark process's own size through fork.

    Examples
    --------
    >>> vm_hwm(os.getpid()) > 0
    True
    """
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class Measured(NamedTuple):
    """A finished subprocess: its wall time, exit code, RSS sampler and resource usage."""

    wall: float
    returncode: int
    sampler: TreeRssSampler
    usage: Any  # resource.struct_rusage of the process and its reaped descendants

    @property
    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the process tree."""
        return self.usage.ru_utime + self.usage.ru_stime


def run_measured(command: Sequence[str], *, env: dict, log: Path) -> Measured:
    """Run ``command`` to completion from the repository root, sampling its tree's RSS meanwhile.

    Parameters
    ----------
    command : Sequence[str]
        The command line.
    env : dict
        Its environment.
    log : Path
        Where its stdout and stderr go.

    Returns
    -------
    Measured
        Wall seconds, exit code, the sampler and the resource usage.

    Examples
    --------
    >>> measured = run_measured(["true"], env=dict(os.environ), log=Path("true.log"))
    >>> measured.returncode, measured.wall > 0
    (0, True)
    """
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
    return Measured(wall, process.returncode, sampler, usage)


def process_tree_usage(pids: Sequence[int]) -> tuple[float, float, int]:
    """CPU and page faults so far of some processes and all their descendants.

    Parameters
    ----------
    pids : Sequence[int]
        The root processes (gone ones are skipped).

    Returns
    -------
    tuple[float, float, int]
        User CPU seconds, system CPU seconds, minor page faults.

    Examples
    --------
    >>> user, system, faults = process_tree_usage([os.getpid()])
    >>> user > 0 and faults > 0
    True
    """
    import psutil

    user = system = 0.0
    faults = 0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                times = process.cpu_times()
                user, system = user + times.user, system + times.system
                faults += minor_faults(process.pid)
        except psutil.NoSuchProcess:
            continue
    return user, system, faults


def minor_faults(pid: int) -> int:
    """Minor page faults of a process so far (``/proc/PID/stat`` field 10; 0 when unavailable)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[1].split()[7])  # field 10, minflt
    except (OSError, ValueError, IndexError):
        return 0


class Stopwatch:
    """Wall time, CPU time and minor page faults of this process between ``start()`` and ``stop()``.

    Examples
    --------
    >>> watch = Stopwatch()
    >>> watch.start(); total = sum(range(10_000)); watch.stop()
    >>> watch.seconds > 0 and watch.cpu >= 0 and watch.faults >= 0
    True
    """

    def start(self) -> None:
        """Start timing (after a garbage collection, so an earlier run's garbage is not charged)."""
        gc.collect()
        self._faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        """Stop timing: ``seconds``, ``cpu`` and ``faults`` are set."""
        self.seconds, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu
        self.faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - self._faults
