"""The ASGI middleware in front of a datasite's HTTP routes (issue 11): what reaches PySyft at all.

``HttpGuard`` wraps the FastAPI app ``make_app`` builds:

- a request body larger than ``[limits] max_request_mb`` is answered 413 before it
  is read: at once from its ``Content-Length``, else (chunked) as soon as the
  bytes streamed past the cap; PySyft reads whole bodies into memory, so three
  300 MB bodies used to take a site to 2.3 GB;
- bodies still arriving are bounded (``BodyBudget``): site-wide to ``[limits]
  max_inflight_mb`` (a body is charged its declared length before a byte is read,
  a chunked one as it arrives; one that does not fit: 503 with ``Retry-After``),
  per client address to half of that and to ``max_uploads_per_address`` bodies
  (then 429), and in time: no new bytes for ``body_idle_seconds``, or not complete
  ``body_total_seconds`` after the request began, is answered 408. These answers
  close the connection (``Connection: close``): the rest of the body is never
  read. 300 clients that each sent 3 MB of a larger body and stalled took a site
  from 708 to 1,575 MB, for ever;
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


class BodyBudget:
    """Request-body bytes still arriving, and bodies being received, site-wide and per client address.

    Only the event loop's thread touches it (ASGI middleware runs there): no lock. A body is charged
    from the moment it is admitted until it is complete or its request ends (``release``).

    Examples
    --------
    >>> limits = LimitSettings(max_request_mb=1, max_inflight_mb=2, max_uploads_per_address=2)
    >>> budget, mb = BodyBudget(), 1024 * 1024
    >>> budget.admit("10.0.0.9", mb, limits) is None  # charged 1 MB: this address's share (half)
    True
    >>> budget.admit("10.0.0.9", 1, limits).status  # the address's share is taken
    429
    >>> budget.admit("10.0.0.7", mb, limits) is None, budget.admit("10.0.0.5", 1, limits).status
    (True, 503)
    >>> budget.release("10.0.0.9", mb); budget.admit("10.0.0.5", 1, limits) is None
    True
    >>> budget.in_flight, budget.uploads("10.0.0.9")
    (1048577, 0)
    """

    def __init__(self) -> None:
        self.in_flight = 0
        self._bytes: Counter[str | None] = Counter()
        self._uploads: Counter[str | None] = Counter()

    def uploads(self, address: str | None) -> int:
        """Bodies being received from ``address``."""
        return self._uploads[address]

    def admit(self, address: str | None, declared: int, limits: LimitSettings) -> Refusal | None:
        """Start receiving a body of ``declared`` bytes (0 when chunked) from ``address``.

        Parameters
        ----------
        address : str or None
            The client's address.
        declared : int
            The body's ``Content-Length`` (charged at once), 0 for a chunked body.
        limits : LimitSettings
            The site's ``[limits]``.

        Returns
        -------
        Refusal or None
            None when the body may be received (it is then charged: ``release`` it); else why not.
        """
        if self._uploads[address] >= limits.max_uploads_per_address:
            return Refusal(
                429,
                f"Too many request bodies from your address at once (over {limits.max_uploads_per_address}: "
                "[limits] max_uploads_per_address in the site's policy.toml); retry when one is done.",
            )
        refusal = self.charge(address, declared, limits)
        if refusal is None:
            self._uploads[address] += 1
        return refusal

    def charge(self, address: str | None, more: int, limits: LimitSettings) -> Refusal | None:
        """Charge ``more`` bytes of an admitted body (a chunked body's bytes as they arrive).

        Returns
        -------
        Refusal or None
            None when they fit (then charged); else why not, and nothing is charged.
        """
        if self._bytes[address] + more > _address_share(limits):
            return Refusal(
                429,
                f"Your address has {_mb(self._bytes[address])} of request bodies arriving; this one would "
                f"pass its share of {_mb(_address_share(limits))} (half of [limits] max_inflight_mb in the "
                "site's policy.toml); retry when they are done.",
            )
        if self.in_flight + more > limits.max_inflight_bytes:
            return Refusal(
                503,
                f"The site is receiving {_mb(self.in_flight)} of request bodies; this one would pass its "
                f"limit of {_mb(limits.max_inflight_bytes)} ([limits] max_inflight_mb in the site's "
                "policy.toml); retry shortly.",
            )
        self._bytes[address] += more
        self.in_flight += more
        return None

    def release(self, address: str | None, charged: int) -> None:
        """The body from ``address``, charged ``charged`` bytes in all, is complete (or its request over)."""
        self.in_flight -= charged
        self._bytes[address] -= charged
        self._uploads[address] -= 1
        if self._uploads[address] <= 0:  # no entry per address that ever sent a body
            del self._uploads[address]
            del self._bytes[address]


def _address_share(limits: LimitSettings) -> int:
    """What one client address may have arriving: half the site's budget, at least one largest body."""
    return max(limits.max_inflight_bytes // 2, min(limits.max_request_bytes, limits.max_inflight_bytes))


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


@dataclass
class _Upload:
    """One request's body while it arrives: what it was charged and when it must be complete."""

    address: str | None
    charged: int
    deadline: float  # the loop's clock
    received: int = 0
    done: bool = False


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
            refusal = self.budget.admit(info.client, declared or 0, limits)
            if refusal is not None:
                log.warning("refused a body to %s from %s: %s", info.path, info.client, refusal.detail)
                await _answer(send, refusal.status, {"detail": refusal.detail}, close=True, retry=limits)
                return
            deadline = asyncio.get_running_loop().time() + limits.body_total_seconds
            upload = _Upload(info.client, declared or 0, deadline)
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
            message = await (
                receive() if upload is None or upload.done else _in_time(receive, upload, limits)
            )
            if message is _TIMED_OUT:
                await refuse(408, _timed_out(limits), "its body did not arrive in time")
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                info.body_bytes += size
                if info.body_bytes > cap:
                    await refuse(413, _too_large(cap)["detail"], f"a body over {cap} bytes")
                if upload is not None and not upload.done:
                    upload.received += size
                    if upload.received > upload.charged:  # a chunked body: charged as it arrives
                        more = upload.received - upload.charged
                        refusal = self.budget.charge(upload.address, more, limits)
                        if refusal is not None:
                            await refuse(refusal.status, refusal.detail, refusal.detail)
                        upload.charged += more
                    if not message.get("more_body", False):
                        self._finish(upload)
            elif message["type"] == "http.disconnect":
                gone = True
                if upload is not None:
                    self._finish(upload)
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
                self._finish(upload)

    def _finish(self, upload: _Upload) -> None:
        """The body is complete, or its request over: its bytes and its place are free again."""
        if not upload.done:
            upload.done = True
            self.budget.release(upload.address, upload.charged)

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


_TIMED_OUT: Message = {"type": "fedimg.timed_out"}


async def _in_time(receive: Receive, upload: _Upload, limits: LimitSettings) -> Message:
    """The body's next message, or ``_TIMED_OUT`` past the idle or the overall limit.

    Only the wait for the client is timed: the app asks for the next chunk as soon as it has
    the last one.
    """
    remaining = min(limits.body_idle_seconds, upload.deadline - asyncio.get_running_loop().time())
    if remaining <= 0:
        return _TIMED_OUT
    try:
        async with asyncio.timeout(remaining):
            return await receive()
    except TimeoutError:
        return _TIMED_OUT


def _timed_out(limits: LimitSettings) -> str:
    return (
        f"Request body not received in time: no new bytes for {limits.body_idle_seconds:g} s, or not "
        f"complete {limits.body_total_seconds:g} s after the request began ([limits] body_idle_seconds, "
        "body_total_seconds in the site's policy.toml)."
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
