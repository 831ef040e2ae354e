"""The owner console's web layer against FAKE owner channels (issue 12).

Each fake site is a real Unix socket at ``<state_dir>/owner-channel/owner.sock``
speaking the channel's wire format (``protocol.encode/decode``) with canned answers
in the contract's shapes, so these tests cover what the console itself does: sign-in
and its throttle, sessions and their expiry, CSRF, redirects, escaping, every page's
HTML contract, a site that signs the owner out, and the parallel calls. The real
sites' answers are tested by ``tests/datasite_setup/test_owner_channel_console.py``
and the browser end to end by ``test_console_browser.py``.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from starlette.testclient import TestClient

from datasite_setup.cli import main
from datasite_setup.errors import FedimgError
from datasite_setup.site.console import ConsoleSite, check_host, create_app
from datasite_setup.site.console.pages import AUDIT_KINDS
from datasite_setup.site.owner_channel.protocol import decode, encode, socket_path
from policies import EVENTS, LimitSettings

ROOT = Path(__file__).resolve().parents[2]
OWNER, PASSWORD = "olga@hospital.example", "correct horse"
PENDING_ID = "a1b2c3d4" + "0" * 24
DONE_ID = "ffee0011" + "1" * 24
APPROVED_ID = "0badc0de" + "2" * 24
SCRIPT_PURPOSE = "Detect pneumonia <script>alert('purpose')</script> & more"
CODE = "import torch\nimport os  # </pre><script>alert('code')</script>\n\ndef train(data):\n    return os.listdir('/')\n"


def _png() -> str:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _request(request_id: str, state: str, created: str, **extra: Any) -> dict[str, Any]:
    request = {
        "id": request_id,
        "short_id": request_id[:8],
        "requester": "ada@university.example",
        "function_name": "fedavg_round",
        "status": {"pending": "PENDING", "denied": "REJECTED"}.get(state, "APPROVED"),
        "state": state,
        "deny_reason": "",
        "purpose": "",
        "created": created,
        "code": "x = 1\n",
        "code_sha256": "ab" * 32,
        "checks": [
            {"name": "Only allowed imports", "ok": True, "explanation": "The code uses only safe libraries."}
        ],
        "template": {"id": "fedavg-3:342c589ce451", "matches": True, "diff": ""},
        "findings": [],
        "summary": {"sentences": ["Reads the train split (1,234 images)."], "warnings": []},
        "runs": {"approved": 4, "used": 4 if state == "done" else 0},
        "auto_approvable": False,
    }
    request.update(extra)
    return request


class FakeSite:
    """A site's owner channel that answers from canned data and records what it was asked."""

    def __init__(self, name: str, *, delay: float = 0.0, sandbox: str = "on", chain_ok: bool = True) -> None:
        self.name = name
        self.state_dir = Path(tempfile.mkdtemp(prefix=f"hc-{name}-", dir="/tmp"))
        self.delay = delay
        self.sandbox = sandbox
        self.chain_ok = chain_ok
        self.accepts = {OWNER: PASSWORD}
        self.tokens: set[str] = set()
        self.asked: list[dict[str, Any]] = []
        path = socket_path(self.state_dir)
        path.parent.mkdir(mode=0o700)
        site = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                request = decode(self.rfile.readline())
                site.asked.append(request)
                if site.delay:
                    time.sleep(site.delay)
                self.wfile.write(encode(site.answer(request)))

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(str(path), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def console_asks(self, what: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.asked if r.get("action") == "console" and what in (None, r.get("what"))]

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        action = request.get("action")
        if action == "owner_login":
            if self.accepts.get(request.get("owner")) != request.get("password"):
                return {"ok": False, "error": "login refused"}
            token = f"token-{self.name}-{len(self.tokens)}"
            self.tokens.add(token)
            return {
                "ok": True,
                "site": self.name,
                "owner": OWNER,
                "name": "Olga Owner",
                "token": token,
                "expires": 0,
            }
        if action == "owner_logout":
            self.tokens.discard(request.get("token"))
            return {"ok": True}
        if action != "console":
            return {"ok": False, "error": f"unknown action {action}"}
        if request.get("token") not in self.tokens:
            return {"ok": False, "error": "your console sign-in has ended", "signed_out": True}
        return getattr(self, "_" + str(request.get("what")))(request)

    def _requests(self, request: dict[str, Any]) -> dict[str, Any]:
        pending = _request(
            PENDING_ID,
            "pending",
            "2026-12-01T09:00:00",
            purpose=SCRIPT_PURPOSE,
            code=CODE,
            checks=[
                {
                    "name": "Only allowed imports",
                    "ok": False,
                    "explanation": "The code imports os: it could read files.",
                },
                {
                    "name": "Matches the template",
                    "ok": True,
                    "explanation": "The training loop is fedimg's own.",
                },
            ],
            template={
                "id": "fedavg-3:342c589ce451",
                "matches": False,
                "diff": "@@ -1 +1 @@\n-import torch\n+import os",
            },
            findings=[
                {"line": 2, "column": 0, "severity": "error", "rule": "imports", "message": "imports os <b>"}
            ],
            summary={
                "sentences": [
                    "Reads the train split (1,234 images).",
                    "Differential privacy is OFF at this site.",
                ],
                "warnings": ["Differential privacy is OFF at this site."],
            },
        )
        requests = [
            _request(DONE_ID, "done", "2026-12-01T10:00:00"),
            pending,
            _request(APPROVED_ID, "approved", "2026-12-01T08:00:00"),
        ]
        if request.get("request_id"):
            requests = [r for r in requests if r["id"].startswith(request["request_id"])]
        return {"ok": True, "site": self.name, "sandbox": self.sandbox, "requests": requests}

    def _decide(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "lines": [f"{request['decision']}d {request['request_id'][:8]}"]}

    def _jobs(self, request: dict[str, Any]) -> dict[str, Any]:
        outcomes = [
            {"run_id": "r1", "time": 1_700_000_000.0, "outcome": "released", "rule": "", "detail": ""},
            {
                "run_id": "r2",
                "time": 1_700_000_100.0,
                "outcome": "refused",
                "rule": "min_images",
                "detail": "<i>too few</i>",
            },
        ]
        job = {
            "id": DONE_ID,
            "short_id": DONE_ID[:8],
            "requester": "ada@university.example",
            "function_name": "f",
            "state": "done",
            "runs": {"approved": 4, "used": 2},
            "epsilon_spent": 0.5,
            "outcomes": outcomes,
        }
        return {"ok": True, "site": self.name, "jobs": [job]}

    def _researchers(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "site": self.name,
            "researchers": [
                {
                    "email": "ada@university.example",
                    "name": "Ada",
                    "role": "DATA_SCIENTIST",
                    "disabled": False,
                    "requests": 3,
                    "epsilon_spent": 1.5,
                    "epsilon_budget": 8.0,
                }
            ],
        }

    def _researcher_add(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    def _researcher_disable(self, request: dict[str, Any]) -> dict[str, Any]:
        return (
            {"ok": False, "error": "no researcher nobody@x.org at this site"}
            if "nobody" in request["email"]
            else {"ok": True}
        )

    def _dataset(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "site": self.name,
            "dataset": f"digits-{self.name}",
            "version": "1.0",
            "checksum": {"ok": self.chain_ok, "detail": "sha256 of 600 files"},
            "splits": {"train": 70, "val": 20},
            "labels": {"train": {"0": 40, "1": 30}, "val": {"0": 12, "1": 8}},
            "mocks": [{"label": "0", "png": _png()}, {"label": "1", "png": "not base64 <script>"}],
        }

    def _audit(self, request: dict[str, Any]) -> dict[str, Any]:
        records = [
            {
                "seq": 1,
                "time": 1_700_000_200.0,
                "event": "decision",
                "decision": "deny",
                "reason": "<b>no</b>",
            },
            {
                "seq": 0,
                "time": 1_700_000_100.0,
                "event": "owner",
                "action": "console sign-in",
                "email": OWNER,
            },
        ]
        if request.get("kind"):
            records = [r for r in records if r["event"] == request["kind"]]
        chain = {
            "ok": self.chain_ok,
            "problems": [] if self.chain_ok else ["line 2: its hash does not match"],
        }
        return {"ok": True, "site": self.name, "chain": chain, "total": len(records), "records": records}

    def _health(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "site": self.name,
            "pid": 4242,
            "http": True,
            "sandbox": self.sandbox,
            "warning": "" if self.sandbox == "on" else "bubblewrap is missing",
            "started": time.time() - 7200,
            "disk": {"state_dir_bytes": 5 * 2**20, "free_bytes": 40 * 2**30},
            "dataset": f"digits-{self.name}",
        }


@pytest.fixture
def sites() -> Iterator[list[FakeSite]]:
    made = [FakeSite("hospital_a"), FakeSite("hospital_b", sandbox="OFF (unconfined)", chain_ok=False)]
    yield made
    for site in made:
        site.close()


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(sites: list[FakeSite], clock: Clock) -> TestClient:
    limits = LimitSettings(login_failures=2, login_backoff_seconds=30, login_backoff_max_seconds=60)
    app = create_app([ConsoleSite(s.name, s.state_dir) for s in sites], limits=limits, clock=clock)
    return TestClient(app, follow_redirects=False)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no csrf field in the page"
    return found.group(1)


def sign_in(client: TestClient, email: str = OWNER, password: str = PASSWORD) -> Any:
    page = client.get("/login")
    return client.post("/login", data={"email": email, "password": password, "csrf": csrf_of(page.text)})


def signed_in(client: TestClient) -> str:
    response = sign_in(client)
    assert response.status_code == 303 and response.headers["location"] == "/requests"
    return csrf_of(client.get("/requests").text)


def test_importing_the_console_does_not_import_syft() -> None:
    code = "import sys, datasite_setup.site.console, datasite_setup.site.console.app; print('syft' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_login_page_has_the_form_and_every_security_header(client: TestClient) -> None:
    response = client.get("/login")
    assert response.status_code == 200
    for needle in (
        '<form id="login"',
        'name="email"',
        'name="password"',
        'type="hidden" name="csrf"',
        'id="sign-in"',
    ):
        assert needle in response.text
    headers = response.headers
    assert headers["content-security-policy"] == (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'; form-action 'self'"
    )
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["cache-control"] == "no-store"
    css = client.get("/static/console.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]
    assert css.headers["x-content-type-options"] == "nosniff"
    assert "http" not in css.text.replace("http://www.w3.org", "")  # no asset from outside the machine


def test_pages_without_a_session_redirect_and_posts_are_refused(client: TestClient) -> None:
    for path in (
        "/requests",
        "/jobs",
        "/researchers",
        "/dataset",
        "/audit",
        "/health",
        f"/requests/hospital_a/{PENDING_ID}",
    ):
        response = client.get(path)
        assert (response.status_code, response.headers["location"]) == (303, "/login"), path
    for path in (f"/requests/hospital_a/{PENDING_ID}/deny", "/researchers/add", "/logout"):
        assert client.post(path, data={"reason": "x", "csrf": "guess"}).status_code == 403, path


def test_a_sign_in_opens_a_strict_httponly_expiring_session(
    client: TestClient, sites: list[FakeSite]
) -> None:
    response = sign_in(client)
    assert response.status_code == 303 and response.headers["location"] == "/requests"
    cookie = next(
        v for k, v in response.headers.multi_items() if k == "set-cookie" and v.startswith("fedimg_console=")
    )
    attributes = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in attributes and "samesite=strict" in attributes and "path=/" in attributes
    assert any(part.startswith("max-age=") for part in attributes)
    logins = [r for s in sites for r in s.asked if r["action"] == "owner_login"]
    assert [r["owner"] for r in logins] == [OWNER, OWNER]  # every site checked the password
    page = client.get("/requests")
    assert f'<strong id="whoami">{OWNER}</strong>' in page.text
    for nav in ("nav-requests", "nav-jobs", "nav-researchers", "nav-dataset", "nav-audit", "nav-health"):
        assert f'id="{nav}"' in page.text
    assert '<form id="logout" method="post" action="/logout">' in page.text
    assert client.get("/login").status_code == 303  # signed in: the login page sends you on


def test_a_refused_sign_in_shows_one_message_and_the_console_throttles(
    client: TestClient, sites: list[FakeSite]
) -> None:
    for _ in range(2):
        response = sign_in(client, password="wrong")
        assert response.status_code == 401
        assert '<p id="login-error"' in response.text and "Sign-in refused" in response.text
        assert "fedimg_console=" not in response.headers.get("set-cookie", "")
    asked = len(sites[0].asked)
    response = sign_in(client)  # even the right password waits: the pair is locked
    assert response.status_code == 429 and "Too many failed logins" in response.text
    assert len(sites[0].asked) == asked  # the sites were not asked at all


def test_a_site_that_refuses_is_left_out_of_the_session(client: TestClient, sites: list[FakeSite]) -> None:
    sites[1].accepts = {}
    signed_in(client)
    page = client.get("/requests").text
    assert "Not signed in at: hospital_b" in page
    assert 'data-site="hospital_b"' not in page and 'data-site="hospital_a"' in page


def test_a_post_without_the_csrf_token_is_refused(client: TestClient, sites: list[FakeSite]) -> None:
    signed_in(client)
    for data in ({"reason": "no"}, {"reason": "no", "csrf": "forged"}):
        response = client.post(f"/requests/hospital_a/{PENDING_ID}/deny", data=data)
        assert response.status_code == 403
    assert sites[0].console_asks("decide") == []
    page = client.get("/login")  # the sign-in form is protected too
    response = client.post("/login", data={"email": OWNER, "password": PASSWORD, "csrf": "forged"})
    assert page.status_code == 303 and response.status_code == 403


def test_requests_are_listed_pending_first_with_one_channel_request_per_site(
    client: TestClient, sites: list[FakeSite]
) -> None:
    signed_in(client)
    before = [len(site.console_asks()) for site in sites]
    page = client.get("/requests").text
    assert [len(site.console_asks()) for site in sites] == [n + 1 for n in before]
    rows = re.findall(
        r'<tr class="request[^"]*" data-site="([^"]+)" data-id="([^"]+)" data-status="([^"]+)"', page
    )
    assert [status for _, _, status in rows] == ["pending", "pending", "approved", "approved", "done", "done"]
    assert f'<a class="open" href="/requests/hospital_a/{PENDING_ID}">' in page
    assert "hospital_b runs approved code WITHOUT its sandbox" in page


def test_the_request_page_shows_the_purpose_as_text_and_the_review(client: TestClient) -> None:
    signed_in(client)
    page = client.get(f"/requests/hospital_a/{PENDING_ID}").text
    assert "<script>" not in page  # neither the purpose's nor the code's
    assert "Detect pneumonia &lt;script&gt;alert(&#39;purpose&#39;)&lt;/script&gt; &amp; more" in page
    assert '<blockquote id="purpose" class="verbatim">' in page
    assert re.search(r'<li class="warning"><strong>Warning:</strong> Differential privacy is OFF', page)
    assert page.count('<li class="check fail">') == 1 and page.count('<li class="check ok">') == 1
    assert '<span class="explanation">The code imports os: it could read files.</span>' in page
    assert '<div id="template">' in page and '<span class="add">+import os</span>' in page
    line = re.search(r'<tr class="line finding error" id="L2">(.*?)</tr>', page, re.S)
    assert line and '<div class="finding-message">error [imports]: imports os &lt;b&gt;</div>' in line.group(
        1
    )
    assert "&lt;/pre&gt;&lt;script&gt;" in line.group(1)
    assert re.search(r'<button id="approve-button" type="submit" class="approve" disabled', page)
    for needle in (
        '<form id="override"',
        'name="typed_id"',
        'id="override-button"',
        '<form id="deny"',
        '<textarea id="deny-reason" name="reason"',
        'id="deny-button"',
    ):
        assert needle in page


def test_a_matching_decided_request_says_so_and_offers_no_decision(client: TestClient) -> None:
    signed_in(client)
    page = client.get(f"/requests/hospital_a/{DONE_ID}").text
    assert "matches the fedimg training template; the researcher&#39;s own part is the model below" in page
    assert '<form id="approve"' not in page and "nothing to decide" in page
    assert client.get("/requests/hospital_a/deadbeef").status_code == 404
    assert client.get(f"/requests/nowhere/{DONE_ID}").status_code == 404


def test_an_override_needs_the_typed_short_id_and_a_reason(client: TestClient, sites: list[FakeSite]) -> None:
    csrf = signed_in(client)
    url = f"/requests/hospital_a/{PENDING_ID}"
    for typed, reason in (("", "trusted lab"), ("a1b2c3d5", "trusted lab"), (PENDING_ID[:8], "  ")):
        response = client.post(f"{url}/override", data={"csrf": csrf, "typed_id": typed, "reason": reason})
        assert (response.status_code, response.headers["location"]) == (303, url)
        page = client.get(url).text
        assert '<p id="error"' in page and "Override refused" in page and "Nothing was sent" in page
    assert sites[0].console_asks("decide") == []
    response = client.post(
        f"{url}/override", data={"csrf": csrf, "typed_id": " A1B2C3D4 ", "reason": "trusted lab"}
    )
    assert response.status_code == 303
    (decide,) = sites[0].console_asks("decide")
    assert (decide["decision"], decide["force"], decide["reason"], decide["request_id"]) == (
        "approve",
        True,
        "trusted lab",
        PENDING_ID,
    )
    assert '<p id="notice"' in client.get(url).text


def test_deny_needs_a_reason_and_approve_sends_no_force(client: TestClient, sites: list[FakeSite]) -> None:
    csrf = signed_in(client)
    url = f"/requests/hospital_b/{PENDING_ID}"
    client.post(f"{url}/deny", data={"csrf": csrf, "reason": " "})
    assert "A denial needs a reason" in client.get(url).text and sites[1].console_asks("decide") == []
    client.post(f"{url}/deny", data={"csrf": csrf, "reason": "No purpose <stated>"})
    client.post(f"{url}/approve", data={"csrf": csrf})
    decided = [(d["decision"], d["force"], d["reason"]) for d in sites[1].console_asks("decide")]
    assert decided == [("deny", False, "No purpose <stated>"), ("approve", False, "")]
    page = client.get(url).text
    assert (
        '<p id="notice" class="flash notice" role="status">Approved request a1b2c3d4 at hospital_b.' in page
    )
    assert 'id="notice"' not in client.get(url).text  # a flash is shown once


def test_every_other_page_renders_its_contract(client: TestClient) -> None:
    csrf = signed_in(client)
    jobs = client.get("/jobs").text
    assert (
        '<table id="jobs">' in jobs and f'<tr class="job" data-site="hospital_a" data-id="{DONE_ID}">' in jobs
    )
    assert (
        '<td class="runs">2 of 4</td>' in jobs
        and 'data-outcome="refused"' in jobs
        and "&lt;i&gt;too few" in jobs
    )
    researchers = client.get("/researchers").text
    assert '<tr class="researcher" data-site="hospital_b" data-email="ada@university.example">' in researchers
    assert '<td class="epsilon">1.5 of 8</td>' in researchers
    assert '<form id="add-researcher"' in researchers and '<form class="disable"' in researchers
    dataset = client.get("/dataset").text
    assert (
        '<section class="dataset" data-site="hospital_a"' in dataset and '<table class="counts">' in dataset
    )
    assert (
        '<svg class="label-plot"' in dataset
        and dataset.count('<img class="mock" src="data:image/png;base64,') == 2
    )
    assert "not base64" not in dataset  # only checked PNGs reach the page
    assert '<p class="checksum ok"' in dataset and '<p class="checksum bad"' in dataset
    audit = client.get("/audit").text
    assert '<div id="chain-status" class="tampered"' in audit
    assert (
        '<p class="chain ok" data-site="hospital_a">' in audit
        and '<p class="chain tampered" data-site="hospital_b">' in audit
    )
    assert "line 2: its hash does not match" in audit and '<form id="audit-filter" method="get"' in audit
    kinds = re.findall(r'<tr class="record" data-kind="([^"]+)" data-site="([^"]+)">', audit)
    assert len(kinds) == 4 and kinds[0][0] == "decision" and "&lt;b&gt;no&lt;/b&gt;" in audit
    filtered = client.get("/audit", params={"site": "hospital_a", "kind": "owner"}).text
    assert re.findall(r'data-kind="([^"]+)" data-site="([^"]+)"', filtered) == [("owner", "hospital_a")]
    health = client.get("/health").text
    assert '<div class="site card" data-site="hospital_a">' in health and '<p class="sandbox on">' in health
    assert '<p class="sandbox off alarm" role="alert"><strong>Sandbox: OFF (unconfined)</strong>' in health
    assert '<p class="disk">Disk: the state dir uses 5.0 MB; 40.0 GB free.</p>' in health
    assert re.search(r"\((1 h 59|2 h 0) min ago\)", health)
    for page in (
        jobs,
        researchers,
        dataset,
        audit,
        health,
        client.get(f"/requests/hospital_a/{PENDING_ID}").text,
    ):
        assert " style=" not in page and "<style" not in page  # the CSP allows no inline style
    assert csrf


def test_researchers_are_added_and_disabled_through_the_site(
    client: TestClient, sites: list[FakeSite]
) -> None:
    csrf = signed_in(client)
    form = {
        "csrf": csrf,
        "site": "hospital_a",
        "email": "bob@uni.example",
        "name": "Bob",
        "password": "s3cret-pass",
    }
    assert client.post("/researchers/add", data=form).headers["location"] == "/researchers"
    assert "Added researcher bob@uni.example at hospital_a." in client.get("/researchers").text
    client.post("/researchers/disable", data={"csrf": csrf, "site": "hospital_a", "email": "nobody@x.org"})
    assert "no researcher nobody@x.org at this site" in client.get("/researchers").text
    client.post("/researchers/add", data={**form, "password": ""})
    assert "needs an e-mail, a name and a password" in client.get("/researchers").text
    asked = [(r["what"], r["email"]) for r in sites[0].console_asks() if r["what"].startswith("researcher_")]
    assert asked == [("researcher_add", "bob@uni.example"), ("researcher_disable", "nobody@x.org")]
    assert sites[0].console_asks("researcher_add")[0]["password"] == "s3cret-pass"


def test_a_signed_out_answer_drops_the_site_then_the_session(
    client: TestClient, sites: list[FakeSite]
) -> None:
    signed_in(client)
    sites[0].tokens.clear()  # hospital_a forgets the token (restart, expiry)
    page = client.get("/jobs")
    assert page.status_code == 200 and "Not signed in at: hospital_a" in page.text
    assert 'data-site="hospital_b"' in page.text
    sites[1].tokens.clear()
    response = client.get("/jobs")
    assert (response.status_code, response.headers["location"]) == (303, "/login?signed_out=1")
    assert client.get("/requests").headers["location"] == "/login"
    assert "Your sign-in has ended at every site" in client.get("/login?signed_out=1").text


def test_sign_out_ends_the_session_at_every_site(client: TestClient, sites: list[FakeSite]) -> None:
    csrf = signed_in(client)
    response = client.post("/logout", data={"csrf": csrf})
    assert (response.status_code, response.headers["location"]) == (303, "/login")
    assert all(site.tokens == set() for site in sites)
    assert client.get("/requests").status_code == 303


def test_a_session_expires_when_idle(client: TestClient, clock: Clock) -> None:
    signed_in(client)
    clock.now += 29 * 60
    assert client.get("/health").status_code == 200
    clock.now += 29 * 60  # still alive: each request restarts the idle clock
    assert client.get("/health").status_code == 200
    clock.now += 31 * 60
    assert client.get("/health").headers["location"] == "/login"


def test_the_sites_are_asked_in_parallel() -> None:
    slow = [FakeSite(f"site_{n}", delay=0.4) for n in range(3)]
    try:
        client = TestClient(
            create_app([ConsoleSite(s.name, s.state_dir) for s in slow]), follow_redirects=False
        )
        signed_in(client)
        started = time.perf_counter()
        assert client.get("/requests").status_code == 200
        elapsed = time.perf_counter() - started
        assert elapsed < 0.9, f"3 sites of 0.4 s each took {elapsed:.2f} s: not asked in parallel"
    finally:
        for site in slow:
            site.close()


def test_a_stopped_site_is_named_on_the_page(client: TestClient, sites: list[FakeSite]) -> None:
    signed_in(client)
    sites[1].close()
    page = client.get("/health").text
    assert '<p class="site-error" role="alert" data-site="hospital_b">' in page and "is it running?" in page
    assert '<div class="site card" data-site="hospital_a">' in page


def test_no_site_answering_is_not_counted_as_a_wrong_password() -> None:
    app = create_app(
        [ConsoleSite("hospital_a", Path(tempfile.mkdtemp(dir="/tmp")))],
        limits=LimitSettings(login_failures=1),
    )
    client = TestClient(app, follow_redirects=False)
    for _ in range(3):
        response = sign_in(client)
        assert response.status_code == 401 and "No site answers on its owner channel" in response.text


def test_a_non_loopback_host_is_refused_unless_allowed(tmp_path: Path) -> None:
    with pytest.raises(FedimgError, match="not a loopback address"):
        check_host("192.0.2.7")
    check_host("::1")
    config = tmp_path / "federation.toml"
    config.write_text('[[site]]\nname = "hospital_a"\nport = 8081\n')
    assert main(["console", str(config), "--host", "0.0.0.0"]) == 2


def test_fedimg_console_prints_its_url_serves_and_stops_on_ctrl_c(
    tmp_path: Path, sites: list[FakeSite]
) -> None:
    config = tmp_path / "federation.toml"
    config.write_text(
        '[federation]\ndata = "out"\n'
        + "".join(
            f'[[site]]\nname = "{s.name}"\nport = {8081 + n}\nstate_dir = "{s.state_dir}"\n'
            for n, s in enumerate(sites)
        )
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "datasite_setup.cli", "console", str(config), "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.fullmatch(
            r"fedimg console: http://127\.0\.0\.1:(\d+)/ \(sites: hospital_a, hospital_b\)\n", line
        )
        assert found, line
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{found.group(1)}/login", timeout=10) as response:
            assert response.status == 200 and b'<form id="login"' in response.read()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
        assert "stopped" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_audit_kind_filter_names_every_audit_event_in_plain_words():
    assert tuple(kind for kind, _ in AUDIT_KINDS) == EVENTS
    assert all(label and label[0].isupper() for _, label in AUDIT_KINDS)
