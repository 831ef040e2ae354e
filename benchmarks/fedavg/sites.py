"""The overhead part's HTTP datasites: their data, starting them, and a FedAvg job run through them, timed.

The sites are real ``fedimg datasite serve`` subprocesses on loopback
(``tests.support.datasites.RunningSite``); the job is submitted by a researcher,
approved by every owner and run; each of its own rounds is timed from outside,
with the CPU the site processes and this process used meanwhile.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import BenchmarkError, cpu_snapshot, process_tree_usage, quiet
from benchmarks.workloads.digits import DIGITS_VERSION

RESEARCHER_EMAIL = "bench.researcher@fedimg.example"
RESEARCHER_PASSWORD = (
    "bench-fedavg-researcher-0123"  # throw-away sites in the work folder, deleted afterwards
)


def overhead_federation(workdir: Path, sites: int, size: int) -> Path:
    """The digits (synthetic patients kept whole) converted into ``sites`` clients at ``size`` px grayscale.

    Cached in ``workdir``; returns the federation folder.
    """
    from tests.support.datasites import convert_sample

    out = workdir / f"fedavg-overhead-c{sites}-s{size}-v{DIGITS_VERSION}"
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
    round and its call phase, and to read the CPU the site processes and this process used meanwhile.

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
    rounds, calls = [], []
    run_round, call_sites = job._run_round, job._call_sites

    def timed_call_sites(*args: Any, **kwargs: Any) -> Any:
        begun = time.perf_counter()
        outcome = call_sites(*args, **kwargs)
        calls.append(time.perf_counter() - begun)
        return outcome

    def timed_round(*args: Any, **kwargs: Any) -> Any:
        sites_before, own_cpu, machine = process_tree_usage(pids), time.process_time(), cpu_snapshot()
        begun = time.perf_counter()
        outcome = run_round(*args, **kwargs)
        wall = time.perf_counter() - begun
        after = cpu_snapshot()
        sites_after, own_used = process_tree_usage(pids), time.process_time() - own_cpu
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
