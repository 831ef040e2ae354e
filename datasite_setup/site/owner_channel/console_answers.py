"""What a site answers ``fedimg console`` on its owner channel: one method per console page or action.

The console (a separate process without PySyft) reaches each site only over its owner
channel; the site answers here, in its own process, with a client holding the signed-in
owner's key (``owner_tokens``). Reads come from the same places as ``fedimg review``,
``status`` and ``audit show``: the requests and their reviews from
``code_requests.reviews`` (the one owner path; kept while nothing changes), runs and
decisions from the site's audit log, runs counted from its execution counts, ε from its
privacy ledger, the dataset from its description and its asset maps (mock images only:
a private image is never read).
Every change goes through the owner's client, so the site's own records name the owner:
a decision through ``review_command.review_with`` (``decisions`` records it, with
``via="fedimg console"`` and an override's reason), an account created or disabled
through PySyft's user service (``decisions`` records it as an ``account`` event).

Answers are plain JSON (the wire format is ``protocol``); a refusal is
``{"ok": false, "error": ...}`` naming what to fix.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datasite_setup import DATASET_PREFIX, FedimgError, parse_dataset_info
from datasite_setup.site import code_requests, site_admin
from datasite_setup.site.asset_maps import load_asset_index, maps_dir, open_map, verify_asset_maps
from datasite_setup.site.credentials import MIN_PASSWORD_CHARS, email_problem
from datasite_setup.site.decisions import site_note
from datasite_setup.site.owner_channel.owner_tokens import OwnerSession
from datasite_setup.site.review_command import load_review_policy, review_with
from policies import (
    UNCONFINED_WARNING,
    AuditLog,
    RequestReview,
    SiteEnforcer,
    SiteFacts,
    SitePolicy,
    epsilon_of,
    explain_check,
    summarize_request,
    verify_audit_log,
)

log = logging.getLogger("fedimg.owner_channel")
VIA = "fedimg console"
MAX_MOCKS = 24
DEFAULT_AUDIT_LIMIT = 200
RESEARCHER_ROLE, DISABLED_ROLE = "DATA_SCIENTIST", "GUEST"  # the site's gate serves a GUEST nothing
RUN_EVENTS = {"started": "started", "execution": "errored", "release": "released", "refusal": "refused"}
RUN_EVENTS["aborted"] = "aborted"
PERSON_FIELDS = ("requester", "researcher", "researcher_email", "email", "user")
REVIEWS_CACHE_S = 60.0  # a change the site did not record (none is known) shows within this
DATASET_CACHE_S = 30.0  # the dataset changes only when the site ingests (at its start): re-read now and then


@dataclass(frozen=True)
class RequestFacts:
    """What the console shows of a request beside its review, read from the site's own stores.

    Parameters
    ----------
    code_id : str
        The id of the request's code (run records name it).
    created : str
        When it was submitted (ISO 8601, UTC), or "".
    requester : str
        The researcher's e-mail.
    """

    code_id: str
    created: str
    requester: str


class ConsoleAnswers:
    """The console's answers for one running site.

    Parameters
    ----------
    worker : syft Datasite
        The site's server, in this process (read-only lookups of its stores).
    name : str
        The site's name.
    state_dir : Path
        Its state dir (audit log, policy, ledger, execution counts, asset maps).
    policy : SitePolicy
        The policy the site runs with (its sandbox, privacy and limits).
    audit : AuditLog
        The site's audit log.
    status : callable
        ``status() -> dict``: the site's ``fedimg status`` answer (pid, http, sandbox, dataset).
    started : float
        When the site started serving (Unix time).
    """

    def __init__(
        self,
        worker: Any,
        name: str,
        state_dir: Path,
        policy: SitePolicy,
        audit: AuditLog,
        status: Callable[[], dict[str, Any]],
        started: float,
    ) -> None:
        self.worker, self.name, self.state_dir, self.policy = worker, name, state_dir, policy
        self.audit, self.status, self.started = audit, status, started
        self.enforcer = SiteEnforcer(name, state_dir, policy, 0)  # its files only: counts, ledger
        self._dataset: tuple[float, dict[str, Any]] | None = None  # (read at, dataset info)
        self._checksum: tuple[tuple, dict[str, Any]] | None = None  # (files' stat, verdict)
        self._cached_reviews: tuple[float, tuple, list[RequestReview]] | None = (
            None  # (read at, key, reviews)
        )
        self._lock = threading.Lock()

    def answer(self, request: dict[str, Any], client: Any, session: OwnerSession) -> dict[str, Any]:
        """The answer to one checked ``console`` request (``protocol.check_request``).

        Parameters
        ----------
        request : dict
            ``{"action": "console", "token": ..., "what": WHAT, ...}``.
        client : syft DatasiteClient
            A client of this server holding the signed-in owner's key.
        session : OwnerSession
            The signed-in owner.

        Returns
        -------
        dict
            ``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``.
        """
        what = request["what"]
        try:
            if what == "requests":
                return self.requests(client, session, request.get("request_id"))
            if what == "decide":
                return self.decide(client, session, request)
            if what == "jobs":
                return self.jobs(client)
            if what == "researchers":
                return self.researchers()
            if what == "researcher_add":
                return self.researcher_add(client, request)
            if what == "researcher_disable":
                return self.researcher_disable(client, session, request.get("email") or "")
            if what == "dataset":
                return self.dataset(client)
            if what == "audit":
                return self.audit_records(request)
            return self.health()
        except FedimgError as exc:
            return {"ok": False, "error": str(exc), **({"lines": []} if what == "decide" else {})}

    # --- requests and decisions ----------------------------------------------------------

    def requests(self, client: Any, session: OwnerSession, request_id: str | None = None) -> dict[str, Any]:
        """Every request of the site (or the one ``request_id`` names) with its review, summary and runs.

        Opening one request (``request_id`` given) is recorded as a ``review`` by the owner,
        as ``fedimg review show`` records it.
        """
        policy = load_review_policy(self.state_dir, None)
        facts = self._request_facts()
        records = self.audit.records()
        reviews = self._reviews(client, policy, facts, records)
        if request_id:
            reviews = [review for review in reviews if review.request.id.startswith(request_id)]
            if len(reviews) != 1:  # as ``code_requests.reviews`` says it
                raise FedimgError(f"site {self.name}: {len(reviews)} requests match {request_id!r}")
        split_counts = self._dataset_info(client).get("split_counts", {})
        keys = self._verify_keys()
        answered = [
            self._request(
                review, policy, facts, split_counts, records, keys.get(review.request.requester.lower(), "")
            )
            for review in reviews
        ]
        if request_id:
            for review in reviews:
                self.audit.append(
                    "review",
                    request_id=review.request.id,
                    requester=review.request.requester,
                    checks=review.checks,
                    code_sha256=review.request.code_sha256,
                    by=session.owner,
                    via=VIA,
                )
        return {"ok": True, "site": self.name, "sandbox": self._sandbox(), "requests": answered}

    def _request(
        self,
        review: RequestReview,
        policy: SitePolicy,
        facts: dict[str, RequestFacts],
        split_counts: dict[str, int],
        records: list[dict],
        verify_key: str,
    ) -> dict[str, Any]:
        request = review.request
        fact = facts.get(request.id) or RequestFacts("", "", request.requester)
        status = str(getattr(request, "status", "PENDING"))
        runs = self._runs(request.output_policy_kwargs, fact.code_id)
        spent, budget = self._epsilon(verify_key)
        summary = summarize_request(review, policy, SiteFacts(split_counts, spent, budget))
        return {
            "id": request.id,
            "short_id": request.id[:8],
            "requester": request.requester,
            "function_name": request.function_name,
            "status": status,
            "state": request_state(status, runs["approved"], runs["used"]),
            "deny_reason": _deny_reason(records, request.id) if status == "REJECTED" else "",
            "purpose": str(getattr(request, "purpose", "") or ""),
            "created": fact.created,
            "code": request.code,
            "code_sha256": request.code_sha256,
            "checks": [
                {"name": name, "ok": bool(ok), "explanation": explain_check(name)}
                for name, ok in review.checks.items()
            ],
            "template": {
                "id": review.template.template_id,
                "matches": bool(review.template.matches),
                "diff": review.template.diff,
            },
            "findings": [
                {
                    "line": finding.line,
                    "column": finding.column,
                    "severity": finding.severity,
                    "rule": finding.rule,
                    "message": finding.message,
                }
                for finding in review.static.findings
            ],
            "summary": summary.to_dict(),
            "runs": runs,
            "auto_approvable": bool(review.auto_approvable),
        }

    def decide(self, client: Any, session: OwnerSession, request: dict[str, Any]) -> dict[str, Any]:
        """Approve or deny one pending request as the signed-in owner, through ``review_with``.

        Deny needs a reason (the researcher reads it); approving while a check fails needs
        ``force`` and a reason, both recorded in the site's ``decision`` record.
        """
        request_id = (request.get("request_id") or "").strip()
        decision = request.get("decision")
        reason = (request.get("reason") or "").strip()
        force = bool(request.get("force"))
        if not request_id:
            raise FedimgError("decide: give request_id (the request's id or its short id)")
        if decision not in ("approve", "deny"):
            raise FedimgError(f"decide: decision must be 'approve' or 'deny' (got {decision!r})")
        if decision == "deny" and not reason:
            raise FedimgError("deny needs a reason: the researcher reads it")
        if decision == "approve" and force and not reason:
            raise FedimgError("an override needs a reason: it is recorded with the forced approval")
        policy = load_review_policy(self.state_dir, None)
        lines: list[str] = []
        note = {"via": VIA, **({"reason": reason} if decision == "approve" and reason else {})}
        try:
            with site_note(**note):
                review_with(
                    client,
                    policy,
                    self.audit,
                    self.name,
                    decision,
                    request_id,
                    reason or None,
                    force and decision == "approve",
                    lines.append,
                    session.owner,
                )
        except FedimgError as exc:
            return {"ok": False, "error": str(exc), "lines": lines}
        try:  # the next page reads the reviews again: read them now, not while the owner waits for it
            self._reviews(client, policy, self._request_facts(), self.audit.records())
        except Exception:  # noqa: BLE001 - the decision is made; the page reads them itself
            log.exception("console: reading the reviews after a decision failed")
        return {"ok": True, "lines": lines}

    def _reviews(
        self, client: Any, policy: SitePolicy, facts: dict[str, RequestFacts], records: list[dict]
    ) -> list[RequestReview]:
        """Every request's review (``code_requests.reviews``), read again only when something changed.

        Reading them costs PySyft a few calls per request (~0.1 s each on a small machine), so
        the result is kept while the site's requests, its last decision (every decision is
        recorded by the site, ``decisions``) and the review policy stay the same, for at most
        ``REVIEWS_CACHE_S``.
        """
        last_decision = next((r.get("hash") for r in reversed(records) if r.get("event") == "decision"), None)
        key = (tuple(sorted(facts)), last_decision, policy)
        now = time.monotonic()
        with self._lock:
            if self._cached_reviews is not None:
                at, cached_key, cached = self._cached_reviews
                if cached_key == key and now - at < REVIEWS_CACHE_S:
                    return cached
        try:
            reviews = code_requests.reviews(client, policy, status=None)
        except FedimgError as exc:
            raise FedimgError(f"site {self.name}: {exc}") from None
        with self._lock:
            self._cached_reviews = (now, key, reviews)
        return reviews

    # --- jobs --------------------------------------------------------------------------------

    def jobs(self, client: Any) -> dict[str, Any]:
        """Every request with its runs: used of approved, each run's outcome, the ε it spent."""
        facts = self._request_facts()
        records = self.audit.records()
        policy = load_review_policy(self.state_dir, None)
        found = [review.request for review in self._reviews(client, policy, facts, records)]
        by_code: dict[str, list[dict]] = {}
        for record in records:
            if record.get("event") in RUN_EVENTS and record.get("code_id"):
                by_code.setdefault(str(record["code_id"]), []).append(record)
        jobs = []
        for request in found:
            fact = facts.get(request.id) or RequestFacts("", "", request.requester)
            runs = self._runs(request.output_policy_kwargs, fact.code_id)
            mine = by_code.get(fact.code_id, []) if fact.code_id else []
            status = str(getattr(request, "status", "PENDING"))
            jobs.append(
                {
                    "id": request.id,
                    "short_id": request.id[:8],
                    "requester": request.requester,
                    "function_name": request.function_name,
                    "state": request_state(status, runs["approved"], runs["used"]),
                    "runs": runs,
                    "epsilon_spent": self._job_epsilon(mine),
                    "outcomes": run_outcomes(mine),
                }
            )
        return {"ok": True, "site": self.name, "jobs": jobs}

    def _job_epsilon(self, records: list[dict]) -> float | None:
        """ε of this job's releases alone (the ledger's accountant over them); None without DP."""
        privacy = self.policy.privacy
        if privacy is None:
            return None
        entries = [
            (float(r["noise_multiplier"]), float(r.get("sample_rate", 1.0)), int(r.get("steps", 1)))
            for r in records
            if r.get("event") == "release" and r.get("noise_multiplier")
        ]
        return round(epsilon_of(entries, privacy.delta), 4) if entries else 0.0

    # --- researchers ---------------------------------------------------------------------------

    def researchers(self) -> dict[str, Any]:
        """Every researcher account (disabled ones too), its requests and ε spent of its budget here."""
        requests_by: dict[str, int] = {}
        for fact in self._request_facts().values():
            requests_by[fact.requester] = requests_by.get(fact.requester, 0) + 1
        answered = []
        for user in self._users():
            role = getattr(getattr(user, "role", None), "name", "")
            if role not in (RESEARCHER_ROLE, DISABLED_ROLE):
                continue
            spent, budget = self._epsilon(str(user.verify_key))
            answered.append(
                {
                    "email": user.email,
                    "name": user.name or "",
                    "role": role,
                    "disabled": role == DISABLED_ROLE,
                    "requests": requests_by.get(user.email, 0),
                    "epsilon_spent": spent,
                    "epsilon_budget": budget,
                }
            )
        answered.sort(key=lambda row: (row["disabled"], row["email"]))
        return {"ok": True, "site": self.name, "researchers": answered}

    def researcher_add(self, client: Any, request: dict[str, Any]) -> dict[str, Any]:
        """Create a researcher (DATA_SCIENTIST) account with the owner's client (the site audits it)."""
        email = (request.get("email") or "").strip()
        name = (request.get("name") or "").strip()
        password = request.get("password") or ""
        problem = email_problem(email)
        if problem:
            raise FedimgError(f"email {email!r}: {problem}")
        if not name:
            raise FedimgError("name: give the researcher's full name (their requests are shown with it)")
        if len(password) < MIN_PASSWORD_CHARS:
            raise FedimgError(f"password: at least {MIN_PASSWORD_CHARS} characters")
        if any(user.email.lower() == email.lower() for user in self._users()):
            raise FedimgError(f"{email} already has an account at site {self.name}; nothing was changed")
        try:  # the owner's client: the site records the account under the owner's name
            site_admin.ensure_researcher(client, email=email, name=name, password=password)
        except Exception as exc:  # PySyft's refusal, in its words
            raise FedimgError(f"site {self.name}: cannot create {email}: {_syft_message(exc)}") from None
        return {
            "ok": True,
            "site": self.name,
            "email": email,
            "lines": [f"{email}: researcher account created"],
        }

    def researcher_disable(self, client: Any, session: OwnerSession, email: str) -> dict[str, Any]:
        """Disable a researcher: the account becomes a GUEST, which the site serves nothing.

        The site's gate refuses every call of a GUEST (``access``: "serves nothing without a
        login"), so the researcher can neither log in again nor use a session already open,
        nor run approved code; the account and its history stay (the audit names it).
        A data owner may change a researcher's role but not their password (PySyft 0.9.5).
        """
        from syft.service.user.user_roles import ServiceRole

        email = email.strip()
        user = next((u for u in self._users() if u.email.lower() == email.lower()), None)
        role = getattr(getattr(user, "role", None), "name", "")
        if user is None:
            raise FedimgError(f"site {self.name}: no account {email!r}")
        if role == DISABLED_ROLE:
            return {
                "ok": True,
                "site": self.name,
                "email": user.email,
                "lines": [f"{email}: already disabled"],
            }
        if role != RESEARCHER_ROLE:
            raise FedimgError(
                f"{email} is a {role} account, not a researcher's: the console disables researchers"
            )
        try:
            _quiet(lambda: client.api.services.user.update(uid=user.id, role=ServiceRole.GUEST))
        except Exception as exc:
            raise FedimgError(f"site {self.name}: cannot disable {email}: {_syft_message(exc)}") from None
        log.info("console: %s disabled researcher %s", session.owner, email)
        return {"ok": True, "site": self.name, "email": user.email, "lines": [f"{email}: disabled"]}

    # --- dataset -------------------------------------------------------------------------------

    def dataset(self, client: Any) -> dict[str, Any]:
        """The dataset: name, version, checksum of its files, counts per split and label, mock images."""
        info = self._dataset_info(client)
        names = sorted(info.get("label_map", {}), key=lambda label: info["label_map"][label])
        labels = {
            split: {names[index]: int(count) for index, count in enumerate(counts) if index < len(names)}
            for split, counts in (info.get("label_counts") or {}).items()
        }
        return {
            "ok": True,
            "site": self.name,
            "dataset": info.get("name", ""),
            "version": str(info.get("version", "")),
            "checksum": self._checksum_status(),
            "splits": {split: int(count) for split, count in (info.get("split_counts") or {}).items()},
            "labels": labels,
            "mocks": self._mocks(names),
        }

    def _dataset_info(self, client: Any) -> dict[str, Any]:
        """The fedimg dataset's published info (and its ``name``), re-read every ``DATASET_CACHE_S``."""
        with self._lock:
            if self._dataset is not None and time.monotonic() - self._dataset[0] < DATASET_CACHE_S:
                return self._dataset[1]
        info: dict[str, Any] = {}
        for dataset in client.datasets:
            if dataset.name.startswith(DATASET_PREFIX):
                description = dataset.description
                text = description.text if hasattr(description, "text") else str(description)
                info = {**(parse_dataset_info(text) or {}), "name": dataset.name}
                break
        with self._lock:
            self._dataset = (time.monotonic(), info)
        return info

    def _checksum_status(self) -> dict[str, Any]:
        """Every asset-map file against its index's sha256 (hashed again once a file's size or time moves)."""
        directory = maps_dir(self.state_dir)
        try:
            signature = tuple(
                (entry.name, stat.st_size, stat.st_mtime_ns)
                for entry in sorted(directory.iterdir())
                for stat in (entry.stat(),)
            )
        except OSError as exc:
            return {"ok": False, "detail": f"{directory}: cannot read ({exc.strerror})"}
        with self._lock:
            if self._checksum is not None and self._checksum[0] == signature:
                return self._checksum[1]
        problems = verify_asset_maps(self.state_dir)
        files = sum(1 for name, _, _ in signature if name.endswith(".npy"))
        verdict = {
            "ok": not problems,
            "detail": "; ".join(problems) if problems else f"{files} files match their sha256 in the index",
        }
        with self._lock:
            self._checksum = (signature, verdict)
        return verdict

    def _mocks(self, names: list[str]) -> list[dict[str, str]]:
        """Up to ``MAX_MOCKS`` mock training images (the generated twin, never a private one) as PNGs."""
        try:
            index = load_asset_index(self.state_dir)
        except FedimgError:
            log.exception("console: the asset-map index is unreadable")
            return []
        by_asset = {entry.asset: entry for entry in index.values()}
        images, labels = by_asset.get("train_images"), by_asset.get("train_labels")
        if images is None or labels is None:
            return []
        pixels, classes = open_map(images, mock=True), np.asarray(open_map(labels, mock=True))
        picked = pick_per_label(classes, MAX_MOCKS)
        return [
            {
                "label": names[int(classes[i])] if int(classes[i]) < len(names) else str(int(classes[i])),
                "png": base64.b64encode(png_bytes(np.asarray(pixels[i]))).decode(),
            }
            for i in picked
        ]

    # --- audit and health --------------------------------------------------------------------

    def audit_records(self, request: dict[str, Any]) -> dict[str, Any]:
        """The audit log newest first, filtered, with the chain's verification."""
        limit = request.get("limit")
        limit = DEFAULT_AUDIT_LIMIT if limit is None else max(0, int(limit))
        problems = verify_audit_log(self.audit.path)
        request_id = (request.get("request_id") or "").strip()
        code_ids = (
            {fact.code_id for rid, fact in self._request_facts().items() if rid.startswith(request_id)}
            if request_id
            else set()
        )
        researcher = (request.get("researcher") or "").strip().lower()
        keys = self._verify_keys()
        # run records name the researcher by their account's verify key: an e-mail finds those too
        people = {researcher, keys.get(researcher, "").lower()} - {""} if researcher else set()
        matching = filter_records(
            self.audit.records(),
            people=people,
            request_id=request_id,
            code_ids=code_ids - {""},
            kind=(request.get("kind") or "").strip(),
        )
        matching.reverse()
        emails = {key.lower(): email for email, key in keys.items()}
        return {
            "ok": True,
            "site": self.name,
            "chain": {"ok": not problems, "problems": [f"line {p.line}: {p.message}" for p in problems]},
            "total": len(matching),
            "records": [with_researcher_email(record, emails) for record in matching[:limit]],
        }

    def health(self) -> dict[str, Any]:
        """Running, HTTP answering, the sandbox (loud when off), disk use, when the site started."""
        status = self.status()
        return {
            "ok": True,
            "site": self.name,
            "pid": os.getpid(),
            "http": bool(status.get("http")),
            "sandbox": self._sandbox(),
            "warning": "" if self.policy.sandbox.confined else UNCONFINED_WARNING,
            "started": self.started,
            "disk": {
                "state_dir_bytes": folder_bytes(self.state_dir),
                "free_bytes": shutil.disk_usage(self.state_dir).free,
            },
            "dataset": str(status.get("dataset") or status.get("problem") or ""),
        }

    # --- shared lookups ------------------------------------------------------------------------

    def _sandbox(self) -> str:
        return "on" if self.policy.sandbox.confined else "OFF (unconfined)"

    def _runs(self, output_policy_kwargs: Mapping[str, Any], code_id: str) -> dict[str, int]:
        limit = output_policy_kwargs.get("limit")
        return {
            "approved": int(limit) if isinstance(limit, int) else 0,
            "used": self.enforcer.runs(code_id) if code_id else 0,
        }

    def _epsilon(self, verify_key: str) -> tuple[float | None, float | None]:
        """ε the researcher spent at this site and their budget; (None, None) when the site has no DP.

        The ledger knows a researcher by their account's verify key (what their code carries).
        """
        privacy = self.policy.privacy
        if privacy is None:
            return None, None
        spent = self.enforcer.ledger.spent(verify_key) if verify_key else 0.0
        return round(spent, 4), float(privacy.budget_epsilon)

    def _verify_keys(self) -> dict[str, str]:
        """Each account's verify key, by e-mail (lower case)."""
        return {str(user.email).lower(): str(user.verify_key) for user in self._users()}

    def _request_facts(self) -> dict[str, RequestFacts]:
        """Each request's code id, submission time and requester, from the site's request store."""
        stash = self.worker.services.request.stash
        facts = {}
        for request in stash.get_all(self.worker.verify_key, has_permission=True).unwrap():
            try:
                code_id = str(request.code_id)
            except Exception:  # noqa: BLE001 - a request without code is not the console's
                continue
            stamp = getattr(getattr(request, "request_time", None), "utc_timestamp", None)
            facts[str(request.id)] = RequestFacts(
                code_id, iso_time(stamp) if stamp else "", str(request.requesting_user_email or "")
            )
        return facts

    def _users(self) -> list[Any]:
        stash = self.worker.services.user.stash
        return list(stash.get_all(self.worker.verify_key, has_permission=True).unwrap())


def request_state(status: str, approved: int, used: int) -> str:
    """Where a request stands for the console: pending, denied, approved, running or done.

    Parameters
    ----------
    status : str
        PySyft's status: ``"PENDING"``, ``"APPROVED"`` or ``"REJECTED"``.
    approved, used : int
        Runs approved and runs counted.

    Returns
    -------
    str
        ``"pending"``, ``"denied"``, ``"approved"`` (no run yet), ``"running"`` or ``"done"``.

    Examples
    --------
    >>> [request_state("APPROVED", 3, used) for used in (0, 1, 3)]
    ['approved', 'running', 'done']
    >>> request_state("REJECTED", 3, 0), request_state("PENDING", 3, 0)
    ('denied', 'pending')
    """
    if status == "REJECTED":
        return "denied"
    if status != "APPROVED":
        return "pending"
    if used <= 0:
        return "approved"
    return "running" if used < approved else "done"


def run_outcomes(records: Iterable[dict]) -> list[dict[str, Any]]:
    """Each run of a job and how it ended, from its audit records (oldest first).

    A run is its ``started`` record and the record that ended it (``release``, ``refusal``,
    ``execution`` (errored), ``aborted``), matched by ``run_id``; a refusal before any run
    started is an outcome of its own.

    Parameters
    ----------
    records : iterable of dict
        The job's audit records (same code id), oldest first.

    Returns
    -------
    list of dict
        ``{"run_id", "time", "outcome", "rule", "detail"}``; ``outcome`` is released,
        refused, aborted, errored, or started (no end yet).

    Examples
    --------
    >>> records = [
    ...     {"event": "started", "run_id": "r1", "time": 0.0, "run": 1},
    ...     {"event": "release", "run_id": "r1", "time": 1.0, "run": 1, "bytes": 4096},
    ...     {"event": "refusal", "time": 2.0, "reason": "this code has run 3 of the 3 times"},
    ... ]
    >>> [(o["outcome"], o["rule"]) for o in run_outcomes(records)]
    [('released', ''), ('refused', 'this code has run 3 of the 3 times')]
    """
    runs: dict[str, dict[str, Any]] = {}
    outcomes: list[dict[str, Any]] = []
    for record in records:
        event = record.get("event")
        if event not in RUN_EVENTS:
            continue
        run_id = str(record.get("run_id") or "")
        outcome = {
            "run_id": run_id,
            "time": iso_time(float(record.get("time", 0.0))),
            "outcome": RUN_EVENTS[str(event)],
            "rule": str(record.get("reason") or record.get("rule") or "") if event == "refusal" else "",
            "detail": _run_detail(record),
        }
        if run_id and run_id in runs:
            if event != "started":
                runs[run_id].update(outcome)  # the run's end replaces its start
            continue
        if run_id:
            runs[run_id] = outcome
        outcomes.append(outcome)
    return outcomes


def _run_detail(record: dict) -> str:
    parts = [f"run {record['run']}" if record.get("run") else ""]
    if record.get("event") == "release":
        parts.append(f"{int(record.get('bytes', 0)):,} bytes of weights")
        if record.get("epsilon_spent") is not None:
            parts.append(f"ε spent by the researcher here {record['epsilon_spent']}")
    elif record.get("event") == "aborted":
        parts.append(str(record.get("reason") or ""))
    elif record.get("event") == "execution":
        parts.append("the code raised an error (details in the site's log)")
    return "; ".join(part for part in parts if part)


def filter_records(
    records: list[dict], *, people: set[str], request_id: str, code_ids: set[str], kind: str
) -> list[dict]:
    """The audit records the console's filters keep, in log order.

    Parameters
    ----------
    records : list of dict
        The audit log's records.
    people : set of str
        A researcher's e-mail and verify key, in lower case: kept when a field naming a person
        (requester, researcher, researcher_email, email, user) is one of them (case aside);
        empty keeps all.
    request_id : str
        A request id or its start: kept when the record's ``request_id`` starts with it, or
        its ``code_id`` is in ``code_ids`` (the runs of that request); "" keeps all.
    code_ids : set of str
        The code ids of the requests ``request_id`` names.
    kind : str
        An event name; "" keeps all.

    Returns
    -------
    list of dict
        The matching records.

    Examples
    --------
    >>> records = [
    ...     {"event": "decision", "request_id": "ab12", "researcher_email": "ada@uni.example"},
    ...     {"event": "release", "code_id": "cd34", "researcher": "ada@uni.example"},
    ...     {"event": "owner", "email": "grace@hospital.example"},
    ... ]
    >>> keep = filter_records(
    ...     records, people={"ada@uni.example"}, request_id="ab", code_ids={"cd34"}, kind=""
    ... )
    >>> [r["event"] for r in keep]
    ['decision', 'release']
    >>> owners = filter_records(records, people=set(), request_id="", code_ids=set(), kind="owner")
    >>> [r["event"] for r in owners]
    ['owner']
    """
    kept = []
    for record in records:
        if kind and record.get("event") != kind:
            continue
        if people and not any(str(record.get(key, "")).lower() in people for key in PERSON_FIELDS):
            continue
        if request_id and not (
            str(record.get("request_id") or "").startswith(request_id)
            or str(record.get("code_id") or "") in code_ids
        ):
            continue
        kept.append(record)
    return kept


def with_researcher_email(record: dict, emails: Mapping[str, str]) -> dict:
    """The record with ``researcher_email`` added when it names a researcher by their verify key.

    The record itself is kept as written (its hash chain covers it); the console shows the
    e-mail instead of the key to a reader who does not know which key is whose.

    Parameters
    ----------
    record : dict
        An audit record.
    emails : mapping
        Account e-mail by verify key (lower case).

    Returns
    -------
    dict
        A copy with ``researcher_email`` when its ``researcher`` is a known key and it had none.

    Examples
    --------
    >>> with_researcher_email({"event": "release", "researcher": "AB12"}, {"ab12": "ada@uni.example"})
    {'event': 'release', 'researcher': 'AB12', 'researcher_email': 'ada@uni.example'}
    >>> with_researcher_email({"event": "owner", "email": "g@h.example"}, {"ab12": "ada@uni.example"})
    {'event': 'owner', 'email': 'g@h.example'}
    """
    email = emails.get(str(record.get("researcher") or "").lower())
    if email is None or record.get("researcher_email"):
        return record
    return {**record, "researcher_email": email}


def pick_per_label(labels: np.ndarray, count: int) -> list[int]:
    """Up to ``count`` indices, taken in turn from each label (so every label shows), in index order.

    Examples
    --------
    >>> pick_per_label(np.array([0, 0, 0, 1, 2, 2]), 4)
    [0, 1, 3, 4]
    """
    queues = {int(label): list(np.flatnonzero(labels == label)) for label in np.unique(labels)}
    picked: list[int] = []
    while len(picked) < count and any(queues.values()):
        for queue in queues.values():
            if queue and len(picked) < count:
                picked.append(int(queue.pop(0)))
    return sorted(picked)


def png_bytes(image: np.ndarray) -> bytes:
    """One image (``CHW`` or ``HW`` uint8, 1 or 3 channels) as PNG bytes.

    Examples
    --------
    >>> png_bytes(np.zeros((1, 4, 4), np.uint8))[:8]
    b'\\x89PNG\\r\\n\\x1a\\n'
    """
    pixels = np.asarray(image)
    if pixels.ndim == 3:
        pixels = pixels[0] if pixels.shape[0] == 1 else np.moveaxis(pixels[:3], 0, -1)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels.astype(np.uint8))).save(buffer, format="PNG")
    return buffer.getvalue()


def iso_time(stamp: float) -> str:
    """A Unix time as ISO 8601 in UTC, to the second.

    Examples
    --------
    >>> iso_time(0.0)
    '1970-01-01T00:00:00+00:00'
    """
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")


def folder_bytes(folder: Path) -> int:
    """The bytes of every file under ``folder`` (links not followed; unreadable entries skipped).

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "a").write_bytes(b"x" * 10)
    >>> folder_bytes(folder)
    10
    """
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def _deny_reason(records: list[dict], request_id: str) -> str:
    """The reason of the request's last denial, as the site recorded it (what the researcher reads)."""
    for record in reversed(records):
        if record.get("event") == "decision" and record.get("request_id") == request_id:
            return str(record.get("reason") or "") if record.get("decision") == "denied" else ""
    return ""


def _quiet(call: Callable[[], Any]) -> Any:
    """A PySyft call without its printed banners; a returned SyftError raised."""
    with contextlib.redirect_stdout(io.StringIO()):
        result = call()
    if type(result).__name__ == "SyftError":
        raise FedimgError(str(getattr(result, "message", result)))
    return result


def _syft_message(exc: Exception) -> str:
    return str(getattr(exc, "public_message", None) or exc).strip().splitlines()[0][:300]
