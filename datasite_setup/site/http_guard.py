"""The ASGI middleware in front of a datasite's HTTP routes (issue 11): what reaches PySyft at all.

``HttpGuard`` wraps the FastAPI app ``make_app`` builds:

- a request body larger than ``[limits] max_request_mb`` is answered 413 before it
  is read: at once from its ``Content-Length``, else (chunked) as soon as the
  bytes streamed past the cap; PySyft reads whole bodies into memory, so three
  300 MB bodies used to take a site to 2.3 GB;
- bodies still arriving are bounded (``BodyBudget``) by the memory they actually
  hold: a body is charged its bytes as they arrive (PySyft buffers what arrived,
  nothing more), so declaring a large ``Content-Length`` costs nothing by itself.
  A large body (declared over ``SMALL_BODY_BYTES``, or chunked) is refused at once
  when its declared size would not fit beside what is already held, or once its
  arriving bytes pass: site-wide ``[limits] max_inflight_mb`` (503 with
  ``Retry-After``), one client address's share of it, 1/8 and at least one
  ``max_request_mb`` body (429), and ``max_uploads_per_address`` large bodies
  (429). A small body (a login, most API calls) is never refused for the byte
  budget, only past ``SMALL_BODIES_PER_ADDRESS`` of them from one address (429):
  four bodies that each declared ``max_request_mb`` and trickled a byte every
  10 s used to fill a 16 MB budget with reservations and refuse every login 503;
- bodies must arrive in time: no new bytes for ``body_idle_seconds``, not complete
  ``body_total_seconds`` after the request began, or (a large body) under
  ``MIN_BODY_RATE`` on average over its life once ``RATE_GRACE_SECONDS`` have
  passed is answered 408. These answers close the connection (``Connection:
  close``): the rest of the body is never read. 300 clients that each sent 3 MB of
  a larger body and stalled took a site from 708 to 1,575 MB, for ever;
- routes nobody needs at a fedimg site are closed: the peer proxy ``/stream/*``
  (404); ``/register`` (owners create accounts), ``/forgot_password`` and
  ``/reset_password`` answer every caller with the same refusal and notify
  nobody (PySyft told the admin's e-mail apart and wrote to the admin's inbox);
- ``GET /api?verify_key=`` (the API description) is served only for a key that
  logged in from the same client address since the site started: a verify key
  is public (the root admin's is the server's own, in ``/metadata``), so "the key
  is an account" proves nothing; without a login nothing is served but the login;
- an exception escaping a route before it answered (a malformed body PySyft
  cannot deserialize) becomes a 400 and one log line, not a 500 and a traceback;
- the client's address and the body's size reach the API-call gate and the
  login throttle through ``current_request()`` (a contextvar: starlette runs the
  synchronous PySyft routes in a thread pool with the context copied).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from policies import LimitSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("fedimg.http")
PASSWORD_RESET_REFUSAL = (
    "Password reset is not available at this site: ask the site's data owner to set a new password."
)
LOGIN_FIRST = "This site serves nothing without a login: log in with the account its data owner gave you."
SIGNUP_REFUSAL = "You have no permission to create an account. Please contact the Datasite owner."
CLOSED_ROUTES = ("/stream/",)
# answered with a SyftError for every caller, as a PySyft client expects, without reaching PySyft
REFUSED_ROUTES = {
    "/register": SIGNUP_REFUSAL,
    "/forgot_password": PASSWORD_RESET_REFUSAL,
    "/reset_password": PASSWORD_RESET_REFUSAL,
}


@dataclass
class RequestInfo:
    """What the middleware knows of the HTTP request being handled.

    Parameters
    ----------
    client : str or None
        The client's address (None when the server does not know it).
    path : str
        The request's path.
    body_bytes : int
        The body's bytes read so far (all of them once a route runs).
    """

    client: str | None
    path: str
    body_bytes: int = 0


_REQUEST: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar("fedimg_request", default=None)


def current_request() -> RequestInfo | None:
    """The HTTP request this thread handles (None outside one, e.g. an in-process client).

    Examples
    --------
    >>> current_request() is None
    True
    """
    return _REQUEST.get()


# bodies up to this declared size (a login, most API calls) are never refused for the byte budget
SMALL_BODY_BYTES = 64 * 1024
# ... but one client address may send only this many of them at once (each holds at most 64 KB)
SMALL_BODIES_PER_ADDRESS = 32
# a large body slower than this on average over its life is dropped: trickling a byte now and then
# would otherwise hold its connection and its bytes until body_total_seconds
MIN_BODY_RATE = 16 * 1024  # bytes a second
RATE_GRACE_SECONDS = 5.0  # ... once this long has passed (a connection's slow start)
ADDRESS_SHARE = 8  # one client address may hold 1/8 of the site's budget (at least one largest body)


class _Refused(Exception):
    """The request was refused while its body arrived (the answer is already sent, if it could be)."""


@dataclass(frozen=True)
class Refusal:
    """Why a body may not be received now: the HTTP status and the answer's text.

    Parameters
    ----------
    status : int
        429 (this client address's share is taken) or 503 (the site's).
    detail : str
        The answer's text: the limit reached and the setting that sets it.
    """

    status: int
    detail: str


@dataclass
class Body:
    """A request body being received: from whom, whether it is small, and the bytes it holds.

    Parameters
    ----------
    address : str or None
        The client's address.
    small : bool
        Declared at most ``SMALL_BODY_BYTES``: counted per address, never refused for bytes.
    held : int
        Its bytes that arrived so far (charged to the budget until it is released).
    released : bool
        Complete, or its request over: nothing charged any more.
    """

    address: str | None
    small: bool
    held: int = 0
    released: bool = False


class BodyBudget:
    """Request-body bytes being held while bodies arrive, site-wide and per client address.

    Only the event loop's thread touches it (ASGI middleware runs there): no lock. A body is
    charged its bytes as they arrive (``charge``), not what it declares: a declared size that
    never arrives holds no memory, and must hold no room either. ``admit`` still refuses a large
    body at once when its declared size would not fit beside what is held now, rather than
    after it was half sent.

    Examples
    --------
    >>> limits = LimitSettings(max_request_mb=1, max_inflight_mb=2, max_uploads_per_address=2)
    >>> budget, mb = BodyBudget(), 1024 * 1024
    >>> a = budget.admit("10.0.0.9", mb, limits)  # declaring 1 MB holds nothing yet
    >>> a2 = budget.admit("10.0.0.9", mb, limits)
    >>> isinstance(a2, Body), budget.in_flight
    (True, 0)
    >>> budget.admit("10.0.0.9", mb, limits).status  # a third large body from one address
    429
    >>> budget.charge(a, mb, limits), budget.in_flight  # its megabyte arrived
    (None, 1048576)
    >>> budget.charge(a2, 1, limits).status  # past this address's share (1 MB here)
    429
    >>> b = budget.admit("10.0.0.7", mb, limits)
    >>> budget.charge(b, mb // 2, limits), budget.admit("10.0.0.5", mb, limits).status  # 2.5 MB > 2
    (None, 503)
    >>> login = budget.admit("10.0.0.5", 300, limits)  # a small body is never refused for bytes
    >>> budget.charge(login, 300, limits), budget.in_flight
    (None, 1573164)
    >>> for body in (a, a2, b, login):
    ...     budget.release(body)
    >>> budget.in_flight, budget.uploads("10.0.0.9")
    (0, 0)
    """

    def __init__(self) -> None:
        self.in_flight = 0
        self._bytes: Counter[str | None] = Counter()
        self._large: Counter[str | None] = Counter()
        self._small: Counter[str | None] = Counter()

    def uploads(self, address: str | None) -> int:
        """Bodies being received from ``address``, large and small."""
        return self._large[address] + self._small[address]

    def admit(self, address: str | None, declared: int | None, limits: LimitSettings) -> Body | Refusal:
        """Start receiving a body that declared ``declared`` bytes (None: chunked) from ``address``.

        Parameters
        ----------
        address : str or None
            The client's address.
        declared : int or None
            The body's ``Content-Length`` (nothing is charged for it), None for a chunked body.
        limits : LimitSettings
            The site's ``[limits]``.

        Returns
        -------
        Body or Refusal
            The body to ``charge`` as its bytes arrive and to ``release``; else why it may not start.
        """
        if declared is not None and declared <= SMALL_BODY_BYTES:
            if self._small[address] >= SMALL_BODIES_PER_ADDRESS:
                return Refusal(
                    429,
                    f"Too many small request bodies from your address at once (over "
                    f"{SMALL_BODIES_PER_ADDRESS}, each up to {SMALL_BODY_BYTES // 1024} KB); retry when "
                    "one is done.",
                )
            self._small[address] += 1
            return Body(address, small=True)
        if self._large[address] >= limits.max_uploads_per_address:
            return Refusal(
                429,
                f"Too many request bodies from your address at once (over {limits.max_uploads_per_address}: "
                "[limits] max_uploads_per_address in the site's policy.toml); retry when one is done.",
            )
        refusal = self._room(address, declared or 0, limits)
        if refusal is not None:
            return refusal
        self._large[address] += 1
        return Body(address, small=False)

    def charge(self, body: Body, more: int, limits: LimitSettings) -> Refusal | None:
        """Charge ``more`` bytes of ``body`` that just arrived.

        Returns
        -------
        Refusal or None
            None when they fit (then charged; a small body's always do); else why not, and nothing
            is charged.
        """
        if not body.small:
            refusal = self._room(body.address, more, limits)
            if refusal is not None:
                return refusal
        body.held += more
        self._bytes[body.address] += more
        self.in_flight += more
        return None

    def release(self, body: Body) -> None:
        """``body`` is complete (or its request over): its bytes and its place are free again."""
        if body.released:
            return
        body.released = True
        self.in_flight -= body.held
        self._bytes[body.address] -= body.held
        (self._small if body.small else self._large)[body.address] -= 1
        if self.uploads(body.address) <= 0:  # no entry per address that ever sent a body
            for counter in (self._small, self._large, self._bytes):
                counter.pop(body.address, None)

    def _room(self, address: str | None, more: int, limits: LimitSettings) -> Refusal | None:
        """Why ``more`` bytes of a large body from ``address`` do not fit beside those held (None: fit)."""
        share = address_share(limits)
        if self._bytes[address] + more > share:
            return Refusal(
                429,
                f"Your address has {_mb(self._bytes[address])} of request bodies arriving; this one would "
                f"pass its share of {_mb(share)} (1/{ADDRESS_SHARE} of [limits] max_inflight_mb in the "
                "site's policy.toml, at least max_request_mb); retry when they are done.",
            )
        if self.in_flight + more > limits.max_inflight_bytes:
            return Refusal(
                503,
                f"The site is receiving {_mb(self.in_flight)} of request bodies; this one would pass its "
                f"limit of {_mb(limits.max_inflight_bytes)} ([limits] max_inflight_mb in the site's "
                "policy.toml); retry shortly.",
            )
        return None


def address_share(limits: LimitSettings) -> int:
    """The bytes of large bodies one client address may hold while they arrive.

    1/8 of the site's budget, but never less than one body of the largest size allowed.

    Parameters
    ----------
    limits : LimitSettings
        The site's ``[limits]``.

    Returns
    -------
    int
        Bytes.

    Examples
    --------
    >>> address_share(LimitSettings()) // (1024 * 1024)  # 256 MB budget, 64 MB bodies
    64
    >>> address_share(LimitSettings(max_request_mb=16, max_inflight_mb=1024)) // (1024 * 1024)
    128
    """
    largest = min(limits.max_request_bytes, limits.max_inflight_bytes)
    return max(limits.max_inflight_bytes // ADDRESS_SHARE, largest)


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


@dataclass
class _Upload:
    """One request's body while it arrives: its budget entry and when it must be complete."""

    body: Body
    started: float  # the loop's clock
    deadline: float


class HttpGuard:
    """The middleware the module docstring describes.

    Parameters
    ----------
    app : ASGI app
        The datasite's FastAPI app.
    limits : callable
        The site's current ``[limits]`` (its policy is registered after the app is built).
    registered : callable
        ``registered(verify_key_hex, client_address)``: whether that key logged in from that
        address (``syft_patches.has_logged_in``).
    prefix : str
        Where PySyft's routes are mounted (``/api/v2``).

    Examples
    --------
    >>> async def app(scope, receive, send):
    ...     pass
    >>> guard = HttpGuard(app, limits=LimitSettings, registered=lambda key, address: False, prefix="/api/v2")
    >>> guard.route("/api/v2/stream/x/y/"), guard.route("/api/v2/login"), guard.route("/elsewhere")
    ('/stream/x/y/', '/login', None)
    >>> guard.budget.in_flight
    0
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: Callable[[], LimitSettings],
        registered: Callable[[str, str | None], bool],
        prefix: str,
    ) -> None:
        self.app = app
        self.limits = limits
        self.registered = registered
        self.prefix = prefix
        self.budget = BodyBudget()

    def route(self, path: str) -> str | None:
        """``path`` without the API prefix; None for a path outside it."""
        if path == self.prefix or path.startswith(self.prefix + "/"):
            return path[len(self.prefix) :] or "/"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        info = RequestInfo(client=client[0] if client else None, path=scope.get("path", ""))
        token = _REQUEST.set(info)
        try:
            await self._handle(scope, receive, send, info)
        finally:
            _REQUEST.reset(token)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, info: RequestInfo) -> None:
        route = self.route(info.path) or ""
        declared = _content_length(scope)
        # an answer given before a body is read closes the connection: its bytes are never read
        close = bool(declared) or (declared is None and _header(scope, b"transfer-encoding") is not None)
        if route.startswith(CLOSED_ROUTES):
            await _answer(send, 404, {"detail": "Not served at this site."}, close=close)
            return
        if route in REFUSED_ROUTES:
            await _answer_syft_error(send, REFUSED_ROUTES[route], close=close)
            return
        if route == "/api" and not self._registered_caller(scope):
            await _answer(send, 403, {"detail": LOGIN_FIRST}, close=close)
            return
        limits = self.limits()
        cap = limits.max_request_bytes
        if declared is not None and declared > cap:
            await _answer(send, 413, _too_large(cap), close=True)
            return
        upload: _Upload | None = None
        if close:  # a body to receive: within the site's budget, this address's share, and in time
            admitted = self.budget.admit(info.client, declared, limits)
            if isinstance(admitted, Refusal):
                log.warning("refused a body to %s from %s: %s", info.path, info.client, admitted.detail)
                await _answer(send, admitted.status, {"detail": admitted.detail}, close=True, retry=limits)
                return
            now = asyncio.get_running_loop().time()
            upload = _Upload(admitted, now, now + limits.body_total_seconds)
        started = False
        refused = False
        gone = False

        async def refuse(status: int, detail: str, why: str) -> None:
            nonlocal refused
            refused = True
            log.warning("refused a body to %s from %s: %s", info.path, info.client, why)
            if not started:
                await _answer(send, status, {"detail": detail}, close=True, retry=limits)
            raise _Refused

        async def guarded_receive() -> Message:
            nonlocal gone
            if upload is not None and not upload.body.released:
                message = await _in_time(receive, upload, limits)
            else:
                message = await receive()  # no body, or all of it: the wait for a disconnect is not timed
            if message["type"] == _TIMED_OUT:
                await refuse(408, message["detail"], message["detail"])
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                info.body_bytes += size
                if info.body_bytes > cap:
                    await refuse(413, _too_large(cap)["detail"], f"a body over {cap} bytes")
                if upload is not None and not upload.body.released:
                    refusal = self.budget.charge(upload.body, size, limits)  # what is held: what arrived
                    if refusal is not None:
                        await refuse(refusal.status, refusal.detail, refusal.detail)
                    if not message.get("more_body", False):
                        self.budget.release(upload.body)
            elif message["type"] == "http.disconnect":
                gone = True
                if upload is not None:
                    self.budget.release(upload.body)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the refusal went out: nothing of the app's answer follows it
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - a route that failed before answering: the request's fault
            if refused:
                return
            if gone and not started:  # nobody to answer: a client that left is no malformed request
                log.info("client %s left before its request to %s was read", info.client, info.path)
                return
            if started:
                raise
            log.warning(
                "malformed request to %s from %s: %s: %s",
                info.path,
                info.client,
                type(exc).__name__,
                str(exc)[:200],
            )
            log.debug("malformed request to %s", info.path, exc_info=True)
            await _answer(send, 400, {"detail": f"Malformed request ({type(exc).__name__})."})
        finally:
            if upload is not None:
                self.budget.release(upload.body)

    def _registered_caller(self, scope: Scope) -> bool:
        keys = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("verify_key", [])
        client = scope.get("client")
        return len(keys) == 1 and self.registered(keys[0], client[0] if client else None)


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value
    return None


_TIMED_OUT = "fedimg.timed_out"  # a message type of our own: the body did not arrive in time


async def _in_time(receive: Receive, upload: _Upload, limits: LimitSettings) -> Message:
    """The body's next message, or a ``_TIMED_OUT`` message (with the answer's text) past a time limit.

    Only the wait for the client is timed: the app asks for the next chunk as soon as it has the
    last one. The limits: no new bytes for ``body_idle_seconds``; not complete ``body_total_seconds``
    after the request began; a large body: under ``MIN_BODY_RATE`` on average since it began, once
    ``RATE_GRACE_SECONDS`` have passed (with no more bytes, that is when its average falls below).
    """
    now = asyncio.get_running_loop().time()
    limits_at = [
        (now + limits.body_idle_seconds, "idle"),
        (upload.deadline, "total"),
    ]
    if not upload.body.small:
        limits_at.append((upload.started + max(RATE_GRACE_SECONDS, upload.body.held / MIN_BODY_RATE), "rate"))
    until, why = min(limits_at)
    if until > now:
        try:
            async with asyncio.timeout(until - now):
                return await receive()
        except TimeoutError:
            pass
    return {"type": _TIMED_OUT, "detail": _timed_out(why, limits)}


def _timed_out(why: str, limits: LimitSettings) -> str:
    """The 408's text for the limit ``why`` ("idle", "total" or "rate")."""
    if why == "rate":
        return (
            f"Request body arriving too slowly: under {MIN_BODY_RATE // 1024} KB/s on average after its "
            f"first {RATE_GRACE_SECONDS:g} s (a body over {SMALL_BODY_BYTES // 1024} KB); send it faster."
        )
    if why == "idle":
        return (
            f"Request body not received in time: no new bytes for {limits.body_idle_seconds:g} s "
            "([limits] body_idle_seconds in the site's policy.toml)."
        )
    return (
        f"Request body not received in time: not complete {limits.body_total_seconds:g} s after the "
        "request began ([limits] body_total_seconds in the site's policy.toml)."
    )


def _too_large(cap: int) -> dict[str, str]:
    return {
        "detail": f"Request body over this site's limit of {cap // (1024 * 1024)} MB "
        "([limits] max_request_mb in the site's policy.toml)."
    }


async def _answer(
    send: Send, status: int, body: dict[str, str], *, close: bool = False, retry: LimitSettings | None = None
) -> None:
    """A JSON answer; ``close``: and the connection closes; ``retry``: with ``Retry-After``."""
    content = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    if retry is not None and status in (429, 503):  # a stalled body frees its room within this
        headers.append((b"retry-after", str(max(1, math.ceil(retry.body_idle_seconds))).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


async def _answer_syft_error(send: Send, message: str, *, close: bool = False) -> None:
    """A PySyft client reads ``/forgot_password``'s answer as a serialized ``SyftError``."""
    from syft.serde.serialize import _serialize
    from syft.service.response import SyftError

    content = _serialize(SyftError(message=message), to_bytes=True)
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", str(len(content)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": content})
