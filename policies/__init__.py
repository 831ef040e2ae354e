"""The data owner's rules: what a site reviews, runs, releases and records.

This is the package's public face: the site (``datasite_setup.site``), the
researcher's client (``researcher``) and the command line use only the names in
``__all__``. Layers: ``policies`` imports nothing of ``datasite_setup`` but its
shared contracts (``datasite_setup`` itself: errors, private files), and nothing
of the site, the converter or the researcher's client.

- review: ``review_code`` (static AST checks), ``match_template`` (the job
  template, owned by the sites: ``policies.template``), ``review_request``,
  ``explain_check`` (each check in plain words), the purpose in a request's reason
  text (``reason_with_purpose``, ``purpose_of_reason``) and ``summarize_request``
  (what a request reads, runs and releases, in plain words: ``policies.request_summary``);
- release: ``check_release`` and the enforcement chain run around every
  execution (``policies.enforcement``: ``release_chain`` of one-rule steps over an
  ``Execution`` at a ``SiteEnforcer``; no PySyft in it, the site's glue hands in
  the call and a callable that runs it);
- privacy: DP-SGD (``train_private``, ``schedule``; the site's trusted half ``SiteDescent``,
  ``use_remote_descent`` for the sandbox worker), the accountant and ledger
  (``PrivacyLedger``), update-level DP (``privatize_update``);
- secure aggregation: ``mask_weights``, ``unmask_sum`` and the site key;
- audit: the hash-chained ``AuditLog``, ``verify_audit_log``, runs without an end
  (``open_runs``) and ``fedimg audit show``'s ``select_records``, ``parse_since``,
  ``describe_record``;
- site policy: ``SitePolicy`` read from ``policy.toml`` (``load_site_policy``).
"""

from policies.audit import (
    EVENTS,
    AuditLog,
    AuditProblem,
    describe_record,
    open_runs,
    parse_since,
    select_records,
    verify_audit_log,
)
from policies.dp_descent import SiteDescent
from policies.dp_sgd import schedule, train_private, use_remote_descent
from policies.enforcement import (
    AUDIT_FILE,
    MOCK_RESULT,
    Execution,
    Runner,
    RunOutput,
    SiteEnforcer,
    admission_chain,
    release_chain,
)
from policies.privacy import (
    BudgetExceeded,
    PrivacyLedger,
    dp_sgd_noise_multiplier,
    epsilon_of,
    noise_multiplier_for,
    privatize_update,
)
from policies.release import ReleaseRefused, check_release
from policies.request_review import (
    ASSET_INPUTS,
    PURPOSE_CHECK,
    RequestReview,
    explain_check,
    purpose_of_reason,
    reason_with_purpose,
    review_request,
    summary_json,
)
from policies.request_summary import RequestSummary, SiteFacts, summarize_request
from policies.secure_aggregation import (
    context_bytes,
    load_or_create_site_key,
    mask_weights,
    public_key_hex,
    unmask_sum,
)
from policies.site_policy import (
    POLICY_FILE,
    UNCONFINED_WARNING,
    LimitSettings,
    PolicyError,
    PrivacySettings,
    SandboxSettings,
    SitePolicy,
    load_site_policy,
)
from policies.static_review import Finding, ReviewPolicy, ReviewReport, review_code
from policies.template import (
    SITE_FUNCTION_TEMPLATE,
    TEMPLATE_VERSION,
    TemplateMatch,
    match_template,
    python_literal,
    render_site_source,
    template_id,
)

__all__ = [
    "ASSET_INPUTS",
    "AUDIT_FILE",
    "EVENTS",
    "AuditLog",
    "AuditProblem",
    "BudgetExceeded",
    "Execution",
    "Finding",
    "LimitSettings",
    "MOCK_RESULT",
    "POLICY_FILE",
    "PolicyError",
    "PrivacyLedger",
    "PrivacySettings",
    "PURPOSE_CHECK",
    "ReleaseRefused",
    "RequestReview",
    "RequestSummary",
    "ReviewPolicy",
    "ReviewReport",
    "Runner",
    "RunOutput",
    "SandboxSettings",
    "SITE_FUNCTION_TEMPLATE",
    "SiteDescent",
    "SiteEnforcer",
    "SiteFacts",
    "SitePolicy",
    "TEMPLATE_VERSION",
    "TemplateMatch",
    "UNCONFINED_WARNING",
    "admission_chain",
    "check_release",
    "context_bytes",
    "describe_record",
    "dp_sgd_noise_multiplier",
    "epsilon_of",
    "explain_check",
    "load_or_create_site_key",
    "load_site_policy",
    "mask_weights",
    "match_template",
    "noise_multiplier_for",
    "open_runs",
    "parse_since",
    "privatize_update",
    "public_key_hex",
    "purpose_of_reason",
    "python_literal",
    "reason_with_purpose",
    "release_chain",
    "render_site_source",
    "review_code",
    "review_request",
    "schedule",
    "select_records",
    "summarize_request",
    "summary_json",
    "template_id",
    "train_private",
    "unmask_sum",
    "use_remote_descent",
    "verify_audit_log",
]
