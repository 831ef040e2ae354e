"""Everything a data owner needs to decide on a code request: static review, template match, policy checks.

``review_request`` runs the checks of ``policies.static_review`` on the submitted code,
re-renders fedimg's job template from the request's own model and configuration
to show what differs, checks the inputs and the execution limit (and, where the site's
policy requires it, that the researcher stated a purpose), and says whether
the site's policy lets it be approved without a person (only when the code *is*
an allowed template and every check passes). ``explain_check`` says what each check
means in one line an owner who does not program can follow.

The researcher's purpose travels in the request's reason text (PySyft 0.9.5 keeps
that text only as the subject of the notification it sends the site's admin):
``reason_with_purpose`` writes it as the text's last line, a JSON string, and
``purpose_of_reason`` reads it back exactly (any text, newlines included; "" for a
request without one).
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
# The line that carries the purpose, last in the reason text: a newline, this, then one JSON string
# (JSON escapes every newline and control character, so the purpose can never end the line early).
PURPOSE_MARKER = "\nfedimg purpose (JSON): "
PURPOSE_CHECK = "the researcher stated a purpose (why they want the data)"
# check name (or the start of one: the execution limit's name carries its numbers) -> what it means
_CHECK_PREFIXES = {
    "static review": "static",
    "the code is the job template": "template",
    "output policy": "output policy",
    "execution limit": "limit",
    "private inputs": "inputs",
    PURPOSE_CHECK: "purpose",
}
_EXPLANATIONS = {
    "static": (
        "The code was read (not run) and uses only the libraries this site allows (PyTorch, NumPy, "
        "math and any you added); it opens no file, no network connection and no hidden part of Python."
    ),
    "template": (
        "The program is fedimg's own training program, word for word: only the model (the network's "
        "layers) and the settings (rounds, batch size, learning rate) are the researcher's."
    ),
    "output policy": (
        "The number of times the code may run is counted by the site itself, not by anything the "
        "researcher wrote, so it cannot run more often than you allow."
    ),
    "limit": (
        "The number of runs you are asked to allow is what the job needs: one per training round, "
        "one final evaluation, plus any restarts it declared; no spare runs."
    ),
    "inputs": (
        "The code reads only this site's four data sets (training and validation images and labels); "
        "the other values it receives (the model's current weights, the round number) come from the "
        "researcher and hold no patient data."
    ),
    "purpose": (
        "The researcher wrote down why they want to use the data (shown above); this site's policy "
        "requires it before a request can be approved."
    ),
}
UNKNOWN_CHECK_EXPLANATION = (
    "A check fedimg runs before code may touch the data; if it fails, do not approve until someone "
    "who knows fedimg has explained why."
)


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

    @property
    def purpose(self) -> str: ...


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
        purpose = request.purpose or "(none stated)"
        lines.append("  purpose: " + purpose.replace("\n", "\n    "))
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
        The site's policy: its allowed imports, the templates it approves without a person, and
        whether a request must state its purpose.

    Returns
    -------
    RequestReview
        Five checks (static review, job template, output policy, execution limit, private inputs),
        a sixth (``PURPOSE_CHECK``, failing on an empty purpose) only where ``policy.require_purpose``,
        and whether the request may be approved automatically.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> request = SimpleNamespace(
    ...     id="r1", requester="ada@university.example", function_name="f", code_sha256="0" * 64,
    ...     code="def f(x):\\n    import os\\n", inputs={}, bound_assets=None,
    ...     output_policy="OutputPolicyExecuteCount", output_policy_kwargs={"limit": 2}, purpose="",
    ... )
    >>> review = review_request(request, SitePolicy())
    >>> [name for name, ok in review.checks.items() if ok]
    ["output policy is PySyft's execution count, not researcher code"]
    >>> review.auto_approvable
    False
    >>> review_request(request, SitePolicy(require_purpose=True)).checks[PURPOSE_CHECK]
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
    if policy.require_purpose:  # absent otherwise: a site that does not ask fails nobody for it
        checks[PURPOSE_CHECK] = bool(request.purpose.strip())
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


def explain_check(name: str) -> str:
    """One line a data owner who does not program can follow: what a check of ``review_request`` means.

    Parameters
    ----------
    name : str
        A check's name, as a key of ``RequestReview.checks``.

    Returns
    -------
    str
        The check's explanation; a general sentence for a name fedimg does not know.

    Examples
    --------
    >>> explain_check("execution limit 4 = declared rounds 3 + 1 + restarts 0")
    'The number of runs you are asked to allow is what the job needs: one per training round, ...'
    >>> explain_check("a check from elsewhere") == UNKNOWN_CHECK_EXPLANATION
    True
    """
    for prefix, key in _CHECK_PREFIXES.items():
        if name.startswith(prefix):
            return _EXPLANATIONS[key]
    return UNKNOWN_CHECK_EXPLANATION


def reason_with_purpose(reason: str, purpose: str) -> str:
    """A code request's reason text carrying the researcher's purpose (``purpose_of_reason`` reads it).

    Parameters
    ----------
    reason : str
        The request's reason (fedimg's jobs end it with the site code's sha256); kept as is.
    purpose : str
        Why the researcher wants the data, any text (newlines included); "" for none.

    Returns
    -------
    str
        ``reason``, then a last line: ``PURPOSE_MARKER`` and the purpose as a JSON string. The line
        is written for an empty purpose too, so the last marker is always the job's own.

    Examples
    --------
    >>> text = reason_with_purpose("digits CNN; site code sha256 ab12", "Screening study\\nline 2")
    >>> print(text)
    digits CNN; site code sha256 ab12
    fedimg purpose (JSON): "Screening study\\nline 2"
    >>> purpose_of_reason(text)
    'Screening study\\nline 2'
    """
    return f"{reason}{PURPOSE_MARKER}{json.dumps(purpose)}"


def purpose_of_reason(reason: str | None) -> str:
    """The purpose ``reason_with_purpose`` put in a request's reason text, exactly; "" when it holds none.

    Parameters
    ----------
    reason : str or None
        The reason text of a code request (None or "" when the site has none for it).

    Returns
    -------
    str
        The purpose; "" for a request made before purposes (or not by fedimg), or whose last line is
        not a well-formed purpose line.

    Examples
    --------
    >>> purpose_of_reason("fedimg FedAvg job 'cnn'; site code sha256 ab12")  # an older request
    ''
    >>> purpose_of_reason('x' + PURPOSE_MARKER + '"a \\\\"quoted\\\\" purpose"')
    'a "quoted" purpose'
    """
    _, marker, tail = (reason or "").rpartition(PURPOSE_MARKER)
    if not marker:
        return ""
    try:
        purpose = json.loads(tail)
    except ValueError:
        return ""
    return purpose if isinstance(purpose, str) else ""
