"""Red team, sites with a policy file: a site below its sample minimum, a researcher over the privacy budget,
and a model that memorises images inside an otherwise legitimate job.

These attempts use fedimg's real job template (``FedAvgJob``), so every review check passes and the owner
approves without ``--force``: only the site's release policy stands between the data and the researcher.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.redteam.conftest import RedTeam, check, function_from_source, small_job, start_sites, submit_job

MIN_SAMPLES_POLICY = "[release]\nmin_samples = 100000\n"
# epsilon_per_job is met over every approved run of a job (2 for a one-round job); the budget then lets a
# researcher spend about one job's worth at this site, and not a second one
PRIVACY_POLICY = "[privacy]\nepsilon_per_job = 1.0\ndelta = 1e-5\nmax_update_norm = 1.0\nbudget_epsilon = 1.2\n"

MEMORISER = '''\
class Memoriser(nn.Module):
    """A linear model that copies the first four images it sees into a buffer (buffers are released as weights)."""

    def __init__(self, channels=1, image_size=16, num_classes=10):
        super().__init__()
        self.head = nn.Linear(channels * image_size * image_size, num_classes)
        self.register_buffer("stash", torch.zeros(4, channels * image_size * image_size))
        self.stashed = False

    def forward(self, x):
        if not self.stashed:
            self.stash.copy_(x[:4].flatten(1))
            self.stashed = True
        return self.head(x.flatten(1))
'''


@pytest.fixture(scope="module")
def small_site(tmp_path_factory, sample_federation):
    (site,) = start_sites(tmp_path_factory, sample_federation, [("min-samples", "client_1", MIN_SAMPLES_POLICY)])
    yield site
    site.stop()


@pytest.fixture(scope="module")
def privacy_site(tmp_path_factory, sample_federation):
    (site,) = start_sites(tmp_path_factory, sample_federation, [("privacy", "client_0", PRIVACY_POLICY)])
    yield site
    site.stop()


def approved_job(team: RedTeam, name: str, **settings):
    """A legitimate job, reviewed (every check passes) and approved with ``fedimg review approve``."""
    job = small_job(team.federation, name, **settings)
    request = submit_job(team, job)
    review = team.review(request)
    assert all(review.checks.values()), review.render()
    team.approve(request)
    return job, job.site_function(team.federation).name


def update_norm(released: dict, sent: dict) -> float:
    return float(np.sqrt(sum(((np.asarray(released[k], np.float64) - np.asarray(sent[k], np.float64)) ** 2).sum() for k in sent)))


def test_a_site_below_the_sample_minimum(small_site) -> None:
    team = RedTeam(small_site)
    job, name = approved_job(team, "below_minimum")
    entry = team.refused(name, r"training samples, fewer than its minimum of 100000: it releases nothing", weights=job.initial_weights(), rnd=0)
    assert entry["researcher"]
    assert not [r for r in team.audit_records() if r["event"] == "release"]
    assert team.verify_audit() == []


def test_over_the_privacy_budget(privacy_site) -> None:
    team = RedTeam(privacy_site, "eve-budget@attacker.example")
    first, name = approved_job(team, "budget_first")
    weights = first.initial_weights()
    released = team.run(name, weights=weights, rnd=0)
    assert released["privacy"]["epsilon_spent"] == pytest.approx(0.68, abs=0.05)
    assert update_norm(released["weights"], weights) > 5 * released["privacy"]["max_update_norm"]  # clipped to 1, then noised
    # the researcher trains again instead of the final evaluation: that release is charged too
    again = team.run(name, weights=weights, rnd=0)
    assert again["privacy"]["epsilon_spent"] == pytest.approx(1.0, abs=0.05)
    # a second job by the same researcher would take epsilon past the site's budget of 1.2
    second, second_name = approved_job(team, "budget_second")
    entry = team.refused(second_name, r"privacy budget: this release would bring epsilon to 1\.2\d at this site, above the budget 1\.2", weights=second.initial_weights(), rnd=0)
    assert "spent so far 1.0" in entry["reason"]
    releases = [r for r in team.audit_records() if r["event"] == "release" and r["function"] == name]
    assert [round(r["epsilon_spent"], 1) for r in releases] == [0.7, 1.0]
    assert team.verify_audit() == []


def test_a_model_that_memorises_images_is_drowned_by_dp(privacy_site, tmp_path) -> None:
    """The model is researcher code inside the real template: every check passes. Without [privacy] its buffer
    would carry four validation images out; with it, the update is clipped to norm 1 and noised."""
    from datasite_setup.client_data import load_client_partition
    from policies.release import check_release
    from researcher.job import FedAvgJob

    team = RedTeam(privacy_site, "mallory@attacker.example")
    spec = team.federation.image_spec
    memoriser = function_from_source("import torch\nimport torch.nn as nn\n\n\n" + MEMORISER, "Memoriser", tmp_path)
    job = FedAvgJob(memoriser, name="memoriser", model_kwargs=dict(channels=spec["channels"], image_size=spec["size"], num_classes=10),
                    rounds=1, local_epochs=1, batch_size=64, lr=0.05, min_sites=1, seed=0)
    request = submit_job(team, job)
    review = team.review(request)
    assert all(review.checks.values()) and check(review, "static review"), review.render()
    team.approve(request)
    name = job.site_function(team.federation).name
    weights = job.initial_weights()
    released = team.run(name, weights=weights, rnd=0)
    partition = load_client_partition(privacy_site.data)
    train, val = partition.splits["train"], partition.splits["val"]
    truth = val.images[:4].reshape(4, -1).astype(np.float64) / 255.0
    # the same code on the same data, without the site's release policy, returns the images exactly
    local = job.site_function(team.federation).function(train.images, train.labels, val.images, val.labels, weights, 0)
    assert np.allclose(local["weights"]["stash"], truth)
    check_release(local, global_weights=weights, num_train=len(train.labels), num_val=len(val.labels), num_classes=10, min_samples=20, max_output_bytes=2**26)
    stash = np.asarray(released["weights"]["stash"], np.float64)
    correlation = float(np.corrcoef(stash.ravel(), truth.ravel())[0, 1])
    assert abs(correlation) < 0.2, correlation
    assert [r for r in team.audit_records() if r["event"] == "release" and r["function"] == name and "epsilon_spent" in r]
