"""FedAvg jobs against real HTTP datasites with real torch training (tiny images, few rounds)."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from datasite_setup.site.code_requests import requests
from datasite_setup.site.site_admin import login
from researcher import JobError
from tests.researcher.http_sites import connect, decide, make_job


def test_fedavg_end_to_end_over_http(two_sites, tmp_path) -> None:
    sites, federation = two_sites
    job = make_job(federation, "e2e")
    report = job.dry_run(federation)
    assert set(report) == {"client_0", "client_1"}
    ids = job.submit(federation)
    assert set(ids) == {"client_0", "client_1"}
    admin = login(sites[0].url, sites[0].admin)
    (pending,) = requests(admin)
    assert pending.output_policy == "OutputPolicyExecuteCount" and pending.output_policy_kwargs["limit"] == 3
    assert pending.inputs == {
        "train_images": "Matches",
        "train_labels": "Matches",
        "val_images": "Matches",
        "val_labels": "Matches",
        "weights": "UserOwned",
        "rnd": "UserOwned",
        "cohort": "UserOwned",
    }
    assert "class SmallCNN" in pending.code
    with pytest.warns(UserWarning, match="submitted before; reusing its request"):
        assert job.submit(federation) == ids  # resubmitting the same job reuses its requests
    decide(sites, {})
    assert job.wait_for_approval(federation, timeout=60, show=False) == ["client_0", "client_1"]
    result = job.run(federation, tmp_path / "checkpoint")
    assert [r.round for r in result.history] == [0, 1, 2]
    assert all(entry["status"] == "ok" for r in result.history for entry in r.sites.values())
    assert result.history[-1].evaluation["accuracy"] > result.history[0].evaluation["accuracy"] + 0.3
    assert result.history[-1].evaluation["num_samples"] == sum(
        s.info["split_counts"]["val"] for s in federation.sites.values()
    )
    checkpoint = json.loads((tmp_path / "checkpoint" / "checkpoint.json").read_text())
    assert checkpoint["calls"] == {"client_0": 3, "client_1": 3}
    paths = result.save(tmp_path / "result")
    assert all(path.exists() for path in paths.values())
    import torch

    assert result.model()(torch.zeros(1, 1, 16, 16)).shape == (1, 10)
    # the approved budget is spent: one more call is refused by the site
    site = federation.sites["client_0"]
    function = getattr(site.client.code, job.site_function(federation).name)
    with pytest.raises(Exception, match="(?i)output policy|denied|not valid"):
        with contextlib.redirect_stdout(io.StringIO()):
            function(
                **{a: site.asset(a) for a in ("train_images", "train_labels", "val_images", "val_labels")},
                weights=result.weights,
                rnd=0,
            ).get()


def test_a_denial_is_shown_with_the_owners_reason(two_sites) -> None:
    sites, federation = two_sites
    job = make_job(federation, "denied", rounds=1)
    job.submit(federation)
    decide(sites, {"client_1": "no CNNs on our data this month"})
    with pytest.raises(JobError, match="no CNNs on our data this month"):
        job.wait_for_approval(federation, timeout=60, show=False)
    assert job.approval_status(federation)["client_1"] == ("REJECTED", "no CNNs on our data this month")


def test_a_site_down_mid_job_then_resume_from_the_checkpoint(two_sites, tmp_path) -> None:
    sites, federation = two_sites
    job = make_job(federation, "resume", rounds=2, min_sites=2)
    job.submit(federation)
    decide(sites, {})
    job.wait_for_approval(federation, timeout=60, show=False)
    sites[1].kill()
    with pytest.raises(JobError, match="round 0: only 1 site"):
        job.run(federation, tmp_path / "checkpoint")
    state = json.loads((tmp_path / "checkpoint" / "checkpoint.json").read_text())
    assert state["next_round"] == 0 and set(state["pending"]) == {"client_0"}
    assert state["calls"] == {"client_0": 1}  # the refused connection did not count as an execution
    sites[1].start()
    resumed = connect(sites)
    result = make_job(resumed, "resume", rounds=2, min_sites=2).run(resumed, tmp_path / "checkpoint")
    assert [r.round for r in result.history] == [0, 1, 2]
    state = json.loads((tmp_path / "checkpoint" / "checkpoint.json").read_text())
    assert state["calls"] == {"client_0": 3, "client_1": 3}  # never more than rounds + 1


def test_the_job_goes_on_without_a_site_while_enough_answer(two_sites, tmp_path) -> None:
    sites, federation = two_sites
    job = make_job(federation, "degraded", rounds=1, min_sites=1)
    job.submit(federation)
    decide(sites, {})
    job.wait_for_approval(federation, timeout=60, show=False)
    sites[1].kill()
    result = job.run(federation, tmp_path / "checkpoint")
    assert all(r.sites["client_1"]["status"] == "error" for r in result.history)
    assert all(r.sites["client_0"]["status"] == "ok" for r in result.history)
    assert (
        result.history[-1].evaluation["num_samples"]
        == federation.sites["client_0"].info["split_counts"]["val"]
    )
