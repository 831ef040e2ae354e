"""``fedimg review``: a data owner lists, reads, approves or denies the code requests of one site.

The site records every decision in its audit log (``<state_dir>/audit.jsonl``,
``decisions``); ``show`` records that the owner read a request. Approving a request
whose checks fail needs ``--force``; ``auto`` approves only what the site's policy
allows without a person.

``review_with`` is the review itself, on any owner's client: the CLI reaches it over
the site's owner channel (the site runs it in-process, ``owner_channel.handlers``)
or, when no channel answers, by logging in over HTTP (``run_review``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasite_setup.errors import FedimgError
from datasite_setup.site import code_requests, site_admin
from datasite_setup.site.credentials import Credentials, admin_credentials
from datasite_setup.site.owner_channel.site_access import SiteAccess, resolve_site
from policies import (
    AUDIT_FILE,
    POLICY_FILE,
    UNCONFINED_WARNING,
    AuditLog,
    PolicyError,
    RequestReview,
    SitePolicy,
    load_site_policy,
)

Echo = Callable[[str], None]
VIA = "fedimg review"
SHARED_ADMIN = "the shared admin account"
__all__ = ["SiteAccess", "load_review_policy", "open_review", "resolve_site", "review_with", "run_review"]


def load_review_policy(state_dir: Path, policy_file: Path | None) -> SitePolicy:
    """The policy a review applies: ``policy_file``, else ``<state_dir>/policy.toml``, else the defaults.

    Parameters
    ----------
    state_dir : pathlib.Path
        The site's state dir.
    policy_file : pathlib.Path or None
        The owner's ``--policy``.

    Returns
    -------
    SitePolicy
        The site's policy.

    Raises
    ------
    FedimgError
        When the policy file is invalid (the message names it and the field).

    Examples
    --------
    >>> load_review_policy(Path("no-such-state-dir"), None).sandbox.confined  # the defaults
    True
    """
    try:
        return load_site_policy(policy_file or state_dir / POLICY_FILE)
    except PolicyError as exc:
        raise FedimgError(str(exc)) from exc


def open_review(
    access: SiteAccess, policy_file: Path | None, owner: Credentials | None = None
) -> tuple[Any, SitePolicy, AuditLog]:
    """Log in to a site over HTTP as a named owner (or its shared admin) and load what a review needs.

    Parameters
    ----------
    access : SiteAccess
        The site (``resolve_site``).
    policy_file : pathlib.Path or None
        The site policy to apply; default ``<state_dir>/policy.toml``.
    owner : Credentials or None
        A named owner's login (``fedimg owner add``); None: the site's shared admin account.

    Returns
    -------
    tuple of (syft DatasiteClient, SitePolicy, AuditLog)
        The deciding account's client, the site's policy and its audit log.

    Raises
    ------
    FedimgError
        When the policy file is invalid or the account cannot log in.
    """
    policy = load_review_policy(access.state_dir, policy_file)
    try:
        # looked up on the module at call time, so a caller can substitute the login (one session reused)
        credentials = owner or admin_credentials(access.state_dir, access.name)
        admin = site_admin.login(access.url, credentials)
    except FedimgError:
        raise
    except Exception as exc:
        who = f"owner {owner.email}" if owner else "admin"
        raise FedimgError(f"site {access.name} ({access.url}): cannot log in as {who} ({exc})") from exc
    return admin, policy, AuditLog(access.state_dir / AUDIT_FILE)


def run_review(
    access: SiteAccess,
    action: str,
    request_id: str | None,
    reason: str | None,
    force: bool,
    policy_file: Path | None,
    echo: Echo,
    owner: Credentials | None = None,
) -> int:
    """Run one ``fedimg review`` action on a site, logged in over HTTP.

    Parameters
    ----------
    access : SiteAccess
        The site (``resolve_site``).
    action : {"list", "show", "auto", "approve", "deny"}
        See ``review_with``.
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
    owner : Credentials or None
        Decide as this named owner (``fedimg owner add``); None: as the site's shared admin.

    Returns
    -------
    int
        0 (every refusal is raised).

    Raises
    ------
    FedimgError
        See ``review_with``; also when the account cannot log in.
    """
    admin, policy, audit = open_review(access, policy_file, owner)
    decider = owner.email if owner else SHARED_ADMIN
    return review_with(admin, policy, audit, access.name, action, request_id, reason, force, echo, decider)


def review_with(
    admin: Any,
    policy: SitePolicy,
    audit: AuditLog,
    site: str,
    action: str,
    request_id: str | None,
    reason: str | None,
    force: bool,
    echo: Echo,
    decider: str,
) -> int:
    """One review action with an owner's client: the one implementation every owner path uses.

    Parameters
    ----------
    admin : syft DatasiteClient
        The deciding account's client (over HTTP, or a client of the site's own server).
    policy : SitePolicy
        The site policy to apply.
    audit : AuditLog
        The site's audit log (``show`` records each request read as ``review``).
    site : str
        The site's name, for messages.
    action : {"list", "show", "auto", "approve", "deny"}
        ``list`` the pending requests; ``show`` requests with their checks and code
        (every request, audited as reviewed); ``auto`` approve what the site policy
        allows; ``approve`` or ``deny`` one request.
    request_id, reason, force
        As for ``run_review``.
    echo : callable
        Prints one message for the owner.
    decider : str
        Who decides, for the messages (an owner's e-mail, or ``SHARED_ADMIN``).

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
    if action not in ("list", "show", "auto", "approve", "deny"):
        raise FedimgError(f"unknown review action {action!r}")
    if not policy.sandbox.confined:  # in every answer: the owner decides knowing the code is not contained
        echo(f"WARNING site {site}: {UNCONFINED_WARNING}")
    status = None if action == "show" else "PENDING"
    try:
        reviews = code_requests.reviews(admin, policy, status=status, request_id=request_id)
    except FedimgError as exc:
        raise FedimgError(f"site {site}: {exc}") from None
    if action == "list":
        _list(site, reviews, echo)
    elif action == "show":
        _show(reviews, audit, echo)
    elif action == "auto":
        _approve_by_policy(admin, reviews, echo)
    elif action == "approve":
        (review,) = reviews
        if code_requests.failing_checks(review) and not force:
            echo(review.render())
        code_requests.approve_reviewed(admin, review, force=force, via=VIA)
        echo(f"{review.request.id}: approved by {decider}")
    else:
        (review,) = reviews
        _deny(admin, review, decider, reason, echo)
    return 0


def _verdict(review: RequestReview) -> str:
    failing = len(code_requests.failing_checks(review))
    return f"{failing} check(s) fail" if failing else "all checks pass"


def _list(site: str, reviews: list[RequestReview], echo: Echo) -> None:
    for review in reviews:
        request = review.request
        echo(f"{request.id}  {request.requester}  {request.function_name}  {_verdict(review)}")
    if not reviews:
        echo(f"site {site}: no pending requests")


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


def _approve_by_policy(admin: Any, reviews: list[RequestReview], echo: Echo) -> None:
    for review in reviews:
        request = review.request
        if not review.auto_approvable:
            echo(f"{request.id}: left for a person (not an allowed template, or a check fails)")
            continue
        code_requests.approve(admin, request.id, forced=False, via=f"{VIA} auto (site policy)")
        echo(f"{request.id}: approved by the site policy")


def _deny(admin: Any, review: RequestReview, decider: str, reason: str | None, echo: Echo) -> None:
    request = review.request
    if not reason:
        raise FedimgError("deny needs --reason: the researcher sees it")
    code_requests.deny(admin, request.id, reason)
    echo(f"{request.id}: denied by {decider} ({reason})")
