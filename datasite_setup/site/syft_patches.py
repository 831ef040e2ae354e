"""The one module that patches PySyft 0.9.5, once per process, before a datasite serves.

``apply_syft_patches()`` (called by ``open_datasite``) makes these changes, in
this order; each wraps PySyft's own method once, and a second call does nothing:

1. ``UserCodeService.is_execution_allowed``, one wrapper for three things, in the
   order a call meets them:

   a. at a site with an enforcer, the ``admission_chain`` refuses (and audits)
      researcher-written output or input policies *before* PySyft calls their
      ``is_valid``, which would be unreviewed code run in this process;
   b. the execution-limit fix: PySyft ignores a ``False`` from
      ``OutputPolicy.is_valid``, so ``SingleExecutionExactOutput`` or
      ``OutputPolicyExecuteCount(limit=N)`` let approved code run any number of
      times. A data owner who approves "N rounds" must get N rounds: a call past
      the limit is refused;
   c. at a site with an enforcer, PySyft's own refusals (past the approved runs,
      pending or denied code) go to the audit log: they happen before any user
      code runs, so the execution hook never sees them.

2. ``UserService.exchange_credentials``, uniform login failures: PySyft answers an
   unknown e-mail with a "not found" error (and at once) but a wrong password with
   "Invalid credentials." (after a bcrypt check), which tells anyone which accounts
   exist. Both now get the same message after the same work.

3. The execution hook, ``ActionService._user_code_execute`` (one approved call):

   a. at a site whose sandbox is on (``[sandbox] mode = "on"``, the default), the
      call never runs in this process and no asset is loaded through PySyft: the
      input policy's asset rules are checked by id and the assets reach the
      worker as the read-only maps written at ingest (``asset_maps``), the
      researcher's own inputs (weights, round, cohort) are read from the store;
      the job's worker is confined before the run is counted; the run goes
      through the site's ``release_chain`` with a runner from ``contained``; the
      result is wrapped as PySyft would (private result, mock twin
      ``MOCK_RESULT``);
   b. at a site with an enforcer and the sandbox off, ``execute_byte_code`` runs
      the code in this process, unconfined, through the same ``release_chain``;
      PySyft's second run of the same call, on the assets' mock twins, is skipped
      and returns ``MOCK_RESULT``.

   A refusal becomes the researcher's ``SyftException``.

4. ``Server.handle_api_call_with_unsigned_result``, the API-call gate (``access.ApiGate``):
   a call from an unregistered key (a guest), blocking or not, a researcher's call
   outside the paths a fedimg job needs, an upload past the researcher's store
   quota or a request past their pending-request limit, and a call of a path closed
   to everyone (``access.closed_path``: the migration service's writes,
   ``sync.sync_items``, custom API endpoints; the admin's calls, queued or not,
   included) is answered with a ``SyftError`` naming the rule before PySyft sees it.
   At a site with an enforcer each refusal is also a ``refusal`` audit record (the
   rule, the path, the caller's e-mail or, without an account, its key's start and
   address) within ``access.RefusalRecords``' bounds: every refused caller is named
   (its first refusal always recorded), at most ``REFUSALS_PER_CALLER`` records per
   caller and ``REFUSAL_RECORDS_PER_WINDOW`` per site a minute, the rest counted per
   caller and written as one ``held_back`` record (``suppressed``, ``rules``) once the
   caller's minute is over; a thread writes such records every ``REFUSAL_FLUSH_S``.

5. ``exchange_credentials`` (2) also goes through the site's ``LoginThrottle``: an
   attempt is admitted and reserved in one step (``begin``), so a burst of wrong
   passwords costs at most ``login_failures`` bcrypt checks per account and address;
   a locked account-and-address or address is refused before any bcrypt work; each
   lockout is an audit event (``login_lockout``).

``register_enforcer`` names the ``SiteEnforcer`` (and, with the sandbox on, the
``ContainedCalls``) of a served datasite (``fedimg datasite serve`` does it once
the site's policy is read); a datasite without one gets only the fixes of 1b and 2.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from datasite_setup.site import decisions
from datasite_setup.site.access import (
    ANONYMOUS_RULES,
    UNPACK_FACTOR,
    ApiGate,
    Refusal,
    RefusalRecord,
    UnpackTooLarge,
    bounded_unpacking,
    charge_unpacking,
)
from datasite_setup.site.contained import ContainedCalls, unconfined_refusal
from datasite_setup.site.http_guard import current_request
from datasite_setup.site.login_throttle import Lockout, LoginThrottle, locked_message
from datasite_setup.site.sandbox.runner import CodeFailed, SandboxUnavailable
from datasite_setup.site.site_registry import register_site_audit
from policies import (
    MOCK_RESULT,
    UNCONFINED_WARNING,
    Execution,
    LimitSettings,
    ReleaseRefused,
    RunOutput,
    SiteEnforcer,
    admission_chain,
    release_chain,
)

if TYPE_CHECKING:
    from syft.server.datasite import Datasite

_MARK = "_fedimg_patched"
_enforcers: dict[str, SiteEnforcer] = {}  # by server id
_contained: dict[str, ContainedCalls] = {}  # by server id: sites whose sandbox is on
_gates: dict[str, ApiGate] = {}  # by server id, made on first use with the site's [limits]
_throttles: dict[str, LoginThrottle] = {}  # by server id, likewise
_flusher: list[threading.Thread] = []  # the thread that writes held-back refusal records (_gate starts it)
REFUSAL_FLUSH_S = 5.0  # how often it looks: a record that came due waits at most this long
_logged_in: dict[
    str, set[tuple[str, str | None]]
] = {}  # by server id: (verify key, client address) since start
log = logging.getLogger("fedimg.release")
access_log = logging.getLogger("fedimg.access")
_call = threading.local()  # how many runs of the current call have started: the private run comes first
_lock = threading.Lock()


def apply_syft_patches() -> None:
    """Patch PySyft as the module docstring describes; idempotent.

    Call once per process, before a datasite serves requests (``open_datasite`` does).

    Examples
    --------
    >>> apply_syft_patches()
    >>> apply_syft_patches()  # a second call changes nothing
    >>> from syft.service.code.user_code_service import UserCodeService
    >>> is_patched(UserCodeService.is_execution_allowed)
    True
    """
    from syft.serde import arrow
    from syft.server.server import Server
    from syft.service.action import action_service
    from syft.service.code.user_code_service import UserCodeService
    from syft.service.user.user_service import UserService

    with _lock:
        if is_patched(UserCodeService.is_execution_allowed):
            return
        UserCodeService.is_execution_allowed = _wrap_is_execution_allowed(
            UserCodeService.is_execution_allowed
        )
        UserService.exchange_credentials = _wrap_exchange_credentials(UserService.exchange_credentials)
        action_service.ActionService._user_code_execute = _wrap_user_code_execute(
            action_service.ActionService._user_code_execute
        )
        action_service.execute_byte_code = _wrap_execute_byte_code(action_service.execute_byte_code)
        Server.handle_api_call_with_unsigned_result = _wrap_handle_api_call(
            Server.handle_api_call_with_unsigned_result
        )
        arrow.arrow_deserialize = _wrap_arrow_deserialize(arrow.arrow_deserialize)
        decisions.install()


def register_enforcer(
    worker: Datasite, enforcer: SiteEnforcer, contained: ContainedCalls | None = None
) -> None:
    """Enforce ``enforcer``'s rules on every user-code run of ``worker`` in this process.

    Parameters
    ----------
    worker : Datasite
        The served datasite (``open_datasite``, which has applied the patches).
    enforcer : SiteEnforcer
        The site's name, state dir, policy and number of classes.
    contained : ContainedCalls or None
        The site's sandbox workers: every approved call runs there. None only when the
        site's policy says ``[sandbox] mode = "off"``: code then runs in this process.

    Raises
    ------
    ValueError
        When the policy's sandbox is on but no ``contained`` is given (fail closed).
    """
    if enforcer.policy.sandbox.confined and contained is None:
        raise ValueError(f"site {enforcer.site}: the sandbox is on but no sandbox workers were given")
    apply_syft_patches()  # a no-op after open_datasite; never enforce through unpatched methods
    _enforcers[str(worker.id)] = enforcer
    register_site_audit(str(worker.id), enforcer.audit)
    if contained is not None:
        _contained[str(worker.id)] = contained
    with _lock:  # made again with the policy's [limits] on their next use
        _gates.pop(str(worker.id), None)
        _throttles.pop(str(worker.id), None)


def has_logged_in(server_id: str, verify_key: str, address: str | None) -> bool:
    """Whether ``verify_key`` logged in from ``address`` at the served datasite ``server_id`` (since start).

    Parameters
    ----------
    server_id : str
        The datasite.
    verify_key : str
        A verify key (hex), as ``GET /api?verify_key=`` carries it.
    address : str or None
        The client's address.

    Returns
    -------
    bool
        False for a key that never logged in here, or logged in from elsewhere.

    Examples
    --------
    >>> has_logged_in("no-such-server", "00" * 32, "127.0.0.1")
    False
    """
    with _lock:
        return (verify_key, address) in _logged_in.get(server_id, set())


def site_limits(server_id: str) -> LimitSettings:
    """The ``[limits]`` of the served datasite ``server_id`` (the defaults before its policy is registered).

    Examples
    --------
    >>> site_limits("no-such-server").max_request_mb
    64.0
    """
    enforcer = _enforcers.get(server_id)
    return enforcer.policy.limits if enforcer is not None else LimitSettings()


def _gate(server: Any) -> ApiGate:
    key = str(server.id)
    with _lock:
        if key not in _gates:
            _gates[key] = ApiGate(server.name, site_limits(key))
        if not _flusher:  # one thread per process writes the refusal records that come due
            _flusher.append(
                threading.Thread(target=_flush_refusals_forever, name="fedimg-refusals", daemon=True)
            )
            _flusher[0].start()
        return _gates[key]


def _throttle(server: Any) -> LoginThrottle:
    key = str(server.id)
    with _lock:
        if key not in _throttles:
            _throttles[key] = LoginThrottle(site_limits(key))
        return _throttles[key]


def is_patched(method: Any) -> bool:
    """Whether ``method`` is one of this module's wrappers."""
    return bool(getattr(method, _MARK, False))


def _mark(wrapper: Any) -> Any:
    setattr(wrapper, _MARK, True)
    return wrapper


def _describe(code: Any, kwargs: dict[str, Any], *, limit: int | None = None) -> Execution:
    """The plain description of a call of ``code`` (a PySyft ``UserCode``) the enforcement chain reads."""
    from syft.service.policy.policy import UserPolicy

    if limit is None:
        limit = int((code.output_policy_init_kwargs or {}).get("limit", 1))
    return Execution(
        code_id=str(code.id),
        function=code.service_func_name,
        raw_code=code.raw_code,
        researcher=str(code.user_verify_key),
        limit=limit,
        kwargs=kwargs,
        researcher_output_policy=isinstance(code.output_policy_type, UserPolicy),
        researcher_input_policy=isinstance(code.input_policy_type, UserPolicy),
    )


def _refused(enforcer: SiteEnforcer, refusal: ReleaseRefused) -> Exception:
    from syft.types.errors import SyftException

    return SyftException(public_message=enforcer.refusal_message(str(refusal)))


# --- 1. is_execution_allowed -------------------------------------------------------------------


def _wrap_is_execution_allowed(original: Any) -> Any:
    from syft.service.code.user_code_service import IsExecutionAllowedEnum

    def within_limit(self: Any, code: Any, context: Any, output_policy: Any) -> Any:
        verdict = original(self, code, context, output_policy)
        if (
            verdict is IsExecutionAllowedEnum.ALLOWED
            and output_policy is not None
            and not output_policy.is_valid(context)
        ):
            return IsExecutionAllowedEnum.INVALID_OUTPUT_POLICY
        return verdict

    @functools.wraps(original)
    def is_execution_allowed(self: Any, code: Any, context: Any, output_policy: Any) -> Any:
        enforcer = _enforcers.get(str(context.server.id))
        if enforcer is None:
            return within_limit(self, code, context, output_policy)
        execution = _describe(code, {}, limit=0)  # PySyft's own check counts the runs here
        try:
            admission_chain().run(execution, enforcer)
        except ReleaseRefused as refusal:
            raise _refused(enforcer, refusal) from refusal
        verdict = within_limit(self, code, context, output_policy)
        if verdict is not IsExecutionAllowedEnum.ALLOWED:
            enforcer.record_refusal(execution, str(verdict.value))
        return verdict

    return _mark(is_execution_allowed)


# --- 2. exchange_credentials -------------------------------------------------------------------


def _wrap_exchange_credentials(original: Any) -> Any:
    from syft.service.user.user import check_pwd, salt_and_hash_password
    from syft.store.document_store_errors import NotFoundException
    from syft.types.errors import CredentialsError, SyftException

    stand_in: list[str] = []  # a bcrypt hash with syft's 12 rounds, made on the first unknown e-mail

    def uniform(self: Any, context: Any) -> Any:
        try:
            return original(self, context)
        except NotFoundException:
            if context.login_credentials is not None:
                if not stand_in:
                    stand_in.append(salt_and_hash_password("fedimg: no such account", 12)[1])
                check_pwd(context.login_credentials.password, stand_in[0])  # the time a wrong password takes
            raise SyftException(public_message=CredentialsError.public_message) from None

    @functools.wraps(original)  # syft looks services up by the method's qualified name
    def exchange_credentials(self: Any, context: Any) -> Any:
        if context.login_credentials is None:
            return uniform(self, context)
        throttle = _throttle(context.server)
        request = current_request()
        address = request.client if request is not None else None
        # admitted and reserved in one step: a burst cannot all pass before the first failure counts
        attempt = throttle.begin(str(context.login_credentials.email), address)
        if not attempt.admitted:  # refused before any bcrypt work, the same answer for every account
            raise SyftException(public_message=locked_message(attempt.wait))
        ok: bool | None = None
        try:
            result = uniform(self, context)
            ok = True
        except SyftException:
            ok = False
            raise
        finally:
            for lockout in throttle.finish(attempt, ok):
                _record_lockout(context.server, lockout)
        private_key = getattr(getattr(result, "value", result), "signing_key", None)
        if private_key is not None:  # this client may now fetch its API description (GET /api)
            with _lock:
                _logged_in.setdefault(str(context.server.id), set()).add(
                    (str(private_key.verify_key), address)
                )
        return result

    return _mark(exchange_credentials)


def _record_lockout(server: Any, lockout: Lockout) -> None:
    """One audit event per lockout (not per attempt); only a log line at a site without an enforcer."""
    where = f" from {lockout.address}" if lockout.address else ""
    access_log.warning(
        "site %s: failed logins: %s %s%s locked for %.0f s after %d failures",
        server.name,
        lockout.kind,
        lockout.value,
        where,
        lockout.seconds,
        lockout.failures,
    )
    enforcer = _enforcers.get(str(server.id))
    if enforcer is not None:
        enforcer.audit.append("login_lockout", **lockout.audit_fields())


# --- 4. the API-call gate ----------------------------------------------------------------------


def _wrap_handle_api_call(original: Any) -> Any:
    from syft.service.response import SyftError

    @functools.wraps(original)
    def handle_api_call_with_unsigned_result(
        self: Any, api_call: Any, job_id: Any = None, check_call_location: bool = True
    ) -> Any:
        if job_id is None:  # a call from outside (a queued job's own calls were gated when queued)
            request = current_request()
            gate = _gate(self)
            try:
                refusal = gate.refusal(self, api_call, request.body_bytes if request else None)
                if refusal is not None:
                    _record_refusal(self, gate, api_call, refusal, request.client if request else None)
                    return SyftError(message=refusal.message)
                return original(self, api_call, job_id=job_id, check_call_location=check_call_location)
            finally:
                gate.release()  # a request slot it reserved is now a pending request (or none)
        return original(self, api_call, job_id=job_id, check_call_location=check_call_location)

    return _mark(handle_api_call_with_unsigned_result)


def _record_refusal(server: Any, gate: ApiGate, api_call: Any, refusal: Refusal, address: str | None) -> None:
    """A gate refusal as a ``refusal`` audit record, within ``RefusalRecords``' bounds (a log line otherwise).

    A caller with an account is named by its e-mail and verify key; a caller without one
    (a fresh key for every call costs nothing) is counted by its client address and named
    by the start of the key it used. A record that cannot be written is logged: the call is
    refused all the same.
    """
    access_log.debug("refused a call from %s: %s", address, refusal.message)
    enforcer = _enforcers.get(str(server.id))
    if enforcer is None:
        access_log.info("refused a call: %s", refusal.message)
        return
    key = str(getattr(api_call, "credentials", None) or "")
    anonymous = refusal.rule in ANONYMOUS_RULES
    caller = f"address {address}" if anonymous else key

    def describe() -> dict:
        if anonymous:
            return {"key": key[:12] or None, "address": address}
        user = _account(server, api_call.credentials)
        role = getattr(getattr(user, "role", None), "name", None)
        return {
            "researcher": key,
            "researcher_email": getattr(user, "email", None),
            "role": role,
            "address": address,
        }

    try:
        records = gate.records.note(caller, refusal.path, refusal.rule, describe, refusal.message[:300])
    except Exception:  # the call is refused all the same; the site log keeps what the audit missed
        access_log.exception("site %s: a refused call could not be counted: %s", server.name, refusal.message)
        return
    _write_refusals(gate.site, enforcer, records)


def _write_refusals(site: str, enforcer: SiteEnforcer, records: list[RefusalRecord]) -> None:
    """``refusal`` audit records; one that cannot be written is logged (the call was refused all the same)."""
    for record in records:
        fields: dict[str, Any] = {"call": record.path, "rule": record.rule, **record.details}
        if record.reason is not None:
            fields["reason"] = record.reason
        if record.closing:
            fields.update(suppressed=record.suppressed, rules=record.rules)
        try:
            enforcer.audit.append("refusal", **{k: v for k, v in fields.items() if v is not None})
        except Exception:  # noqa: BLE001 - the site log keeps what the audit missed
            access_log.exception("site %s: a refusal record could not be written: %s", site, fields)


def _flush_refusals_forever() -> None:
    """Every ``REFUSAL_FLUSH_S``, write each served site's refusal records that came due without a call.

    A caller that went quiet is thus counted in the log (``suppressed``) within about a
    window of its last refusal, and a first refusal that waited for room is written
    once the site's budget allows, whether or not anyone calls the site again.
    """
    while True:
        time.sleep(REFUSAL_FLUSH_S)
        with _lock:
            gates = list(_gates.items())
        for server_id, gate in gates:
            enforcer = _enforcers.get(server_id)
            if enforcer is None:
                continue
            try:
                _write_refusals(gate.site, enforcer, gate.records.flush())
            except Exception:  # noqa: BLE001 - the next round tries again; the thread must live on
                access_log.exception("site %s: held-back refusals could not be flushed", gate.site)


def _account(server: Any, verify_key: Any) -> Any:
    """The account of ``verify_key`` (None when it has none, or the lookup fails)."""
    try:
        return server.services.user.stash.get_by_verify_key(server.verify_key, verify_key).unwrap()
    except Exception:  # noqa: BLE001 - the record names the verify key instead
        return None


def _wrap_arrow_deserialize(original: Any) -> Any:
    """PySyft's array decoder, charging each array's unpacked size to the call being gated (``access``)."""

    @functools.wraps(original)
    def arrow_deserialize(numpy_bytes: bytes, decompressed_size: int, dtype: str) -> Any:
        charge_unpacking(decompressed_size)  # before zstd allocates it: a 11 KB body once unpacked to 256 MB
        return original(numpy_bytes, decompressed_size, dtype)

    return _mark(arrow_deserialize)


# --- 3. the execution hook ---------------------------------------------------------------------


def _wrap_user_code_execute(original: Any) -> Any:
    from syft.types.errors import SyftException
    from syft.types.result import as_result

    contained_execute = as_result(SyftException)(_contained_execute)

    def user_code_execute(self: Any, context: Any, code_item: Any, kwargs: Any, result_id: Any = None) -> Any:
        server = str(context.server.id)
        if server in _contained:
            return contained_execute(
                context, code_item, kwargs, result_id, _enforcers[server], _contained[server]
            )
        _call.runs = 0
        try:
            return original(self, context, code_item, kwargs, result_id)
        finally:
            _call.runs = 0

    return _mark(user_code_execute)


def _contained_execute(
    context: Any,
    code_item: Any,
    kwargs: dict,
    result_id: Any,
    enforcer: SiteEnforcer,
    contained: ContainedCalls,
) -> Any:
    """One approved call at a site whose sandbox is on (3a of the module docstring)."""
    from syft.service.action.action_service import wrap_result
    from syft.types.errors import SyftException
    from syft.types.twin_object import TwinObject
    from syft.types.uid import UID

    assets, values = _contained_inputs(context, code_item, kwargs, contained)
    key = f"{code_item.id}:" + ",".join(f"{name}={entry.action_id}" for name, entry in sorted(assets.items()))
    source, function = code_item.raw_code, code_item.service_func_name
    try:  # a confined worker before the run is counted or charged: a site that cannot confine runs nothing
        contained.start(key, source=source, function=function, assets=assets)
    except SandboxUnavailable as exc:
        reason = unconfined_refusal(exc)
        log.error("site %s: %s", enforcer.site, reason)
        enforcer.record_refusal(_describe(code_item, {}), reason)
        raise SyftException(public_message=enforcer.refusal_message(reason)) from None
    except CodeFailed as exc:
        log.warning(
            "code %s (%s) does not load at %s: %s", function, code_item.id, enforcer.site, exc.details
        )
        enforcer.record_refusal(_describe(code_item, {}), f"the approved code does not load ({exc})")
        raise SyftException(
            public_message=f"the approved code does not load at {enforcer.site}: {exc}"
        ) from None
    arguments = {**values, **{name: contained.open_map(entry) for name, entry in assets.items()}}
    execution = _describe(code_item, arguments)
    runner = contained.runner(
        key, source=source, function=function, assets=assets, config=execution.template_config()
    )
    try:
        execution = release_chain(runner).run(execution, enforcer)
    except ReleaseRefused as refusal:
        raise _refused(enforcer, refusal) from refusal
    finally:
        if execution.run is not None and execution.run >= execution.limit:
            contained.end_job(key)  # its approved runs are used up: nothing of it survives
    if execution.errored:
        raise SyftException(
            public_message=f"the approved code failed at {enforcer.site}; its error is in the owner's log"
        )
    override = context.has_execute_permissions or _is_admin(context)
    output_policy = code_item.get_output_policy(context)
    result = execution.result
    if output_policy:
        result = output_policy.apply_to_output(context, result, update_policy=not override)
    code_item.output_policy = output_policy
    context.server.services.user_code.update_code_state(context, code_item)
    result_id = UID() if result_id is None else result_id
    return TwinObject(
        id=result_id,
        private_obj=wrap_result(result_id, result),
        mock_obj=wrap_result(result_id, MOCK_RESULT),
    )


def _contained_inputs(
    context: Any, code_item: Any, kwargs: dict, contained: ContainedCalls
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The call's asset inputs (their read-only maps, checked by id) and its other inputs (from the store).

    Follows PySyft's ``MixedInputPolicy.filter_kwargs`` without loading an asset: an
    asset input must be the very asset the owner approved (its ``Matches`` rule);
    any other input is read and checked as PySyft does (``UserOwned``: the
    researcher's own object of the declared type). Inputs the policy does not name
    are dropped, as PySyft drops them.
    """
    from syft.service.policy.policy import Matches, retrieve_item_from_db
    from syft.types.errors import SyftException
    from syft.types.twin_object import TwinObject

    override = context.has_execute_permissions or _is_admin(context)
    input_policy = code_item.get_input_policy(context)
    if input_policy is None and not override:
        if not code_item.is_output_policy_approved(context).unwrap():
            raise SyftException(public_message="Execution denied: Your code is waiting for approval")
        raise SyftException(public_message=f"No input policy defined for user code: {code_item.id}")
    rules: dict[str, Any] = {}
    for server_rules in getattr(input_policy, "kwarg_rules", {}).values():
        rules.update(server_rules)
    if input_policy is not None and not rules:
        raise SyftException(
            public_message="this site runs only code with a MixedInputPolicy (its inputs by name)"
        )
    names = sorted(set(rules) | (set(kwargs) if override else set()))
    assets: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for name in names:
        rule = rules.get(name)
        if rule is not None and not rule.requires_input:
            values[name] = rule.value
            continue
        if name not in kwargs:
            raise SyftException(public_message=f"Function missing required keyword argument: '{name}'")
        uid = getattr(kwargs[name], "id", kwargs[name]) if not _is_uid(kwargs[name]) else kwargs[name]
        entry = contained.asset(str(uid))
        if entry is not None:
            if not override and not (isinstance(rule, Matches) and rule.val == uid):
                raise SyftException(public_message=f"input {name!r} is not met: {rule}")
            assets[name] = entry
            continue
        # a researcher's stored object is unpacked within the same bound as a call (access.bounded_unpacking)
        limit = UNPACK_FACTOR * site_limits(str(context.server.id)).max_request_bytes
        try:
            with bounded_unpacking(limit):
                item = retrieve_item_from_db(uid, context)
                if isinstance(item, TwinObject):  # private data without a read-only map: never loaded here
                    raise SyftException(
                        public_message=f"input {name!r} is private data this site has no read-only map of; "
                        "contained code reads only the dataset's image and label assets"
                    )
                if rule is not None and not override and not rule.is_met(context, item):
                    raise SyftException(public_message=f"input {name!r} is not met: {rule}")
                data = item.syft_action_data
        except UnpackTooLarge as exc:
            raise SyftException(public_message=f"input {name!r}: {exc}") from None
        values[name] = data
    return assets, values


def _is_uid(value: Any) -> bool:
    from syft.types.uid import UID

    return isinstance(value, UID)


def _is_admin(context: Any) -> bool:
    from syft.service.user.user_roles import ServiceRole

    return bool(context.role == ServiceRole.ADMIN)


def _wrap_execute_byte_code(original: Any) -> Any:
    def execute_byte_code(code_item: Any, kwargs: dict[str, Any], context: Any) -> Any:
        enforcer = _enforcers.get(str(context.server.id))
        if enforcer is None:
            return original(code_item, kwargs, context)
        private = getattr(_call, "runs", 0) == 0
        _call.runs = getattr(_call, "runs", 0) + 1
        if not private:
            return _mock_run_skipped(code_item)
        return _enforced_run(enforcer, original, code_item, kwargs, context)

    return _mark(execute_byte_code)


def _enforced_run(enforcer: SiteEnforcer, original: Any, code_item: Any, kwargs: dict, context: Any) -> Any:
    outcomes: list[Any] = []  # PySyft's own output object, returned with the chain's result
    log.warning(
        "site %s runs %s (%s): %s",
        enforcer.site,
        code_item.service_func_name,
        code_item.id,
        UNCONFINED_WARNING,
    )

    def run(arguments: dict[str, Any]) -> RunOutput:
        outcome = original(code_item, arguments, context)
        outcomes.append(outcome)
        return RunOutput(outcome.result, bool(outcome.errored), getattr(outcome, "stderr", "") or "")

    try:
        execution = release_chain(run).run(_describe(code_item, kwargs), enforcer)
    except ReleaseRefused as refusal:
        raise _refused(enforcer, refusal) from refusal
    (outcome,) = outcomes
    outcome.result = execution.result
    return outcome


def _mock_run_skipped(code_item: Any) -> Any:
    """What PySyft's second run of an approved call (on the assets' mock twins) gets instead of running.

    PySyft 0.9.5 runs every approved call twice, on the private data and then on
    the mocks, to build a twin result whose mock half nobody reads here: that run
    doubled a training round's compute at the site. Researchers run the site
    function on the mocks locally (``FedAvgJob.dry_run``). The private run went
    through the whole chain (a researcher-written policy included) before this one.
    """
    from syft.service.code.user_code import UserCodeExecutionOutput
    from syft.types.uid import UID

    return UserCodeExecutionOutput(
        id=UID(), user_code_id=code_item.id, stdout="", stderr="", result=MOCK_RESULT
    )
