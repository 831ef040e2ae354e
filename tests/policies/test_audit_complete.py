"""Issue 11, finding 6: every run is recorded as started and then ended; a run a crash cut short is refunded.

The enforcement chain here runs plain functions (no site): the real-site halves are
``tests/datasite_setup/test_owners.py`` (decisions) and
``tests/researcher/test_crash_resume.py`` (a SIGKILLed site).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from datasite_setup.cli import main
from policies import (
    AuditLog,
    Execution,
    ReleaseRefused,
    RunOutput,
    SiteEnforcer,
    SitePolicy,
    describe_record,
    open_runs,
    release_chain,
    select_records,
)
from policies.enforcement import COUNTS_FILE

VAL = {"loss": 0.7, "accuracy": 0.5, "num_samples": 20, "confusion": np.array([[10, 0], [10, 0]])}
LABELS = {"train_labels": [0] * 20, "val_labels": [0] * 20}


@pytest.fixture
def site(tmp_path: Path) -> SiteEnforcer:
    return SiteEnforcer("site-a", tmp_path / "state", SitePolicy(), 2)


def call(limit: int = 3) -> Execution:
    return Execution("code-1", "job_fn", "", "alice", limit, dict(LABELS))


def events(site: SiteEnforcer) -> list[str]:
    return [record["event"] for record in site.audit.records()]


def test_every_run_is_started_then_ended_with_the_same_run_id(site: SiteEnforcer) -> None:
    release_chain(lambda kwargs: RunOutput({"round": 1, "val": VAL})).run(call(), site)
    release_chain(lambda kwargs: RunOutput(None, True, "boom")).run(call(), site)
    with pytest.raises(ReleaseRefused):
        release_chain(lambda kwargs: RunOutput({"round": 1, "val": VAL, "images": [1]})).run(call(), site)
    records = site.audit.records()
    assert events(site) == ["started", "release", "started", "execution", "started", "refusal"]
    for start, end in zip(records[::2], records[1::2], strict=True):
        assert start["run_id"] == end["run_id"] and start["run"] == end["run"]
    assert open_runs(records) == []
    assert site.runs("code-1") == 3  # a run that failed in the job's own code stays counted


def test_the_sites_own_failure_after_the_start_is_aborted_not_left_open(site: SiteEnforcer) -> None:
    def broken(kwargs: dict) -> RunOutput:
        raise OSError("the sandbox worker's pipe broke")

    with pytest.raises(OSError):
        release_chain(broken).run(call(), site)
    assert events(site) == ["started", "aborted"]
    assert site.audit.records()[-1]["refunded"] is False and site.runs("code-1") == 1


def crash_mid_run(state_dir: Path) -> None:
    """Another process counts and starts a run, then dies (SIGKILL) inside the code."""
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from policies import Execution, SiteEnforcer, SitePolicy, release_chain\n"
        "def run(kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        f"site = SiteEnforcer('site-a', Path({str(state_dir)!r}), SitePolicy(), 2)\n"
        f"release_chain(run).run(Execution('code-1', 'job_fn', '', 'alice', 3, {LABELS!r}), site)\n"
    )
    crashed = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2], check=False)
    assert crashed.returncode == -9


def test_a_run_a_crash_cut_short_is_aborted_and_refunded_once(site: SiteEnforcer) -> None:
    release_chain(lambda kwargs: RunOutput({"round": 1, "val": VAL})).run(call(), site)
    crash_mid_run(site.state_dir)
    assert site.runs("code-1") == 2 and [r["run"] for r in open_runs(site.audit.records())] == [2]
    assert site.close_interrupted_runs() == 1
    assert site.close_interrupted_runs() == 0  # a second start refunds nothing more
    tail = site.audit.records()[-3:]
    assert [r["event"] for r in tail] == ["started", "refund", "aborted"]
    assert len({r["run_id"] for r in tail}) == 1 and tail[-1]["refunded"] is True
    assert json.loads((site.state_dir / COUNTS_FILE).read_text()) == {"code-1": 1}
    # the refunded run is available again: run 2 is released
    assert release_chain(lambda kwargs: RunOutput({"round": 2, "val": VAL})).run(call(), site).run == 2


def test_the_chain_closes_runs_another_process_left_open_before_it_counts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    crash_mid_run(state)
    site = SiteEnforcer("site-a", state, SitePolicy(), 2)  # a fresh process would start from here
    assert release_chain(lambda kwargs: RunOutput({"round": 1, "val": VAL})).run(call(limit=1), site).run == 1
    assert [r["event"] for r in site.audit.records()] == [
        "started",
        "refund",
        "aborted",
        "started",
        "release",
    ]


def test_audit_verify_says_when_a_run_has_no_end(site: SiteEnforcer, capsys) -> None:
    crash_mid_run(site.state_dir)
    assert main(["audit", "verify", str(site.audit.path)]) == 1
    printed = " ".join(capsys.readouterr().out.split())
    assert ": intact (" not in printed and "but 1 run(s) started without an end" in printed
    site.close_interrupted_runs()
    assert main(["audit", "verify", str(site.audit.path)]) == 0
    assert ": intact (3 entries" in " ".join(capsys.readouterr().out.split())


def test_audit_show_filters_and_prints_local_times(tmp_path: Path, capsys) -> None:
    log = AuditLog(tmp_path / "state" / "audit.jsonl")
    log.append("decision", request_id="aa11", code_id="c1", decision="approved", researcher_email="ada@x.org")
    log.append("release", code_id="c1", researcher="5f1e" * 16, run=1)
    log.append("decision", request_id="bb22", code_id="c2", decision="denied", researcher_email="bob@x.org")
    assert main(["audit", "show", str(tmp_path / "state"), "--researcher", "ada@"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "request_id=aa11" in lines[0]
    assert time.strftime("%Y-%m-%d") in lines[0]  # local time, not a Unix number
    assert main(["audit", "show", str(tmp_path / "state"), "--kind", "decision", "--request", "bb"]) == 0
    assert "decision=denied" in capsys.readouterr().out
    assert main(["audit", "show", str(tmp_path / "state"), "--since", "1h", "--kind", "release"]) == 0
    assert "researcher=5f1e5f1e5f1e" in capsys.readouterr().out
    assert main(["audit", "show", str(tmp_path / "state"), "--since", "soon"]) == 2
    records = log.records()
    assert select_records(records, request="c1") == records[:2]
    assert describe_record(records[0]).split("  ")[1].strip() == "decision"
