"""What a site answers on its owner channel, in its own process with its own PySyft services.

No HTTP and no login round trip: the shared admin's requests run with a client of the
site's own server (its root key: the site's audit records them as the shared admin,
as before), a named owner's with a client holding that owner's key once their
password has been checked against the site's user store (the audit names them).
A wrong password, an unknown e-mail or an account that is not an owner get the same
refusal, recorded as an ``owner`` event with ``action: "login refused"``. A review
runs ``review_command.review_with``: the same checks, template comparison and
audit as ``fedimg review`` over HTTP.

``fedimg console`` signs an owner in with ``owner_login`` (the same password check,
throttled per account and address like the site's HTTP logins, each sign-in and refusal
audited) and gets a site token (``owner_tokens``); each ``console`` request with a valid
token is answered by ``console_answers`` with a client holding that owner's key. The
account is looked up again on every request: an owner demoted or removed since signing in
is signed out.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from datasite_setup.errors import FedimgError
from datasite_setup.site import site_admin
from datasite_setup.site.login_throttle import Lockout, LoginThrottle, locked_message
from datasite_setup.site.owner_channel.console_answers import VIA as CONSOLE_VIA
from datasite_setup.site.owner_channel.console_answers import ConsoleAnswers
from datasite_setup.site.owner_channel.owner_tokens import OwnerSession, OwnerTokens
from datasite_setup.site.owner_channel.server import Peer
from datasite_setup.site.owners import OWNER_ROLES
from datasite_setup.site.review_command import SHARED_ADMIN, load_review_policy, review_with
from policies import AUDIT_FILE, UNCONFINED_WARNING, AuditLog, SitePolicy

log = logging.getLogger("fedimg.owner_channel")
VIA = "owner channel"
SIGNED_OUT = "signed out: sign in to the console again"


class SiteAnswers:
    """The owner channel's answers for one running site.

    Parameters
    ----------
    worker : syft Datasite
        The site's server, in this process.
    name : str
        The site's name.
    state_dir : Path
        Its state dir (audit log, ``policy.toml``).
    policy : SitePolicy
        The policy the site runs with (its sandbox is what ``status`` reports).
    url : str
        Where the site serves HTTP (``status`` checks that it answers).
    started : float or None
        When the site started (Unix time; the console's "last restart"); None: now.
    """

    def __init__(
        self,
        worker: Any,
        name: str,
        state_dir: Path,
        policy: SitePolicy,
        url: str,
        started: float | None = None,
    ) -> None:
        self.worker, self.name, self.state_dir, self.policy, self.url = worker, name, state_dir, policy, url
        self.audit = AuditLog(state_dir / AUDIT_FILE)
        self.started = time.time() if started is None else started
        self.tokens = OwnerTokens()
        self.throttle = LoginThrottle(policy.limits)
        self.console_answers = ConsoleAnswers(
            worker, name, state_dir, policy, self.audit, self.status, self.started
        )
        self._clients: dict[str, Any] = {}  # verify key -> client of this server
        self._stand_in: list[
            str
        ] = []  # a bcrypt hash, checked for an unknown e-mail (same time as a wrong one)
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Build the shared admin's in-process client once, before the first request."""
        self._client(self.worker.signing_key)

    def answer(self, request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """The answer to a checked request (``protocol.check_request``) from ``peer``.

        Parameters
        ----------
        request : dict
            ``{"action": "ping" | "status" | "review" | "owner_login" | "owner_logout" | "console", ...}``.
        peer : Peer
            Who asks (logged; recorded with a refused owner login).

        Returns
        -------
        dict
            ``{"ok": true, ...}``, or ``{"ok": false, "error": ..., "lines": [...]}`` for a refusal.
        """
        action = request["action"]
        if action == "ping":
            return {"ok": True, "site": self.name, "pid": os.getpid()}
        if action == "status":
            return self.status()
        if action == "owner_login":
            return self.owner_login(request, peer)
        if action == "owner_logout":
            self.tokens.drop(request.get("token"))
            return {"ok": True}
        if action == "console":
            return self.console(request)
        return self.review(request, peer)

    def status(self) -> dict[str, Any]:
        """``fedimg status`` of this site: pid, whether HTTP answers, its dataset and sandbox."""
        confined = self.policy.sandbox.confined
        answer: dict[str, Any] = {
            "ok": True,
            "site": self.name,
            "pid": os.getpid(),
            "http": site_admin.is_answering(self.url, timeout=2.0),
            "sandbox": "on" if confined else "OFF (unconfined)",
            "warning": "" if confined else UNCONFINED_WARNING,
        }
        try:
            summaries = site_admin.dataset_summaries(self._client(self.worker.signing_key))
        except Exception as exc:  # reported like the HTTP path: the site runs, its dataset is unreadable
            log.exception("owner channel: reading the datasets failed")
            answer["problem"] = f"{type(exc).__name__}: {exc}"
            return answer
        if summaries:
            answer["dataset"], answer["split_counts"] = summaries[0].name, summaries[0].split_counts
        return answer

    def review(self, request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """One ``fedimg review`` action, as the shared admin or a named owner whose password is checked."""
        lines: list[str] = []
        try:
            owner = request.get("owner")
            if owner:
                client = self._owner_client(owner, request.get("password") or "", peer)
                decider = owner
            else:
                client, decider = self._client(self.worker.signing_key), SHARED_ADMIN
            policy_file = request.get("policy_file")
            policy = load_review_policy(self.state_dir, Path(policy_file) if policy_file else None)
            review_with(
                client,
                policy,
                self.audit,
                self.name,
                request["review"],
                request.get("request_id"),
                request.get("reason"),
                bool(request.get("force")),
                lines.append,
                decider,
            )
        except FedimgError as exc:
            return {"ok": False, "error": str(exc), "lines": lines}
        return {"ok": True, "lines": lines}

    def owner_login(self, request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """Sign an owner in for ``fedimg console``: their password checked, a site token issued.

        Throttled per (e-mail, address) like the site's HTTP logins: a locked attempt costs
        no password check and gets the same answer whether the account exists or not; a
        lock is audited once (``login_lockout``).
        """
        email, password = request.get("owner") or "", request.get("password") or ""
        address = request.get("address") or ""
        attempt = self.throttle.begin(email, address or None)
        if not attempt.admitted:
            return {"ok": False, "error": f"site {self.name}: {locked_message(attempt.wait)}"}
        ok: bool | None = None
        try:
            user = self._checked_owner(email, password, peer, via=CONSOLE_VIA, address=address)
            ok = True
        except FedimgError as exc:
            ok = False
            return {"ok": False, "error": str(exc)}
        finally:
            for lockout in self.throttle.finish(attempt, ok):
                self._record_lockout(lockout)
        token, expires = self.tokens.issue(user.email, user.name or "", user.signing_key)
        self.audit.append(
            "owner",
            action="console sign-in",
            email=user.email,
            name=user.name,
            via=CONSOLE_VIA,
            address=address,
            peer_pid=peer.pid,
            peer_uid=peer.uid,
        )
        return {
            "ok": True,
            "site": self.name,
            "owner": user.email,
            "name": user.name or "",
            "token": token,
            "expires": expires,
        }

    def console(self, request: dict[str, Any]) -> dict[str, Any]:
        """One ``fedimg console`` request, with a client holding the signed-in owner's key."""
        session = self.tokens.session(request.get("token"))
        if session is None:
            return {"ok": False, "error": f"site {self.name}: {SIGNED_OUT}", "signed_out": True}
        if not self._still_owner(session):
            self.tokens.drop(request.get("token"))
            return {
                "ok": False,
                "error": f"site {self.name}: {session.owner} is no longer an owner here; {SIGNED_OUT}",
                "signed_out": True,
            }
        return self.console_answers.answer(request, self._client(session.signing_key), session)

    def _still_owner(self, session: OwnerSession) -> bool:
        """Whether the signed-in account still exists with the same key and an owner's role."""
        user = self._user(session.owner)
        role = getattr(getattr(user, "role", None), "name", None)
        key = str(getattr(user, "verify_key", ""))
        return user is not None and role in OWNER_ROLES and key == str(session.signing_key.verify_key)

    def _record_lockout(self, lockout: Lockout) -> None:
        log.warning(
            "owner channel: console sign-ins: %s %s locked for %.0f s after %d failures",
            lockout.kind,
            lockout.value,
            lockout.seconds,
            lockout.failures,
        )
        self.audit.append("login_lockout", **lockout.audit_fields(), via=CONSOLE_VIA)

    def _owner_client(self, email: str, password: str, peer: Peer) -> Any:
        """A client with ``email``'s key once the password matches and the account is an owner."""
        return self._client(self._checked_owner(email, password, peer, via=VIA).signing_key)

    def _checked_owner(self, email: str, password: str, peer: Peer, *, via: str, address: str = "") -> Any:
        """``email``'s account once the password matches and it is an owner; a refusal is audited."""
        from syft.service.user.user import check_pwd, salt_and_hash_password

        user = self._user(email)
        hashed = getattr(user, "hashed_password", None)
        role = getattr(getattr(user, "role", None), "name", None)
        if user is None or not hashed:
            if not self._stand_in:  # an unknown e-mail takes the time of a wrong password
                self._stand_in.append(salt_and_hash_password("fedimg: no such account", 12)[1])
            check_pwd(password, self._stand_in[0])
            matches = False
        else:
            matches = check_pwd(password, hashed)
        if not matches or role not in OWNER_ROLES:
            where = {"address": address} if address else {}
            self.audit.append(
                "owner",
                action="login refused",
                email=email,
                via=via,
                **where,
                peer_pid=peer.pid,
                peer_uid=peer.uid,
            )
            log.warning("owner channel: login refused for %s (pid %s uid %s)", email, peer.pid, peer.uid)
            raise FedimgError(
                f"site {self.name}: cannot log in as owner {email} (wrong e-mail or password, "
                "or not an owner account: see 'fedimg owner add')"
            )
        return user

    def _user(self, email: str) -> Any:
        """The account with this e-mail, or None."""
        try:
            return self.worker.services.user.stash.get_by_email(
                credentials=self.worker.verify_key, email=email
            ).unwrap()
        except Exception:  # noqa: BLE001 - an unknown e-mail is refused like a wrong password
            return None

    def _client(self, signing_key: Any) -> Any:
        """A client of this server holding ``signing_key`` (built once per key: the API loads once)."""
        from syft.client.client import PythonConnection

        key = str(signing_key.verify_key)
        with self._lock:
            if key not in self._clients:
                connection = PythonConnection(server=self.worker)
                client = connection.get_client_type().unwrap()(connection=connection, credentials=signing_key)
                if client.api.refresh_api_callback is not None:
                    client.api.refresh_api_callback()
                self._clients[key] = client
            return self._clients[key]
