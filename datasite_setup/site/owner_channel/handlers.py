"""What a site answers on its owner channel, in its own process with its own PySyft services.

No HTTP and no login round trip: the shared admin's requests run with a client of the
site's own server (its root key: the site's audit records them as the shared admin,
as before), a named owner's with a client holding that owner's key once their
password has been checked against the site's user store (the audit names them).
A wrong password, an unknown e-mail or an account that is not an owner get the same
refusal, recorded as an ``owner`` event with ``action: "login refused"``. A review
runs ``review_command.review_with``: the same checks, template comparison and
audit as ``fedimg review`` over HTTP.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from datasite_setup.errors import FedimgError
from datasite_setup.site import site_admin
from datasite_setup.site.owner_channel.server import Peer
from datasite_setup.site.owners import OWNER_ROLES
from datasite_setup.site.review_command import SHARED_ADMIN, load_review_policy, review_with
from policies import AUDIT_FILE, UNCONFINED_WARNING, AuditLog, SitePolicy

log = logging.getLogger("fedimg.owner_channel")
VIA = "owner channel"


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
    """

    def __init__(self, worker: Any, name: str, state_dir: Path, policy: SitePolicy, url: str) -> None:
        self.worker, self.name, self.state_dir, self.policy, self.url = worker, name, state_dir, policy, url
        self.audit = AuditLog(state_dir / AUDIT_FILE)
        self._clients: dict[str, Any] = {}  # verify key -> client of this server
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Build the shared admin's in-process client once, before the first request."""
        self._client(self.worker.signing_key)

    def answer(self, request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """The answer to a checked request (``protocol.check_request``) from ``peer``.

        Parameters
        ----------
        request : dict
            ``{"action": "ping" | "status" | "review", ...}``.
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

    def _owner_client(self, email: str, password: str, peer: Peer) -> Any:
        """A client with ``email``'s key once the password matches and the account is an owner."""
        from syft.service.user.user import check_pwd

        user = None
        try:
            user = self.worker.services.user.stash.get_by_email(
                credentials=self.worker.verify_key, email=email
            ).unwrap()
        except Exception:  # noqa: BLE001 - an unknown e-mail is refused like a wrong password
            user = None
        hashed = getattr(user, "hashed_password", None)
        role = getattr(getattr(user, "role", None), "name", None)
        if user is None or not hashed or not check_pwd(password, hashed) or role not in OWNER_ROLES:
            self.audit.append(
                "owner", action="login refused", email=email, via=VIA, peer_pid=peer.pid, peer_uid=peer.uid
            )
            log.warning("owner channel: login refused for %s (pid %s uid %s)", email, peer.pid, peer.uid)
            raise FedimgError(
                f"site {self.name}: cannot log in as owner {email} (wrong e-mail or password, "
                "or not an owner account: see 'fedimg owner add')"
            )
        return self._client(user.signing_key)

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
