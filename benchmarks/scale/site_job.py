"""One real site over HTTP running one FedAvg job: each call timed by the researcher, the site's memory read.

The site is a ``fedimg datasite serve`` subprocess on loopback
(``tests.support.datasites.RunningSite``), started on its own state dir with the
policy the sandbox mode asks for; it ingests the partition, then a researcher
submits the job, the owner approves it (``code_requests.approve``, the path the other
benchmarks use) and the job runs its training round and its final evaluation-only
call. The site's process tree is sampled throughout (``memory``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import BenchmarkError, cpu_snapshot, quiet
from benchmarks.scale.cpu import tree_cpu
from benchmarks.scale.memory import TreeMemoryWatch, reset_high_water, settled_rss, tree_parts, tree_rss

RESEARCHER_EMAIL = "bench.scale@fedimg.example"
RESEARCHER_PASSWORD = (
    "bench-scale-researcher-0123"  # a throw-away site in the work folder, deleted afterwards
)
SANDBOX_MODES = ("default", "on", "off")
START_SECONDS = 120.0  # a fresh site's start without its ingest (tests.support.datasites' own timeout)
INGEST_BYTES_PER_SECOND = 2**20  # a slow ingest of decoded pixels (~4 MiB/s seen here on a busy machine)


def start_timeout(partition_bytes: int) -> float:
    """Seconds a fresh site may take to answer: its start, plus its first ingest at 1 MiB/s of pixels.

    The first start ingests the partition (decodes every image, uploads it, writes the maps):
    5,000 images of 224 px (718 MiB of pixels) took about 3 minutes here, past the 120 s that
    suffice for the 20,000 images of 64 px; the ceiling grows with the partition.

    Parameters
    ----------
    partition_bytes : int
        The partition's private arrays (decoded pixels and labels).

    Returns
    -------
    float
        Seconds.

    Examples
    --------
    >>> start_timeout(0)
    120.0
    >>> round(start_timeout(5000 * 3 * 224 * 224))  # --large: 718 MiB of pixels
    838
    """
    return START_SECONDS + partition_bytes / INGEST_BYTES_PER_SECOND


def policy_text(sandbox: str, threads: int = 1) -> str | None:
    """The site's ``policy.toml`` for a sandbox mode; None (no file: the site's defaults) for ``default``.

    Parameters
    ----------
    sandbox : {"default", "on", "off"}
        ``--sandbox``.
    threads : int
        torch threads of the site's sandbox workers (they get no environment: ``OMP_NUM_THREADS``
        does not reach them).

    Returns
    -------
    str or None
        The policy file's text.

    Examples
    --------
    >>> policy_text("on")
    '[sandbox]\\nmode = "on"\\nthreads = 1\\n'
    >>> policy_text("default") is None
    True
    """
    if sandbox not in SANDBOX_MODES:
        raise ValueError(f"sandbox mode must be one of {SANDBOX_MODES} (got {sandbox!r})")
    return None if sandbox == "default" else f'[sandbox]\nmode = "{sandbox}"\nthreads = {threads}\n'


def _approve_all(site: Any) -> int:
    """Approve every pending request at ``site`` as its owner; returns how many."""
    from datasite_setup.site.code_requests import approve, requests
    from datasite_setup.site.site_admin import login

    admin = login(site.url, site.admin)
    pending = requests(admin)
    for request in pending:
        approve(admin, request.id)
    return len(pending)


def run_site_job(
    job: Any,
    client_dir: Path,
    work: Path,
    *,
    threads: int,
    sandbox: str,
    echo: Callable[..., None],
    timeout: float = START_SECONDS,
) -> dict:
    """Start a site on ``client_dir``, run ``job`` through it, stop it; every figure of the HTTP side.

    Parameters
    ----------
    job : researcher.FedAvgJob
        The job (one training round, then the final evaluation-only call).
    client_dir : Path
        The site's partition.
    work : Path
        Scratch folder: the site's state dir (removed afterwards), its log (kept) and the job's
        checkpoint, each named after the partition's federation folder.
    threads : int
        torch threads at the site (``OMP_NUM_THREADS``) and in its sandbox workers (``--threads``).
    sandbox : str
        ``default``, ``on`` or ``off``: the policy written into the state dir (``policy_text``).
    echo : Callable
        Where progress lines go.
    timeout : float
        Seconds the site may take to start and ingest (``start_timeout`` of the partition's bytes).

    Returns
    -------
    dict
        ``start_seconds`` (interpreter, ingest, until it answers), ``idle_rss_bytes`` and ``idle_parts``
        (``memory.tree_parts``), ``start_timeout_seconds``, ``calls`` (per
        call: kind, seconds seen by the researcher, the round's wall time, the site tree's CPU and
        page faults, other processes' CPU, val accuracy), ``memory`` (``TreeMemoryWatch``'s figures),
        ``retained_rss_bytes`` after the job, ``high_water_reset`` and ``final_weights`` (the
        global model the evaluation-only call evaluated; not serialisable: the caller pops it).

    Raises
    ------
    BenchmarkError
        When the site was not approved or a call did not answer.
    """
    from datasite_setup.site.site_admin import ensure_researcher, login
    from policies import POLICY_FILE
    from researcher import Federation
    from tests.support.datasites import RunningSite, free_port

    name = client_dir.name
    federation_name = client_dir.parent.parent.name  # one per partition size: its own state, log, checkpoint
    state_dir, checkpoint = work / f"state-{federation_name}", work / f"checkpoint-{federation_name}"
    for old in (state_dir, checkpoint):
        shutil.rmtree(old, ignore_errors=True)
    state_dir.mkdir(parents=True)
    policy = policy_text(sandbox, threads)
    if policy is not None:
        (state_dir / POLICY_FILE).write_text(policy)
    env = {"OMP_NUM_THREADS": str(threads)}
    site = RunningSite(name, client_dir, state_dir, free_port(), env, start_timeout=timeout)
    # The sandbox workers get an empty environment (OMP_NUM_THREADS does not reach them) and, without a
    # policy's [sandbox] threads, take every core: the site's --threads (what `fedimg up` passes) gives them
    # the baseline's threads, so both sides run the same computation.
    site.command = lambda: [*RunningSite.command(site), "--threads", str(threads)]  # type: ignore[method-assign]
    result: dict = {"log": str(site.log_path), "policy": policy, "start_timeout_seconds": timeout}
    try:
        started = time.perf_counter()
        site.start()
        result["start_seconds"] = round(time.perf_counter() - started, 2)
        assert site.process is not None  # start() launched it
        pid = site.process.pid
        ensure_researcher(
            login(site.url, site.admin),
            email=RESEARCHER_EMAIL,
            name="Bench Scale",
            password=RESEARCHER_PASSWORD,
        )
        with quiet():
            federation = Federation.from_urls({name: site.url}, RESEARCHER_EMAIL, {name: RESEARCHER_PASSWORD})
        time.sleep(1.0)  # let the login's garbage settle before reading the idle size
        result["idle_rss_bytes"], result["idle_processes"] = settled_rss(pid), tree_rss(pid)[1]
        result["idle_parts"] = tree_parts(pid)  # what the idle resident set is made of (site, spare worker)
        echo(
            f"    site answering after {result['start_seconds']:.0f} s (ingest included); idle RSS "
            f"{result['idle_rss_bytes'] / 2**20:.0f} MiB; submitting and approving the job…"
        )
        result["high_water_reset"] = reset_high_water(pid)
        watch = TreeMemoryWatch(pid)
        watch.start()
        try:
            watch.phase("submit and approve")
            with quiet():
                job.submit(federation, reason="bench_scale")
            if _approve_all(site) < 1:
                raise BenchmarkError(f"no request reached the site to approve; see {site.log_path}")
            with quiet():
                approved = job.wait_for_approval(federation, timeout=120, poll_seconds=0.5, show=False)
            if approved != [name]:
                raise BenchmarkError(f"the job was not approved at {name} (approved: {approved})")
            result["calls"], result["final_weights"] = _run_timed(
                job, federation, pid, watch, checkpoint, echo
            )
            watch.phase("after the job")
            time.sleep(1.0)
            result["retained_rss_bytes"] = settled_rss(pid)
        finally:
            result["memory"] = watch.stop()
        result["site_cpu_seconds"] = sum(tree_cpu(pid)[:2])  # ingest and serving included
    finally:
        site.stop()
        shutil.rmtree(state_dir, ignore_errors=True)  # the blob store holds the partition twice
    return result


def _run_timed(
    job: Any, federation: Any, pid: int, watch: TreeMemoryWatch, checkpoint: Path, echo
) -> tuple[list[dict], dict]:
    """Run the job, timing each round's calls and the site tree's CPU; the calls and the final weights."""
    calls: list[dict] = []
    call_sites, rounds = job._call_sites, job.config.rounds

    def timed_call_sites(federation, function_name, names, weights, round_number, *args, **kwargs):
        kind = "training" if round_number < rounds else "evaluation only"
        echo(f"    round {round_number} ({kind})…")
        watch.phase(f"round {round_number} ({kind})")
        site_before, own, machine = tree_cpu(pid), time.process_time(), cpu_snapshot()
        begun = time.perf_counter()
        outcome = call_sites(federation, function_name, names, weights, round_number, *args, **kwargs)
        wall = time.perf_counter() - begun
        after, own_used = cpu_snapshot(), time.process_time() - own
        user, system, faults = (a - b for a, b in zip(tree_cpu(pid), site_before, strict=True))
        (output,) = outcome.values()
        if "error" in output:
            raise BenchmarkError(f"round {round_number} failed at the site: {output['error']}")
        calls.append(
            {
                "round": round_number,
                "kind": kind,
                "seconds": output["seconds"],
                "call_phase_seconds": wall,
                "site_user_seconds": user,
                "site_system_seconds": system,
                "site_minor_faults": int(faults),
                "researcher_cpu_seconds": own_used,
                "other_cpu_seconds": max(
                    0.0, after.machine_busy - machine.machine_busy - user - system - own_used
                ),
                "val_accuracy": output["val"]["accuracy"],
            }
        )
        watch.phase("between calls")
        return outcome

    job._call_sites = timed_call_sites
    try:
        training = job.run(federation, checkpoint)
    finally:
        del job._call_sites
    if [c["round"] for c in calls] != list(range(rounds + 1)):
        raise BenchmarkError(f"the job ran rounds {[c['round'] for c in calls]}, not 0…{rounds}")
    return calls, training.weights
