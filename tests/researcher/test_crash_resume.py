"""Issue 11, finding 7: a site that crashes mid-call refunds the run, and the researcher's resume completes the job.

A real site is SIGKILLed (with its sandbox workers) while it trains round 1 of a
2-round job. The job stops ("resume later"); the site is started again from the
same state dir; the resume asks the site what it has run, calls round 1 again and
the final evaluation, and finishes. The audit log shows the interrupted run as
started, refunded and aborted, and every approved run is used exactly once.
"""

from __future__ import annotations

import json
import threading
import time

from datasite_setup.convert.federated_format import CLIENTS_DIR
from datasite_setup.site.site_admin import ensure_researcher, login
from policies import AUDIT_FILE, AuditLog, open_runs, verify_audit_log
from policies.enforcement import COUNTS_FILE
from researcher.job import JobError, site_runs
from tests.researcher.http_sites import EMAIL, PASSWORD, connect, decide, make_job

ROUNDS = 2


def wait_for_open_run(log: AuditLog, run: int, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [record for record in open_runs(log.records()) if record.get("run") == run]
        if running:
            return running[0]
        time.sleep(0.05)
    raise AssertionError(f"run {run} never started: {[r['event'] for r in log.records()]}")


def test_a_run_cut_short_by_a_site_crash_is_refunded_and_the_job_completes(
    site_factory, sample_federation, tmp_path
) -> None:
    site = site_factory("client_0", sample_federation / CLIENTS_DIR / "client_0")
    ensure_researcher(login(site.url, site.admin), email=EMAIL, name="Ada", password=PASSWORD)
    federation = connect([site])
    # enough local epochs that a training call lasts long enough to be killed in the middle
    job = make_job(federation, "crash", rounds=ROUNDS, local_epochs=6, min_sites=1)
    job.submit(federation)
    decide([site], {})
    checkpoint = tmp_path / "checkpoint"
    outcome: dict[str, BaseException] = {}

    def first_attempt() -> None:
        try:
            job.run(federation, checkpoint)
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            outcome["error"] = exc

    attempt = threading.Thread(target=first_attempt)
    attempt.start()
    log = AuditLog(site.state_dir / AUDIT_FILE)
    interrupted = wait_for_open_run(log, run=2)  # round 1's training: round 0 was released
    site.kill()
    attempt.join(120)
    assert isinstance(outcome.get("error"), JobError), outcome
    assert [r["run_id"] for r in open_runs(log.records())] == [interrupted["run_id"]]

    site.start()
    federation = connect([site])
    # the site says it released one run (round 0): the interrupted one was refunded when it started again
    assert site_runs(federation.sites[site.name].client, job.site_function(federation).name) == 1
    result = job.run(federation, checkpoint)
    assert [record.round for record in result.history] == list(range(ROUNDS + 1))

    records = log.records()
    ends = [r for r in records if r.get("run_id") == interrupted["run_id"]]
    assert [r["event"] for r in ends] == ["started", "refund", "aborted"]
    assert ends[-1]["refunded"] is True
    assert [r["run"] for r in records if r["event"] == "release"] == [1, 2, 3]
    assert [r["event"] for r in records if r["event"] in ("started", "release")].count(
        "started"
    ) == ROUNDS + 2
    counts = json.loads((site.state_dir / COUNTS_FILE).read_text())
    assert list(counts.values()) == [ROUNDS + 1]  # every approved run used once, the refunded one again
    assert open_runs(records) == [] and verify_audit_log(log.path) == []

    # Another job of the same name with another configuration is another request with its own count: the
    # runs above never count against it (a site's count is that of the code a call runs).
    other = make_job(federation, "crash", rounds=ROUNDS, local_epochs=5, min_sites=1)
    other.submit(federation)
    federation = connect([site])
    client = federation.sites[site.name].client
    assert site_runs(client, other.site_function(federation).name) == 0
    assert site_runs(client, job.site_function(federation).name) == ROUNDS + 1
