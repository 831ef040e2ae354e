"""The overhead part's HTTP datasites: their data and policy, starting them, a FedAvg job through them, timed.

The sites are real ``fedimg datasite serve`` subprocesses on loopback
(``tests.support.datasites.RunningSite``); each gets a ``policy.toml`` whose
``[sandbox]`` section says whether approved calls run in a confined worker and on
how many torch threads (the worker gets an empty environment: ``OMP_NUM_THREADS``
does not reach it). The job is submitted by a researcher, approved by every owner
and run; each of its own rounds is timed from outside, with the CPU the site
processes (and their sandbox workers) and this process used meanwhile. What the
sandbox cost each job is read back from the sites' logs (``sandbox_log``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import BenchmarkError, cpu_snapshot, process_tree_usage, quiet
from benchmarks.workloads.digits import DIGITS_VERSION
from datasite_setup.convert.federated_format import SCHEMA_VERSION  # a new format: convert again

RESEARCHER_EMAIL = "bench.researcher@fedimg.example"
RESEARCHER_PASSWORD = (
    "bench-fedavg-researcher-0123"  # throw-away sites in the work folder, deleted afterwards
)
SANDBOX_MODES = ("on", "off")
# What a site prints at start-up about its sandbox, and the line it logs when a job gets its worker
# (datasite_setup.site.serve / contained): the benchmark checks the mode took effect and reads the costs.
_MODE_LINE = re.compile(r"datasite \S+ sandbox (?P<mode>on|OFF|UNAVAILABLE)\b(?P<rest>.*)")
_THREADS = re.compile(r"(?P<threads>\d+) torch thread\(s\) per worker")
_WORKER_LINE = re.compile(
    r"sandbox: job (?P<job>\S+) has its worker \(waited (?P<wait>[\d.]+) s for the warm spare, "
    r"spawned in (?P<spawn>[\d.]+) s off the critical path; .*? in (?P<setup>[\d.]+) s\)"
)


def policy_text(mode: str, threads: int) -> str:
    """A site's ``policy.toml`` here: the sandbox ``mode`` and, when on, the workers' torch threads.

    Parameters
    ----------
    mode : {"on", "off"}
        ``[sandbox] mode``.
    threads : int
        ``[sandbox] threads`` (torch threads per worker) when the sandbox is on.

    Returns
    -------
    str
        The policy file's text.

    Examples
    --------
    >>> policy_text("on", 1)
    '[sandbox]\\nmode = "on"\\nthreads = 1\\n'
    >>> policy_text("off", 1)
    '[sandbox]\\nmode = "off"\\n'
    """
    if mode not in SANDBOX_MODES:
        raise ValueError(f"sandbox mode must be one of {SANDBOX_MODES} (got {mode!r})")
    return '[sandbox]\nmode = "off"\n' if mode == "off" else f'[sandbox]\nmode = "on"\nthreads = {threads}\n'


def set_policy(sites: Sequence[Any], text: str) -> None:
    """Write ``text`` as every site's ``policy.toml`` (read when the site starts: restart it to apply)."""
    from policies import POLICY_FILE

    for site in sites:
        site.state_dir.mkdir(parents=True, exist_ok=True)
        (site.state_dir / POLICY_FILE).write_text(text)


def site_tree_usage(pids: Sequence[int]) -> tuple[float, float, int]:
    """CPU and minor page faults so far of the sites, their live descendants and the children they reaped.

    A job's sandbox worker exits (and is reaped by its site) at the end of the job: counting only the
    live processes (``process_tree_usage``) would drop its CPU from the tree between two readings. The
    kernel adds a reaped child's CPU and faults to its parent's ``cutime``/``cstime``/``cminflt``.

    Parameters
    ----------
    pids : Sequence[int]
        The site processes (gone ones are skipped).

    Returns
    -------
    tuple[float, float, int]
        User CPU seconds, system CPU seconds, minor page faults.

    Examples
    --------
    >>> import os
    >>> user, system, faults = site_tree_usage([os.getpid()])
    >>> user > 0 and faults > 0
    True
    """
    import psutil

    user, system, faults = process_tree_usage(pids)
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            with open(f"/proc/{pid}/stat", "rb") as handle:
                reaped_faults = int(handle.read().rsplit(b")", 1)[1].split()[8])  # field 11, cminflt
        except (psutil.NoSuchProcess, OSError, ValueError, IndexError):
            continue
        user, system = user + times.children_user, system + times.children_system
        faults += reaped_faults
    return user, system, faults


def log_offsets(sites: Sequence[Any]) -> dict[str, int]:
    """Where every site's log ends now: ``sandbox_log`` reads what the sites write after it."""
    return {site.name: site.log_path.stat().st_size if site.log_path.exists() else 0 for site in sites}


def parse_sandbox_log(text: str) -> dict:
    """The sandbox mode a site announced and what each job's worker cost, from a stretch of its log.

    Parameters
    ----------
    text : str
        The site's log (stdout and stderr) from its start on.

    Returns
    -------
    dict
        ``mode`` ("on", "off", "unavailable" or None when the site said nothing), ``worker_threads``
        (torch threads per worker, None with the sandbox off), ``announced`` (the start-up line) and
        ``workers``: per job's worker, in the order logged, ``job``, ``wait_seconds`` (the job's wait
        for the warm spare), ``spawn_seconds`` (its spawn, off the critical path) and
        ``setup_seconds`` (mapping the inputs, confining itself, compiling the code).

    Examples
    --------
    >>> log = (
    ...     "datasite client_0 sandbox on (Landlock ABI 6, seccomp refusing 90 system calls; "
    ...     "1 torch thread(s) per worker, 900 s and 4096 MB per call)\\n"
    ...     "2026-12-02 10:00:00,000 fedimg.sandbox INFO sandbox: job 3fa2 has its worker (waited 0.000 s "
    ...     "for the warm spare, spawned in 2.41 s off the critical path; mapped its inputs, confined itself "
    ...     "and compiled the code in 0.052 s)\\n"
    ... )
    >>> found = parse_sandbox_log(log)
    >>> found["mode"], found["worker_threads"], found["workers"][0]["setup_seconds"]
    ('on', 1, 0.052)
    >>> parse_sandbox_log("datasite client_0 sandbox OFF: approved code runs UNCONFINED")["mode"]
    'off'
    """
    found: dict = {"mode": None, "worker_threads": None, "announced": None, "workers": []}
    for line in text.splitlines():
        mode = _MODE_LINE.search(line)
        if mode:
            threads = _THREADS.search(mode["rest"])
            found.update(
                mode=mode["mode"].lower(),
                worker_threads=int(threads["threads"]) if threads else None,
                announced=line[mode.start() :].strip(),
            )
        worker = _WORKER_LINE.search(line)
        if worker:
            found["workers"].append(
                {
                    "job": worker["job"],
                    "wait_seconds": float(worker["wait"]),
                    "spawn_seconds": float(worker["spawn"]),
                    "setup_seconds": float(worker["setup"]),
                }
            )
    return found


def sandbox_log(sites: Sequence[Any], offsets: dict[str, int], mode: str) -> dict[str, dict]:
    """Every site's ``parse_sandbox_log`` of what it logged after ``offsets``; checks the mode took effect.

    Raises
    ------
    BenchmarkError
        When a site did not announce ``mode`` (a policy not applied, or a sandbox it could not
        establish), or, with the sandbox on, logged no worker for the job.
    """
    logs = {}
    for site in sites:
        with open(site.log_path, "rb") as handle:
            handle.seek(offsets.get(site.name, 0))
            found = parse_sandbox_log(handle.read().decode(errors="replace"))
        if found["mode"] != mode:
            raise BenchmarkError(
                f"{site.log_path}: site {site.name} announced sandbox {found['mode']!r}, not {mode!r} "
                f"({found['announced'] or 'no sandbox line'}); check {site.state_dir}/policy.toml"
            )
        if mode == "on" and not found["workers"]:
            raise BenchmarkError(
                f"{site.log_path}: site {site.name} logged no 'sandbox: job … has its worker' line; "
                "has that log line changed (datasite_setup/site/contained.py)?"
            )
        logs[site.name] = found
    return logs


def overhead_federation(workdir: Path, sites: int, size: int) -> Path:
    """The digits (synthetic patients kept whole) converted into ``sites`` clients at ``size`` px grayscale.

    Cached in ``workdir``; returns the federation folder.
    """
    from tests.support.datasites import convert_sample

    out = workdir / f"fedavg-overhead-c{sites}-s{size}-v{DIGITS_VERSION}-f{SCHEMA_VERSION}"
    done = workdir / f"{out.name}.done"
    if not (done.is_file() and out.is_dir()):
        convert_sample(out, clients=sites, size=size)
        done.write_text(json.dumps({"clients": sites, "size": size}) + "\n")
    return out


def start_sites(sites: Sequence[Any]) -> float:
    """Start every site at once, wait until all answer; returns the seconds it took."""
    started = time.perf_counter()
    for site in sites:
        site.start(wait=False)
    for site in sites:
        site.wait_until_answering()
    return round(time.perf_counter() - started, 1)


def connect(sites: Sequence[Any]) -> Any:
    """The researcher's ``Federation`` of the running sites."""
    from researcher import Federation

    with quiet():
        return Federation.from_urls(
            {s.name: s.url for s in sites}, RESEARCHER_EMAIL, {s.name: RESEARCHER_PASSWORD for s in sites}
        )


def http_job(job: Any, federation: Any, sites: Sequence[Any], checkpoint: Path) -> dict:
    """Submit ``job``, approve it as every site's owner, run it; time each of its own rounds from outside.

    The job's ``_run_round`` and ``_call_sites`` are wrapped (on this instance only) to time the whole
    round and its call phase, and to read the CPU the site processes (with their sandbox workers:
    ``site_tree_usage``) and this process used meanwhile.

    Parameters
    ----------
    job : researcher.FedAvgJob
        The job.
    federation : researcher.Federation
        The researcher's connection to the sites.
    sites : Sequence[RunningSite]
        The running sites (their owners approve the job).
    checkpoint : Path
        The job's checkpoint file.

    Returns
    -------
    dict
        ``rounds`` (per round: wall time, call phase, CPU of the sites, of this process and of
        other processes, page faults, every site's time and status) and ``final_accuracy``.

    Raises
    ------
    BenchmarkError
        When a site did not approve the job, or a round did not run at every site.
    """
    from datasite_setup.site.code_requests import approve, requests
    from datasite_setup.site.site_admin import login

    names = [site.name for site in sites]
    with quiet():
        job.submit(federation, reason="bench_fedavg overhead")
    for site in sites:
        admin = login(site.url, site.admin)
        for request in requests(admin):
            approve(admin, request.id)
    with quiet():
        approved = job.wait_for_approval(federation, timeout=120, poll_seconds=0.5, show=False)
    if sorted(approved) != sorted(names):
        raise BenchmarkError(f"only {approved} of {names} approved the job")

    pids = [site.process.pid for site in sites]
    rounds: list[dict[str, Any]] = []
    calls: list[float] = []
    run_round, call_sites = job._run_round, job._call_sites

    def timed_call_sites(*args: Any, **kwargs: Any) -> Any:
        begun = time.perf_counter()
        outcome = call_sites(*args, **kwargs)
        calls.append(time.perf_counter() - begun)
        return outcome

    def timed_round(*args: Any, **kwargs: Any) -> Any:
        sites_before, own_cpu, machine = site_tree_usage(pids), time.process_time(), cpu_snapshot()
        begun = time.perf_counter()
        outcome = run_round(*args, **kwargs)
        wall = time.perf_counter() - begun
        after = cpu_snapshot()
        sites_after, own_used = site_tree_usage(pids), time.process_time() - own_cpu
        user, system, faults = (a - b for a, b in zip(sites_after, sites_before, strict=True))
        rounds.append(
            {
                "seconds": wall,
                "sites_cpu_seconds": user + system,
                "sites_user_seconds": user,
                "sites_system_seconds": system,
                "sites_minor_faults": int(faults),
                "researcher_cpu_seconds": own_used,
                "other_cpu_seconds": max(
                    0.0, (after.machine_busy - machine.machine_busy) - user - system - own_used
                ),
            }
        )
        return outcome

    job._call_sites, job._run_round = timed_call_sites, timed_round
    try:
        training = job.run(federation, checkpoint)
    finally:
        del job._call_sites, job._run_round
    for number, (row, call_seconds) in enumerate(zip(rounds, calls, strict=False)):
        record = training.history[number]
        row.update(
            round=number,
            training=number < job.config.rounds,
            call_phase_seconds=call_seconds,
            site_seconds={name: entry.get("seconds") for name, entry in record.sites.items()},
            statuses={name: entry["status"] for name, entry in record.sites.items()},
        )
    if len(rounds) != job.config.rounds + 1 or any(
        status != "ok" for row in rounds for status in row["statuses"].values()
    ):
        raise BenchmarkError(
            f"the job did not run every round at every site: {[row['statuses'] for row in rounds]}; "
            "see the sites' logs"
        )
    return {"rounds": rounds, "final_accuracy": training.final_accuracy}
