"""The owner console's web app (Starlette): routes, sign-in, CSRF, and the security headers.

Every page asks each site it shows one question over the site's owner channel (all
sites at once, ``site_links``) and renders the answers server-side with Jinja2
(autoescape on: purposes, reasons and code are the researcher's text). The browser
holds one random cookie; the owner's site tokens stay in the console's memory
(``sessions``). Routes:

- ``GET /login``, ``POST /login``, ``POST /logout``;
- ``GET /requests``, ``GET /requests/{site}/{request_id}``,
  ``POST /requests/{site}/{request_id}/approve|override|deny``;
- ``GET /jobs``, ``GET /researchers``, ``POST /researchers/add``, ``POST /researchers/disable``,
  ``GET /dataset``, ``GET /audit`` (``?site=&researcher=&request=&kind=``), ``GET /health``;
- ``GET /static/console.css``; ``GET /`` redirects to ``/requests``.

A page without a session redirects to ``/login`` (303); a POST without one, or without
the session's CSRF token, is refused (403). Before any of that, ``guards.RequestGuard``
refuses a Host the console does not serve, a POST from another origin and an oversized
body; the security headers go on every answer, a crash's 500 included (``ConsoleApp``).
A request id in a path is a hex id (or its start) of at most ``MAX_ID_CHARS``: anything
else is answered 404 without asking a site. No PySyft is imported here.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datasite_setup.site.console import pages
from datasite_setup.site.console.code_view import code_lines
from datasite_setup.site.console.guards import RequestGuard
from datasite_setup.site.console.label_plot import label_order, label_plot_svg
from datasite_setup.site.console.sessions import (
    ABSOLUTE_S,
    COOKIE_NAME,
    LOGIN_COOKIE_NAME,
    Session,
    SessionStore,
    same_token,
)
from datasite_setup.site.console.site_links import DECIDE_TIMEOUT_S, Ask, ConsoleSite, SiteLinks
from datasite_setup.site.login_throttle import LoginThrottle, locked_message
from policies import LimitSettings

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
    "x-frame-options": "DENY",
}
SIGN_IN_REFUSED = (
    "Sign-in refused: the e-mail or password is wrong, or this account is not an owner of these sites."
)
NO_SITE_ANSWERS = "No site answers on its owner channel: start the sites first ('fedimg up federation.toml')."
MAX_FIELD = 10_000  # characters of one form field (a deny reason is a few sentences)
AUDIT_LIMIT = 200
DECISIONS = ("approve", "override", "deny")
MAX_ID_CHARS = 64  # a PySyft id is 32 hex digits
REQUEST_ID = re.compile(rf"[0-9a-fA-F]{{1,{MAX_ID_CHARS}}}")
SIGN_INS_AT_ONCE = 2  # password checks under way at the sites at once (bcrypt: ~0.3 s of a core each)
PAGES = ("requests", "jobs", "researchers", "dataset", "audit", "health")


class SecurityHeaders:
    """ASGI middleware adding ``SECURITY_HEADERS`` to every response (pages, redirects, static files, errors).

    Parameters
    ----------
    app : ASGI app
        The wrapped app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.decode().lower() not in SECURITY_HEADERS
                ]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ConsoleApp(Starlette):
    """Starlette with ``SECURITY_HEADERS`` on every answer, including the 500 of a crash.

    Starlette's own error middleware sits outside any added middleware, so its 500 page
    would leave without them; here the headers are added around the whole app.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await SecurityHeaders(super().__call__)(scope, receive, send)


class Console:
    """The console's state and handlers: the sites, the sessions, the sign-in throttle, the templates.

    Parameters
    ----------
    links : SiteLinks
        The sites.
    store : SessionStore
        The sessions.
    throttle : LoginThrottle
        Failed sign-ins, keyed (e-mail, client address) and per address.
    clock : callable
        Seconds since the epoch (times shown as "ago").
    """

    def __init__(
        self, links: SiteLinks, store: SessionStore, throttle: LoginThrottle, clock: Callable[[], float]
    ) -> None:
        self.links = links
        self.store = store
        self.throttle = throttle
        self.clock = clock
        self.sign_ins = threading.BoundedSemaphore(SIGN_INS_AT_ONCE)  # the sites' bcrypt work stays bounded
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True), trim_blocks=True
        )
        self.env.filters.update(
            local_time=pages.local_time, size=pages.size, epsilon=pages.epsilon, ago=self._ago
        )

    def _ago(self, epoch: float | None) -> str:
        return pages.ago(epoch, now=self.clock())

    # ---- rendering

    def render(
        self, name: str, session: Session | None, *, page: str = "", status: int = 200, **context: Any
    ) -> HTMLResponse:
        """A template rendered with the signed-in frame (nav, who, flash) around it."""
        flash = session.take_flash() if session is not None else None
        context.setdefault("errors", [])
        text = self.env.get_template(name).render(
            session=session,
            page=page,
            flash=flash,
            site_names=self.links.names,
            absent=[site for site in self.links.names if session is not None and site not in session.tokens],
            **context,
        )
        return HTMLResponse(text, status_code=status)

    def refuse(self, status: int, message: str) -> HTMLResponse:
        return self.render("refused.html", None, status=status, message=message, title="Refused")

    # ---- sessions

    def session_of(self, request: Request) -> Session | None:
        return self.store.get(request.cookies.get(COOKIE_NAME))

    @staticmethod
    def signed_out_redirect() -> RedirectResponse:
        response = RedirectResponse("/login?signed_out=1", status_code=303)
        response.delete_cookie(COOKIE_NAME, path="/")
        return response

    async def ask_sites(
        self, session: Session, question: Callable[[str], Mapping[str, Any] | None]
    ) -> dict[str, dict[str, Any]] | None:
        """Each of the session's sites' answer to ``question(site)`` (None: skip it), asked in parallel.

        Sites that answer ``signed_out`` are dropped from the session and from the answers;
        None when no site is left (the caller redirects to the sign-in page).
        """
        requests = {}
        for site, token in list(session.tokens.items()):
            asked = question(site)
            if asked is not None:
                requests[site] = {"action": "console", "token": token, **asked}
        answers = await run_in_threadpool(self.links.ask_all, requests)
        gone = {site for site, answer in answers.items() if answer.get("signed_out")}
        if gone and not self.store.drop_sites(session, gone):
            return None
        return {site: answer for site, answer in answers.items() if site not in gone}

    @staticmethod
    def errors_of(answers: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str]]:
        return [
            (site, str(answer.get("error") or "the site refused the request"))
            for site, answer in answers.items()
            if not answer.get("ok")
        ]

    async def checked_form(self, request: Request) -> tuple[Session, FormData] | Response:
        """The POST's session and form, or the 403 to answer (no session, or a missing/wrong CSRF token)."""
        session = self.session_of(request)
        if session is None:
            return self.refuse(403, "You are not signed in (or your session has expired): sign in again.")
        form = await request.form()
        if not same_token(session.csrf, form.get("csrf")):
            return self.refuse(
                403, "This form's security token is missing or wrong: reload the page and retry."
            )
        return session, form

    # ---- sign-in

    async def login_page(self, request: Request) -> Response:
        if self.session_of(request) is not None:
            return RedirectResponse("/requests", status_code=303)
        notice = (
            "Your sign-in has ended at every site: sign in again."
            if "signed_out" in request.query_params
            else ""
        )
        return self._login_form(request, notice=notice)

    def _login_form(
        self, request: Request, *, error: str = "", notice: str = "", email: str = "", status: int = 200
    ) -> Response:
        token = request.cookies.get(LOGIN_COOKIE_NAME) or ""
        if len(token) < 32:
            token = secrets.token_urlsafe(32)
        response = self.render(
            "login.html",
            None,
            status=status,
            csrf=token,
            error=error,
            notice=notice,
            email=email,
            title="Sign in",
        )
        response.set_cookie(
            LOGIN_COOKIE_NAME, token, max_age=3600, path="/login", httponly=True, samesite="strict"
        )
        return response

    async def login(self, request: Request) -> Response:
        form = await request.form()
        if not same_token(request.cookies.get(LOGIN_COOKIE_NAME) or "", form.get("csrf")):
            return self.refuse(
                403, "The sign-in form's security token is missing or wrong: reload the sign-in page."
            )
        email, password = _field(form, "email").strip(), _field(form, "password")
        if not email or not password:
            return self._login_form(
                request, error="Give your e-mail and your password.", email=email, status=400
            )
        address = request.client.host if request.client else ""
        attempt = self.throttle.begin(email, address)
        if not attempt.admitted:
            return self._login_form(request, error=locked_message(attempt.wait), email=email, status=429)
        asked = {
            site: {"action": "owner_login", "owner": email, "password": password, "address": address}
            for site in self.links.names
        }
        try:
            answers = await run_in_threadpool(self._check_password, asked)
        except BaseException:
            self.throttle.finish(attempt, ok=None)
            raise
        tokens = {site: str(a["token"]) for site, a in answers.items() if a.get("ok") and a.get("token")}
        unreachable = all(a.get("unreachable") for a in answers.values())
        # no site checked the password: not a failed guess, only the reservation is given back
        self.throttle.finish(attempt, ok=None if unreachable else bool(tokens))
        if not tokens:
            return self._login_form(
                request, error=NO_SITE_ANSWERS if unreachable else SIGN_IN_REFUSED, email=email, status=401
            )
        first = next(a for a in answers.values() if a.get("ok") and a.get("token"))
        await self._end(self.session_of(request))  # signing in again ends the session held before
        session = self.store.create(str(first.get("owner") or email), str(first.get("name") or email), tokens)
        response = RedirectResponse("/requests", status_code=303)
        response.set_cookie(
            COOKIE_NAME, session.key, max_age=int(ABSOLUTE_S), path="/", httponly=True, samesite="strict"
        )
        response.delete_cookie(LOGIN_COOKIE_NAME, path="/login")
        return response

    def _check_password(self, asked: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """The sites' answers to a sign-in; a flood from many addresses waits here, not in bcrypt."""
        with self.sign_ins:
            return self.links.ask_all(asked)

    async def logout(self, request: Request) -> Response:
        checked = await self.checked_form(request)
        if isinstance(checked, Response):
            return checked
        session, _ = checked
        await self._end(session)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE_NAME, path="/")
        return response

    async def _end(self, session: Session | None) -> None:
        """Forget a session and sign its tokens out at its sites (one that does not answer: in 8 h)."""
        if session is None:
            return
        self.store.drop(session.key)
        asked = {site: {"action": "owner_logout", "token": token} for site, token in session.tokens.items()}
        await run_in_threadpool(self.links.ask_all, asked)

    # ---- pages

    async def page(
        self,
        request: Request,
        what: str,
        template: str,
        build: Callable[[dict[str, dict[str, Any]]], dict[str, Any]],
        args: Callable[[str], Mapping[str, Any] | None] | None = None,
    ) -> Response:
        session = self.session_of(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        answers = await self.ask_sites(session, args or (lambda site: {"what": what}))
        if answers is None:
            return self.signed_out_redirect()
        return self.render(
            template, session, page=what, errors=self.errors_of(answers), answers=answers, **build(answers)
        )

    async def requests_page(self, request: Request) -> Response:
        def build(answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
            unconfined = [
                s for s, a in answers.items() if a.get("ok") and a.get("sandbox") not in (None, "on")
            ]
            return {"rows": pages.request_rows(answers), "unconfined": unconfined, "title": "Requests"}

        return await self.page(request, "requests", "requests.html", build)

    async def request_page(self, request: Request) -> Response:
        site, request_id = request.path_params["site"], request.path_params["request_id"]
        session = self.session_of(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        if site not in self.links.sites:
            return self.refuse(404, f"This console serves no site named {site!r}.")
        if not REQUEST_ID.fullmatch(request_id):
            return self.refuse(
                404, f"A request id is up to {MAX_ID_CHARS} hex digits: there is no such request."
            )
        answers = await self.ask_sites(
            session, lambda name: {"what": "requests", "request_id": request_id} if name == site else None
        )
        if answers is None:
            return self.signed_out_redirect()
        answer = answers.get(site)
        found = pages.find_request(answer, request_id) if answer and answer.get("ok") else None
        errors = self.errors_of(answers)
        if answer is None:
            errors.append((site, f"You are not signed in at site {site}."))
        elif answer.get("ok") and found is None:
            errors.append((site, f"Site {site} has no request {request_id}."))
        context: dict[str, Any] = {"site": site, "request_id": request_id, "r": found, "title": "Request"}
        if found is not None:
            checks = [c for c in found.get("checks") or [] if isinstance(c, Mapping)]
            template = found.get("template") or {}
            context.update(
                title=f"Request {found.get('short_id') or request_id[:8]}",
                checks=checks,
                failing=[c for c in checks if not c.get("ok")],
                summary=pages.summary_items(found.get("summary")),
                template=template,
                template_match=pages.TEMPLATE_MATCH,
                diff=pages.diff_lines(str(template.get("diff") or "")),
                lines=code_lines(str(found.get("code") or ""), found.get("findings") or []),
                sandbox=answer.get("sandbox") if answer else None,
                base=f"/requests/{quote(site, safe='')}/{quote(str(found.get('id') or request_id), safe='')}",
            )
        status = 200 if found is not None else 404
        return self.render("request.html", session, page="requests", errors=errors, status=status, **context)

    async def decide(self, request: Request) -> Response:
        checked = await self.checked_form(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        site, request_id = request.path_params["site"], request.path_params["request_id"]
        decision = request.path_params["decision"]
        if not REQUEST_ID.fullmatch(request_id) or len(request_id) < 8:
            return self.refuse(
                404, "A decision names a request by its id (8 to 64 hex digits): nothing was sent."
            )
        back = RedirectResponse(
            f"/requests/{quote(site, safe='')}/{quote(request_id, safe='')}", status_code=303
        )
        if decision not in DECISIONS:
            return self.refuse(404, f"No such decision {decision!r}: approve, override or deny.")
        if site not in session.tokens:
            session.flash = ("error", f"You are not signed in at site {site}: nothing was sent.")
            return back
        reason = _field(form, "reason").strip()
        short_id = request_id[:8].lower()
        if decision == "deny" and not reason:
            session.flash = ("error", "A denial needs a reason (the researcher reads it): nothing was sent.")
            return back
        if decision == "override":
            typed = _field(form, "typed_id").strip().lower()
            if len(request_id) < 8 or typed != short_id or not reason:
                session.flash = (
                    "error",
                    f"Override refused: type the request's short id ({short_id}) and give a reason. "
                    "Nothing was sent to the site.",
                )
                return back
        asked = {
            "action": "console",
            "token": session.tokens[site],
            "what": "decide",
            "request_id": request_id,
            "decision": "deny" if decision == "deny" else "approve",
            "reason": reason,
            "force": decision == "override",
        }
        answer = await run_in_threadpool(self.links.ask_one, site, asked, DECIDE_TIMEOUT_S)
        if answer.get("signed_out"):
            if not self.store.drop_sites(session, {site}):
                return self.signed_out_redirect()
            session.flash = ("error", f"Site {site} ended your sign-in there: nothing was decided.")
            return back
        lines = " ".join(str(line) for line in answer.get("lines") or [])
        done = {"approve": "Approved", "override": "Approved (forced, reason recorded)", "deny": "Denied"}
        if answer.get("ok"):
            session.flash = ("notice", f"{done[decision]} request {short_id} at {site}. {lines}".strip())
        else:
            session.flash = (
                "error",
                f"{answer.get('error') or 'The site refused the decision.'} {lines}".strip(),
            )
        return back

    async def jobs_page(self, request: Request) -> Response:
        return await self.page(
            request,
            "jobs",
            "jobs.html",
            lambda answers: {"rows": pages.rows_of(answers, "jobs"), "title": "Jobs"},
        )

    async def researchers_page(self, request: Request) -> Response:
        return await self.page(
            request,
            "researchers",
            "researchers.html",
            lambda answers: {"rows": pages.rows_of(answers, "researchers"), "title": "Researchers"},
        )

    async def researcher_change(self, request: Request) -> Response:
        checked = await self.checked_form(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        back = RedirectResponse("/researchers", status_code=303)
        change = request.path_params["change"]
        site, email = _field(form, "site"), _field(form, "email").strip()
        if change not in ("add", "disable"):
            return self.refuse(404, f"No such change {change!r}: add or disable.")
        if site not in session.tokens:
            session.flash = ("error", f"You are not signed in at site {site!r}: nothing was sent.")
            return back
        asked: dict[str, Any] = {"action": "console", "token": session.tokens[site], "email": email}
        if change == "add":
            name, password = _field(form, "name").strip(), _field(form, "password")
            if not email or not name or not password:
                session.flash = (
                    "error",
                    "Adding a researcher needs an e-mail, a name and a password: nothing was sent.",
                )
                return back
            asked.update(what="researcher_add", name=name, password=password)
        else:
            if not email:
                session.flash = ("error", "Which researcher? The form gave no e-mail: nothing was sent.")
                return back
            asked.update(what="researcher_disable")
        answer = await run_in_threadpool(self.links.ask_one, site, asked)
        if answer.get("signed_out") and not self.store.drop_sites(session, {site}):
            return self.signed_out_redirect()
        if answer.get("ok"):
            verb = "Added" if change == "add" else "Disabled"
            session.flash = ("notice", f"{verb} researcher {email} at {site}.")
        else:
            session.flash = ("error", str(answer.get("error") or f"Site {site} refused the change."))
        return back

    async def dataset_page(self, request: Request) -> Response:
        def build(answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
            datasets = []
            for site, answer in answers.items():
                if not answer.get("ok"):
                    continue
                labels = {
                    str(split): {str(k): int(v) for k, v in (counts or {}).items()}
                    for split, counts in (answer.get("labels") or {}).items()
                }
                names = sorted({k for counts in labels.values() for k in counts}, key=label_order)
                datasets.append(
                    {
                        "site": site,
                        "answer": answer,
                        "labels": labels,
                        "label_names": names,
                        "plot": Markup(label_plot_svg(labels, f"Images per label and split at {site}")),
                        "mocks": pages.mock_images(answer.get("mocks") or []),
                    }
                )
            return {"datasets": datasets, "title": "Dataset"}

        return await self.page(request, "dataset", "dataset.html", build)

    async def audit_page(self, request: Request) -> Response:
        params = request.query_params
        filters = {
            key: params.get(key, "").strip()[:200] for key in ("site", "researcher", "request", "kind")
        }

        def question(site: str) -> dict[str, Any] | None:
            if filters["site"] and site != filters["site"]:
                return None
            asked: dict[str, Any] = {"what": "audit", "limit": AUDIT_LIMIT}
            for key, field in (("researcher", "researcher"), ("request", "request_id"), ("kind", "kind")):
                if filters[key]:
                    asked[field] = filters[key]
            return asked

        def build(answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
            chains = [
                {
                    "site": site,
                    "ok": bool((a.get("chain") or {}).get("ok")),
                    "problems": (a.get("chain") or {}).get("problems") or [],
                }
                for site, a in answers.items()
                if a.get("ok")
            ]
            return {
                "rows": pages.audit_rows(answers, AUDIT_LIMIT),
                "chains": chains,
                "chain_ok": all(chain["ok"] for chain in chains),
                "filters": filters,
                "kinds": pages.AUDIT_KINDS,
                "totals": {site: a.get("total") for site, a in answers.items() if a.get("ok")},
                "title": "Audit log",
            }

        return await self.page(request, "audit", "audit.html", build, question)

    async def health_page(self, request: Request) -> Response:
        def build(answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
            return {"title": "Site health"}

        return await self.page(request, "health", "health.html", build)

    async def home(self, request: Request) -> Response:
        return RedirectResponse("/requests", status_code=303)


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value[:MAX_FIELD] if isinstance(value, str) else ""


def create_app(
    sites: Sequence[ConsoleSite],
    *,
    limits: LimitSettings | None = None,
    clock: Callable[[], float] = time.time,
    ask: Ask | None = None,
    hosts: Iterable[str] | None = None,
) -> Starlette:
    """The console's ASGI app for ``sites``.

    Parameters
    ----------
    sites : sequence of ConsoleSite
        The sites it serves (name and state dir each), in the order pages list them.
    limits : LimitSettings or None
        The sign-in throttle's ``login_failures`` and backoffs (default: a site's defaults).
    clock : callable
        Seconds since the epoch: session expiry and "ago" (a test's own clock).
    ask : callable or None
        How a site is asked (default ``owner_channel.client.ask``).
    hosts : iterable of str or None
        The ``Host`` header values answered (``guards.served_hosts``; ``launch.serve`` always
        gives them); None answers any (an in-process test client's ``testserver``).

    Returns
    -------
    Starlette
        The app; ``app.state.console`` is its ``Console``.

    Examples
    --------
    >>> app = create_app([ConsoleSite("hospital_a", Path("state/hospital_a"))])
    >>> sorted({route.path for route in app.routes})[:3]
    ['/', '/audit', '/dataset']
    """
    links = SiteLinks(sites) if ask is None else SiteLinks(sites, ask)
    console = Console(links, SessionStore(clock=clock), LoginThrottle(limits or LimitSettings()), clock)
    guarded: list[tuple[str, Callable[[Request], Awaitable[Response]], list[str]]] = [
        ("/", console.home, ["GET"]),
        ("/login", console.login_page, ["GET"]),
        ("/login", console.login, ["POST"]),
        ("/logout", console.logout, ["POST"]),
        ("/requests", console.requests_page, ["GET"]),
        ("/requests/{site}/{request_id}", console.request_page, ["GET"]),
        ("/requests/{site}/{request_id}/{decision}", console.decide, ["POST"]),
        ("/jobs", console.jobs_page, ["GET"]),
        ("/researchers", console.researchers_page, ["GET"]),
        ("/researchers/{change}", console.researcher_change, ["POST"]),
        ("/dataset", console.dataset_page, ["GET"]),
        ("/audit", console.audit_page, ["GET"]),
        ("/health", console.health_page, ["GET"]),
    ]
    routes: list[Route | Mount] = [
        Route(path, endpoint, methods=methods) for path, endpoint, methods in guarded
    ]
    routes.append(Mount("/static", StaticFiles(directory=STATIC), name="static"))
    app = ConsoleApp(routes=routes)
    app.state.console = console
    app.add_middleware(RequestGuard, hosts=hosts)
    return app
