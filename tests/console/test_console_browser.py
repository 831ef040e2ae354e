"""Issue 12, "Done when": the owner console driven in a real headless browser against a real datasite.

One site (the digits sample) serves the module, with a named owner and a researcher who
submitted five small FedAvg requests (one per test that decides or refuses something), and
``fedimg console federation.toml`` in front of it. Headless chromium (Selenium, Debian's
chromium-driver) signs in as the owner, reads a pending request (summary, purpose, checks,
code), denies one with a reason the researcher then sees, approves another that then runs
(its runs on the Jobs page, the decision and releases on the Audit page), and is refused an
override without the typed id; CSRF, a session-less request and a researcher's sign-in are
refused, and the refused requests stay pending.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from policies import AUDIT_FILE, AuditLog
from researcher import FedAvgJob, JobError
from tests.researcher.http_sites import make_job
from tests.support.console_federation import (
    OWNER,
    OWNER_PASSWORD,
    PAGES,
    RESEARCHER,
    RESEARCHER_PASSWORD,
    ConsoleFederation,
    ConsoleSession,
    start_console_federation,
)

SITE = "client_0"
PURPOSE = "Screen hand-written digit scans for a <legibility> study (ward 7 & 9)"
DENY_REASON = "Please name the ethics approval of the study first"
WAIT_S = 60
# a model that imports os: the static review fails, so only an override could approve it
PEEKING_MODEL = """\
class Peeking(nn.Module):
    def __init__(self):
        super().__init__()
        import os
        self.home = os.environ.get("HOME", "")
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))
"""


@dataclass
class Scene:
    """The running federation, the researcher's view of it, and the submitted jobs by role."""

    console: ConsoleFederation
    federation: Any
    jobs: dict[str, FedAvgJob]
    ids: dict[str, str]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    running = start_console_federation(tmp_path_factory.mktemp("console-browser"), (SITE,))
    try:
        federation = running.researcher_federation()
        jobs = {
            role: make_job(federation, f"console_{role}", rounds=1, min_sites=1, purpose=PURPOSE)
            for role in ("approve", "deny", "csrf", "sessionless")
        }
        jobs["override"] = FedAvgJob(
            model_source=PEEKING_MODEL,
            model_name="Peeking",
            name="console_override",
            rounds=1,
            purpose=PURPOSE,
        )
        ids = {role: job.submit(federation)[SITE] for role, job in jobs.items()}
        yield Scene(running, federation, jobs, ids)
    finally:
        running.stop()


# --- the browser's steps -------------------------------------------------------------------------


def wait(driver: Any, condition: Any, what: str, timeout: float = WAIT_S) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition, f"{what} (at {driver.current_url})")


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def one(driver: Any, selector: str) -> Any:
    found = css(driver, selector)
    assert found, f"no {selector} on {driver.current_url}:\n{driver.page_source[:3000]}"
    return found[0]


def path_of(driver: Any) -> str:
    return urllib.parse.urlsplit(driver.current_url).path


def sign_in(driver: Any, scene: Scene, email: str = OWNER, password: str = OWNER_PASSWORD) -> None:
    """Sign in from a fresh cookie jar through the login form (keyboard, as a person would)."""
    from selenium.webdriver.common.keys import Keys

    driver.get(scene.console.url + "/login")
    driver.delete_all_cookies()
    driver.get(scene.console.url + "/login")
    one(driver, "form#login input[name=email]").send_keys(email)
    one(driver, "form#login input[name=password]").send_keys(password)
    one(driver, "form#login input[name=password]").send_keys(Keys.ENTER)  # the form submits on Enter
    wait(driver, lambda d: css(d, "#whoami") or css(d, "#login-error"), "the sign-in's answer")


def signed_in(driver: Any, scene: Scene) -> None:
    """The owner's signed-in browser (signing in again when a test left it signed out)."""
    driver.get(scene.console.url + "/requests")
    if not css(driver, "#whoami"):
        sign_in(driver, scene)
        assert css(driver, "#whoami"), driver.page_source[:3000]


def open_request(driver: Any, scene: Scene, role: str) -> None:
    """From the Requests page, follow the link of ``role``'s request."""
    signed_in(driver, scene)
    row = one(driver, f"tr.request[data-site='{SITE}'][data-id='{scene.ids[role]}']")
    row.find_element("css selector", "a.open").click()
    wait(
        driver,
        lambda d: path_of(d) == f"/requests/{SITE}/{scene.ids[role]}" and css(d, "#summary"),
        "the request page",
    )


def row_status(driver: Any, scene: Scene, role: str) -> str:
    signed_in(driver, scene)
    return one(driver, f"tr.request[data-id='{scene.ids[role]}']").get_attribute("data-status")


def researcher_sees(scene: Scene, role: str) -> tuple[str, str]:
    return scene.jobs[role].approval_status(scene.federation)[SITE]


def flash(driver: Any) -> tuple[str, str]:
    """(``notice`` or ``error``, its text) shown after a POST's redirect."""
    wait(driver, lambda d: css(d, "#notice") or css(d, "#error"), "a #notice or #error")
    for kind in ("notice", "error"):
        if css(driver, f"#{kind}"):
            return kind, one(driver, f"#{kind}").text
    raise AssertionError("unreachable")


# --- the tests ------------------------------------------------------------------------------------


def test_the_owner_signs_in_and_sees_every_request_pending_first(browser: Any, scene: Scene) -> None:
    sign_in(browser, scene)

    assert path_of(browser) == "/requests"
    assert one(browser, "#whoami").text.strip() == OWNER
    for link in ("requests", "jobs", "researchers", "dataset", "audit", "health"):
        assert css(browser, f"nav a#nav-{link}, nav #nav-{link}"), link
    rows = css(browser, "table#requests tr.request")
    assert {row.get_attribute("data-id") for row in rows} >= set(scene.ids.values())
    states = [row.get_attribute("data-status") for row in rows]
    assert "pending" in states and set(states) <= {"pending", "approved", "denied", "running", "done"}
    pending = [index for index, state in enumerate(states) if state == "pending"]
    assert pending == list(range(len(pending))), states  # pending first


def test_a_pending_request_shows_its_summary_purpose_checks_and_code(
    browser: Any, scene: Scene, screenshots: Path
) -> None:
    open_request(browser, scene, "approve")

    sentences = [li.text for li in css(browser, "#summary li")]
    assert any(re.search(r"\b[\d,]+ images\b", s) for s in sentences), sentences  # what it reads
    weights = sum(w.size for w in scene.jobs["approve"].initial_weights().values())
    leaves = [s for s in sentences if "no image" in s.lower()]
    assert leaves and any(f"{weights:,}" in s for s in leaves), (weights, sentences)  # what leaves the site
    assert one(browser, "#purpose").text.strip() == PURPOSE  # verbatim, markup characters and all
    checks = css(browser, "#checks li.check")
    assert checks and not css(browser, "#checks li.check.fail")
    assert all(c.find_element("css selector", ".explanation").text.strip() for c in checks)
    assert "matches" in one(browser, "#template").text.lower()
    assert "class SmallCNN" in one(browser, "#code").text
    assert one(browser, "form#approve #approve-button").is_enabled()
    assert not css(browser, "form#override")
    browser.save_screenshot(str(screenshots / "request.png"))


def test_deny_with_a_reason_reaches_the_researcher(browser: Any, scene: Scene) -> None:
    open_request(browser, scene, "deny")
    one(browser, "form#deny textarea[name=reason]").send_keys(DENY_REASON)
    one(browser, "#deny-button").click()

    assert flash(browser)[0] == "notice"
    assert row_status(browser, scene, "deny") == "denied"
    assert researcher_sees(scene, "deny") == ("REJECTED", DENY_REASON)
    with pytest.raises(JobError, match=re.escape(DENY_REASON)):
        scene.jobs["deny"].wait_for_approval(scene.federation, timeout=5, poll_seconds=1, show=False)


def test_an_approved_request_runs_and_the_jobs_and_audit_pages_show_it(
    browser: Any, scene: Scene, tmp_path: Path, screenshots: Path
) -> None:
    job, request_id = scene.jobs["approve"], scene.ids["approve"]
    open_request(browser, scene, "approve")
    one(browser, "#approve-button").click()
    assert flash(browser)[0] == "notice"
    assert job.wait_for_approval(scene.federation, timeout=30, poll_seconds=1, show=False) == [SITE]

    result = job.run(scene.federation, tmp_path / "checkpoint")  # 1 round + the final evaluation

    assert len(result.history) == 2  # the round and the final evaluation, both answered
    one(browser, "#nav-jobs").click()
    wait(browser, lambda d: path_of(d) == "/jobs", "the Jobs page")
    row = one(browser, f"tr.job[data-site='{SITE}'][data-id='{request_id}']")
    assert re.sub(r"\s+", " ", row.find_element("css selector", "td.runs").text).strip() == "2 of 2"
    outcomes = [li.get_attribute("data-outcome") for li in row.find_elements("css selector", "li.run")]
    assert outcomes.count("released") == 2, outcomes

    function = job.site_function(scene.federation).name
    one(browser, "#nav-audit").click()
    wait(browser, lambda d: path_of(d) == "/audit" and css(d, "table#audit"), "the Audit page")
    assert "ok" in one(browser, "#chain-status").get_attribute("class").split()
    decisions = [
        r.text
        for r in css(browser, f"tr.record[data-kind='decision'][data-site='{SITE}']")
        if request_id[:8] in r.text
    ]
    assert decisions and OWNER in decisions[0] and "approve" in decisions[0].lower(), decisions
    releases = css(browser, f"tr.record[data-kind='release'][data-site='{SITE}']")
    assert len(releases) == 2 and all(function in r.text for r in releases)  # this federation's only job
    browser.save_screenshot(str(screenshots / "audit.png"))
    # the filter narrows the log to one kind
    filtered = f"{scene.console.url}/audit?kind=decision&site={SITE}"
    browser.get(filtered)
    kinds = {r.get_attribute("data-kind") for r in css(browser, "table#audit tr.record")}
    assert kinds == {"decision"}


def test_an_override_without_the_typed_id_is_refused(browser: Any, scene: Scene) -> None:
    open_request(browser, scene, "override")
    assert css(browser, "#checks li.check.fail")
    assert not one(browser, "#approve-button").is_enabled()
    marked = css(browser, "#code .finding")
    assert marked and "import os" in marked[0].text and css(browser, "#code .finding-message")

    one(browser, "form#override input[name=typed_id]").send_keys("00000000")  # not this request's id
    one(browser, "form#override input[name=reason]").send_keys("I read the code; it only reads HOME")
    one(browser, "#override-button").click()

    assert flash(browser)[0] == "error"
    assert row_status(browser, scene, "override") == "pending"
    assert researcher_sees(scene, "override") == ("PENDING", "")


def test_a_post_with_a_wrong_csrf_token_is_refused(browser: Any, scene: Scene) -> None:
    signed_in(browser, scene)
    cookie = browser.get_cookie("fedimg_console")
    assert cookie and cookie.get("httpOnly") and cookie.get("sameSite") == "Strict"
    http = ConsoleSession(scene.console.url)
    http.opener.addheaders = [("Cookie", f"fedimg_console={cookie['value']}")]  # the browser's session
    assert OWNER in http.request("/requests").body  # the session is valid: only the token is wrong below
    action = f"/requests/{SITE}/{scene.ids['csrf']}/approve"

    assert http.request(action, {"csrf": "0" * 64}).status == 403
    assert http.request(action, {}).status == 403
    # the same from the browser itself: a form injected into the page, posted with a wrong token
    open_request(browser, scene, "csrf")
    browser.execute_script(
        "const f = document.createElement('form'); f.method = 'POST'; f.action = arguments[0];"
        "const i = document.createElement('input'); i.name = 'csrf'; i.value = 'forged';"
        "f.appendChild(i); document.body.appendChild(f); f.submit();",
        action,
    )
    wait(browser, lambda d: path_of(d) == action, "the forged POST's answer")
    assert not css(browser, "#notice")
    assert row_status(browser, scene, "csrf") == "pending"
    assert researcher_sees(scene, "csrf") == ("PENDING", "")


def test_a_request_without_a_session_is_refused(browser: Any, scene: Scene) -> None:
    anonymous = ConsoleSession(scene.console.url, follow_redirects=False)
    request_page = f"/requests/{SITE}/{scene.ids['sessionless']}"
    for page in (*PAGES, request_page):
        answer = anonymous.request(page)
        assert answer.status == 303 and answer.location.endswith("/login"), (page, answer)
    token = anonymous.csrf("/login")  # a token of the login form is not a session
    for action in ("approve", "deny"):
        answer = anonymous.request(f"{request_page}/{action}", {"csrf": token, "reason": "no session"})
        assert answer.status == 403, (action, answer)

    browser.get(scene.console.url + "/login")
    browser.delete_all_cookies()
    browser.get(scene.console.url + request_page)
    assert path_of(browser) == "/login" and css(browser, "form#login") and not css(browser, "#whoami")
    assert row_status(browser, scene, "sessionless") == "pending"
    assert researcher_sees(scene, "sessionless") == ("PENDING", "")


def test_a_researcher_cannot_sign_in(browser: Any, scene: Scene) -> None:
    sign_in(browser, scene, RESEARCHER, RESEARCHER_PASSWORD)

    assert css(browser, "#login-error") and not css(browser, "#whoami")
    assert path_of(browser) == "/login"
    browser.get(scene.console.url + "/requests")
    assert path_of(browser) == "/login"  # no session was made
    refused = [
        r
        for r in AuditLog(scene.console.site(SITE).state_dir / AUDIT_FILE).records()
        if r["event"] == "owner" and r.get("action") == "login refused" and RESEARCHER in str(r)
    ]
    assert refused and refused[-1].get("via") == "fedimg console"
