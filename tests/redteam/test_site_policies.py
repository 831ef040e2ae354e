"""Red team, sites with a policy file: a site below its sample minimum, a researcher over the privacy budget,
a model that memorises images inside an otherwise legitimate job, and code other than the job template at a
DP-SGD site.

These attempts (but the last) use fedimg's real job template (``FedAvgJob``), so every review check passes and
the owner approves without ``--force``: only the site's release policy stands between the data and the researcher.
"""

from __future__ import annotations

import numpy as np
import pytest

from policies.dp_sgd import schedule
from policies.privacy import dp_sgd_noise_multiplier, epsilon_of, noise_multiplier_for
from tests.redteam.conftest import (
    RedTeam,
    check,
    function_from_source,
    small_job,
    start_sites,
    submit_job,
    tampered_template,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:Optimal order is the largest alpha"
)  # Opacus: the bound is conservative there

MIN_SAMPLES_POLICY = "[release]\nmin_samples = 100000\n"
# epsilon_per_job is met over every approved run of a job (2 for a one-round job); the budget then lets a
# researcher spend about one job's worth at this site, and not a second one. DP-SGD is the default mechanism.
PRIVACY_POLICY = "[privacy]\nepsilon_per_job = 1.0\ndelta = 1e-5\nmax_grad_norm = 1.0\nbudget_epsilon = 1.1\n"
UPDATE_POLICY = '[privacy]\nmechanism = "update"\nepsilon_per_job = 1.0\ndelta = 1e-5\nmax_update_norm = 1.0\nbudget_epsilon = 1.2\n'

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
            try:
                self.stash.copy_(x[:4].flatten(1))
                self.stashed = True
            except RuntimeError:  # under DP-SGD's per-example vmap a batched value cannot go into a plain buffer
                pass
        return self.head(x.flatten(1))
'''


@pytest.fixture(scope="module")
def small_site(tmp_path_factory, sample_federation):
    (site,) = start_sites(
        tmp_path_factory, sample_federation, [("min-samples", "client_1", MIN_SAMPLES_POLICY)]
    )
    yield site
    site.stop()


@pytest.fixture(scope="module")
def privacy_sites(tmp_path_factory, sample_federation):
    """A DP-SGD site and an update-level one, started together."""
    sites = start_sites(
        tmp_path_factory,
        sample_federation,
        [("privacy", "client_0", PRIVACY_POLICY), ("update", "client_0", UPDATE_POLICY)],
    )
    yield sites
    for site in sites:
        site.stop()


@pytest.fixture(scope="module")
def privacy_site(privacy_sites):
    return privacy_sites[0]


@pytest.fixture(scope="module")
def update_site(privacy_sites):
    return privacy_sites[1]


def train_count(site) -> int:
    from datasite_setup.convert.client_data import load_client_partition

    return len(load_client_partition(site.data).splits["train"].labels)


def approved_job(team: RedTeam, name: str, **settings):
    """A legitimate job, reviewed (every check passes) and approved with ``fedimg review approve``."""
    job = small_job(team.federation, name, **settings)
    request = submit_job(team, job)
    review = team.review(request)
    assert all(review.checks.values()), review.render()
    team.approve(request)
    return job, job.site_function(team.federation).name


def job_with_model(team: RedTeam, module_source: str, class_name: str, name: str, folder) -> object:
    """A one-round job (the real template) whose model is ``class_name`` from ``module_source``, written to ``folder``."""
    from researcher.job import FedAvgJob

    spec = team.federation.image_spec
    model = function_from_source(module_source, class_name, folder)
    return FedAvgJob(
        model,
        name=name,
        model_kwargs=dict(channels=spec["channels"], image_size=spec["size"], num_classes=10),
        rounds=1,
        local_epochs=1,
        batch_size=64,
        lr=0.05,
        min_sites=1,
        seed=0,
    )


def update_norm(released: dict, sent: dict) -> float:
    return float(
        np.sqrt(
            sum(
                ((np.asarray(released[k], np.float64) - np.asarray(sent[k], np.float64)) ** 2).sum()
                for k in sent
            )
        )
    )


def test_a_site_below_the_sample_minimum(small_site) -> None:
    team = RedTeam(small_site)
    job, name = approved_job(team, "below_minimum")
    entry = team.refused(
        name,
        r"training samples, fewer than its minimum of 100000: it releases nothing",
        weights=job.initial_weights(),
        rnd=0,
    )
    assert entry["researcher"]
    assert not [r for r in team.audit_records() if r["event"] == "release"]
    assert team.verify_audit() == []


def test_over_the_privacy_budget(privacy_site) -> None:
    team = RedTeam(privacy_site, "eve-budget@attacker.example")
    first, name = approved_job(team, "budget_first")
    weights = first.initial_weights()
    # the site's DP-SGD: q = batch / n, local_epochs · ⌈n / batch⌉ steps per call, z for 2 calls (the approved runs)
    sample_rate, steps = schedule(train_count(privacy_site), 64, 1)
    z = dp_sgd_noise_multiplier(1.0, 1e-5, sample_rate, 2 * steps)
    released = team.run(name, weights=weights, rnd=0)
    privacy = released["privacy"]
    assert privacy["mechanism"] == "dp-sgd" and privacy["steps"] == steps and privacy["max_grad_norm"] == 1.0
    assert privacy["sample_rate"] == pytest.approx(sample_rate) and privacy[
        "noise_multiplier"
    ] == pytest.approx(z)
    assert (
        privacy["epsilon_spent"] == pytest.approx(epsilon_of([(z, sample_rate, steps)], 1e-5))
        and privacy["epsilon_spent"] < 0.9
    )
    assert update_norm(released["weights"], weights) > 0
    # the researcher trains again instead of the final evaluation: that release is charged too, and the job meets its ε
    again = team.run(name, weights=weights, rnd=0)
    assert again["privacy"]["epsilon_spent"] == pytest.approx(epsilon_of([(z, sample_rate, 2 * steps)], 1e-5))
    assert 0.95 <= again["privacy"]["epsilon_spent"] <= 1.0
    # a second job: its final evaluation spends nothing; training would take epsilon past the site's budget of 1.1
    second, second_name = approved_job(team, "budget_second")
    final = team.run(second_name, weights=second.initial_weights(), rnd=1)
    assert "privacy" not in final and "weights" not in final and final["val"]["num_samples"] > 0
    entry = team.refused(
        second_name,
        r"privacy budget: this release would bring epsilon to 1\.\d+ at this site, above the budget 1\.1",
        weights=second.initial_weights(),
        rnd=0,
    )
    assert f"spent so far {again['privacy']['epsilon_spent']:.2f}" in entry["reason"]
    releases = [
        r
        for r in team.audit_records()
        if r["event"] == "release" and r.get("researcher") == entry["researcher"]
    ]
    assert [(r["function"], r.get("mechanism")) for r in releases] == [
        (name, "dp-sgd"),
        (name, "dp-sgd"),
        (second_name, None),
    ]
    assert team.verify_audit() == []


def test_the_update_level_mechanism_over_its_budget(update_site) -> None:
    """``mechanism = "update"``: the whole update clipped to 1 and noised after training, two releases, then refused."""
    team = RedTeam(update_site, "eve-update@attacker.example")
    job, name = approved_job(team, "update_level")
    weights = job.initial_weights()
    z = noise_multiplier_for(1.0, 1e-5, 2)
    released = team.run(name, weights=weights, rnd=0)
    assert released["privacy"]["mechanism"] == "update" and released["privacy"][
        "noise_multiplier"
    ] == pytest.approx(z)
    assert released["privacy"]["epsilon_spent"] == pytest.approx(epsilon_of([z], 1e-5))
    assert (
        update_norm(released["weights"], weights) > 5 * released["privacy"]["max_update_norm"]
    )  # clipped to 1, then noised
    assert team.run(name, weights=weights, rnd=0)["privacy"]["epsilon_spent"] == pytest.approx(
        epsilon_of([z, z], 1e-5)
    )
    second, second_name = approved_job(team, "update_level_second")
    team.refused(
        second_name,
        r"privacy budget: this release would bring epsilon to 1\.\d+ at this site, above the budget 1\.2",
        weights=second.initial_weights(),
        rnd=0,
    )
    assert team.verify_audit() == []


def test_a_model_that_memorises_images_releases_nothing_of_them_under_dp_sgd(privacy_site, tmp_path) -> None:
    """The model is researcher code inside the real template: every check passes. Without [privacy] its buffer
    would carry four validation images out; under DP-SGD only parameters are trained and released, and the buffer
    goes back at the value the researcher sent."""
    from datasite_setup.convert.client_data import load_client_partition
    from policies.release import check_release

    team = RedTeam(privacy_site, "mallory@attacker.example")
    job = job_with_model(
        team, "import torch\nimport torch.nn as nn\n\n\n" + MEMORISER, "Memoriser", "memoriser", tmp_path
    )
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
    local = job.site_function(team.federation).function(
        train.images, train.labels, val.images, val.labels, weights, 0
    )
    assert np.allclose(local["weights"]["stash"], truth)
    check_release(
        local,
        global_weights=weights,
        num_train=len(train.labels),
        num_val=len(val.labels),
        num_classes=10,
        min_samples=20,
        max_output_bytes=2**26,
    )
    # at the site: the stash is exactly what the researcher sent in (zeros); the trained head moved
    np.testing.assert_array_equal(released["weights"]["stash"], weights["stash"])
    assert not np.array_equal(released["weights"]["head.weight"], weights["head.weight"])
    assert released["privacy"]["mechanism"] == "dp-sgd"
    assert [
        r
        for r in team.audit_records()
        if r["event"] == "release" and r["function"] == name and "epsilon_spent" in r
    ]


def test_code_other_than_the_template_is_refused_at_a_dp_sgd_site(privacy_site, tmp_path) -> None:
    """A force-approved variant of the template (one added line) would train with the plain loop: refused, nothing spent."""
    from policies.enforcement import LEDGER_FILE

    team = RedTeam(privacy_site, "trudy@attacker.example")
    job = small_job(team.federation, "not_the_template")
    variant = tampered_template(job.site_function(team.federation), 'result["round"] = int(rnd)', tmp_path)
    request = team.submit(variant, limit=2)
    assert not check(team.review(request), "the code is the job template")
    team.force_approve(request)
    entry = team.refused(
        variant.__name__,
        r"this site trains only with its own DP-SGD, so it runs only fedimg's job template",
        weights=job.initial_weights(),
        rnd=0,
    )
    ledger = privacy_site.state_dir / LEDGER_FILE
    assert not ledger.exists() or entry["researcher"] not in ledger.read_text()
    assert team.verify_audit() == []


def test_a_whole_fedavg_job_at_a_dp_sgd_site(privacy_site, tmp_path) -> None:
    """Not an attack: the researcher's own job.run at a DP-SGD site — the history shows ε spent per round, no train figures."""
    team = RedTeam(privacy_site, "grace@university.example")
    job, _ = approved_job(team, "dp_job", rounds=2)
    result = job.run(team.federation, tmp_path / "checkpoint")
    site = privacy_site.name
    rounds = [record.sites[site] for record in result.history]
    assert [entry["status"] for entry in rounds] == ["ok", "ok", "ok"]
    spent = [entry["privacy"]["epsilon_spent"] for entry in rounds[:2]]
    assert 0 < spent[0] < spent[1] <= 1.0  # two training calls of a job calibrated for its 3 approved runs
    assert "privacy" not in rounds[2] and all("train" not in entry for entry in rounds)
    assert (
        result.history[0].train["loss"] is None
        and result.history[0].train["num_samples"] == rounds[0]["num_samples"]
    )
    assert 0.0 <= result.history[-1].evaluation["accuracy"] <= 1.0


NOISE_OFF = '''\
class NoiseOff(nn.Module):
    """A linear model whose constructor replaces numpy's normal sampler with zeros, hoping to switch DP noise off."""

    def __init__(self, channels=1, image_size=16, num_classes=10):
        super().__init__()
        np.random.normal = lambda loc=0.0, scale=1.0, size=None: np.zeros(size)
        self.head = nn.Linear(channels * image_size * image_size, num_classes)

    def forward(self, x):
        return self.head(x.flatten(1))
'''


def test_a_model_that_patches_numpy_to_switch_the_noise_off(privacy_site, tmp_path) -> None:
    """Inside the real template: the static review refuses the assignment to a module attribute; the owner denies.
    (Had it run, the DP-SGD loop would not notice: it draws its noise through functions bound at start-up.)"""
    team = RedTeam(privacy_site, "oscar@attacker.example")
    job = job_with_model(
        team, "import numpy as np\nimport torch.nn as nn\n\n\n" + NOISE_OFF, "NoiseOff", "noise_off", tmp_path
    )
    request = submit_job(team, job)
    review = team.review(request)
    assert not check(review, "static review") and "module-attribute-assignment" in {
        f.rule for f in review.static.errors
    }, review.render()
    assert check(review, "the code is the job template")  # the model is the researcher's part of the template
    team.deny(request, "the model patches numpy")
