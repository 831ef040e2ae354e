"""A real federation with the owner console in front of it, for the console's browser tests and benchmark.

``start_console_federation`` converts the digits sample into N hospitals, starts one real
``fedimg datasite serve`` per hospital (``RunningSite``), writes the ``federation.toml``
that names them, gives every site a named owner (``fedimg owner add``'s ``add_owner``) and
the researcher's account, and starts ``fedimg console federation.toml --port P`` as a
subprocess. ``ConsoleSession`` is an HTTP client of the console (urllib: the session
cookie and the forms' CSRF token), for what a browser is not needed for.
"""

from __future__ import annotations

import html.parser
import http.cookiejar
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasite_setup.convert.federated_format import CLIENTS_DIR
from datasite_setup.site.owners import add_owner
from datasite_setup.site.site_admin import ensure_researcher, login
from tests.researcher.http_sites import EMAIL as RESEARCHER
from tests.researcher.http_sites import PASSWORD as RESEARCHER_PASSWORD
from tests.support.datasites import REPO, RunningSite, convert_sample, free_port

OWNER, OWNER_NAME, OWNER_PASSWORD = "grace@hospital.example", "Grace Hopper", "owner-pass-98765"
RESEARCHER_NAME = "Ada Lovelace"
CONSOLE_START_TIMEOUT_S = 60.0
PAGES = ("/requests", "/jobs", "/researchers", "/dataset", "/audit", "/health")

__all__ = [
    "OWNER",
    "OWNER_NAME",
    "OWNER_PASSWORD",
    "PAGES",
    "RESEARCHER",
    "RESEARCHER_PASSWORD",
    "ConsoleFederation",
    "ConsoleSession",
    "Response",
    "start_console_federation",
]


@dataclass
class ConsoleFederation:
    """Running sites, their ``federation.toml`` and the console serving them."""

    root: Path
    config: Path
    sites: list[RunningSite]
    port: int
    console: subprocess.Popen | None = None
    console_output: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The console's base URL (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def console_log(self) -> Path:
        return self.root / "console.log"

    def site(self, name: str) -> RunningSite:
        return next(site for site in self.sites if site.name == name)

    def researcher_federation(self, names: Iterable[str] | None = None) -> Any:
        """The researcher's ``researcher.Federation`` over ``names`` (default: every site)."""
        from researcher import Federation

        chosen = [self.site(name) for name in names] if names is not None else self.sites
        return Federation.from_urls(
            {s.name: s.url for s in chosen}, RESEARCHER, {s.name: RESEARCHER_PASSWORD for s in chosen}
        )

    def start_console(self) -> None:
        """``fedimg console federation.toml --port P``; returns once it answers ``/login``."""
        command = [sys.executable, "-m", "datasite_setup.cli", "console", str(self.config), "--port"]
        with open(self.console_log, "ab") as log:
            self.console = subprocess.Popen(
                [*command, str(self.port)],
                cwd=REPO,
                env=dict(os.environ),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + CONSOLE_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.console.poll() is not None:
                raise AssertionError(f"fedimg console exited with {self.console.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/login", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        raise AssertionError(
            f"fedimg console did not answer within {CONSOLE_START_TIMEOUT_S:.0f} s:\n{self.log()}"
        )

    def log(self) -> str:
        """The console's output so far (its last 4,000 characters)."""
        return self.console_log.read_text(errors="replace")[-4000:] if self.console_log.exists() else ""

    def stop(self) -> None:
        """Stop the console and every site (whatever state they are in)."""
        if self.console is not None and self.console.poll() is None:
            os.killpg(self.console.pid, signal.SIGTERM)
            try:
                self.console.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.console.pid, signal.SIGKILL)
                self.console.wait(15)
        for site in self.sites:
            site.stop()


def write_federation_toml(root: Path, data: Path, sites: list[RunningSite]) -> Path:
    """``root/federation.toml`` naming ``sites`` (their ports and state dirs) and the researcher."""
    lines = ["[federation]", f'data = "{data}"', f'state_root = "{root / "state"}"', ""]
    for site in sites:
        lines += [
            "[[site]]",
            f'name = "{site.name}"',
            f"port = {site.port}",
            f'state_dir = "{site.state_dir}"',
            "",
        ]
    lines += ["[[researcher]]", f'email = "{RESEARCHER}"', f'name = "{RESEARCHER_NAME}"']
    path = root / "federation.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_console_federation(
    root: Path, names: tuple[str, ...] = ("client_0",), *, policy: str = "", console: bool = True
) -> ConsoleFederation:
    """Sites ``names`` (digits sample, 16 px) with an owner and the researcher, and the console over them.

    Parameters
    ----------
    root : Path
        An empty folder: the partition, the state dirs, ``federation.toml``, the logs.
    names : tuple of str
        The sites (``client_0``, ``client_1``...: the sample is converted into that many clients).
    policy : str
        Every site's ``policy.toml`` ("" for the defaults).
    console : bool
        Start the console too (``ConsoleFederation.start_console`` does it later otherwise).

    Returns
    -------
    ConsoleFederation
        Stop it with ``stop()`` (also when a later step fails, this function stops what it started).
    """
    data = convert_sample(root / "federated", clients=len(names))
    sites = []
    for name in names:
        state = root / "state" / name
        state.mkdir(parents=True)
        if policy:
            (state / "policy.toml").write_text(policy)
        sites.append(RunningSite(name, data / CLIENTS_DIR / name, state, free_port()))
    running = ConsoleFederation(root, write_federation_toml(root, data, sites), sites, free_port())
    try:
        for site in sites:
            site.start(wait=False)
        for site in sites:
            site.wait_until_answering()
            admin = login(site.url, site.admin)
            add_owner(admin, email=OWNER, name=OWNER_NAME, password=OWNER_PASSWORD)
            ensure_researcher(admin, email=RESEARCHER, name=RESEARCHER_NAME, password=RESEARCHER_PASSWORD)
        if console:
            running.start_console()
    except BaseException:
        running.stop()
        raise
    return running


@dataclass(frozen=True)
class Response:
    """One console answer: status, final URL (after redirects), body, wall seconds."""

    status: int
    url: str
    body: str
    seconds: float
    location: str = ""


class _Csrf(html.parser.HTMLParser):
    """The first ``<input name="csrf" value=...>`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.token: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        fields = dict(attrs)
        if tag == "input" and fields.get("name") == "csrf" and self.token is None:
            self.token = fields.get("value") or ""


def csrf_token(page: str) -> str:
    """The CSRF token of the first form on ``page``; an AssertionError when it has none."""
    parser = _Csrf()
    parser.feed(page)
    if parser.token is None:
        raise AssertionError(f"no csrf field on the page:\n{page[:2000]}")
    return parser.token


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class ConsoleSession:
    """An HTTP client of the console with its own cookie jar (a browser without JavaScript).

    Parameters
    ----------
    base : str
        The console's URL.
    follow_redirects : bool
        Follow 303s (as a browser does) or return them (to see where they point).
    """

    def __init__(self, base: str, *, follow_redirects: bool = True) -> None:
        self.base = base.rstrip("/")
        self.cookies = http.cookiejar.CookieJar()
        handlers: list[Any] = [urllib.request.HTTPCookieProcessor(self.cookies)]
        if not follow_redirects:
            handlers.append(_NoRedirect())
        self.opener = urllib.request.build_opener(*handlers)

    def request(self, path: str, form: dict[str, str] | None = None, *, timeout: float = 60.0) -> Response:
        """GET ``path`` (or POST ``form`` to it); any status is returned, not raised."""
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        started = time.perf_counter()
        try:
            with self.opener.open(self.base + path, data=data, timeout=timeout) as answer:
                body = answer.read().decode("utf-8", "replace")
                return Response(answer.status, answer.url, body, time.perf_counter() - started)
        except urllib.error.HTTPError as error:
            body = error.read().decode("utf-8", "replace")
            location = error.headers.get("Location", "") if error.headers else ""
            return Response(error.code, error.url, body, time.perf_counter() - started, location)

    def csrf(self, path: str = "/login") -> str:
        """The CSRF token of the page at ``path``."""
        return csrf_token(self.request(path).body)

    def sign_in(self, email: str = OWNER, password: str = OWNER_PASSWORD) -> Response:
        """Sign in through ``/login`` as a browser would; the answer after the redirect."""
        return self.request("/login", {"email": email, "password": password, "csrf": self.csrf("/login")})

    def cookie(self, name: str = "fedimg_console") -> str | None:
        """The value of the console's session cookie, if it set one."""
        return next((c.value for c in self.cookies if c.name == name), None)
