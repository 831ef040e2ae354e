"""The ASGI middleware in front of a datasite's HTTP routes (issue 11): what reaches PySyft at all.

``HttpGuard`` wraps the FastAPI app ``make_app`` builds:

- a request body larger than ``[limits] max_request_mb`` is answered 413 before it
  is read: at once from its ``Content-Length``, else (chunked) as soon as the
  bytes streamed past the cap; PySyft reads whole bodies into memory, so three
  300 MB bodies used to take a site to 2.3 GB;
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

import contextvars
import json
import logging
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


class _TooLarge(Exception):
    """The body streamed past the cap (the 413 is already sent)."""


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
        if route.startswith(CLOSED_ROUTES):
            await _answer(send, 404, {"detail": "Not served at this site."})
            return
        if route in REFUSED_ROUTES:
            await _answer_syft_error(send, REFUSED_ROUTES[route])
            return
        if route == "/api" and not self._registered_caller(scope):
            await _answer(send, 403, {"detail": LOGIN_FIRST})
            return
        cap = self.limits().max_request_bytes
        declared = _content_length(scope)
        if declared is not None and declared > cap:
            await _answer(send, 413, _too_large(cap))
            return
        started = False
        refused = False

        async def counting_receive() -> Message:
            nonlocal refused
            message = await receive()
            if message["type"] == "http.request":
                info.body_bytes += len(message.get("body", b""))
                if info.body_bytes > cap:
                    refused = True
                    if not started:
                        await _answer(send, 413, _too_large(cap))
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 went out: nothing of the app's answer follows it
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - a route that failed before answering: the request's fault
            if refused:
                log.warning("refused a body over %d bytes to %s from %s", cap, info.path, info.client)
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

    def _registered_caller(self, scope: Scope) -> bool:
        keys = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("verify_key", [])
        client = scope.get("client")
        return len(keys) == 1 and self.registered(keys[0], client[0] if client else None)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(cap: int) -> dict[str, str]:
    return {
        "detail": f"Request body over this site's limit of {cap // (1024 * 1024)} MB "
        "([limits] max_request_mb in the site's policy.toml)."
    }


async def _answer(send: Send, status: int, body: dict[str, str]) -> None:
    content = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


async def _answer_syft_error(send: Send, message: str) -> None:
    """A PySyft client reads ``/forgot_password``'s answer as a serialized ``SyftError``."""
    from syft.serde.serialize import _serialize
    from syft.service.response import SyftError

    content = _serialize(SyftError(message=message), to_bytes=True)
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", str(len(content)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": content})
