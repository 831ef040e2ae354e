"""The enforcement chain: its order, its single refusal exit, and a package that never imports PySyft."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from policies.enforcement import (
    LEDGER_FILE,
    Chain,
    Execution,
    RunOutput,
    SiteEnforcer,
    Step,
    admission_chain,
    release_chain,
)
from policies.release import ReleaseRefused
from policies.site_policy import PrivacySettings, SitePolicy
from tests.policies.test_enforcement_steps import CONFIG, TEMPLATE, call, evaluation, training

pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")  # Opacus's bound
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def site(tmp_path: Path) -> SiteEnforcer:
    return SiteEnforcer("site-a", tmp_path, SitePolicy(), 2)


class Recorder:
    """A runner that records its calls and returns the results it was given, in order."""

    def __init__(self, *results: RunOutput) -> None:
        self.results, self.calls = list(results), []

    def __call__(self, kwargs: dict) -> RunOutput:
        self.calls.append(kwargs)
        return self.results.pop(0)


def events(site: SiteEnforcer) -> list[tuple[str, str | None]]:
    return [(record["event"], record.get("reason")) for record in site.audit.records()]


def test_the_release_chain_runs_the_steps_in_the_issues_order() -> None:
    names = [type(step).__name__ for step in release_chain(Recorder()).steps]
    assert names == [
        "RefuseResearcherPolicies",
        "DpSgdSettings",
        "CountExecution",
        "ChargePrivacy",
        "RecordStart",
        "RunCode",
        "CheckRelease",
        "AddUpdateNoise",
        "MaskUpdate",
        "RecordRelease",
    ]


def test_a_release(site: SiteEnforcer) -> None:
    runner = Recorder(RunOutput(training()))
    execution = release_chain(runner).run(call(), site)
    assert execution.run == 1 and set(execution.result) == {"round", "val", "weights", "num_samples", "train"}
    assert len(runner.calls) == 1 and [event for event, _ in events(site)] == ["started", "release"]


def test_a_refusal_is_audited_once_and_re_raised_and_nothing_after_it_runs(site: SiteEnforcer) -> None:
    applied = []

    class Mark(Step):
        def apply(self, execution: Execution, site: SiteEnforcer) -> None:
            applied.append(execution.code_id)

    class Refuse(Step):
        def apply(self, execution: Execution, site: SiteEnforcer) -> None:
            raise ReleaseRefused("not today")

    with pytest.raises(ReleaseRefused, match="^not today$"):
        Chain((Mark(), Refuse(), Mark())).run(call(), site)
    assert applied == ["code-1"] and events(site) == [("refusal", "not today")]
    (record,) = site.audit.records()
    assert (record["code_id"], record["function"], record["researcher"]) == ("code-1", "job_fn", "alice")
    assert site.refusal_message("not today") == "release refused by site site-a: not today"


def test_a_refused_release_counts_the_run_but_releases_nothing(site: SiteEnforcer) -> None:
    bad = {**evaluation(), "images": [1, 2, 3]}
    with pytest.raises(ReleaseRefused, match="the output must be a dict with keys"):
        release_chain(Recorder(RunOutput(bad))).run(call(), site)
    assert [event for event, _ in events(site)] == ["started", "refusal"]
    assert json.loads(site.counts_path.read_text()) == {"code-1": 1}


def test_a_failed_run_stops_the_chain(site: SiteEnforcer) -> None:
    execution = release_chain(Recorder(RunOutput(None, True, "boom"))).run(call(), site)
    assert execution.errored and [event for event, _ in events(site)] == ["started", "execution"]


def test_past_the_limit_the_code_does_not_run(site: SiteEnforcer) -> None:
    runner = Recorder(RunOutput(evaluation()))
    release_chain(runner).run(call(limit=1, rnd=2), site)
    with pytest.raises(ReleaseRefused, match="run 1 of the 1 times"):
        release_chain(runner).run(call(limit=1, rnd=2), site)
    assert len(runner.calls) == 1


def test_over_the_budget_the_code_does_not_run(tmp_path: Path) -> None:
    privacy = PrivacySettings(
        mechanism="update", epsilon_per_job=1.0, max_update_norm=1.0, budget_epsilon=1.2
    )
    site = SiteEnforcer("site-a", tmp_path, SitePolicy(privacy=privacy), 2)
    runner = Recorder(RunOutput(training()), RunOutput(training()))
    for _ in range(2):
        released = release_chain(runner).run(call(limit=2), site).result
        assert released["privacy"]["mechanism"] == "update"
    with pytest.raises(ReleaseRefused, match=r"^privacy budget: this release would bring epsilon to 1\.\d+"):
        release_chain(runner).run(call(limit=2, code_id="code-2"), site)
    assert len(runner.calls) == 2 and len(json.loads((tmp_path / LEDGER_FILE).read_text())["alice"]) == 2
    assert [event for event, _ in events(site)] == ["started", "release", "started", "release", "refusal"]


def test_a_dp_sgd_site_runs_only_the_template_and_hands_it_its_settings(tmp_path: Path) -> None:
    site = SiteEnforcer("site-a", tmp_path, SitePolicy(privacy=PrivacySettings(budget_epsilon=100.0)), 2)
    runner = Recorder(RunOutput(training()), RunOutput(evaluation()))
    trained = release_chain(runner).run(call(privacy={"noise_multiplier": 0.0}), site)
    assert runner.calls[0]["privacy"] == trained.dp_sgd and trained.result["privacy"]["mechanism"] == "dp-sgd"
    final = release_chain(runner).run(call(rnd=CONFIG["rounds"]), site)
    assert "privacy" not in final.result and "privacy" not in runner.calls[1]
    other = call("def job_fn(rnd):\n    return {}\n")
    with pytest.raises(ReleaseRefused, match="runs only fedimg's job template"):
        release_chain(runner).run(other, site)
    assert json.loads(site.counts_path.read_text()) == {"code-1": 2}  # the refused call used up no run
    records = site.audit.records()
    assert [r["event"] for r in records] == ["started", "release", "started", "release", "refusal"]
    assert records[1]["mechanism"] == "dp-sgd" and "mechanism" not in records[3]


def test_admission_refuses_researcher_policies_once(site: SiteEnforcer) -> None:
    admission_chain().run(call(), site)
    execution = Execution("code-1", "job_fn", TEMPLATE, "alice", 1, {}, researcher_input_policy=True)
    with pytest.raises(ReleaseRefused, match=r"output \(or input\) policies are not accepted"):
        admission_chain().run(execution, site)
    assert [event for event, _ in events(site)] == ["refusal"]


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_policies_never_import_syft() -> None:
    found = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / "policies").rglob("*.py"))
        for name in _imports(path)
        if name.split(".")[0] == "syft"
    ]
    assert found == []


def test_the_syft_import_check_can_fail(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("def later():\n    from syft.types.errors import SyftException\n")
    assert _imports(tmp_path / "m.py") == ["syft.types.errors"]


def test_each_step_module_holds_one_step() -> None:
    folder = ROOT / "policies" / "enforcement" / "steps"
    for path in sorted(folder.glob("*.py")):
        if path.name == "__init__.py":
            continue
        classes = [node for node in ast.parse(path.read_text()).body if isinstance(node, ast.ClassDef)]
        assert len(classes) == 1, path.name
        methods = [n.name for n in classes[0].body if isinstance(n, ast.FunctionDef)]
        assert methods == ["apply"], (path.name, methods)
