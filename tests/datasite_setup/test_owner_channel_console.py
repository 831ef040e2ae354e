"""Issue 12: what a running site answers ``fedimg console`` over its owner channel.

One real site serves the module (PySyft, its sandbox, its audit log); a researcher
submits real FedAvg jobs over HTTP. An owner signs in with their password (refused for a
wrong one, a researcher's account, after too many failures), then lists requests with
their checks, explanations, findings, template, summary and purpose; denies one (the
researcher reads the reason), approves one (the audit names the owner), overrides a
failing check only with a reason (recorded as forced); sees a run's outcomes; adds and
disables a researcher (who then can, then cannot, log in over HTTP); sees the dataset's
counts and mock images; filters the audit log and sees a tampered log reported; checks
the site's health.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from datasite_setup.site.asset_maps import load_asset_index, open_map
from datasite_setup.site.credentials import Credentials
from datasite_setup.site.owner_channel.client import ask
from datasite_setup.site.owner_channel.owner_tokens import TOKEN_TTL_S, OwnerTokens
from datasite_setup.site.owners import add_owner
from datasite_setup.site.site_admin import dataset_summaries, ensure_researcher, login
from policies import AUDIT_FILE, AuditLog
from researcher import FedAvgJob, Federation, JobError
from tests.researcher.http_sites import EMAIL, PASSWORD, connect, make_job
from tests.support.datasites import RunningSite, convert_sample, start_site_with_policy

OWNER, OWNER_NAME, OWNER_PASSWORD = "grace@hospital.example", "Grace Hopper", "owner-pass-98765"
PURPOSE = "Screening study of handwritten digits:\nwhich CNN width is enough? (ε ≤ 1, ≥ 2 sites)"
POLICY = "[limits]\nlogin_failures = 3\n\n[privacy]\nepsilon_per_job = 4.0\nbudget_epsilon = 10.0\n"
VIA = "fedimg console"
# a model whose forward imports a module the site does not allow: the static review fails on that line
OFFENDING_MODEL = (
    "class Net(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.fc = nn.Linear(256, 10)\n"
    "\n"
    "    def forward(self, x):\n"
    "        import os\n"
    "        return self.fc(x.flatten(1).float())\n"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSite]:
    root = tmp_path_factory.mktemp("console")
    running = start_site_with_policy(root, convert_sample(root / "out"), POLICY)
    admin = login(running.url, running.admin)
    ensure_researcher(admin, email=EMAIL, name="Ada Lovelace", password=PASSWORD)
    add_owner(admin, email=OWNER, name=OWNER_NAME, password=OWNER_PASSWORD)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def token(site: RunningSite) -> str:
    answer = sign_in(site)
    assert answer["ok"], answer
    return str(answer["token"])


@pytest.fixture(scope="module")
def federation(site: RunningSite) -> Federation:
    return connect([site])


@pytest.fixture(scope="module")
def waiting(site: RunningSite, federation: Federation) -> str:
    """A request left pending (xdist may run any test of this module alone: none relies on another)."""
    return submit(federation, site, "console_waiting")[1]


@pytest.fixture(scope="module")
def denied(site: RunningSite, token: str, federation: Federation) -> str:
    """A request the owner denied through the console."""
    request_id = submit(federation, site, "console_refused")[1]
    assert console(site, token, "decide", request_id=request_id, decision="deny", reason="not now")["ok"]
    return request_id


@pytest.fixture(scope="module")
def ran(
    site: RunningSite, token: str, federation: Federation, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A request the owner approved through the console, run to its end (1 round + the evaluation)."""
    job, request_id = submit(federation, site, "console_ran")
    assert console(site, token, "decide", request_id=request_id, decision="approve")["ok"]
    job.run(federation, tmp_path_factory.mktemp("ran") / "checkpoint")
    return request_id


def sign_in(site: RunningSite, email: str = OWNER, password: str = OWNER_PASSWORD, address: str = "") -> dict:
    answer = ask(
        site.state_dir, {"action": "owner_login", "owner": email, "password": password, "address": address}
    )
    assert answer is not None, "the site's owner channel did not answer"
    return answer


def console(site: RunningSite, token: str, what: str, **arguments: Any) -> dict:
    answer = ask(site.state_dir, {"action": "console", "token": token, "what": what, **arguments})
    assert answer is not None, "the site's owner channel did not answer"
    return answer


def records(site: RunningSite, event: str) -> list[dict]:
    return [r for r in AuditLog(site.state_dir / AUDIT_FILE).records() if r["event"] == event]


def submit(federation: Federation, site: RunningSite, name: str, **settings: Any) -> tuple[Any, str]:
    job = make_job(federation, name, min_sites=1, rounds=1, **settings)
    return job, job.submit(federation)[site.name]


def by_id(answer: dict, request_id: str) -> dict:
    (found,) = [r for r in answer["requests"] if r["id"] == request_id]
    return found


def test_sign_in_refusals_throttling_and_signed_out_tokens(site: RunningSite) -> None:
    before = time.time()
    answer = sign_in(site, address="192.0.2.10")
    assert answer["ok"] and (answer["site"], answer["owner"], answer["name"]) == (
        site.name,
        OWNER,
        OWNER_NAME,
    )
    assert len(answer["token"]) == 64 and int(answer["token"], 16) >= 0
    assert before + TOKEN_TTL_S - 5 <= answer["expires"] <= time.time() + TOKEN_TTL_S + 5
    signed_in = [r for r in records(site, "owner") if r.get("action") == "console sign-in"][-1]
    assert (signed_in["email"], signed_in["via"], signed_in["address"]) == (OWNER, VIA, "192.0.2.10")
    assert "owner-pass" not in (site.state_dir / AUDIT_FILE).read_text()  # never a password

    wrong, researcher = sign_in(site, password="not-the-password!"), sign_in(site, EMAIL, PASSWORD)
    unknown = sign_in(site, "nobody@hospital.example", "whatever-password")
    assert not wrong["ok"] and not researcher["ok"] and not unknown["ok"]
    assert "token" not in wrong and "token" not in researcher
    assert wrong["error"].replace(OWNER, "X") == researcher["error"].replace(EMAIL, "X")  # the same refusal
    refused = [r for r in records(site, "owner") if r.get("action") == "login refused"]
    assert [(r["email"], r["via"]) for r in refused[-3:]] == [
        (OWNER, VIA),
        (EMAIL, VIA),
        ("nobody@hospital.example", VIA),
    ]

    for _ in range(3):  # [limits] login_failures = 3 from one address: then even the right password waits
        assert not sign_in(site, password="guessing-again!!", address="198.51.100.7")["ok"]
    locked = sign_in(site, address="198.51.100.7")
    assert not locked["ok"] and "Too many failed logins: try again in" in locked["error"]
    (lockout,) = records(site, "login_lockout")
    assert (lockout["kind"], lockout["address"], lockout["via"]) == ("account", "198.51.100.7", VIA)
    assert sign_in(site, address="198.51.100.8")["ok"]  # from another address the owner still gets in

    for bad in ("0" * 64, "", "not hex at all"):
        refused_answer = console(site, bad, "health")
        assert refused_answer["ok"] is False and refused_answer["signed_out"] is True
    assert ask(site.state_dir, {"action": "owner_logout", "token": answer["token"]}) == {"ok": True}
    assert console(site, answer["token"], "health")["signed_out"] is True


def test_a_token_expires_after_its_time_to_live() -> None:
    now = [0.0]
    tokens = OwnerTokens(clock=lambda: now[0])
    token, expires = tokens.issue(OWNER, OWNER_NAME, signing_key=None)
    assert expires == TOKEN_TTL_S == 8 * 3600
    now[0] = TOKEN_TTL_S - 1
    assert tokens.session(token) is not None
    now[0] = TOKEN_TTL_S
    assert tokens.session(token) is None and tokens.session(token.upper()) is None


def test_a_demoted_owner_is_signed_out(site: RunningSite) -> None:
    from syft.service.user.user_roles import ServiceRole

    admin = login(site.url, site.admin)
    add_owner(
        admin, email="temp-owner@hospital.example", name="Temporary Owner", password="temp-owner-pass-1"
    )
    answer = sign_in(site, "temp-owner@hospital.example", "temp-owner-pass-1")
    assert console(site, answer["token"], "health")["ok"]
    (user,) = [u for u in admin.users.get_all() if u.email == "temp-owner@hospital.example"]
    admin.api.services.user.update(uid=user.id, role=ServiceRole.DATA_SCIENTIST)
    demoted = console(site, answer["token"], "health")
    assert demoted["signed_out"] is True and "no longer an owner" in demoted["error"]


def test_requests_show_checks_explanations_template_summary_and_purpose(
    site: RunningSite, token: str, federation: Federation
) -> None:
    _, request_id = submit(federation, site, "console_listed", purpose=PURPOSE)
    answer = console(site, token, "requests")
    assert answer["ok"] and answer["site"] == site.name and answer["sandbox"] == "on"
    request = by_id(answer, request_id)
    assert (request["short_id"], request["requester"]) == (request_id[:8], EMAIL)
    assert (request["status"], request["state"], request["deny_reason"]) == ("PENDING", "pending", "")
    assert request["purpose"] == PURPOSE  # verbatim, lines and symbols kept
    assert request["created"].startswith(time.strftime("%Y-", time.gmtime()))
    assert "class SmallCNN" in request["code"] and len(request["code_sha256"]) == 64
    assert len(request["checks"]) >= 5 and all(check["ok"] for check in request["checks"])
    assert all(len(check["explanation"]) > 20 for check in request["checks"])
    assert request["template"]["matches"] is True and request["template"]["id"].startswith("fedavg-")
    assert request["findings"] == [] and request["runs"] == {"approved": 2, "used": 0}
    summary = request["summary"]
    assert {"reads", "runs", "leaves", "privacy", "secure_aggregation", "warnings", "sentences"} <= set(
        summary
    )
    counts = dataset_summaries(login(site.url, site.admin))[0].split_counts
    assert f"{counts['train']:,} images" in summary["reads"] and "no image" in summary["leaves"]
    assert summary["epsilon_job"] == pytest.approx(4.0)  # the site's DP: one job's ε
    assert "10" in summary["privacy"]  # against the researcher's budget here
    one = console(site, token, "requests", request_id=request_id[:8])
    assert [r["id"] for r in one["requests"]] == [request_id]
    assert records(site, "review")[-1]["request_id"] == request_id  # opening it is recorded, by the owner
    assert (records(site, "review")[-1]["by"], records(site, "review")[-1]["via"]) == (OWNER, VIA)
    assert "0 requests match" in console(site, token, "requests", request_id="ffffffff")["error"]


def test_a_denial_with_its_reason_reaches_the_researcher(
    site: RunningSite, token: str, federation: Federation
) -> None:
    job, request_id = submit(federation, site, "console_denied")
    refused = console(site, token, "decide", request_id=request_id, decision="deny", reason="  ")
    assert refused["ok"] is False and "reason" in refused["error"]
    reason = "one job per quarter; ask again in January"
    answer = console(site, token, "decide", request_id=request_id[:8], decision="deny", reason=reason)
    assert answer["ok"] and answer["lines"] == [f"{request_id}: denied by {OWNER} ({reason})"]
    assert job.approval_status(federation)[site.name] == ("REJECTED", reason)
    with pytest.raises(JobError, match="one job per quarter"):
        job.wait_for_approval(federation, timeout=30, show=False)
    listed = by_id(console(site, token, "requests"), request_id)
    assert (listed["status"], listed["state"], listed["deny_reason"]) == ("REJECTED", "denied", reason)
    decision = [r for r in records(site, "decision") if r["request_id"] == request_id][-1]
    assert (decision["decision"], decision["reason"], decision["by"], decision["via"]) == (
        "denied",
        reason,
        OWNER,
        VIA,
    )


def test_an_approval_names_the_owner_and_the_run_shows_in_jobs(
    site: RunningSite, token: str, federation: Federation, tmp_path: Path, waiting: str
) -> None:
    job, request_id = submit(federation, site, "console_approved")
    answer = console(site, token, "decide", request_id=request_id, decision="approve")
    assert answer["ok"] and answer["lines"][-1] == f"{request_id}: approved by {OWNER}"
    assert job.approval_status(federation)[site.name] == ("APPROVED", "")
    decision = [r for r in records(site, "decision") if r["request_id"] == request_id][-1]
    assert (decision["decision"], decision["by"], decision["by_name"], decision["by_role"]) == (
        "approved",
        OWNER,
        OWNER_NAME,
        "DATA_OWNER",
    )
    assert decision["shared_admin"] is False and decision["via"] == VIA and decision["forced"] is False
    assert by_id(console(site, token, "requests"), request_id)["state"] == "approved"
    again = console(site, token, "decide", request_id=request_id, decision="approve")
    assert again["ok"] is False and "0 requests match" in again["error"]  # only a pending one is decided

    job.run(federation, tmp_path / "checkpoint")  # 1 training round and the final evaluation
    jobs = console(site, token, "jobs")
    assert jobs["ok"] and jobs["site"] == site.name
    (ran,) = [j for j in jobs["jobs"] if j["id"] == request_id]
    assert ran["state"] == "done" and ran["runs"] == {"approved": 2, "used": 2}
    assert [o["outcome"] for o in ran["outcomes"]] == ["released", "released"]
    assert all(o["run_id"] and o["time"] and "bytes" in o["detail"] for o in ran["outcomes"])
    assert 0 < ran["epsilon_spent"] <= 4.0 + 1e-6  # the site's DP-SGD: within one job's ε
    assert by_id(console(site, token, "requests"), request_id)["state"] == "done"
    (pending,) = [j for j in jobs["jobs"] if j["id"] == waiting]
    assert (pending["state"], pending["outcomes"], pending["runs"]["used"]) == ("pending", [], 0)


def test_a_failing_check_blocks_approval_and_an_override_needs_a_reason(
    site: RunningSite, token: str, federation: Federation
) -> None:
    job = FedAvgJob(
        model_source=OFFENDING_MODEL, model_name="Net", name="console_forced", rounds=1, min_sites=1
    )
    request_id = job.submit(federation)[site.name]
    listed = by_id(console(site, token, "requests"), request_id)
    failing = [check["name"] for check in listed["checks"] if not check["ok"]]
    assert failing and any("static review" in name for name in failing)
    (finding,) = [f for f in listed["findings"] if f["severity"] == "error"]
    assert (
        "os" in finding["message"] and listed["code"].splitlines()[finding["line"] - 1].strip() == "import os"
    )
    assert listed["auto_approvable"] is False

    refused = console(site, token, "decide", request_id=request_id, decision="approve")
    assert refused["ok"] is False and "check(s) fail" in refused["error"]
    no_reason = console(
        site, token, "decide", request_id=request_id, decision="approve", force=True, reason=""
    )
    assert no_reason["ok"] is False and "reason" in no_reason["error"]
    assert job.approval_status(federation)[site.name][0] == "PENDING"  # nothing was approved
    reason = "the import is unused; reviewed with the researcher by phone"
    forced = console(
        site, token, "decide", request_id=request_id, decision="approve", force=True, reason=reason
    )
    assert forced["ok"], forced
    decision = [r for r in records(site, "decision") if r["request_id"] == request_id][-1]
    assert (
        decision["decision"],
        decision["forced"],
        decision["reason"],
        decision["by"],
        decision["via"],
    ) == (
        "approved",
        True,
        reason,
        OWNER,
        VIA,
    )


def test_researchers_added_and_disabled_by_the_owner(
    site: RunningSite, token: str, ran: str, waiting: str
) -> None:
    bob = "bob@university.example"
    refused = console(site, token, "researcher_add", email=bob, name="Bob", password="short")
    assert refused["ok"] is False and "12 characters" in refused["error"]
    added = console(site, token, "researcher_add", email=bob, name="Bob Kahn", password="bob-password-1234")
    assert added["ok"], added
    assert console(site, token, "researcher_add", email=bob, name="Bob", password="x" * 20)["ok"] is False
    assert dataset_summaries(login(site.url, Credentials(bob, "bob-password-1234")))  # he logs in over HTTP
    created = [r for r in records(site, "account") if r["email"] == bob][-1]
    assert (created["action"], created["role"], created["by"], created["shared_admin"]) == (
        "created",
        "DATA_SCIENTIST",
        OWNER,
        False,
    )
    listed = {r["email"]: r for r in console(site, token, "researchers")["researchers"]}
    assert listed[bob]["disabled"] is False and listed[bob]["requests"] == 0
    each = [j["epsilon_spent"] for j in console(site, token, "jobs")["jobs"] if j["outcomes"]]
    assert listed[EMAIL]["requests"] >= 2 and listed[EMAIL]["epsilon_budget"] == 10.0
    # the ledger composes the jobs that ran (RDP: at least the largest one's ε, at most their sum)
    assert each and max(each) - 1e-3 <= listed[EMAIL]["epsilon_spent"] <= sum(each) + 1e-3
    assert listed[bob]["epsilon_spent"] == 0.0
    assert OWNER not in listed  # owners are not researchers

    disabled = console(site, token, "researcher_disable", email=bob)
    assert disabled["ok"], disabled
    with pytest.raises(Exception, match="serves nothing without a login"):
        login(site.url, Credentials(bob, "bob-password-1234"))
    changed = [r for r in records(site, "account") if r["email"] == bob][-1]
    assert (changed["action"], changed["role"], changed["previous_role"], changed["by"]) == (
        "updated",
        "GUEST",
        "DATA_SCIENTIST",
        OWNER,
    )
    listed = {r["email"]: r for r in console(site, token, "researchers")["researchers"]}
    assert listed[bob]["disabled"] is True and listed[bob]["role"] == "GUEST"
    assert console(site, token, "researcher_disable", email=OWNER)["ok"] is False  # not a researcher


def test_the_dataset_page_shows_counts_and_mock_images_only(site: RunningSite, token: str) -> None:
    answer = console(site, token, "dataset")
    assert answer["ok"] and answer["dataset"].startswith(f"fedimg-{site.name}-")
    assert answer["version"] and answer["dataset"].endswith(answer["version"])
    assert answer["checksum"]["ok"] is True, answer["checksum"]
    counts = dataset_summaries(login(site.url, site.admin))[0].split_counts
    assert answer["splits"] == counts
    assert {split: sum(labels.values()) for split, labels in answer["labels"].items()} == counts
    index = {entry.asset: entry for entry in load_asset_index(site.state_dir).values()}
    mocks = np.asarray(open_map(index["train_images"], mock=True))[:, 0]
    private = np.asarray(open_map(index["train_images"]))[:, 0]
    assert 0 < len(answer["mocks"]) <= 24
    assert {m["label"] for m in answer["mocks"]} == set(answer["labels"]["train"])  # every label shown
    for mock in answer["mocks"]:
        image = np.asarray(Image.open(io.BytesIO(base64.b64decode(mock["png"]))))
        assert image.shape == mocks.shape[1:] and image.dtype == np.uint8
        assert (mocks == image).all(axis=(1, 2)).any()  # one of the mock twins...
        assert not (private == image).all(axis=(1, 2)).any()  # ...and none of the private images


def test_the_audit_is_filtered_and_a_tampered_log_is_reported(
    site: RunningSite, token: str, ran: str, denied: str
) -> None:
    answer = console(site, token, "audit")
    assert answer["ok"] and answer["chain"] == {"ok": True, "problems": []}
    every = AuditLog(site.state_dir / AUDIT_FILE).records()
    assert answer["total"] == len(every) and answer["records"][0] == every[-1]  # newest first
    assert [r["seq"] for r in answer["records"]] == sorted(
        (r["seq"] for r in answer["records"]), reverse=True
    )
    decisions = console(site, token, "audit", kind="decision")
    assert decisions["total"] >= 2 and {r["event"] for r in decisions["records"]} == {"decision"}
    theirs = console(site, token, "audit", researcher=EMAIL.upper(), limit=1000)["records"]
    key = next(r["researcher"] for r in records(site, "decision") if r["researcher_email"] == EMAIL)
    names = {EMAIL, key}  # runs name the researcher by their account's key, decisions by both
    people = ("requester", "researcher", "researcher_email", "email", "user")
    assert theirs and all(any(str(r.get(k, "")) in names for k in people) for r in theirs)
    assert {"decision", "release", "started"} <= {r["event"] for r in theirs}
    assert len(console(site, token, "audit", limit=2)["records"]) == 2
    one = console(site, token, "audit", request_id=ran[:8], limit=1000)["records"]
    assert {"decision", "started", "release"} <= {r["event"] for r in one}

    log = site.state_dir / AUDIT_FILE
    original = log.read_bytes()
    try:
        log.write_bytes(original.replace(b'"decision": "denied"', b'"decision": "approved"', 1))
        tampered = console(site, token, "audit")
        assert tampered["ok"] and tampered["chain"]["ok"] is False
        assert any("edited" in problem for problem in tampered["chain"]["problems"])
    finally:
        log.write_bytes(original)
    assert console(site, token, "audit")["chain"]["ok"] is True


def test_health(site: RunningSite, token: str) -> None:
    answer = console(site, token, "health")
    assert site.process is not None
    assert answer["ok"] and answer["site"] == site.name and answer["pid"] == site.process.pid
    assert answer["http"] is True and answer["sandbox"] == "on" and answer["warning"] == ""
    assert time.time() - 3600 < answer["started"] < time.time()
    assert answer["disk"]["state_dir_bytes"] > 0 and answer["disk"]["free_bytes"] > 0
    assert answer["dataset"].startswith(f"fedimg-{site.name}-")
