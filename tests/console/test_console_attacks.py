"""Issue 12, red team: attacks on a real ``fedimg console`` in front of a real site, each refused.

One site (the digits sample) with a named owner and the researcher, and ``fedimg console
federation.toml`` in front of it, serve the module. Each test is an attack that worked
before its fix: a page of another host name resolving to 127.0.0.1 (DNS rebinding), a
cross-site POST carrying a valid session and CSRF token, a huge body sent to the
session-less sign-in form, an ``X-Forwarded-For`` header choosing the address that
failed sign-ins are counted and audited under, an over-long request id passed on to the
site, a second sign-in leaving the first session alive, and a crash page without the
security headers.
"""

from __future__ import annotations

import http.client
import re
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from datasite_setup.site.console import ConsoleSite, create_app
from policies import AUDIT_FILE, AuditLog
from tests.support.console_federation import (
    OWNER,
    OWNER_PASSWORD,
    ConsoleFederation,
    ConsoleSession,
    csrf_token,
    start_console_federation,
)

SITE = "client_0"
EVIL = "evil.example"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleFederation]:
    federation = start_console_federation(tmp_path_factory.mktemp("console-attacks"), (SITE,))
    try:
        yield federation
    finally:
        federation.stop()


def raw(
    running: ConsoleFederation, method: str, path: str, headers: dict[str, str], body: bytes | None = None
) -> tuple[int, dict[str, str], str]:
    """One request with exactly these headers (urllib would set Host itself)."""
    connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        headers: dict[str, str] = {}
        for key, value in answer.getheaders():  # two Set-Cookie headers are kept, joined
            headers[key.lower()] = f"{headers[key.lower()]}\n{value}" if key.lower() in headers else value
        return answer.status, headers, answer.read().decode()
    finally:
        connection.close()


def signed_in(running: ConsoleFederation) -> tuple[ConsoleSession, str]:
    """An owner's session and its CSRF token."""
    session = ConsoleSession(running.url, follow_redirects=False)
    assert session.sign_in().status == 303
    page = session.request("/requests")
    assert page.status == 200, page.body[:2000]
    return session, csrf_token(page.body)


def audit(running: ConsoleFederation) -> list[dict[str, Any]]:
    return AuditLog(running.site(SITE).state_dir / AUDIT_FILE).records()


def test_a_page_of_another_host_name_is_refused_dns_rebinding(running: ConsoleFederation) -> None:
    """A page on evil.example re-pointed at 127.0.0.1 is same-origin with what it loads: only Host tells."""
    for host in (f"{EVIL}:{running.port}", EVIL, f"127.0.0.1.{EVIL}:{running.port}"):
        status, headers, body = raw(running, "GET", "/login", {"Host": host})
        assert status in (400, 421), (host, status, body[:300])
        assert 'name="csrf"' not in body  # the attacker's page must not read a form token
        assert "default-src 'self'" in headers["content-security-policy"]
    status, _, body = raw(running, "POST", "/login", {"Host": f"{EVIL}:{running.port}"}, b"")
    assert status in (400, 421)
    for host in (f"127.0.0.1:{running.port}", f"localhost:{running.port}", f"[::1]:{running.port}"):
        assert raw(running, "GET", "/login", {"Host": host})[0] == 200, host


def test_a_cross_site_post_is_refused_even_with_the_session_and_token(running: ConsoleFederation) -> None:
    session, token = signed_in(running)
    cookie = session.cookie()
    form = {"csrf": token, "site": SITE, "email": "mallory@evil.example", "name": "M", "password": "x" * 16}
    body = urllib.parse.urlencode(form).encode()
    base = {
        "Host": f"127.0.0.1:{running.port}",
        "Cookie": f"fedimg_console={cookie}",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    for foreign in ({"Origin": f"http://{EVIL}"}, {"Origin": "null"}, {"Referer": f"http://{EVIL}/page"}):
        status, _, answer = raw(running, "POST", "/researchers/add", {**base, **foreign}, body)
        assert status == 403, (foreign, status, answer[:300])
    assert "mallory@evil.example" not in session.request("/researchers").body
    assert not [r for r in audit(running) if r.get("email") == "mallory@evil.example"]
    # the console's own pages send their origin: that POST still works (here: a harmless logout)
    same = {**base, "Origin": f"http://127.0.0.1:{running.port}"}
    status, headers, _ = raw(
        running, "POST", "/logout", same, urllib.parse.urlencode({"csrf": token}).encode()
    )
    assert (status, headers.get("location")) == (303, "/login")


def test_a_huge_body_is_refused_before_it_is_read(running: ConsoleFederation) -> None:
    """The sign-in form needs no session: its body must be bounded before the form parser reads it."""
    declared = 200 * 2**20
    with socket.create_connection(("127.0.0.1", running.port), timeout=30) as connection:
        connection.sendall(
            (
                f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{running.port}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {declared}\r\n\r\n"
            ).encode()
        )
        head = connection.recv(4096).decode(errors="replace")
    assert head.startswith("HTTP/1.1 413"), head[:300]
    # a chunked body (no length declared) is cut at the same bound
    with socket.create_connection(("127.0.0.1", running.port), timeout=30) as connection:
        connection.sendall(
            (
                f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{running.port}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )
        chunk = b"x" * 32768
        for _ in range(3):  # 96 KB: past the bound
            connection.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        head = connection.recv(4096).decode(errors="replace")
    assert head.startswith("HTTP/1.1 413"), head[:300]


def test_x_forwarded_for_cannot_choose_the_address_counted_and_audited(running: ConsoleFederation) -> None:
    """Every local process reaches the loopback console: a header must not rotate the throttle's address."""
    status, headers, page = raw(running, "GET", "/login", {"Host": f"127.0.0.1:{running.port}"})
    login_cookie = re.search(r"fedimg_console_login=([^;]+)", headers["set-cookie"])
    assert status == 200 and login_cookie
    form = {"email": "nobody@forwarded.example", "password": "wrong-password", "csrf": csrf_token(page)}
    status, _, _ = raw(
        running,
        "POST",
        "/login",
        {
            "Host": f"127.0.0.1:{running.port}",
            "Cookie": f"fedimg_console_login={login_cookie.group(1)}",
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Forwarded-For": "6.6.6.6",
            "Forwarded": "for=6.6.6.6",
        },
        urllib.parse.urlencode(form).encode(),
    )
    assert status == 401
    refused = [r for r in audit(running) if r.get("email") == "nobody@forwarded.example"]
    assert [r.get("action") for r in refused] == ["login refused"]
    assert refused[0].get("address") == "127.0.0.1"


def test_a_request_id_that_is_not_an_id_is_not_sent_to_the_site(running: ConsoleFederation) -> None:
    session, token = signed_in(running)
    long_id = "a" * 5000
    for request_id in (long_id, "..%2F..%2Fetc", "7727be0b%27%22%3E"):
        answer = session.request(f"/requests/{SITE}/{request_id}")
        assert answer.status == 404, (request_id, answer.status)
        assert "a" * 100 not in answer.body  # the site was not asked: it would echo the id back
    before = len(audit(running))
    answer = session.request(f"/requests/{SITE}/{'b' * 500}/deny", {"csrf": token, "reason": "no"})
    assert answer.status == 404
    assert len(audit(running)) == before


def test_signing_in_again_ends_the_session_held_before(running: ConsoleFederation) -> None:
    session = ConsoleSession(running.url, follow_redirects=False)
    assert session.sign_in().status == 303
    first = session.cookie()
    assert session.request("/requests").status == 200
    # the same browser posts the sign-in form again (a second tab, a shared machine's next owner)
    login = ConsoleSession(running.url, follow_redirects=False)
    form_token = login.csrf("/login")
    login_cookie = login.cookie("fedimg_console_login")
    status, headers, _ = raw(
        running,
        "POST",
        "/login",
        {
            "Host": f"127.0.0.1:{running.port}",
            "Cookie": f"fedimg_console={first}; fedimg_console_login={login_cookie}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        urllib.parse.urlencode({"email": OWNER, "password": OWNER_PASSWORD, "csrf": form_token}).encode(),
    )
    assert status == 303
    second = re.search(r"fedimg_console=([^;]+)", headers["set-cookie"])
    assert second and second.group(1) != first
    status, headers, _ = raw(
        running,
        "GET",
        "/requests",
        {"Host": f"127.0.0.1:{running.port}", "Cookie": f"fedimg_console={first}"},
    )
    assert (status, headers.get("location")) == (303, "/login")


def test_a_crash_page_carries_the_security_headers(tmp_path: Path) -> None:
    """Starlette's 500 page is sent outside added middleware: the headers must be added around it."""

    def broken(state_dir: Path, request: dict[str, Any], timeout: float = 0.0) -> dict[str, Any]:
        if request.get("action") == "owner_login":
            return {"ok": True, "site": SITE, "owner": OWNER, "name": "G", "token": "t" * 64, "expires": 0}
        raise RuntimeError("a site answer the console did not expect")

    app = create_app([ConsoleSite(SITE, tmp_path)], ask=broken)
    with TestClient(app, follow_redirects=False, raise_server_exceptions=False) as client:
        page = client.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token
        signed = client.post("/login", data={"email": OWNER, "password": "pw", "csrf": token.group(1)})
        assert signed.status_code == 303
        crashed = client.get("/requests")
    assert crashed.status_code == 500
    assert "frame-ancestors 'none'" in crashed.headers.get("content-security-policy", "")
    assert crashed.headers.get("x-content-type-options") == "nosniff"
    assert crashed.headers.get("cache-control") == "no-store"


def test_filter_values_are_shown_escaped_and_the_kind_is_a_choice(running: ConsoleFederation) -> None:
    """The Audit page reflects its filters; a crafted link must not put markup into the owner's page."""
    session, _ = signed_in(running)
    hostile = '"><script>alert(1)</script>'
    query = urllib.parse.urlencode({"researcher": hostile, "request": hostile, "kind": hostile})
    page = session.request(f"/audit?{query}")
    assert page.status == 200
    assert "<script>alert(1)</script>" not in page.body and "&#34;&gt;&lt;script&gt;" in page.body
    select = re.search(r'<select id="f-kind" name="kind">(.*?)</select>', page.body, re.S)
    assert select, page.body[:3000]
    options = dict(re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)</option>', select.group(1)))
    assert {"decision", "owner", "account", "release", "refusal", "login_lockout"} <= set(options)
    assert options["decision"] == "An owner approved or denied a request"
    decisions = session.request("/audit?kind=owner")
    assert re.search(r'<option value="owner" selected>', decisions.body)
    assert set(re.findall(r'data-kind="([^"]+)"', decisions.body)) == {"owner"}
