"""Everything a data owner needs to decide on a code request: static review, template match, policy checks.

``review_request`` runs the checks of ``policies.static_review`` on the submitted code,
re-renders fedimg's job template from the request's own model and configuration
to show what differs, checks the inputs and the execution limit, and says whether
the site's policy lets it be approved without a person (only when the code *is*
an allowed template and every check passes).
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass

from policies.site_policy import SitePolicy
from policies.static_review import ReviewReport, review_code
from policies.template import TemplateMatch, match_template

ASSET_INPUTS = ("train_images", "train_labels", "val_images", "val_labels")


@dataclass
class RequestReview:
    request: object  # datasite_setup.site.code_requests.PendingRequest
    static: ReviewReport
    template: TemplateMatch
    checks: dict[str, bool]
    auto_approvable: bool

    def render(self) -> str:
        lines = [
            f"request {self.request.id} from {self.request.requester}: {self.request.function_name} (code sha256 {self.request.code_sha256})"
        ]
        lines += [f"  [{'ok' if ok else 'FAIL'}] {name}" for name, ok in self.checks.items()]
        lines.append(
            f"  template {self.template.template_id}: {'matches' if self.template.matches else 'DIFFERS'}"
        )
        if self.template.diff:
            lines.append(textwrap.indent(self.template.diff, "    "))
        lines.append(textwrap.indent(self.static.render(), "  "))
        lines.append(
            f"  automatic approval: {'allowed by the site policy' if self.auto_approvable else 'no: a person decides'}"
        )
        return "\n".join(lines)


def review_request(request: object, policy: SitePolicy) -> RequestReview:
    """Review one ``datasite_setup.site.code_requests.PendingRequest`` under ``policy``."""
    static = review_code(request.code, policy.review_policy)
    template = match_template(request.code)
    rounds = template.config.get("rounds")
    restarts = template.config.get("max_restarts", 0) if template.config.get("secure_aggregation") else 0
    limit = request.output_policy_kwargs.get("limit")
    checks = {
        "static review passes (imports, files, sockets, internals)": static.passed,
        "the code is the job template (model and settings aside)": template.matches,
        "output policy is PySyft's execution count, not researcher code": request.output_policy
        == "OutputPolicyExecuteCount",
        f"execution limit {limit} = declared rounds {rounds} + 1 + restarts {restarts}": isinstance(
            rounds, int
        )
        and limit == rounds + 1 + restarts,
        "private inputs are this site's four assets; weights, round and cohort come from the researcher": _inputs_ok(
            request.inputs, request.bound_assets or {}
        ),
    }
    auto = all(checks.values()) and template.template_id in policy.auto_approve_templates
    return RequestReview(request, static, template, checks, auto)


def _inputs_ok(inputs: dict[str, str], bound: dict[str, str | None]) -> bool:
    owned = ("weights", "rnd", "cohort")
    rules_ok = (
        all(inputs.get(name) == "Matches" for name in ASSET_INPUTS)
        and all(inputs.get(name) == "UserOwned" for name in owned)
        and len(inputs) == 7
    )
    # each asset input must be bound to the asset of the same name in one of this site's fedimg datasets
    assets_ok = all(
        (bound.get(name) or "").startswith("fedimg-") and bound[name].endswith(f"/{name}")
        for name in ASSET_INPUTS
    )
    return rules_ok and assets_ok


def summary_json(review: RequestReview) -> str:
    return json.dumps(
        {
            "id": review.request.id,
            "checks": review.checks,
            "template": review.template.template_id,
            "auto": review.auto_approvable,
        }
    )
