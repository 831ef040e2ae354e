"""``fedimg review``: a data owner lists, reads, approves or denies the code requests of one site.

Every decision is written to the site's audit log (``<state_dir>/audit.jsonl``).
Approving a request whose checks fail needs ``--force``; ``auto`` approves only
what the site's policy allows without a person.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasite_setup.errors import FedimgError
from datasite_setup.site import code_requests, site_admin
from datasite_setup.site.credentials import ADMIN_EMAIL_ENV, admin_credentials
from datasite_setup.site.federation_config import load_federation_config
from policies import (
    AUDIT_FILE,
    POLICY_FILE,
    UNCONFINED_WARNING,
    AuditLog,
    PolicyError,
    RequestReview,
    SitePolicy,
    load_site_policy,
    review_request,
)

Echo = Callable[[str], None]


@dataclass(frozen=True)
class SiteAccess:
    """Where to reach one site as its admin.

    Parameters
    ----------
    name : str
        The site's name (its admin credentials are generated for it).
    url : str
        The site's base URL, without a trailing slash.
    state_dir : pathlib.Path
        The site's state dir: its admin credentials, ``policy.toml`` and audit log.
    """

    name: str
    url: str
    state_dir: Path


def resolve_site(site: str, config: Path | None, state_dir: Path | None) -> SiteAccess:
    """A site by name (through ``federation.toml``) or by URL (with its state dir).

    Parameters
    ----------
    site : str
        A site name from the config, or the site's ``http(s)://`` URL.
    config : pathlib.Path or None
        The ``federation.toml`` to read a name from (default ``./federation.toml``).
    state_dir : pathlib.Path or None
        The site's state dir: required with a URL; with a name it overrides the config's.

    Returns
    -------
    SiteAccess
        The site's name, URL and state dir.

    Raises
    ------
    FedimgError
        A URL without ``state_dir``, a missing config, or a name the config does not hold.

    Examples
    --------
    >>> from pathlib import Path
    >>> access = resolve_site("http://127.0.0.1:8081/", None, Path("state/hospital_a"))
    >>> access.name, access.url
    ('hospital_a', 'http://127.0.0.1:8081')
    """
    if site.startswith(("http://", "https://")):
        if state_dir is None:
            raise FedimgError(
                f"--site {site}: give --state-dir (the site's admin credentials and audit log live there)"
            )
        return SiteAccess(state_dir.name, site.rstrip("/"), state_dir)
    path = config or Path("federation.toml")
    if not path.exists():
        raise FedimgError(
            f"--site {site}: no {path}; pass --config federation.toml or the site's URL with --state-dir"
        )
    found = load_federation_config(path).site(site)
    return SiteAccess(found.name, found.url, state_dir or found.state_dir)


def open_review(access: SiteAccess, policy_file: Path | None) -> tuple[Any, SitePolicy, AuditLog]:
    """Log in to a site as its admin and load what a review needs.

    Parameters
    ----------
    access : SiteAccess
        The site (``resolve_site``).
    policy_file : pathlib.Path or None
        The site policy to apply; default ``<state_dir>/policy.toml``.

    Returns
    -------
    tuple of (syft DatasiteClient, SitePolicy, AuditLog)
        The admin's client, the site's policy and its audit log.

    Raises
    ------
    FedimgError
        When the policy file is invalid or the admin cannot log in.
    """
    try:
        policy = load_site_policy(policy_file or access.state_dir / POLICY_FILE)
    except PolicyError as exc:
        raise FedimgError(str(exc)) from exc
    try:
        # looked up on the module at call time, so a caller can substitute the login (one session reused)
        admin = site_admin.login(access.url, admin_credentials(access.state_dir, access.name))
    except FedimgError:
        raise
    except Exception as exc:
        raise FedimgError(f"site {access.name} ({access.url}): cannot log in as admin ({exc})") from exc
    return admin, policy, AuditLog(access.state_dir / AUDIT_FILE)


def run_review(
    access: SiteAccess,
    action: str,
    request_id: str | None,
    reason: str | None,
    force: bool,
    policy_file: Path | None,
    echo: Echo,
) -> int:
    """Run one ``fedimg review`` action on a site.

    Parameters
    ----------
    access : SiteAccess
        The site (``resolve_site``).
    action : {"list", "show", "auto", "approve", "deny"}
        ``list`` the pending requests; ``show`` requests with their checks and code
        (every request, audited as reviewed); ``auto`` approve what the site policy
        allows; ``approve`` or ``deny`` one request.
    request_id : str or None
        Restrict to the request with this id or id prefix (required by approve and deny).
    reason : str or None
        Why a request is denied (required by deny: the researcher sees it).
    force : bool
        Approve although some checks fail.
    policy_file : pathlib.Path or None
        The site policy to apply; default ``<state_dir>/policy.toml``.
    echo : callable
        Prints one message for the owner.

    Returns
    -------
    int
        0 (every refusal is raised).

    Raises
    ------
    FedimgError
        When ``request_id`` does not match exactly one request, approve is refused
        (failing checks without ``force``), deny has no reason, or the action is unknown.
    """
    admin, policy, audit = open_review(access, policy_file)
    if not policy.sandbox.confined:  # in every answer: the owner decides knowing the code is not contained
        echo(f"WARNING site {access.name}: {UNCONFINED_WARNING}")
    decider = os.environ.get(ADMIN_EMAIL_ENV) or admin_credentials(access.state_dir, access.name).email
    status = None if action == "show" else "PENDING"
    reviews = [review_request(request, policy) for request in code_requests.requests(admin, status=status)]
    if request_id:
        reviews = [review for review in reviews if review.request.id.startswith(request_id)]
        if len(reviews) != 1:
            raise FedimgError(f"site {access.name}: {len(reviews)} requests match {request_id!r}")
    if action == "list":
        _list(access, reviews, echo)
    elif action == "show":
        _show(reviews, audit, echo)
    elif action == "auto":
        _approve_by_policy(admin, reviews, audit, echo)
    elif action == "approve":
        (review,) = reviews
        _approve(admin, review, decider, force, audit, echo)
    elif action == "deny":
        (review,) = reviews
        _deny(admin, review, decider, reason, audit, echo)
    else:
        raise FedimgError(f"unknown review action {action!r}")
    return 0


def _verdict(review: RequestReview) -> str:
    failing = sum(not ok for ok in review.checks.values())
    return f"{failing} check(s) fail" if failing else "all checks pass"


def _list(access: SiteAccess, reviews: list[RequestReview], echo: Echo) -> None:
    for review in reviews:
        request = review.request
        echo(f"{request.id}  {request.requester}  {request.function_name}  {_verdict(review)}")
    if not reviews:
        echo(f"site {access.name}: no pending requests")


def _show(reviews: list[RequestReview], audit: AuditLog, echo: Echo) -> None:
    for review in reviews:
        request = review.request
        echo(review.render())
        echo("---- code ----")
        echo(request.code)
        audit.append(
            "review",
            request_id=request.id,
            requester=request.requester,
            checks=review.checks,
            code_sha256=request.code_sha256,
        )


def _approve_by_policy(admin: Any, reviews: list[RequestReview], audit: AuditLog, echo: Echo) -> None:
    for review in reviews:
        request = review.request
        if not review.auto_approvable:
            echo(f"{request.id}: left for a person (not an allowed template, or a check fails)")
            continue
        code_requests.approve(admin, request.id)
        audit.append(
            "decision",
            request_id=request.id,
            decision="approved",
            by="site policy (auto)",
            code_sha256=request.code_sha256,
        )
        echo(f"{request.id}: approved by the site policy")


def _approve(
    admin: Any, review: RequestReview, decider: str, force: bool, audit: AuditLog, echo: Echo
) -> None:
    request = review.request
    failed = [name for name, ok in review.checks.items() if not ok]
    if failed and not force:
        echo(review.render())
        raise FedimgError(
            f"request {request.id}: {len(failed)} check(s) fail ({'; '.join(failed)}); "
            "approve anyway with --force"
        )
    code_requests.approve(admin, request.id)
    audit.append(
        "decision",
        request_id=request.id,
        decision="approved",
        by=decider,
        forced=bool(failed),
        code_sha256=request.code_sha256,
    )
    echo(f"{request.id}: approved")


def _deny(
    admin: Any, review: RequestReview, decider: str, reason: str | None, audit: AuditLog, echo: Echo
) -> None:
    request = review.request
    if not reason:
        raise FedimgError("deny needs --reason: the researcher sees it")
    code_requests.deny(admin, request.id, reason)
    audit.append(
        "decision",
        request_id=request.id,
        decision="denied",
        by=decider,
        reason=reason,
        code_sha256=request.code_sha256,
    )
    echo(f"{request.id}: denied ({reason})")
