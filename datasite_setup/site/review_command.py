"""``fedimg review``: a data owner lists, reads, approves or denies the code requests of one site.

Every decision is written to the site's audit log (``<state_dir>/audit.jsonl``).
Approving a request whose checks fail needs ``--force``; ``auto`` approves only
what the site's policy allows without a person.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from datasite_setup.errors import FedimgError
from datasite_setup.site.credentials import admin_credentials
from datasite_setup.site.federation_config import load_federation_config
from policies import AUDIT_FILE, POLICY_FILE, AuditLog, PolicyError, load_site_policy, review_request


@dataclass(frozen=True)
class SiteAccess:
    name: str
    url: str
    state_dir: Path


def resolve_site(site: str, config: Path | None, state_dir: Path | None) -> SiteAccess:
    """A site by name (through federation.toml) or by URL (with its state dir)."""
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


def open_review(access: SiteAccess, policy_file: Path | None):
    """(admin client, site policy, audit log) for ``access``."""
    from datasite_setup.site.site_admin import login

    try:
        policy = load_site_policy(policy_file or access.state_dir / POLICY_FILE)
    except PolicyError as exc:
        raise FedimgError(str(exc)) from exc
    try:
        admin = login(access.url, admin_credentials(access.state_dir, access.name))
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
    echo,
) -> int:
    from datasite_setup.site import code_requests as owner

    admin, policy, audit = open_review(access, policy_file)
    decider = os.environ.get("FEDIMG_ADMIN_EMAIL") or admin_credentials(access.state_dir, access.name).email
    status = None if action == "show" else "PENDING"
    reviews = [review_request(request, policy) for request in owner.requests(admin, status=status)]
    if request_id:
        reviews = [r for r in reviews if r.request.id.startswith(request_id)]
        if len(reviews) != 1:
            raise FedimgError(f"site {access.name}: {len(reviews)} requests match {request_id!r}")
    if action == "list":
        for review in reviews:
            verdict = (
                "all checks pass"
                if all(review.checks.values())
                else f"{sum(not ok for ok in review.checks.values())} check(s) fail"
            )
            echo(
                f"{review.request.id}  {review.request.requester}  {review.request.function_name}  {verdict}"
            )
        if not reviews:
            echo(f"site {access.name}: no pending requests")
        return 0
    if action == "show":
        for review in reviews:
            echo(review.render())
            echo("---- code ----")
            echo(review.request.code)
            audit.append(
                "review",
                request_id=review.request.id,
                requester=review.request.requester,
                checks=review.checks,
                code_sha256=review.request.code_sha256,
            )
        return 0
    if action == "auto":
        for review in reviews:
            if review.auto_approvable:
                owner.approve(admin, review.request.id)
                audit.append(
                    "decision",
                    request_id=review.request.id,
                    decision="approved",
                    by="site policy (auto)",
                    code_sha256=review.request.code_sha256,
                )
                echo(f"{review.request.id}: approved by the site policy")
            else:
                echo(f"{review.request.id}: left for a person (not an allowed template, or a check fails)")
        return 0
    (review,) = reviews
    if action == "approve":
        failed = [name for name, ok in review.checks.items() if not ok]
        if failed and not force:
            echo(review.render())
            raise FedimgError(
                f"request {review.request.id}: {len(failed)} check(s) fail ({'; '.join(failed)}); approve anyway with --force"
            )
        owner.approve(admin, review.request.id)
        audit.append(
            "decision",
            request_id=review.request.id,
            decision="approved",
            by=decider,
            forced=bool(failed),
            code_sha256=review.request.code_sha256,
        )
        echo(f"{review.request.id}: approved")
        return 0
    if action == "deny":
        if not reason:
            raise FedimgError("deny needs --reason: the researcher sees it")
        owner.deny(admin, review.request.id, reason)
        audit.append(
            "decision",
            request_id=review.request.id,
            decision="denied",
            by=decider,
            reason=reason,
            code_sha256=review.request.code_sha256,
        )
        echo(f"{review.request.id}: denied ({reason})")
        return 0
    raise FedimgError(f"unknown review action {action!r}")
