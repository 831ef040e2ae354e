"""The gate in front of every PySyft API call a site serves (issue 11): who may call what.

PySyft 0.9.5 serves guests (any fresh key) most of its API, checks its own
``allow_guest_sessions`` only for blocking calls, and lets a researcher
(``DATA_SCIENTIST``) write to the store without bound. ``ApiGate.refusal``
answers, before PySyft sees a call:

- an unregistered key (a guest) gets nothing, blocking or not, but the server's
  metadata;
- only the admin may queue (non-blocking) calls: no fedimg path uses them, and
  PySyft checks guests only on blocking calls;
- owners (``DATA_OWNER``, ``ADMIN``) are not restricted otherwise;
- a researcher may call only this server, only on the paths a
  fedimg job and the researcher's notebook use (``RESEARCHER_PATHS``), may upload
  at most ``[limits] researcher_store_mb`` to the store in any 24 hours, and may
  have at most ``[limits] max_pending_requests`` requests waiting for the owner.

Some paths are refused to every caller, the admin included (``closed_path``): the
migration service's writes, ``sync.sync_items`` and custom API endpoints write any
stored object (a User too) past the account calls the audit records.

A refusal (``Refusal``) is a message naming the site, the rule and, for a limit,
the policy key. Each is also an audit record (``refusal``, with the rule and the
call's path), written by ``syft_patches`` through the site's audit log. An attacker
must neither grow the log at will nor hide another caller's refusals by flooding
it, so ``RefusalRecords`` gives each caller a share of the site's records per
minute, always records a caller's first refusal (at once, or first thing the next
minute when the site's budget is spent) and writes what it held back as one count
per caller. A caller without an account is keyed by its client address (a guest
can make a new key for every call), an account by its verify key.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from policies import LimitSettings

log = logging.getLogger("fedimg.access")
WINDOW_S = 24 * 3600.0  # the store quota's window
MB = 1024 * 1024

# The API paths a researcher's client uses, logged (this module's debug log, "api call ...") from a
# real job: tests/researcher/test_job_http.py::test_fedavg_end_to_end_over_http; the blob paths from
# an upload over 1 MB.
RESEARCHER_PATHS = frozenset(
    {
        # sy.login and the client's own bookkeeping
        "metadata",
        "metadata.get_metadata",
        "user.get_current_user",
        "migration._get_object",
        "notifications.resolve_object",
        # the datasets, their descriptions and mocks (Federation, FedAvgJob.dry_run)
        "dataset.get_all",
        "action.get_mock",
        # submitting and following the job's request (FedAvgJob.submit, status, wait_for_approval)
        "code.request_code_execution",
        "request.get_all",
        # a resume asks the site how many runs of its own code released a result (FedAvgJob.run)
        "code.get_all",
        "output.get_by_user_code_id",
        # calling the approved code with the uploaded weights, round and cohort, reading its result
        "code.call",
        "action.set",
        "action.get",
        "action.has_storage_permission",
        # objects over 1 MB (a larger model's weights, its result) go through the blob store
        "blob_storage.allocate",
        "blob_storage.write_to_disk",
        "blob_storage.read",
    }
)
UPLOAD_PATHS = frozenset({"action.set"})  # blob storage is charged at allocate, at its declared size
UNPACK_FACTOR = 4  # a call's arrays may unpack to 4 x [limits] max_request_mb (weights hardly compress)
MAX_EXTENSION_CHARS = 16
ACCOUNT_TYPES = frozenset({"User", "UserPrivateKey", "UserView", "UserCreate", "UserUpdate"})
_unpack_budget: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "unpack_budget", default=None
)


class UnpackTooLarge(Exception):
    """A call's compressed arrays would unpack to more than the site allows."""


@contextlib.contextmanager
def bounded_unpacking(limit: int) -> Iterator[None]:
    """While inside, arrays unpacked from a call (``charge_unpacking``) may total at most ``limit`` bytes.

    Examples
    --------
    >>> with bounded_unpacking(10):
    ...     charge_unpacking(8)
    ...     charge_unpacking(8)
    Traceback (most recent call last):
    ...
    datasite_setup.site.access.UnpackTooLarge: the call's arrays unpack to more than 0 MB, ...
    >>> charge_unpacking(10**12)  # outside: the site's own loads are not bounded
    """
    token = _unpack_budget.set([limit, limit])
    try:
        yield
    finally:
        _unpack_budget.reset(token)


def charge_unpacking(size: int) -> None:
    """Count ``size`` bytes about to be unpacked (``syft_patches`` calls it from PySyft's array decoder).

    Raises
    ------
    UnpackTooLarge
        Inside ``bounded_unpacking`` when the call's arrays would pass its limit.
    """
    budget = _unpack_budget.get()
    if budget is None:
        return
    budget[0] -= int(size)
    if budget[0] < 0:
        raise UnpackTooLarge(
            f"the call's arrays unpack to more than {budget[1] / MB:.0f} MB, {UNPACK_FACTOR} x the site's "
            "[limits] max_request_mb: send less, or ask the data owner to raise it"
        )


REQUEST_PATHS = frozenset({"code.request_code_execution"})
MAX_PATH_CHARS = 80  # a refused path is the caller's text: kept short in answers and records
# Paths refused to every caller, the site's admin included: each writes stored objects (User accounts
# among them: a role raised to ADMIN, a new ADMIN that can log in) straight into PySyft's stores, past
# the UserService methods whose calls the audit records (decisions.py). No fedimg path calls them.
# Of the migration service only its reads stay open (the client reads objects through _get_object).
MIGRATION_READ_PATHS = frozenset(
    {
        "migration",  # get_version
        "migration._get_object",
        "migration.get_all_store_metadata",
        "migration.get_migration_actionobjects",
        "migration.get_migration_data",
    }
)
CLOSED_PATHS = frozenset(
    {
        "sync.sync_items",  # sets or updates any stored object, a User too (SyncService.set_object)
        "api.add",  # custom API endpoints: admin-written code run in the site's process, with its store
        "api.update",
    }
)
REFUSAL_WINDOW_S = 60.0
REFUSAL_RECORDS_PER_WINDOW = 60  # for the whole site: ~30 KB of audit per minute at most
REFUSALS_PER_CALLER = 10  # one caller's share of a window's records; the rest is counted on its key
FIRST_REFUSAL_RESERVE = 20  # records of each window that only callers' first refusals may use
REFUSAL_CALLERS = 10_000  # callers held at once; past it, new callers' refusals share one count
ANONYMOUS_RULES = frozenset({"unsigned", "no_login"})  # refused before the caller or path is known


def closed_path(path: str) -> bool:
    """Whether ``path`` is refused to every caller, the admin included (``CLOSED_PATHS``, migration writes).

    Examples
    --------
    >>> closed_path("migration._update_object"), closed_path("migration.create_migrated_objects")
    (True, True)
    >>> closed_path("migration._get_object"), closed_path("sync.sync_items"), closed_path("user.update")
    (False, True, False)
    """
    if path == "migration" or path.startswith("migration."):  # fail closed: a write PySyft may add too
        return path not in MIGRATION_READ_PATHS
    return path in CLOSED_PATHS


@dataclass(frozen=True)
class Refusal:
    """A call the gate refuses: what the caller reads, and what the audit log records.

    Parameters
    ----------
    rule : str
        The rule broken, short: ``unsigned``, ``no_login`` (a key without an account),
        ``unpack_too_large``, ``closed_path`` (refused to everyone, the admin included),
        ``queued``, ``other_server``, ``path`` (not served to researchers),
        ``account_record``, ``blob_extension``, ``store_quota``, ``blob_not_own``,
        ``pending_requests``, ``output_not_own``.
    message : str
        The caller's answer: the site, the rule and, for a limit, the policy key.
    path : str or None
        The API path called (at most ``MAX_PATH_CHARS``); None when the call was refused
        before it was unpacked (a stranger's call, or one whose arrays unpack too large).

    Examples
    --------
    >>> Refusal.of("store_quota", None, "action.set") is None
    True
    >>> Refusal.of("store_quota", "over the quota", "action.set").rule
    'store_quota'
    """

    rule: str
    message: str
    path: str | None = None

    @classmethod
    def of(cls, rule: str, message: str | None, path: str | None) -> Refusal | None:
        """A refusal for ``message``, or None when there is none."""
        return None if message is None else cls(rule, message, path)


@dataclass(frozen=True)
class RefusalRecord:
    """One audit record ``RefusalRecords`` lets through.

    Parameters
    ----------
    caller : str
        The key it counts by: a verify key, ``address <client address>`` for a caller
        without an account, or ``*`` for the shared count past ``REFUSAL_CALLERS``.
    path : str or None
        The API path refused (None for a closing record).
    rule : str
        The rule broken (``held_back`` for a closing record).
    suppressed : int
        For a closing record: the caller's refusals in its window not recorded one by one.
    details : dict
        What the caller's first record named (e-mail, role, address...): a closing record
        repeats it.
    reason : str or None
        The caller's answer (None for a closing record).
    closing : bool
        True for the count of refusals held back in a caller's window, written once it is over.
    rules : dict
        For a closing record: the held-back refusals by rule.
    """

    caller: str
    path: str | None
    rule: str
    suppressed: int
    details: dict
    reason: str | None = None
    closing: bool = False
    rules: dict = field(default_factory=dict)


@dataclass
class _Caller:
    opened: float  # its window: REFUSAL_WINDOW_S from its first refusal
    details: dict
    written: set[tuple[str | None, str]] = field(default_factory=set)  # (path, rule) recorded this window
    held: collections.Counter[str] = field(default_factory=collections.Counter)  # by rule, not recorded
    pending: tuple[str | None, str, str | None] | None = None  # its first refusal, waiting for room


class RefusalRecords:
    """Which gate refusals become audit records: every refused caller is named, none can flood (thread-safe).

    Each caller (a verify key, or a client address without an account) has a window of
    ``window_s`` from its first refusal. In it the caller gets at most one record per
    (path, rule) and at most ``per_caller`` records; its first refusal is always
    recorded: at once while the site's window has room, else at the start of the next
    site window, before any other record. Everything else it is refused is counted on
    the caller and written as one closing record (``suppressed``, by rule) once its
    window is over, at the next ``note`` or ``flush`` (``syft_patches`` flushes every
    few seconds). The whole site writes at most ``per_window`` records per window, of
    which the last ``first_reserve`` go only to callers' first refusals. Past
    ``max_callers`` callers at once, new callers' refusals share one count (``*``),
    written as one record when the site's window has room.

    Bounds: at most ``per_window`` records (~30 KB) per ``window_s``; at most
    ``max_callers`` callers held, each with at most ``per_caller`` (path, rule) keys and
    a count per rule (~1 KB with its details: ~11 MB at the bound, measured); ~15 us a refusal.

    Parameters
    ----------
    window_s : float
        A caller's window, and the site's.
    per_window : int
        Records per site window.
    per_caller : int
        Records per caller window.
    first_reserve : int
        Records of a site window kept for callers' first refusals.
    max_callers : int
        Callers held at once.
    clock : callable
        Seconds, monotonic (a test's own clock).

    Examples
    --------
    >>> now = [0.0]
    >>> records = RefusalRecords(window_s=60.0, clock=lambda: now[0])
    >>> [r.path for r in records.note("ada-key", "user.get_all", "path", lambda: {})]
    ['user.get_all']
    >>> [records.note("ada-key", "user.get_all", "path", lambda: {}) for _ in range(5)]  # held back
    [[], [], [], [], []]
    >>> now[0] = 61.0  # ada's window is over: one record with its count
    >>> [(r.rule, r.suppressed, r.rules) for r in records.flush()]
    [('held_back', 5, {'path': 5})]
    """

    def __init__(
        self,
        window_s: float = REFUSAL_WINDOW_S,
        per_window: int = REFUSAL_RECORDS_PER_WINDOW,
        per_caller: int = REFUSALS_PER_CALLER,
        first_reserve: int = FIRST_REFUSAL_RESERVE,
        max_callers: int = REFUSAL_CALLERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.per_window = per_window
        self.per_caller = per_caller
        self.first_reserve = min(first_reserve, per_window // 2)  # repeats and counts keep room too
        self.max_callers = max_callers
        self._clock = clock
        self._callers: dict[str, _Caller] = {}  # in the order their windows opened (oldest first)
        self._pending: dict[str, None] = {}  # callers whose first refusal waits for room, oldest first
        self._overflow: collections.Counter[str] = collections.Counter()  # past max_callers, by rule
        self._overflow_at = -float("inf")  # the site window its count was last written in
        self._site_opened = -float("inf")
        self._site_written = 0
        self._lock = threading.Lock()

    def note(
        self,
        caller: str,
        path: str | None,
        rule: str,
        describe: Callable[[], dict],
        reason: str | None = None,
    ) -> list[RefusalRecord]:
        """Count one refusal; the records to write now (this one's, and any that came due).

        Parameters
        ----------
        caller : str
            Who is refused (a verify key, or ``address ...`` for a caller without an account).
        path : str or None
            The API path.
        rule : str
            The rule broken.
        describe : callable
            The caller's fields (e-mail, role, address...); called once per caller window
            (it may read the site's store).
        reason : str or None
            The caller's answer, kept in its record.

        Returns
        -------
        list of RefusalRecord
            Records that came due (first refusals that waited for room, closing counts,
            the shared count), then this refusal's own when it is recorded one by one.
        """
        now = self._clock()
        with self._lock:
            written = self._due(now)
            state = self._callers.get(caller)
            if state is None:
                if len(self._callers) >= self.max_callers:  # counted, not named: the count is written
                    self._overflow[rule] += 1
                    return written
                state = self._callers[caller] = _Caller(now, describe())
            if not state.written and state.pending is None:  # its first refusal in this window
                if self._site_written < self.per_window:
                    written.append(self._write(caller, state, path, rule, reason))
                else:  # the site's window is full: the next one starts with it
                    state.pending = (path, rule, reason)
                    self._pending[caller] = None
                return written
            if (
                state.pending is not None
                or (path, rule) in state.written
                or len(state.written) >= self.per_caller
                or self._site_written >= self.per_window - self.first_reserve
            ):
                state.held[rule] += 1
                return written
            written.append(self._write(caller, state, path, rule, reason))
            return written

    def flush(self) -> list[RefusalRecord]:
        """The records that came due without a refusal: waiting first refusals, closing counts.

        ``syft_patches`` calls it every few seconds, so a caller that went quiet is
        counted in the log within about one window of its last refusal.
        """
        with self._lock:
            return self._due(self._clock())

    def _write(
        self, caller: str, state: _Caller, path: str | None, rule: str, reason: str | None
    ) -> RefusalRecord:
        state.written.add((path, rule))
        self._site_written += 1
        return RefusalRecord(caller, path, rule, 0, state.details, reason)

    def _due(self, now: float) -> list[RefusalRecord]:
        """Open a new site window when the last is over; the records now due, in priority order."""
        if now >= self._site_opened + self.window_s:
            self._site_opened, self._site_written = now, 0
        due: list[RefusalRecord] = []
        if self._overflow and self._site_written < self.per_window and self._overflow_at != self._site_opened:
            due.append(self._closing("*", {}, self._overflow))  # first, and once a site window at most
            self._overflow, self._overflow_at = collections.Counter(), self._site_opened
        while self._pending and self._site_written < self.per_window:  # first refusals before anything
            caller = next(iter(self._pending))
            del self._pending[caller]
            state = self._callers[caller]
            pending, state.pending = state.pending, None
            if pending is not None:
                due.append(self._write(caller, state, *pending))
        room = self.per_window - self.first_reserve
        while self._callers:  # oldest window first: stop at one still open (O(1) when none is due)
            caller = next(iter(self._callers))
            state = self._callers[caller]
            if now < state.opened + self.window_s or state.pending is not None:
                break
            if state.held:
                if self._site_written >= room:  # counted on: written when a site window has room
                    break
                due.append(self._closing(caller, state.details, state.held))
            del self._callers[caller]
        return due

    def _closing(self, caller: str, details: dict, held: collections.Counter[str]) -> RefusalRecord:
        self._site_written += 1
        return RefusalRecord(
            caller, None, "held_back", sum(held.values()), details, closing=True, rules=dict(held)
        )


class ApiGate:
    """The access rules of one site, and the researchers' recent uploads (thread-safe).

    Parameters
    ----------
    site : str
        The site's name (in every refusal).
    limits : LimitSettings
        The site's ``[limits]``.
    clock : callable
        Seconds, monotonic (a test's own clock).

    Examples
    --------
    >>> gate = ApiGate("hospital-a", LimitSettings(researcher_store_mb=1), clock=lambda: 0.0)
    >>> gate.charge("alice", 700_000) is None
    True
    >>> print(gate.charge("alice", 700_000))
    site hospital-a refused the upload: ... over the site's limit of 1 MB per researcher per 24 h ...
    >>> gate.charge("bob", 700_000) is None
    True
    """

    def __init__(self, site: str, limits: LimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.site = site
        self.limits = limits
        self._clock = clock
        self._uploads: dict[str, collections.deque[tuple[float, int]]] = collections.defaultdict(
            collections.deque
        )
        self._lock = threading.Lock()
        self._in_flight: collections.Counter[str] = collections.Counter()  # requests being stored
        self._held = threading.local()  # the slot this thread reserved
        self.records = RefusalRecords(clock=clock)  # which of its refusals reach the audit log

    def refusal(self, server: Any, api_call: Any, body_bytes: int | None) -> Refusal | None:
        """Why ``api_call`` must not reach PySyft at ``server``; None when it may.

        Parameters
        ----------
        server : syft Server
            The datasite.
        api_call : SignedSyftAPICall or SyftAPICall
            The call as it arrived (its signature is checked here before anything is charged).
        body_bytes : int or None
            The HTTP body's size (None for a call that did not come over HTTP).

        Returns
        -------
        Refusal or None
            What the caller reads (``message``) and the rule it broke.
        """
        from syft.service.user.user_roles import ServiceRole

        if getattr(api_call, "signature", None) is None:
            return Refusal("unsigned", f"site {self.site}: only signed calls are served")
        if not api_call.is_valid:  # checked over the bytes: nothing is unpacked yet
            return None  # PySyft refuses it ("signature is invalid"); nothing is charged for it
        role = server.get_role_for_credentials(credentials=api_call.credentials)
        if (
            role == ServiceRole.GUEST
        ):  # refused before its message is unpacked: a stranger's zstd bomb never is
            return Refusal("no_login", f"site {self.site}: this site serves nothing without a login")
        try:  # a signed call unpacks its arrays (zstd) to at most a few times the body cap
            with bounded_unpacking(UNPACK_FACTOR * self.limits.max_request_bytes):
                message = api_call.message
        except UnpackTooLarge as exc:
            return Refusal("unpack_too_large", f"site {self.site}: {exc}")
        path = str(message.path)[:MAX_PATH_CHARS]
        log.debug("api call %s by %s (blocking %s, %s bytes)", path, role.name, message.blocking, body_bytes)
        if closed_path(str(message.path)):  # before the owners' pass and the queue: the admin's calls too
            return Refusal(
                "closed_path",
                f"site {self.site}: {path} writes the site's records past its audit log and is not served "
                "to anyone here, its admin included (fedimg never uses it)",
                path,
            )
        if not message.blocking and role != ServiceRole.ADMIN:  # no fedimg path queues calls
            return Refusal(
                "queued", f"site {self.site}: only blocking calls are served (got a queued {path})", path
            )
        if role.value >= ServiceRole.DATA_OWNER.value:
            return None
        if message.server_uid != server.id:
            return Refusal(
                "other_server",
                f"site {self.site}: calls to other servers through this site are not served",
                path,
            )
        if path not in RESEARCHER_PATHS:
            return Refusal(
                "path",
                f"site {self.site}: {path} is not available to researchers here "
                "(only the calls a fedimg job needs are served)",
                path,
            )
        researcher = str(api_call.credentials)
        if path == "migration._get_object" and _object_type_name(message) in ACCOUNT_TYPES:
            return Refusal(
                "account_record", f"site {self.site}: account records are not served to researchers", path
            )
        if path == "blob_storage.allocate":  # charged at the size it declares; its writes must fit it
            if len("".join(map(str, _argument(message, "extensions", 1) or []))) > MAX_EXTENSION_CHARS:
                return Refusal(
                    "blob_extension",
                    f"site {self.site}: a blob's file extension is at most {MAX_EXTENSION_CHARS} characters",
                    path,
                )
            return Refusal.of("store_quota", self.charge(researcher, _declared_size(message)), path)
        if path == "blob_storage.write_to_disk":
            return Refusal.of("blob_not_own", self._not_own_blob(server, api_call.credentials, message), path)
        if path in UPLOAD_PATHS and body_bytes is not None:
            return Refusal.of("store_quota", self.charge(researcher, body_bytes), path)
        if path in REQUEST_PATHS:  # a request's code is stored too: charged like an upload
            pending = self._reserve_request(server, api_call.credentials)
            if pending is not None:
                return Refusal("pending_requests", pending, path)
            if body_bytes is None:
                return None
            return Refusal.of("store_quota", self.charge(researcher, body_bytes), path)
        if path == "output.get_by_user_code_id":  # PySyft reads it with the server's key: any code's outputs
            return Refusal.of(
                "output_not_own", self._not_own_code(server, api_call.credentials, message), path
            )
        return None

    def _not_own_blob(self, server: Any, researcher: Any, message: Any) -> str | None:
        """Refuse a write to a blob entry the caller did not allocate, or larger than it declared.

        PySyft checks only *read* permission, and every dataset mock's blob is readable by all:
        without this a researcher could overwrite the mocks every other researcher reads.
        """
        refusal = f"site {self.site}: you can write only the blob storage you allocated, within its size"
        uid, data = _argument(message, "uid", 0), _argument(message, "data", 1)
        try:
            entry = server.services.blob_storage.stash.get_by_uid(server.verify_key, uid).unwrap()
        except Exception:  # noqa: BLE001 - an unknown or malformed id is refused like another's
            return refusal
        if entry.uploaded_by != researcher or len(data or b"") > int(entry.file_size or 0):
            return refusal
        return None

    def _not_own_code(self, server: Any, researcher: Any, message: Any) -> str | None:
        """Refuse reading the outputs of a code that is not the caller's own."""
        # the client adds its protocol version as a keyword: the code id is the one other argument
        entries = [*message.args, *(v for k, v in message.kwargs.items() if k != "communication_protocol")]
        refusal = f"site {self.site}: you can read the outputs of your own code only"
        if len(entries) != 1:
            return refusal
        try:
            code = server.services.user_code.stash.get_by_uid(server.verify_key, entries[0]).unwrap()
        except Exception:  # noqa: BLE001 - an unknown or malformed id is refused like another's
            return refusal
        return None if code.user_verify_key == researcher else refusal

    def room_for(self, researcher: str, size: int) -> str | None:
        """Refuse an upload of ``size`` bytes that would not fit the researcher's quota (nothing charged)."""
        with self._lock:
            used = self._used(researcher)
        return self._over(used, size)

    def charge(self, researcher: str, size: int) -> str | None:
        """Count an upload of ``size`` bytes, or refuse it when it would not fit the researcher's quota."""
        with self._lock:
            used = self._used(researcher)
            refusal = self._over(used, size)
            if refusal is None:
                self._uploads[researcher].append((self._clock(), size))
        return refusal

    def _used(self, researcher: str) -> int:
        uploads = self._uploads[researcher]
        horizon = self._clock() - WINDOW_S
        while uploads and uploads[0][0] < horizon:
            uploads.popleft()
        return sum(size for _, size in uploads)

    def _over(self, used: int, size: int) -> str | None:
        limit = self.limits.researcher_store_bytes
        if used + size <= limit:
            return None
        return (
            f"site {self.site} refused the upload: you uploaded {used / MB:.1f} MB here in the last 24 h "
            f"and this adds {size / MB:.1f} MB, over the site's limit of {limit / MB:g} MB per researcher "
            "per 24 h ([limits] researcher_store_mb in the site's policy.toml; ask its data owner)"
        )

    def _reserve_request(self, server: Any, researcher: Any) -> str | None:
        """Refuse a request past ``max_pending_requests``, else hold a slot for it until ``release``.

        The count and the reservation are one step under the lock: concurrent submissions
        cannot all see room (39 of 40 concurrent ones were accepted without it).
        """
        key = str(researcher)
        with self._lock:
            refusal = self._pending_refusal(server, researcher, self._in_flight[key])
            if refusal is None:
                self._in_flight[key] += 1
                self._held.key = key
        return refusal

    def release(self) -> None:
        """Give back the request slot this thread reserved (its request is now stored, or failed)."""
        key = getattr(self._held, "key", None)
        if key is not None:
            self._held.key = None
            with self._lock:
                self._in_flight[key] -= 1

    def _pending_refusal(self, server: Any, researcher: Any, in_flight: int = 0) -> str | None:
        from syft.service.context import AuthedServiceContext
        from syft.service.request.request import RequestStatus
        from syft.service.user.user_roles import ServiceRole

        context = AuthedServiceContext(server=server, credentials=server.verify_key, role=ServiceRole.ADMIN)
        stash = server.services.request.stash
        mine = stash.get_all_for_verify_key(credentials=server.verify_key, verify_key=researcher).unwrap()
        pending = in_flight + sum(
            1 for request in mine if request.get_status(context) == RequestStatus.PENDING
        )
        limit = self.limits.max_pending_requests
        if pending < limit:
            return None
        return (
            f"site {self.site} refused the request: you have {pending} request(s) waiting for the data "
            f"owner's decision, the site's limit is {limit} ([limits] max_pending_requests in the site's "
            "policy.toml); wait for decisions on them first"
        )


def _argument(message: Any, name: str, position: int) -> Any:
    """A call's argument by keyword, else by position (None when absent)."""
    if name in message.kwargs:
        return message.kwargs[name]
    return message.args[position] if len(message.args) > position else None


def _object_type_name(message: Any) -> str:
    """The class name a ``migration._get_object`` call asks for."""
    kind = _argument(message, "object_type", 1)
    return str(getattr(kind, "__name__", kind))


def _declared_size(message: Any) -> int:
    """The file size a ``blob_storage.allocate`` call declares."""
    entries = [*message.args, *message.kwargs.values()]
    return max((int(getattr(entry, "file_size", 0) or 0) for entry in entries), default=0)
