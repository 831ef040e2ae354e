"""What the console refuses before any page sees a request: a foreign Host, a foreign Origin, a huge body.

- **Host.** A web page on ``evil.example`` whose name an attacker re-points at 127.0.0.1
  (DNS rebinding) reaches the console from the owner's own browser, as a *same-origin*
  page of ``evil.example``: SameSite cookies and CSRF tokens do not stop it (it can read
  the forms), the ``Host`` header does: the console answers only the names it serves
  (``served_hosts``: ``127.0.0.1:PORT``, ``localhost:PORT``, ``[::1]:PORT`` and the
  ``--host`` given), anything else gets 421.
- **Origin.** A POST whose ``Origin`` (or, without it, ``Referer``) is another site's
  is refused (403) even with a valid session and CSRF token: a second lock behind the
  token, for a browser that leaks one.
- **Body.** A request body is read (at most ``MAX_BODY_BYTES``: a deny reason, a new
  researcher's details) before the app sees it; a larger one is refused (413) without
  reading the rest, so a flood of huge sign-in POSTs (no session needed) cannot grow the
  console's memory.

Each answer is a short plain-text refusal; ``app.SecurityHeaders`` (outside these)
adds the security headers to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 64 * 1024  # a form's fields: MAX_FIELD characters of a reason, a few short ones
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def served_hosts(host: str, port: int) -> frozenset[str]:
    """The ``Host`` values the console answers when it listens on ``host:port``.

    Parameters
    ----------
    host : str
        The ``--host`` it was given (an IPv6 address with or without brackets).
    port : int
        The port it listens on.

    Returns
    -------
    frozenset of str
        Lower-case ``name:port`` values (and the bare names too when ``port`` is 80, which a
        browser leaves out).

    Examples
    --------
    >>> sorted(served_hosts("127.0.0.1", 8090))
    ['127.0.0.1:8090', '[::1]:8090', 'localhost:8090']
    >>> sorted(served_hosts("::1", 80))
    ['127.0.0.1', '127.0.0.1:80', '[::1]', '[::1]:80', 'localhost', 'localhost:80']
    """
    bare = host.strip("[]").lower()
    names = {"127.0.0.1", "localhost", "[::1]", f"[{bare}]" if ":" in bare else bare}
    hosts = {f"{name}:{port}" for name in names}
    return frozenset(hosts | (names if port == 80 else set()))


def same_origin(headers: Headers, host: str) -> bool:
    """Whether a POST comes from a console page: its ``Origin`` (else ``Referer``) names ``host``.

    A request with neither (an older browser, a script) is let through: the CSRF token
    still stands in its way. ``Origin: null`` (a sandboxed frame, a ``data:`` page) is refused.

    Parameters
    ----------
    headers : Headers
        The request's headers.
    host : str
        The request's ``Host`` (checked against the served names already).

    Returns
    -------
    bool
        False when the request names another origin.

    Examples
    --------
    >>> same_origin(Headers({"origin": "http://127.0.0.1:8090"}), "127.0.0.1:8090")
    True
    >>> same_origin(Headers({"origin": "http://evil.example"}), "127.0.0.1:8090")
    False
    >>> same_origin(Headers({"referer": "http://evil.example/x?127.0.0.1:8090"}), "127.0.0.1:8090")
    False
    >>> same_origin(Headers({"origin": "null"}), "127.0.0.1:8090"), same_origin(Headers({}), "x")
    (False, True)
    """
    claimed = headers.get("origin") or headers.get("referer")
    if claimed is None:
        return True
    parts = urlsplit(claimed.strip())
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


class RequestGuard:
    """ASGI middleware: refuse a foreign ``Host`` (421), a cross-origin POST (403), a body over the cap (413).

    Parameters
    ----------
    app : ASGI app
        The wrapped app.
    hosts : iterable of str or None
        The ``Host`` values served (``served_hosts``); None serves any (an in-process test client).
    max_body : int
        The largest body read, in bytes.
    """

    def __init__(
        self, app: ASGIApp, hosts: Iterable[str] | None = None, max_body: int = MAX_BODY_BYTES
    ) -> None:
        self.app = app
        self.hosts = None if hosts is None else frozenset(host.lower() for host in hosts)
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.hosts is not None and host.lower() not in self.hosts:
            await _refuse(
                421,
                "This console does not serve the address in your browser's address bar "
                "(open it as http://127.0.0.1:PORT/ or http://localhost:PORT/).",
                scope,
                receive,
                send,
            )
            return
        if scope["method"] in UNSAFE_METHODS and not same_origin(headers, host):
            await _refuse(403, "Refused: this form was sent from another web site.", scope, receive, send)
            return
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await _refuse(413, _too_large(self.max_body), scope, receive, send)
            return
        body = b""
        more = True
        while more:  # read it all here (it is small): the app's parser never sees more than the cap
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = bool(message.get("more_body"))
            if len(body) > self.max_body:
                await _refuse(413, _too_large(self.max_body), scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _too_large(limit: int) -> str:
    return f"Refused: the form sent is larger than {limit // 1024} KB (a reason is a few sentences)."


async def _refuse(status: int, message: str, scope: Scope, receive: Receive, send: Send) -> None:
    response = PlainTextResponse(message, status_code=status, headers={"connection": "close"})
    await response(scope, receive, send)
