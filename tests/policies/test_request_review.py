"""Request review: template match with a diff, and each check failing on its own, on hand-built requests."""

from __future__ import annotations

import ast
import inspect
import json
import textwrap
from dataclasses import asdict

import pytest

from datasite_setup.site.code_requests import PendingRequest
from policies.request_review import ASSET_INPUTS, review_request, summary_json
from policies.site_policy import SitePolicy
from policies.template import TEMPLATE_VERSION, match_template, render_site_source, template_id
from researcher.job import FedAvgConfig
from researcher.models import SmallCNN
from tests.support.job_config import job_config as full_job_config

ROUNDS = 3
DATASET = "fedimg-hospital_a-0123456789ab"
CHECK_NAMES = ("static review", "job template", "output policy", "execution limit", "private inputs")


def job_config(**overrides) -> dict:
    """A job's configuration as ``FedAvgJob`` renders it (the plain-number and string settings)."""
    config = full_job_config(
        num_classes=4,
        image_size=16,
        rounds=ROUNDS,
        batch_size=32,
        lr=0.05,
    )
    return {**config, **overrides}


def rendered(model_source: str | None = None, model_name: str = "SmallCNN", **overrides) -> str:
    return render_site_source(
        "fedimg_fedavg_0123456789",
        model_source or inspect.getsource(SmallCNN),
        model_name,
        job_config(**overrides),
    )


def parameters(code: str) -> list[str]:
    function = next(node for node in ast.parse(code).body if isinstance(node, ast.FunctionDef))
    return [a.arg for a in function.args.args]


def request(code: str | None = None, **changes) -> PendingRequest:
    """What ``datasite_setup.site.code_requests.describe`` gives for a well-formed submission of the job template."""
    code = code or rendered()
    # `privacy` and `device` are not inputs: only the site sets them (template fedavg-4)
    inputs = {
        name: ("Matches" if name in ASSET_INPUTS else "UserOwned")
        for name in parameters(code)
        if name not in ("privacy", "device")
    }
    fields = dict(
        id="0f" * 16,
        requester="ada@university.example",
        function_name="fedimg_fedavg_0123456789",
        code=code,
        inputs=inputs,
        output_policy="OutputPolicyExecuteCount",
        output_policy_kwargs={"limit": ROUNDS + 1},
        status="PENDING",
        bound_assets={name: f"{DATASET}/{name}" for name in ASSET_INPUTS},
    )
    fields.update(changes)
    return PendingRequest(**fields)


def check(review, fragment: str) -> bool:
    (value,) = [ok for name, ok in review.checks.items() if fragment in name]
    return value


def failing(review) -> list[str]:
    return [fragment for fragment in CHECK_NAMES if not check(review, fragment)]


# --- match_template ------------------------------------------------------------------------


def test_rendered_template_matches_with_its_config() -> None:
    match = match_template(rendered())
    assert match.matches and match.diff == ""
    assert match.config == job_config()
    assert match.template_id == template_id()
    assert match.template_id.startswith(f"{TEMPLATE_VERSION}:") and len(match.template_id.split(":")[1]) == 12


def test_the_config_of_a_real_job_renders_to_a_matching_template() -> None:
    """What ``FedAvgJob.site_function`` renders: every FedAvgConfig field (booleans included) plus num_classes."""
    config = {
        **asdict(
            FedAvgConfig(rounds=ROUNDS, model_kwargs={"channels": 1, "image_size": 16, "num_classes": 4})
        ),
        "num_classes": 4,
    }
    code = render_site_source("fedimg_fedavg_0123456789", inspect.getsource(SmallCNN), "SmallCNN", config)
    compile(code, "site.py", "exec")
    match = match_template(code)
    assert match.matches, match.diff
    assert match.config == config
    assert failing(review_request(request(code), SitePolicy())) == []


def test_other_model_and_settings_still_match() -> None:
    model = textwrap.dedent(
        """\
        class Tiny(nn.Module):
            def __init__(self, num_classes=4):
                super().__init__()
                self.head = nn.Linear(16 * 16, num_classes)

            def forward(self, x):
                return self.head(x.flatten(1))
        """
    )
    code = rendered(model, "Tiny", optimizer="adam", lr=0.001, rounds=7, model_kwargs={"num_classes": 4})
    match = match_template(code)
    assert match.matches
    assert match.config["rounds"] == 7 and match.config["optimizer"] == "adam"


def test_one_added_line_differs_with_a_unified_diff() -> None:
    code = rendered()
    marker = '    result = {"round": int(rnd), "val": evaluate(val_images, val_labels)}\n'
    assert code.count(marker) == 1
    tampered = code.replace(marker, marker + "    return train_images\n")
    match = match_template(tampered)
    assert not match.matches
    assert match.config == job_config()
    assert match.diff.startswith("--- job template\n+++ submitted\n")
    added = [line for line in match.diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    removed = [
        line for line in match.diff.splitlines() if line.startswith("-") and not line.startswith("---")
    ]
    assert added == ["+    return train_images"] and removed == []


def test_changed_body_line_shows_both_sides() -> None:
    code = rendered()
    tampered = code.replace(
        'result["num_samples"] = int(len(labels))',
        'result["num_samples"] = int(len(labels))\n    result["labels"] = labels.tolist()',
    )
    match = match_template(tampered)
    assert not match.matches and '+    result["labels"] = labels.tolist()' in match.diff


def test_a_trailing_module_level_addition_differs() -> None:
    match = match_template(rendered() + "\nprint('hello')\n")
    assert not match.matches and "+print('hello')" in match.diff


@pytest.mark.parametrize(
    "code",
    [
        "def f(train_images):\n    return train_images.sum()\n",  # no CONFIG, no model
        "x = 1\n",  # no function at all
        "def f(:\n",  # does not parse
        "def f(x):\n    CONFIG = {'rounds': len(x)}\n    class M:\n        pass\n    return x\n",  # CONFIG is not a literal
    ],
)
def test_non_template_code_is_not_built_from_the_template(code: str) -> None:
    match = match_template(code)
    assert not match.matches
    assert match.diff.startswith("not built from the job template")
    assert match.config == {}


# --- review_request -------------------------------------------------------------------------


def test_good_request_passes_every_check() -> None:
    review = review_request(request(), SitePolicy())
    assert set(failing(review)) == set() and all(review.checks.values())
    assert len(review.checks) == len(CHECK_NAMES)
    assert review.static.passed and review.template.matches
    assert not review.auto_approvable  # the default policy lets a person decide


@pytest.mark.parametrize("limit", [ROUNDS, ROUNDS + 2, 1, 100, None])
def test_wrong_execution_limit_fails_alone(limit) -> None:
    review = review_request(
        request(output_policy_kwargs={"limit": limit} if limit is not None else {}), SitePolicy()
    )
    assert failing(review) == ["execution limit"]


def test_limit_follows_the_declared_rounds() -> None:
    code = rendered(rounds=9)
    assert failing(review_request(request(code, output_policy_kwargs={"limit": 10}), SitePolicy())) == []
    assert failing(
        review_request(request(code, output_policy_kwargs={"limit": ROUNDS + 1}), SitePolicy())
    ) == ["execution limit"]


@pytest.mark.parametrize("name", ["UserPolicy", "MyOutputPolicy", "SingleExecutionExactOutput"])
def test_other_output_policy_fails_alone(name: str) -> None:
    assert failing(review_request(request(output_policy=name), SitePolicy())) == ["output policy"]


@pytest.mark.parametrize(
    "bound",
    [
        None,  # bound to an asset this site does not hold (another site's): describe() gives None
        "fedimg-hospital_b-fedcba987654/train_images",  # a fedimg dataset... but named as another asset below
        "someone-elses-dataset/train_images",  # not a fedimg dataset of this site
    ],
)
def test_input_bound_elsewhere_fails_alone(bound) -> None:
    assets = {name: f"{DATASET}/{name}" for name in ASSET_INPUTS}
    if bound is not None and bound.startswith("fedimg-"):
        assets["val_images"] = bound  # val_images matched to a train_images asset
    else:
        assets["train_images"] = bound
    assert failing(review_request(request(bound_assets=assets), SitePolicy())) == ["private inputs"]


def test_missing_binding_fails_alone() -> None:
    assets = {name: f"{DATASET}/{name}" for name in ASSET_INPUTS if name != "train_labels"}
    assert failing(review_request(request(bound_assets=assets), SitePolicy())) == ["private inputs"]
    assert failing(review_request(request(bound_assets=None), SitePolicy())) == ["private inputs"]


def test_input_that_is_not_an_asset_fails_alone() -> None:
    good = request()
    as_researcher_value = {
        **good.inputs,
        "train_images": "UserOwned",
    }  # images sent by the researcher, not matched
    assert failing(review_request(request(inputs=as_researcher_value), SitePolicy())) == ["private inputs"]
    weights_as_asset = {**good.inputs, "weights": "Matches"}
    assert failing(review_request(request(inputs=weights_as_asset), SitePolicy())) == ["private inputs"]
    extra = {**good.inputs, "metadata": "Matches"}
    assert failing(review_request(request(inputs=extra), SitePolicy())) == ["private inputs"]
    missing = {k: v for k, v in good.inputs.items() if k != "val_labels"}
    assert failing(review_request(request(inputs=missing), SitePolicy())) == ["private inputs"]


def test_static_finding_in_the_model_fails_alone() -> None:
    model = inspect.getsource(SmallCNN).replace(
        "        return self.head(x.flatten(1))",
        "        np.save('/tmp/leak.npy', x.numpy())\n        return self.head(x.flatten(1))",
    )
    assert "np.save" in model
    review = review_request(request(rendered(model)), SitePolicy())
    assert failing(review) == ["static review"]
    assert [f.rule for f in review.static.errors] == ["forbidden-attribute"]


def test_import_allowed_by_the_site_policy() -> None:
    model = "import scipy\n" + inspect.getsource(SmallCNN)
    code = rendered(model)
    assert (
        match_template(code).matches is False
    )  # a module-level import outside the class is not the template's
    model = inspect.getsource(SmallCNN).replace(
        "    def forward(self, x):\n", "    def forward(self, x):\n        import scipy\n"
    )
    code = rendered(model)
    assert failing(review_request(request(code), SitePolicy())) == ["static review"]
    assert failing(review_request(request(code), SitePolicy(extra_allowed_imports=("scipy",)))) == []


def test_tampered_code_fails_the_template_check_only() -> None:
    tampered = rendered().replace(
        "    return result\n", "    result['round'] = int(rnd)\n    return result\n"
    )
    assert failing(review_request(request(tampered), SitePolicy())) == ["job template"]


def test_code_that_is_not_the_template_fails_template_and_limit() -> None:
    code = "def f(train_images, train_labels, val_images, val_labels, weights, rnd, cohort=None):\n    return {'round': rnd}\n"
    review = review_request(request(code), SitePolicy())
    assert set(failing(review)) == {"job template", "execution limit"}  # no declared rounds to compare with


def test_auto_approval_only_for_an_allowed_template_with_every_check_passing() -> None:
    allowed = SitePolicy(auto_approve_templates=(template_id(),))
    assert review_request(request(), allowed).auto_approvable
    assert not review_request(request(), SitePolicy()).auto_approvable
    assert not review_request(
        request(), SitePolicy(auto_approve_templates=("fedavg-0:000000000000",))
    ).auto_approvable
    for bad in (
        request(output_policy_kwargs={"limit": 99}),
        request(output_policy="UserPolicy"),
        request(bound_assets={**request().bound_assets, "train_images": None}),
        request(rendered().replace("    return result\n", "    return {'x': train_images}\n")),
    ):
        assert not review_request(bad, allowed).auto_approvable


def test_render_shows_every_check_and_the_diff() -> None:
    good = review_request(request(), SitePolicy(auto_approve_templates=(template_id(),)))
    text = good.render()
    assert f"request {'0f' * 16} from ada@university.example" in text and request().code_sha256 in text
    for name in good.checks:
        assert f"[ok] {name}" in text
    assert f"template {template_id()}: matches" in text
    assert "static review: no findings" in text
    assert "automatic approval: allowed by the site policy" in text

    tampered = rendered().replace('    result = {"round"', '    import os\n    result = {"round"')
    bad = review_request(request(tampered, output_policy_kwargs={"limit": 1}), SitePolicy())
    text = bad.render()
    for name, ok in bad.checks.items():
        assert f"[{'ok' if ok else 'FAIL'}] {name}" in text
    assert "[FAIL]" in text and "DIFFERS" in text
    assert "    +    import os" in text  # the diff, indented
    assert "[import-not-allowed]" in text
    assert "automatic approval: no: a person decides" in text


def test_summary_json() -> None:
    review = review_request(request(), SitePolicy())
    summary = json.loads(summary_json(review))
    assert summary["id"] == "0f" * 16 and summary["template"] == template_id() and summary["auto"] is False
    assert all(summary["checks"].values())


def test_secure_aggregation_restarts_add_to_the_limit() -> None:
    config = {
        **asdict(
            FedAvgConfig(
                rounds=ROUNDS,
                secure_aggregation=True,
                max_restarts=2,
                model_kwargs={"channels": 1, "image_size": 16, "num_classes": 4},
            )
        ),
        "num_classes": 4,
    }
    code = render_site_source("fedimg_fedavg_0123456789", inspect.getsource(SmallCNN), "SmallCNN", config)
    assert (
        failing(review_request(request(code, output_policy_kwargs={"limit": ROUNDS + 1 + 2}), SitePolicy()))
        == []
    )
    assert failing(
        review_request(request(code, output_policy_kwargs={"limit": ROUNDS + 1 + 3}), SitePolicy())
    ) == ["execution limit"]
    without = {**config, "secure_aggregation": False}  # restarts count only under secure aggregation
    code = render_site_source("fedimg_fedavg_0123456789", inspect.getsource(SmallCNN), "SmallCNN", without)
    assert failing(
        review_request(request(code, output_policy_kwargs={"limit": ROUNDS + 1 + 2}), SitePolicy())
    ) == ["execution limit"]
