"""A site's memory: the resident set of its process tree, sampled through the phases of a job.

The site process and its children (the sandbox workers, once the site spawns them) are
read from ``/proc/<pid>/status``: ``VmRSS`` (resident now) and ``VmHWM`` (the kernel's
high-water mark of that process). The site process's high-water mark is reset (``echo 5
> /proc/<pid>/clear_refs``) when the job starts, so it is the peak *during the job*, not
the ingest's; a thread sums the tree's ``VmRSS`` every 50 ms meanwhile, per phase. What
the resident set is made of (``RssAnon``: heap and tensors; ``RssFile``: pages of mapped
files, i.e. the partition's read-only maps and the libraries' code) is read with it, for
the site process and its children apart (``tree_parts``).
"""

from __future__ import annotations

import threading
import time

INTERVAL = 0.05  # seconds between samples
PART_FIELDS = ("RssAnon", "RssFile", "RssShmem")  # VmRSS is their sum


def status_bytes(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``) in bytes; 0 when unavailable.

    Parameters
    ----------
    pid : int
        The process.
    field : str
        The field's name, without the colon.

    Returns
    -------
    int
        Bytes.

    Examples
    --------
    >>> import os
    >>> status_bytes(os.getpid(), "VmHWM") >= status_bytes(os.getpid(), "VmRSS") > 0
    True
    >>> status_bytes(-1, "VmRSS")
    0
    """
    prefix = field.encode() + b":"
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(prefix):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree_pids(pid: int) -> list[int]:
    """The process and all its descendants (empty when it is gone).

    Examples
    --------
    >>> import os
    >>> tree_pids(os.getpid())[0] == os.getpid()
    True
    """
    import psutil

    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def status_fields(pid: int, fields: tuple[str, ...]) -> dict[str, int]:
    """Several ``kB`` fields of ``/proc/PID/status`` in bytes, read at once (0 for any unavailable).

    Examples
    --------
    >>> import os
    >>> parts = status_fields(os.getpid(), ("VmRSS", *PART_FIELDS))
    >>> parts["VmRSS"] > 0 and abs(parts["VmRSS"] - sum(parts[f] for f in PART_FIELDS)) < 2**20
    True
    >>> status_fields(-1, ("VmRSS",))
    {'VmRSS': 0}
    """
    found = dict.fromkeys(fields, 0)
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                name, _, value = line.partition(b":")
                if name.decode() in found:
                    found[name.decode()] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return found


def tree_parts(pid: int) -> dict[str, dict[str, int]]:
    """What a process tree's resident set is made of now: the root's and its descendants' apart.

    Returns
    -------
    dict
        ``{"site": {...}, "children": {...}}``, each ``{"RssAnon", "RssFile", "RssShmem"}`` in bytes
        (``children``: the sum over every descendant, e.g. the sandbox workers).

    Examples
    --------
    >>> import os
    >>> parts = tree_parts(os.getpid())
    >>> parts["site"]["RssAnon"] > 0 and parts["children"]["RssFile"] >= 0
    True
    """
    parts = {"site": dict.fromkeys(PART_FIELDS, 0), "children": dict.fromkeys(PART_FIELDS, 0)}
    for member in tree_pids(pid):
        group = parts["site" if member == pid else "children"]
        for name, value in status_fields(member, PART_FIELDS).items():
            group[name] += value
    return parts


def tree_rss(pid: int) -> tuple[int, int]:
    """``(summed VmRSS, processes)`` of a process tree now.

    Examples
    --------
    >>> import os
    >>> rss, processes = tree_rss(os.getpid())
    >>> rss > 0 and processes >= 1
    True
    """
    pids = tree_pids(pid)
    return sum(status_bytes(p, "VmRSS") for p in pids), len(pids)


def reset_high_water(pid: int) -> bool:
    """Reset a process's ``VmHWM`` to its current RSS (``clear_refs`` 5); False when the kernel refused.

    Examples
    --------
    >>> import os
    >>> reset_high_water(os.getpid())
    True
    """
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def settled_rss(pid: int, seconds: float = 1.0) -> int:
    """The median of a tree's summed RSS over ``seconds`` (an idle site's resident memory).

    Examples
    --------
    >>> import os
    >>> settled_rss(os.getpid(), 0.1) > 0
    True
    """
    samples = []
    deadline = time.monotonic() + seconds
    while True:
        samples.append(tree_rss(pid)[0])
        if time.monotonic() >= deadline:
            break
        time.sleep(INTERVAL)
    samples.sort()
    return samples[len(samples) // 2]


class TreeMemoryWatch(threading.Thread):
    """Samples a process tree's summed ``VmRSS`` every ``interval`` seconds, keeping the peak per phase.

    Parameters
    ----------
    pid : int
        The root process (the site).
    interval : float
        Seconds between samples.

    Examples
    --------
    >>> import os
    >>> watch = TreeMemoryWatch(os.getpid())
    >>> watch.start(); watch.phase("work"); time.sleep(0.2); figures = watch.stop()
    >>> figures["peak_bytes"] > 0 and figures["phases"]["work"]["peak_bytes"] > 0 and figures["samples"] >= 1
    True
    """

    def __init__(self, pid: int, interval: float = INTERVAL) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples = 0
        self.current = "start"
        self.phases: dict[str, dict] = {}
        self.high_water: dict[int, int] = {}  # pid -> its largest VmHWM seen
        self.peak_parts: dict[str, dict[str, int]] = {}  # what the tree's largest sample was made of
        self._peak_total = 0
        self._stop_event = threading.Event()
        self._lock = threading.Lock()

    def phase(self, name: str) -> None:
        """Charge the following samples to phase ``name``."""
        with self._lock:
            self.current = name

    def run(self) -> None:
        """Sample until ``stop()`` (or until the root process is gone)."""
        while not self._stop_event.is_set():
            pids = tree_pids(self.pid)
            if not pids:
                return
            total = 0
            parts = {"site": dict.fromkeys(PART_FIELDS, 0), "children": dict.fromkeys(PART_FIELDS, 0)}
            for pid in pids:
                fields = status_fields(pid, ("VmRSS", "VmHWM", *PART_FIELDS))
                total += fields["VmRSS"]
                self.high_water[pid] = max(self.high_water.get(pid, 0), fields["VmHWM"])
                group = parts["site" if pid == self.pid else "children"]
                for name in PART_FIELDS:
                    group[name] += fields[name]
            if total > self._peak_total:
                self._peak_total, self.peak_parts = total, parts
            with self._lock:
                entry = self.phases.setdefault(self.current, {"peak_bytes": 0, "peak_processes": 0})
                if total > entry["peak_bytes"]:
                    entry.update(peak_bytes=total, peak_processes=len(pids))
                entry["max_processes"] = max(entry.get("max_processes", 0), len(pids))
            self.samples += 1
            self._stop_event.wait(self.interval)

    def stop(self) -> dict:
        """Stop sampling; returns the figures.

        Returns
        -------
        dict
            ``peak_bytes`` and ``peak_processes`` over all phases, ``phases`` (each one's peak and
            process counts), ``samples``, the site process's ``site_high_water_bytes`` and the sum of
            every process's high-water mark (``tree_high_water_bytes``, an upper bound: the peaks
            need not coincide), and ``peak_parts``: the largest sample's make-up (``tree_parts``'s
            form).
        """
        self._stop_event.set()
        self.join()
        peak = max(self.phases.values(), key=lambda entry: entry["peak_bytes"], default={})
        return {
            "peak_bytes": peak.get("peak_bytes", 0),
            "peak_processes": peak.get("peak_processes", 0),
            "phases": self.phases,
            "samples": self.samples,
            "site_high_water_bytes": self.high_water.get(self.pid, 0),
            "tree_high_water_bytes": sum(self.high_water.values()),
            "processes_seen": len(self.high_water),
            "peak_parts": self.peak_parts,
        }
