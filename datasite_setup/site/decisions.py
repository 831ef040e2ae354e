"""Owners' decisions on requests, recorded by the site itself whatever path they took (issue 11).

``install()`` is called by ``syft_patches.apply_syft_patches`` once per process.

In PySyft 0.9.5 every decision on a code request ends as one write: the code's
status (``UserCodeStatusCollection``) is updated through ``StatusStash.update``.
``request.approve()`` (``RequestService.apply``), ``request.deny(reason)``
(``RequestService.undo``), an admin changing the status directly
(``code_status.update``) and a status synced in all go through it, whether the
caller was ``fedimg review``, ``datasite_setup`` Python helpers, a notebook or a
plain PySyft admin client. So the site records its decisions there: when this
site's entry of the status changes (approved, denied, or a new reason), one
``decision`` record goes to ``<state_dir>/audit.jsonl``, naming

- the request and code (id, function, sha256 of the code), the decision and its reason;
- the deciding account: its e-mail, name and role, and ``shared_admin: true`` when it
  is the site's shared admin account rather than a named owner (``fedimg owner add``);
- the researcher: the code's owner (verify key, e-mail, name);
- what the client said about the decision when it said anything: ``fedimg review``
  passes ``fedimg={"forced": ..., "via": ...}`` to ``request.apply``, which PySyft
  hands to the server as the call's extra arguments.

A write that leaves the decision unchanged records nothing, so a decision is
recorded once however many layers saw it. The state dir is where ``open_datasite``
put the site's blob storage (``<state_dir>/blob``); a PySyft server that is not a
fedimg datasite records nothing.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

from policies import AUDIT_FILE, AuditLog

CLIENT_NOTE = "fedimg"
"""The extra argument of ``request.apply`` a client may describe its decision in (``forced``, ``via``)."""
_MARK = "_fedimg_decisions"
_deciding = threading.local()  # the request being decided on in this thread (request.apply / undo)
log = logging.getLogger("fedimg.audit")


def install() -> None:
    """Patch PySyft so that every decision on a request reaches the site's audit log; idempotent.

    Examples
    --------
    >>> install()
    >>> install()  # a second call changes nothing
    >>> from syft.service.code.status_service import StatusStash
    >>> getattr(StatusStash.update, "_fedimg_decisions", False)
    True
    """
    from syft.service.code.status_service import StatusStash
    from syft.service.request.request_service import RequestService

    if getattr(StatusStash.update, _MARK, False):
        return
    StatusStash.update = _mark(_wrap_status_update(StatusStash.update))
    RequestService.apply = _mark(_wrap_request_call(RequestService.apply, "apply"))
    RequestService.undo = _mark(_wrap_request_call(RequestService.undo, "undo"))


def _mark(wrapper: Any) -> Any:
    setattr(wrapper, _MARK, True)
    return wrapper


def _wrap_request_call(original: Any, action: str) -> Any:
    """``RequestService.apply`` / ``undo``: remember the request (and the client's note) while it runs."""

    @functools.wraps(original)  # syft finds service methods by their qualified name
    def call(self: Any, context: Any, uid: Any, *args: Any, **kwargs: Any) -> Any:
        note = kwargs.get(CLIENT_NOTE) if action == "apply" else None
        _deciding.request = {"request_id": str(uid), "note": note if isinstance(note, dict) else {}}
        try:
            return original(self, context, uid, *args, **kwargs)
        finally:
            _deciding.request = None

    return call


def _wrap_status_update(original: Any) -> Any:
    @functools.wraps(original)
    def update(self: Any, credentials: Any, obj: Any, *args: Any, **kwargs: Any) -> Any:
        before = _this_site_decision(self, _stored(self, obj))
        result = original(self, credentials, obj, *args, **kwargs)
        if result.is_ok():
            after = _this_site_decision(self, result.ok())
            if after is not None and after != before:
                _record(self, credentials, result.ok(), after)
        return result

    return update


def _stored(stash: Any, status: Any) -> Any:
    """The status as stored before this write (None for a partial update or a missing one)."""
    try:
        return stash.get_by_uid(stash.root_verify_key, status.id).unwrap()
    except Exception:  # noqa: BLE001 - no earlier status: any decision now is new
        return None


def _this_site_decision(stash: Any, status: Any) -> tuple[str, str] | None:
    """This site's (status, reason) in a code's status collection; None when it holds none."""
    for identity, decision in (getattr(status, "status_dict", None) or {}).items():
        if str(identity.server_id) == str(stash.server_uid):
            return decision.status.name.lower(), decision.reason or ""
    return None


def _record(stash: Any, credentials: Any, status: Any, decision: tuple[str, str]) -> None:
    """Append the ``decision`` record; a failure is logged as an error (the decision stands)."""
    from syft.server.server import ServerRegistry

    server = ServerRegistry.server_for(stash.server_uid)
    audit = _audit_of(server)
    if audit is None:
        log.warning(
            "decision on code %s not audited: not a fedimg datasite", status.user_code_link.object_uid
        )
        return
    try:
        audit.append("decision", **_describe(server, stash, credentials, status, decision))
    except Exception:  # the status is written: failing the call now would hide a decision in force
        log.exception("site %s: the decision on code %s could not be audited", server.name, status.id)


def _audit_of(server: Any) -> AuditLog | None:
    """The site's audit log: its state dir holds the blob storage ``open_datasite`` set up."""
    try:
        blob = Path(server.blob_store_config.client_config.base_directory)
    except AttributeError:
        return None
    return AuditLog(blob.parent / AUDIT_FILE) if blob.name == "blob" else None


def _describe(server: Any, stash: Any, credentials: Any, status: Any, decision: tuple[str, str]) -> dict:
    root = stash.root_verify_key
    code_id = status.user_code_link.object_uid
    code = _quietly(lambda: server.services.user_code.stash.get_by_uid(root, code_id).unwrap())
    decider = _user(server, root, credentials)
    researcher = _user(server, root, status.user_verify_key)
    deciding = getattr(_deciding, "request", None) or {}
    request_id = deciding.get("request_id") or _request_of(server, root, code_id)
    verdict, reason = decision
    fields: dict[str, Any] = {
        "request_id": request_id,
        "code_id": str(code_id),
        "function": getattr(code, "service_func_name", None),
        "decision": verdict,
        "reason": reason,
        "by": getattr(decider, "email", None) or str(credentials),
        "by_name": getattr(decider, "name", None),
        "by_role": getattr(getattr(decider, "role", None), "name", None),
        "shared_admin": str(credentials) == str(root),
        "researcher": str(status.user_verify_key),
        "researcher_email": getattr(researcher, "email", None),
        "researcher_name": getattr(researcher, "name", None),
    }
    if code is not None:
        fields["code_sha256"] = hashlib.sha256(code.raw_code.encode()).hexdigest()
    note = deciding.get("note") or {}
    if "forced" in note:
        fields["forced"] = bool(note["forced"])
    if "via" in note:
        fields["via"] = str(note["via"])[:80]
    return fields


def _user(server: Any, root: Any, verify_key: Any) -> Any:
    return _quietly(lambda: server.services.user.stash.get_by_verify_key(root, verify_key).unwrap())


def _request_of(server: Any, root: Any, code_id: Any) -> str | None:
    """The latest request for ``code_id`` (a status changed without ``request.apply``/``undo``)."""
    found = _quietly(lambda: server.services.request.stash.get_by_usercode_id(root, code_id).unwrap())
    return str(sorted(found, key=lambda request: request.request_time)[-1].id) if found else None


def _quietly(read: Any) -> Any:
    """A lookup that names the decision better; the decision is recorded without it when it fails."""
    try:
        return read()
    except Exception:  # noqa: BLE001
        log.warning("decision record: a lookup failed", exc_info=True)
        return None
