"""A site's CPU: its process tree's, including the children it has already reaped.

A sandboxed site runs each job in a worker process that exits when the job ends; a
reading of the live processes alone would lose that worker's CPU (or count it
negative, when it was alive at the first reading). The kernel adds a reaped child's
CPU and page faults to its parent's ``cutime``/``cstime``/``cminflt`` (``/proc/PID/stat``
fields 16, 17 and 11), so the site's reading includes them.
"""

from __future__ import annotations

from benchmarks.scale.memory import tree_pids


def _stat_fields(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].decode().split()
    except (OSError, IndexError):
        return []


def tree_cpu(pid: int) -> tuple[float, float, int]:
    """CPU seconds and minor page faults so far of a process tree, reaped children included.

    Parameters
    ----------
    pid : int
        The root process (the site).

    Returns
    -------
    tuple[float, float, int]
        User seconds, system seconds, minor page faults (0s when the process is gone).

    Examples
    --------
    >>> import os, subprocess, sys
    >>> before = tree_cpu(os.getpid())
    >>> _ = subprocess.run([sys.executable, "-c", "sum(range(3_000_000))"], check=True)
    >>> after = tree_cpu(os.getpid())
    >>> after[0] + after[1] > before[0] + before[1] and after[2] > before[2]
    True
    """
    import os

    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    faults = 0
    for number, process in enumerate(tree_pids(pid)):
        fields = _stat_fields(process)  # fields[0] is field 3 (state): field N is fields[N - 3]
        if len(fields) < 15:
            continue
        user += int(fields[11]) / tick
        system += int(fields[12]) / tick
        faults += int(fields[7])
        if number == 0:  # the root's reaped descendants (theirs roll up into it as they are reaped)
            user += int(fields[13]) / tick
            system += int(fields[14]) / tick
            faults += int(fields[8])
    return user, system, faults
