"""Each step of the enforcement chain on its own, without a datasite: what it refuses, what it fills in."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import numpy as np
import pytest

from policies.dp_sgd import schedule
from policies.enforcement import COUNTS_FILE, LEDGER_FILE, Execution, RunOutput, SiteEnforcer
from policies.enforcement.steps import (
    AddUpdateNoise,
    ChargePrivacy,
    CheckRelease,
    CountExecution,
    DpSgdSettings,
    MaskUpdate,
    RecordRelease,
    RefuseResearcherPolicies,
    RunCode,
)
from policies.privacy import dp_sgd_noise_multiplier, epsilon_of, noise_multiplier_for
from policies.release import ReleaseRefused
from policies.secure_aggregation import (
    generate_private_key,
    load_or_create_site_key,
    public_key_hex,
    unmask_sum,
)
from policies.site_policy import PrivacySettings, SitePolicy
from policies.template import render_site_source

pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")  # Opacus's bound

MODEL = (
    "class Net(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.head = nn.Linear(4, 2)\n\n"
    "    def forward(self, x):\n"
    "        return self.head(x)\n"
)
CONFIG = {
    "rounds": 2,
    "batch_size": 8,
    "local_epochs": 1,
    "seed": 0,
    "model_kwargs": {},
    "num_classes": 2,
    "loss": "cross_entropy",
    "lr": 0.1,
    "optimizer": "sgd",
    "momentum": 0.0,
    "mu": 0.0,
}
TEMPLATE = render_site_source("job_fn", MODEL, "Net", CONFIG)
OTHER_CODE = "def job_fn(train_images, train_labels, val_images, val_labels, weights, rnd):\n    return {}\n"
NUM_TRAIN, NUM_VAL = 40, 20
DP_SGD = PrivacySettings(epsilon_per_job=1.0, delta=1e-5, max_grad_norm=1.0, budget_epsilon=1.1)
UPDATE = PrivacySettings(
    mechanism="update", epsilon_per_job=1.0, delta=1e-5, max_update_norm=1.0, budget_epsilon=1.2
)


def weights() -> dict[str, np.ndarray]:
    return {"head.weight": np.zeros((2, 4), np.float32), "head.bias": np.zeros(2, np.float32)}


def evaluation(rnd: int = 2) -> dict:
    confusion = np.array([[10, 0], [5, 5]], dtype=np.int64)
    return {
        "round": rnd,
        "val": {"loss": 0.5, "accuracy": 0.75, "num_samples": NUM_VAL, "confusion": confusion},
    }


def training(rnd: int = 0) -> dict:
    result = evaluation(rnd)
    result["weights"] = {name: value + 0.5 for name, value in weights().items()}
    result["num_samples"] = NUM_TRAIN
    result["train"] = {"loss": 1.0, "accuracy": 0.5}
    return result


def call(
    code: str = TEMPLATE, *, rnd: object = 0, limit: int = 3, code_id: str = "code-1", **extra
) -> Execution:
    kwargs = {"train_labels": [0] * NUM_TRAIN, "val_labels": [0] * NUM_VAL, "weights": weights(), "rnd": rnd}
    return Execution(code_id, "job_fn", code, "alice", limit, {**kwargs, **extra})


@pytest.fixture
def site_at(tmp_path: Path):
    def make(policy: SitePolicy | None = None, name: str = "site-a") -> SiteEnforcer:
        state = tmp_path / name
        state.mkdir(exist_ok=True)
        return SiteEnforcer(name, state, policy or SitePolicy(), 2)

    return make


def audit_events(site: SiteEnforcer) -> list[str]:
    return [record["event"] for record in site.audit.records()]


# --- researcher-written policies ---------------------------------------------------------------


def test_researcher_output_policies_are_refused(site_at) -> None:
    site = site_at()
    RefuseResearcherPolicies().apply(call(), site)
    written = call()
    written.researcher_output_policy = True
    with pytest.raises(ReleaseRefused, match="^researcher-written output policies are not accepted"):
        RefuseResearcherPolicies().apply(written, site)
    assert audit_events(site) == []  # the chain audits, not the step


def test_at_admission_researcher_input_policies_are_refused_too(site_at) -> None:
    site = site_at()
    input_only = call()
    input_only.researcher_input_policy = True
    RefuseResearcherPolicies().apply(input_only, site)  # the execution hook checks the output policy only
    with pytest.raises(
        ReleaseRefused, match=r"^researcher-written output \(or input\) policies are not accepted"
    ):
        RefuseResearcherPolicies(check_input_policy=True).apply(input_only, site)


# --- DP-SGD settings ---------------------------------------------------------------------------


def test_dp_sgd_settings_only_at_a_dp_sgd_site(site_at) -> None:
    for policy in (SitePolicy(), SitePolicy(privacy=UPDATE)):
        execution = call(OTHER_CODE)
        DpSgdSettings().apply(execution, site_at(policy))
        assert execution.dp_sgd is None


def test_dp_sgd_settings_for_a_training_call_of_the_template(site_at) -> None:
    execution = call(limit=3)
    DpSgdSettings().apply(execution, site_at(SitePolicy(privacy=DP_SGD)))
    sample_rate, steps = schedule(NUM_TRAIN, CONFIG["batch_size"], CONFIG["local_epochs"])
    assert execution.dp_sgd == {
        "noise_multiplier": dp_sgd_noise_multiplier(1.0, 1e-5, sample_rate, steps * 3),
        "max_grad_norm": 1.0,
        "sample_rate": sample_rate,
        "steps": steps,
    }
    assert "privacy" not in execution.kwargs  # handed to the code only once charged


def test_the_templates_evaluation_call_gets_no_dp_sgd_settings(site_at) -> None:
    site = site_at(SitePolicy(privacy=DP_SGD))
    evaluation_call = call(rnd=CONFIG["rounds"])
    DpSgdSettings().apply(evaluation_call, site)
    assert evaluation_call.dp_sgd is None
    for may_train in (np.int64(2), 2.0, True, None):  # only a plain int rnd >= rounds is known not to train
        execution = call(rnd=may_train)
        DpSgdSettings().apply(execution, site)
        assert execution.dp_sgd is not None, may_train


@pytest.mark.parametrize(
    ("code", "kwargs", "message"),
    [
        (
            OTHER_CODE,
            {},
            r"^this site trains only with its own DP-SGD, so it runs only fedimg's job template",
        ),
        (
            render_site_source("job_fn", MODEL, "Net", {**CONFIG, "rounds": "2"}),
            {},
            r"^the job's CONFIG must give an integer number of rounds \(got '2'\)$",
        ),
        (TEMPLATE, {"train_labels": None}, r"^cannot set up DP-SGD for this call: "),
    ],
)
def test_dp_sgd_settings_refuse_what_the_site_cannot_train_privately(site_at, code, kwargs, message) -> None:
    site = site_at(SitePolicy(privacy=DP_SGD))
    with pytest.raises(ReleaseRefused, match=message):
        DpSgdSettings().apply(call(code, **kwargs), site)
    assert not site.counts_path.exists() and not (site.state_dir / LEDGER_FILE).exists()


# --- execution count ---------------------------------------------------------------------------


def test_the_count_numbers_the_runs_and_refuses_past_the_limit(site_at) -> None:
    site = site_at()
    runs = []
    for _ in range(2):
        execution = call(limit=2)
        CountExecution().apply(execution, site)
        runs.append(execution.run)
    other = call(limit=2, code_id="code-2")
    CountExecution().apply(other, site)
    assert runs == [1, 2] and other.run == 1
    with pytest.raises(ReleaseRefused, match="^this code has run 2 of the 2 times its owner approved$"):
        CountExecution().apply(call(limit=2), site)
    path = site.state_dir / COUNTS_FILE
    assert json.loads(path.read_text()) == {"code-1": 2, "code-2": 1}  # the refusal recorded nothing
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_count_survives_a_restart(site_at) -> None:
    CountExecution().apply(call(limit=2), site_at())
    restarted = site_at()
    execution = call(limit=2)
    CountExecution().apply(execution, restarted)
    assert execution.run == 2


# --- privacy charge ----------------------------------------------------------------------------


def ledger_of(site: SiteEnforcer) -> dict:
    path = site.state_dir / LEDGER_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def test_no_privacy_policy_charges_nothing(site_at) -> None:
    site = site_at()
    execution = call()
    ChargePrivacy().apply(execution, site)
    assert execution.privacy is None and ledger_of(site) == {}


def test_dp_sgd_is_charged_before_the_run_and_handed_to_the_code(site_at) -> None:
    site = site_at(SitePolicy(privacy=DP_SGD))
    execution = call(privacy={"noise_multiplier": 0.0})  # whatever the researcher sends is replaced
    DpSgdSettings().apply(execution, site)
    ChargePrivacy().apply(execution, site)
    settings = execution.dp_sgd
    assert settings is not None and execution.kwargs["privacy"] == settings
    entry = [settings["noise_multiplier"], settings["sample_rate"], settings["steps"]]
    assert ledger_of(site) == {"alice": [entry]}
    assert execution.privacy == {
        "mechanism": "dp-sgd",
        "epsilon_spent": execution.privacy["epsilon_spent"],
        "delta": 1e-5,
        **settings,
    }
    assert execution.privacy["epsilon_spent"] == pytest.approx(epsilon_of([tuple(entry)], 1e-5))


def test_a_dp_sgd_call_without_settings_is_free(site_at) -> None:
    site = site_at(SitePolicy(privacy=DP_SGD))
    execution = call(rnd=CONFIG["rounds"])
    DpSgdSettings().apply(execution, site)
    ChargePrivacy().apply(execution, site)
    assert execution.privacy is None and ledger_of(site) == {}


def test_update_level_training_is_charged_before_the_run(site_at) -> None:
    site = site_at(SitePolicy(privacy=UPDATE))
    execution = call(limit=2)
    ChargePrivacy().apply(execution, site)
    z = noise_multiplier_for(1.0, 1e-5, 2)
    assert ledger_of(site) == {"alice": [[z, 1.0, 1]]}
    assert execution.privacy == {
        "mechanism": "update",
        "epsilon_spent": pytest.approx(epsilon_of([z], 1e-5)),
        "delta": 1e-5,
        "noise_multiplier": z,
        "max_update_norm": 1.0,
    }
    assert "privacy" not in execution.kwargs


def test_update_level_charges_every_call_that_may_release_weights(site_at) -> None:
    site = site_at(SitePolicy(privacy=UPDATE))
    free = call(rnd=CONFIG["rounds"])  # the template's evaluation call returns no weights
    ChargePrivacy().apply(free, site)
    assert free.privacy is None and ledger_of(site) == {}
    other = call(OTHER_CODE, rnd=CONFIG["rounds"])  # other code may return weights on any call
    ChargePrivacy().apply(other, site)
    assert other.privacy is not None and len(ledger_of(site)["alice"]) == 1


def test_over_the_budget_is_refused_and_spends_nothing(site_at) -> None:
    site = site_at(SitePolicy(privacy=UPDATE))
    for _ in range(2):
        ChargePrivacy().apply(call(limit=2), site)
    before = ledger_of(site)
    with pytest.raises(
        ReleaseRefused,
        match=r"^privacy budget: this release would bring epsilon to 1\.\d+ at this site, above the budget 1\.2 \(spent so far 1\.00\)$",
    ):
        ChargePrivacy().apply(call(limit=2, code_id="code-2"), site)
    assert ledger_of(site) == before


def test_the_ledger_is_charged_in_one_step_only() -> None:
    import ast

    root = Path(__file__).resolve().parents[2] / "policies" / "enforcement"
    charging = sorted(
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "charge"
    )
    assert charging == ["steps/privacy_charge.py"]


# --- run ---------------------------------------------------------------------------------------


def test_the_run_uses_the_arguments_as_the_steps_left_them(site_at) -> None:
    seen = []

    def runner(kwargs: dict) -> RunOutput:
        seen.append(kwargs)
        return RunOutput(evaluation())

    execution = call(extra="x")
    RunCode(runner).apply(execution, site_at())
    assert len(seen) == 1 and seen[0] is execution.kwargs and seen[0]["extra"] == "x"
    assert execution.result["round"] == 2 and not execution.errored


def test_a_failed_run_is_logged_and_audited(site_at, caplog: pytest.LogCaptureFixture) -> None:
    site = site_at()
    execution = call()
    execution.run = 1
    with caplog.at_level(logging.WARNING, logger="fedimg.release"):
        RunCode(lambda kwargs: RunOutput(None, True, "x" * 3000 + "Traceback: boom")).apply(execution, site)
    assert execution.errored
    assert "code job_fn (code-1) failed at site-a: " in caplog.text and "boom" in caplog.text
    (record,) = site.audit.records()
    assert {k: record[k] for k in ("event", "code_id", "function", "researcher", "run", "errored")} == {
        "event": "execution",
        "code_id": "code-1",
        "function": "job_fn",
        "researcher": "alice",
        "run": 1,
        "errored": True,
    }


# --- release check -----------------------------------------------------------------------------


def test_the_release_check_passes_the_templates_aggregates(site_at) -> None:
    for result in (evaluation(), training()):
        execution = call()
        execution.result = result
        CheckRelease().apply(execution, site_at())


def test_the_release_check_applies_the_release_rules(site_at) -> None:
    execution = call()
    execution.result = {**evaluation(), "images": np.zeros((4, 16, 16))}
    with pytest.raises(ReleaseRefused, match=r"^the output must be a dict with keys"):
        CheckRelease().apply(execution, site_at())
    execution.result = evaluation()
    with pytest.raises(ReleaseRefused, match="fewer than its minimum of 100"):
        CheckRelease().apply(execution, site_at(SitePolicy(min_samples=100)))


@pytest.mark.parametrize(
    ("privacy", "message"),
    [
        (DP_SGD, "^model weights from a call this site did not train with its DP-SGD$"),
        (UPDATE, "^model weights from a call this site did not charge to its privacy budget$"),
    ],
)
def test_weights_leave_a_private_site_only_from_a_charged_call(site_at, privacy, message) -> None:
    site = site_at(SitePolicy(privacy=privacy))
    execution = call()
    execution.result = training()
    with pytest.raises(ReleaseRefused, match=message):
        CheckRelease().apply(execution, site)
    execution.privacy = {"mechanism": privacy.mechanism}
    CheckRelease().apply(execution, site)
    uncharged = call()
    uncharged.result = evaluation()
    CheckRelease().apply(uncharged, site)


# --- update noise ------------------------------------------------------------------------------


def update_norm(released: dict, sent: dict) -> float:
    squares = [((np.asarray(released[k], np.float64) - sent[k]) ** 2).sum() for k in sent]
    return float(np.sqrt(sum(squares)))


def test_update_level_noise_is_added_with_the_charged_multiplier(site_at) -> None:
    site = site_at(SitePolicy(privacy=UPDATE))
    execution = call(limit=2)
    ChargePrivacy().apply(execution, site)
    execution.result = training()
    charged = dict(execution.privacy or {})
    AddUpdateNoise().apply(execution, site)
    released = execution.result["weights"]
    assert {k: (v.shape, v.dtype) for k, v in released.items()} == {
        k: (v.shape, v.dtype) for k, v in weights().items()
    }
    # the update (norm ~1.4) is clipped to 1, then noised with std 2·z·1 per coordinate
    assert update_norm(released, weights()) > 5 * charged["max_update_norm"]
    assert execution.result["privacy"] == charged
    assert execution.release == {
        "mechanism": "update",
        "epsilon_spent": round(charged["epsilon_spent"], 4),
        "noise_multiplier": round(charged["noise_multiplier"], 4),
    }
    assert len(json.loads((site.state_dir / LEDGER_FILE).read_text())["alice"]) == 1  # nothing charged here


def test_a_dp_sgd_release_is_reported_not_noised_again(site_at) -> None:
    site = site_at(SitePolicy(privacy=DP_SGD))
    execution = call()
    DpSgdSettings().apply(execution, site)
    ChargePrivacy().apply(execution, site)
    execution.result = training()
    trained = {k: v.copy() for k, v in execution.result["weights"].items()}
    AddUpdateNoise().apply(execution, site)
    assert all(np.array_equal(execution.result["weights"][k], trained[k]) for k in trained)
    assert execution.result["privacy"]["mechanism"] == "dp-sgd"
    assert set(execution.release) == {
        "mechanism",
        "epsilon_spent",
        "noise_multiplier",
        "sample_rate",
        "steps",
    }


def test_an_uncharged_call_is_released_as_it_is(site_at) -> None:
    execution = call()
    execution.result = training()
    AddUpdateNoise().apply(execution, site_at(SitePolicy(privacy=UPDATE)))
    assert "privacy" not in execution.result and execution.release == {}


# --- masking -----------------------------------------------------------------------------------


def test_masked_updates_sum_to_the_cohorts_weighted_sum(site_at) -> None:
    sites = [site_at(name=name) for name in ("site-a", "site-b")]
    cohort = {site.site: public_key_hex(load_or_create_site_key(site.state_dir)) for site in sites}
    masked = []
    for site in sites:
        execution = call(cohort=cohort, rnd=1)
        execution.result = training(1)
        MaskUpdate().apply(execution, site)
        assert {v.dtype for v in execution.result["weights"].values()} == {np.dtype(np.uint64)}
        assert execution.release == {"secure_aggregation_cohort": ["site-a", "site-b"]}
        masked.append(execution.result["weights"])
    total = unmask_sum(masked)
    for name, value in training()["weights"].items():
        np.testing.assert_allclose(total[name], 2 * NUM_TRAIN * value, atol=1e-5)


@pytest.mark.parametrize(
    ("cohort", "policy", "message"),
    [
        (["site-a"], SitePolicy(), "^secure aggregation: the cohort must map site names to public keys$"),
        (
            None,
            SitePolicy(require_secure_aggregation=True),
            r"only under secure aggregation \(send a cohort\)$",
        ),
        (
            "small",
            SitePolicy(),
            "^secure aggregation: a cohort of 1 site\\(s\\) is below this site's minimum of 2$",
        ),
        (
            "stranger",
            SitePolicy(secure_aggregation_peers={"site-b": "00"}),
            r"cohort members \['site-b'\] are not",
        ),
    ],
)
def test_masking_refusals(site_at, cohort, policy, message) -> None:
    site = site_at(policy)
    own = public_key_hex(load_or_create_site_key(site.state_dir))
    if cohort == "small":
        cohort = {"site-a": own}
    elif cohort == "stranger":
        cohort = {"site-a": own, "site-b": public_key_hex(generate_private_key())}
    execution = call(cohort=cohort)
    execution.result = training()
    with pytest.raises(ReleaseRefused, match=message):
        MaskUpdate().apply(execution, site)


def test_masking_leaves_an_evaluation_alone(site_at) -> None:
    execution = call(rnd=2)
    execution.result = evaluation()
    MaskUpdate().apply(execution, site_at(SitePolicy(require_secure_aggregation=True)))
    assert set(execution.result) == {"round", "val"} and execution.release == {}


# --- release record ----------------------------------------------------------------------------


def test_the_release_record(site_at) -> None:
    site = site_at()
    execution = call(limit=3)
    execution.run = 2
    execution.result = training()
    execution.release = {"mechanism": "update", "secure_aggregation_cohort": ["site-a", "site-b"]}
    RecordRelease().apply(execution, site)
    (record,) = site.audit.records()
    body = {k: v for k, v in record.items() if k not in ("seq", "time", "prev", "hash")}
    assert body == {
        "event": "release",
        "code_id": "code-1",
        "function": "job_fn",
        "researcher": "alice",
        "run": 2,
        "run_id": None,
        "limit": 3,
        "mechanism": "update",
        "secure_aggregation_cohort": ["site-a", "site-b"],
        "keys": ["num_samples", "round", "train", "val", "weights"],
        "bytes": 40,
    }
