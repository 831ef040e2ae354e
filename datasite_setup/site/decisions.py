"""Owners' decisions on requests and accounts, recorded by the site itself whatever path they took (issue 11).

``install()`` is called by ``syft_patches.apply_syft_patches`` once per process.

Requests. In PySyft 0.9.5 every decision on a code request ends as one write: the
code's status (``UserCodeStatusCollection``) is updated through ``StatusStash.update``.
``request.approve()`` (``RequestService.apply``), ``request.deny(reason)``
(``RequestService.undo``), an admin changing the status directly
(``code_status.update``) and a status synced in all go through it, whether the
caller was ``fedimg review``, ``datasite_setup`` Python helpers, a notebook or a
plain PySyft admin client. So the site records its decisions there: when this
site's entry of the status changes (approved, denied, or a new reason), one
``decision`` record goes to the site's audit log, naming

- the request and code (id, function, sha256 of the code), the decision and its reason;
- the deciding account: its e-mail, name and role, and ``shared_admin: true`` when it
  is the site's shared admin account rather than a named owner (``fedimg owner add``);
- the researcher: the code's owner (verify key, e-mail, name);
- what the client said about the decision when it said anything: ``fedimg review``
  passes ``fedimg={"forced": ..., "via": ...}`` to ``request.apply``, which PySyft
  hands to the server as the call's extra arguments; an approval may carry the
  owner's ``reason`` too (why a failing check was overridden). A decision the site's
  own process makes for an owner (``fedimg console``, over the owner channel) is
  described by the site itself (``site_note``), which takes precedence.

A write that leaves the decision unchanged records nothing, so a decision is
recorded once however many layers saw it.

Accounts. Every way a client changes who may log in and with what role is one of
``UserService``'s ``create``, ``update`` (role, e-mail, name, password of any account
an owner manages), ``delete`` and ``request_password_reset`` (a reset token for
another account); ``fedimg owner add``, ``ensure_researcher`` and a plain PySyft
admin client (``client.users.create``, ``client.api.services.user.update/delete``)
all call them. (``/register``, ``/forgot_password`` and ``/reset_password`` are
refused to every caller by ``http_guard``.) Each call is wrapped: the accounts are
read before and after it, and each account it created, changed or deleted gets one
``account`` record (``ACCOUNT_EVENT``) with ``action`` created, updated or deleted (or
``reset token issued``), the target's e-mail, name and role, for an update the
fields that ``changed`` and their ``previous_*`` values, and the acting account as
for a decision (``by``, ``by_name``, ``by_role``, ``shared_admin``). A password,
its hash or a reset token is never written: only that it changed. A call that
changes nothing, or fails, records nothing.

The audit log is the one ``syft_patches.register_enforcer`` registered for the
server in ``site_registry``; a datasite opened but not served by ``fedimg datasite
serve`` (no enforcer yet) falls back to ``<state_dir>/audit.jsonl`` beside the blob
storage ``open_datasite`` set up; a PySyft server that is not a fedimg datasite
records nothing (a warning in its log).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datasite_setup.site.site_registry import site_audit
from policies import AUDIT_FILE, AuditLog

ACCOUNT_EVENT = "account"
"""The audit event of an account created, changed or deleted (``policies``' event for owner accounts)."""
CLIENT_NOTE = "fedimg"
"""The extra argument of ``request.apply`` a client may describe its decision in (``forced``, ``via``)."""
_MARK = "_fedimg_decisions"
_deciding = threading.local()  # the request being decided on in this thread (request.apply / undo)
_site_notes = threading.local()  # what the site's own process says of the decisions made in this thread
MAX_NOTE_REASON_CHARS = 2000  # an override's reason is a sentence or two, not a document
_ACCOUNT_CALLS = ("create", "update", "delete", "request_password_reset")  # UserService: who logs in, how
_SHOWN = ("email", "name", "role", "mock_execution_permission")  # recorded with their values
_SECRET = {"hashed_password": "password", "reset_token": "reset token"}  # recorded only as changed
# one account call at a time, so each diff holds only its own change (re-entrant: never a deadlock)
_accounts_lock = threading.RLock()
log = logging.getLogger("fedimg.audit")


def install() -> None:
    """Patch PySyft so every decision on a request or an account reaches the site's audit log; idempotent.

    Examples
    --------
    >>> install()
    >>> install()  # a second call changes nothing
    >>> from syft.service.code.status_service import StatusStash
    >>> from syft.service.user.user_service import UserService
    >>> getattr(StatusStash.update, "_fedimg_decisions"), getattr(UserService.update, "_fedimg_decisions")
    (True, True)
    """
    from syft.service.code.status_service import StatusStash
    from syft.service.request.request_service import RequestService
    from syft.service.user.user_service import UserService

    if getattr(StatusStash.update, _MARK, False):
        return
    StatusStash.update = _mark(_wrap_status_update(StatusStash.update))
    RequestService.apply = _mark(_wrap_request_call(RequestService.apply, "apply"))
    RequestService.undo = _mark(_wrap_request_call(RequestService.undo, "undo"))
    for name in _ACCOUNT_CALLS:
        setattr(UserService, name, _mark(_wrap_account_call(getattr(UserService, name))))


@contextlib.contextmanager
def site_note(**note: Any) -> Iterator[None]:
    """Describe the decisions this thread makes while the block runs (the site's own, trusted, word).

    The owner channel runs an owner's decision in the site's process, on a client of its
    own server: PySyft serves that call in the same thread, so what the site knows of the
    decision (``via="fedimg console"``, and the ``reason`` an owner gave for overriding a
    failing check) reaches the ``decision`` record without passing through the client.

    Parameters
    ----------
    **note : object
        ``via`` (str), ``forced`` (bool) and ``reason`` (str) are recorded; they take
        precedence over what the client said.

    Yields
    ------
    None

    Examples
    --------
    >>> with site_note(via="fedimg console", reason="the template changed"):
    ...     _site_notes.note
    {'via': 'fedimg console', 'reason': 'the template changed'}
    >>> getattr(_site_notes, "note", None) is None
    True
    """
    previous = getattr(_site_notes, "note", None)
    _site_notes.note = {**(previous or {}), **note}
    try:
        yield
    finally:
        _site_notes.note = previous


def _mark(wrapper: Any) -> Any:
    setattr(wrapper, _MARK, True)
    return wrapper


def _wrap_request_call(original: Any, action: str) -> Any:
    """``RequestService.apply`` / ``undo``: remember the request (and the client's note) while it runs."""

    @functools.wraps(original)  # syft finds service methods by their qualified name
    def call(self: Any, context: Any, uid: Any, *args: Any, **kwargs: Any) -> Any:
        note = kwargs.get(CLIENT_NOTE) if action == "apply" else None
        note = {**(note if isinstance(note, dict) else {}), **(getattr(_site_notes, "note", None) or {})}
        _deciding.request = {"request_id": str(uid), "note": note}
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
    """The site's audit log: registered when it started serving, else beside its blob storage."""
    registered = site_audit(str(server.id))
    if registered is not None:
        return registered
    try:  # opened by open_datasite, not served yet: its state dir holds the blob storage
        blob = Path(server.blob_store_config.client_config.base_directory)
    except AttributeError:
        return None
    return AuditLog(blob.parent / AUDIT_FILE) if blob.name == "blob" else None


def _describe(server: Any, stash: Any, credentials: Any, status: Any, decision: tuple[str, str]) -> dict:
    root = stash.root_verify_key
    code_id = status.user_code_link.object_uid
    code = _quietly(lambda: server.services.user_code.stash.get_by_uid(root, code_id).unwrap())
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
        **_actor(server, root, credentials),
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
    if verdict == "approved" and not reason and str(note.get("reason") or "").strip():
        fields["reason"] = str(note["reason"]).strip()[:MAX_NOTE_REASON_CHARS]  # why the owner overrode
    return fields


def _actor(server: Any, root: Any, credentials: Any) -> dict[str, Any]:
    """The account that made a decision: e-mail, name, role, and whether it is the shared admin."""
    account = _user(server, root, credentials)
    return {
        "by": getattr(account, "email", None) or str(credentials),
        "by_name": getattr(account, "name", None),
        "by_role": getattr(getattr(account, "role", None), "name", None),
        "shared_admin": str(credentials) == str(root),
    }


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


def _wrap_account_call(original: Any) -> Any:
    """A ``UserService`` call: accounts read before and after it, one record per account it changed."""

    @functools.wraps(original)  # syft finds service methods by their qualified name
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        context = kwargs["context"] if "context" in kwargs else args[0]
        with _accounts_lock:
            before = _accounts(self)
            # a refused call raises here: nothing changed, nothing to record
            result = original(self, *args, **kwargs)
            after = _accounts(self)
        if before is None or after is None:
            log.error(
                "site %s: an account call (%s) could not be audited", context.server.name, original.__name__
            )
        else:
            _record_accounts(context, self.root_verify_key, before, after)
        return result

    return call


def _accounts(service: Any) -> dict[str, dict[str, Any]] | None:
    """Every account's recorded fields (secrets kept in memory only, to tell a change), by user id."""
    try:
        users = service.stash.get_all(service.root_verify_key).unwrap()
    except Exception:  # noqa: BLE001 - the call itself goes on; the missing record is logged as an error
        log.warning("account record: the accounts could not be read", exc_info=True)
        return None
    return {str(user.id): _account(user) for user in users}


def _account(user: Any) -> dict[str, Any]:
    fields = {name: getattr(user, name, None) for name in (*_SHOWN, "verify_key", *_SECRET)}
    fields["role"] = getattr(fields["role"], "name", None)
    fields["verify_key"] = str(fields["verify_key"])
    return fields


def _record_accounts(
    context: Any, root: Any, before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
) -> None:
    server = context.server
    changes = [
        _account_change(before.get(uid), after.get(uid))
        for uid in sorted(before.keys() | after.keys())
        if before.get(uid) != after.get(uid)
    ]
    if not changes:
        return
    audit = _audit_of(server)
    if audit is None:
        log.warning("account change at %s not audited: not a fedimg datasite", server.name)
        return
    actor = _actor(server, root, context.credentials)
    for change in changes:
        try:
            audit.append(ACCOUNT_EVENT, **change, **actor)
        except Exception:  # the account is changed: failing the call now would hide a change in force
            log.exception(
                "site %s: the change of account %s could not be audited", server.name, change["email"]
            )


def _account_change(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """One account's change as record fields: never a password, its hash or a reset token.

    Examples
    --------
    >>> old = {"email": "a@h.example", "name": "A", "role": "DATA_SCIENTIST", "verify_key": "k",
    ...        "mock_execution_permission": False, "hashed_password": "h1", "reset_token": None}
    >>> raised = _account_change(old, {**old, "role": "DATA_OWNER", "hashed_password": "h2"})
    >>> raised["action"], raised["role"], raised["previous_role"], raised["changed"]
    ('updated', 'DATA_OWNER', 'DATA_SCIENTIST', ['password', 'role'])
    >>> "h2" in str(raised)  # that the password changed, never its hash
    False
    >>> _account_change(old, None)["action"], _account_change(None, old)["action"]
    ('deleted', 'created')
    >>> _account_change(old, {**old, "reset_token": "t0k3n"})["action"]
    'reset token issued'
    """
    state = after if after is not None else before
    assert state is not None  # one of the two exists: the account was in one of the reads
    fields: dict[str, Any] = {
        "action": "",
        "email": state["email"],
        "name": state["name"],
        "role": state["role"],
    }
    if before is None or after is None:
        fields["action"] = "created" if before is None else "deleted"
        return fields
    changed = sorted(
        [name for name in (*_SHOWN, "verify_key") if before[name] != after[name]]
        + [shown for name, shown in _SECRET.items() if before[name] != after[name]]
    )
    fields["changed"] = changed
    fields["action"] = (
        "reset token issued" if changed == ["reset token"] and after["reset_token"] else "updated"
    )
    fields.update({f"previous_{name}": before[name] for name in _SHOWN if before[name] != after[name]})
    return fields
