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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from datasite_setup import DATASET_PREFIX
from policies.site_policy import SitePolicy
from policies.static_review import ReviewReport, review_code
from policies.template import TemplateMatch, match_template

ASSET_INPUTS = ("train_images", "train_labels", "val_images", "val_labels")
# The inputs the researcher passes at each call (global weights, round number, secure-aggregation cohort).
RESEARCHER_INPUTS = ("weights", "rnd", "cohort")


class CodeRequest(Protocol):
    """What a review reads of a code request (``datasite_setup.site.code_requests.PendingRequest``)."""

    @property
    def id(self) -> str: ...

    @property
    def requester(self) -> str: ...

    @property
    def function_name(self) -> str: ...

    @property
    def code(self) -> str: ...

    @property
    def code_sha256(self) -> str: ...

    @property
    def inputs(self) -> Mapping[str, str]: ...

    @property
    def output_policy(self) -> str: ...

    @property
    def output_policy_kwargs(self) -> Mapping[str, Any]: ...

    @property
    def bound_assets(self) -> Mapping[str, str | None] | None: ...


@dataclass
class RequestReview:
    """The data owner's view of one code request: what each check found and whether a person must decide.

    Parameters
    ----------
    request : CodeRequest
        The request reviewed (``datasite_setup.site.code_requests.PendingRequest``).
    static : ReviewReport
        The static review of its code.
    template : TemplateMatch
        Whether its code is the job template, and the diff when it is not.
    checks : dict of str to bool
        Each policy check, by a sentence the owner reads, and whether it passed.
    auto_approvable : bool
        True when every check passed and the site policy auto-approves this template.
    """

    request: CodeRequest
    static: ReviewReport
    template: TemplateMatch
    checks: dict[str, bool]
    auto_approvable: bool

    def render(self) -> str:
        """The review as text for a terminal: the checks, the template diff and the static findings."""
        request = self.request
        lines = [
            f"request {request.id} from {request.requester}: {request.function_name} "
            f"(code sha256 {request.code_sha256})"
        ]
        lines += [f"  [{'ok' if ok else 'FAIL'}] {name}" for name, ok in self.checks.items()]
        verdict = "matches" if self.template.matches else "DIFFERS"
        lines.append(f"  template {self.template.template_id}: {verdict}")
        if self.template.diff:
            lines.append(textwrap.indent(self.template.diff, "    "))
        lines.append(textwrap.indent(self.static.render(), "  "))
        approval = "allowed by the site policy" if self.auto_approvable else "no: a person decides"
        lines.append(f"  automatic approval: {approval}")
        return "\n".join(lines)


def review_request(request: CodeRequest, policy: SitePolicy) -> RequestReview:
    """Review one code request under a site's policy.

    Parameters
    ----------
    request : CodeRequest
        A ``datasite_setup.site.code_requests.PendingRequest`` (or anything with its attributes).
    policy : SitePolicy
        The site's policy: its allowed imports and the templates it approves without a person.

    Returns
    -------
    RequestReview
        Five checks (static review, job template, output policy, execution limit, private inputs)
        and whether the request may be approved automatically.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> request = SimpleNamespace(
    ...     id="r1", requester="ada@university.example", function_name="f", code_sha256="0" * 64,
    ...     code="def f(x):\\n    import os\\n", inputs={}, bound_assets=None,
    ...     output_policy="OutputPolicyExecuteCount", output_policy_kwargs={"limit": 2},
    ... )
    >>> review = review_request(request, SitePolicy())
    >>> [name for name, ok in review.checks.items() if ok]
    ["output policy is PySyft's execution count, not researcher code"]
    >>> review.auto_approvable
    False
    """
    static = review_code(request.code, policy.review_policy)
    template = match_template(request.code)
    rounds = template.config.get("rounds")
    restarts = template.config.get("max_restarts", 0) if template.config.get("secure_aggregation") else 0
    limit = request.output_policy_kwargs.get("limit")
    counts_executions = request.output_policy == "OutputPolicyExecuteCount"
    limit_is_declared = isinstance(rounds, int) and limit == rounds + 1 + restarts
    inputs_ok = _inputs_ok(request.inputs, request.bound_assets or {})
    checks = {
        "static review passes (imports, files, sockets, internals)": static.passed,
        "the code is the job template (model and settings aside)": template.matches,
        "output policy is PySyft's execution count, not researcher code": counts_executions,
        f"execution limit {limit} = declared rounds {rounds} + 1 + restarts {restarts}": limit_is_declared,
        (
            "private inputs are this site's four assets; weights, round and cohort come from the researcher"
        ): inputs_ok,
    }
    auto = all(checks.values()) and template.template_id in policy.auto_approve_templates
    return RequestReview(request, static, template, checks, auto)


def _inputs_ok(inputs: Mapping[str, str], bound: Mapping[str, str | None]) -> bool:
    assets_matched = all(inputs.get(name) == "Matches" for name in ASSET_INPUTS)
    researcher_owned = all(inputs.get(name) == "UserOwned" for name in RESEARCHER_INPUTS)
    rules_ok = assets_matched and researcher_owned and len(inputs) == 7
    assets_ok = all(_bound_to_own_asset(name, bound) for name in ASSET_INPUTS)
    return rules_ok and assets_ok


def _bound_to_own_asset(name: str, bound: Mapping[str, str | None]) -> bool:
    """Whether input ``name`` is bound to the asset of the same name in one of this site's fedimg datasets."""
    target = bound.get(name) or ""
    return target.startswith(DATASET_PREFIX) and target.endswith(f"/{name}")


def summary_json(review: RequestReview) -> str:
    """One line of JSON for scripts: the request id, each check, the template id and the automatic verdict.

    Parameters
    ----------
    review : RequestReview
        A review from ``review_request``.

    Returns
    -------
    str
        ``{"id": ..., "checks": {...}, "template": ..., "auto": ...}``.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> request = SimpleNamespace(
    ...     id="r1", requester="ada", function_name="f", code_sha256="", code="", inputs={},
    ...     bound_assets=None, output_policy="", output_policy_kwargs={},
    ... )
    >>> summary = json.loads(summary_json(review_request(request, SitePolicy())))
    >>> summary["id"], summary["auto"], len(summary["checks"])
    ('r1', False, 5)
    """
    return json.dumps(
        {
            "id": review.request.id,
            "checks": review.checks,
            "template": review.template.template_id,
            "auto": review.auto_approvable,
        }
    )
