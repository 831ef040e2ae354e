"""Issue 12: the researcher's purpose, from ``FedAvgJob(purpose=...)`` to the owner, and the policy that requires it.

The format is checked on its own (any text round-trips, the code's sha256 stays in the
reason, older requests read as no purpose); then one real site: a researcher submits a
job with a purpose full of newlines and look-alike markers, and the site's admin over
HTTP and a named owner over the owner channel (in the site's process) read it back exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import datasite_setup.site.site_admin as site_admin
from datasite_setup.cli import main
from datasite_setup.site.code_requests import PendingRequest, request_reasons, requests
from datasite_setup.site.owners import add_owner
from datasite_setup.site.site_admin import ensure_researcher, login
from policies import (
    PURPOSE_CHECK,
    PolicyError,
    SitePolicy,
    explain_check,
    load_site_policy,
    purpose_of_reason,
    reason_with_purpose,
    review_request,
    template_id,
)
from policies.request_review import PURPOSE_MARKER, UNKNOWN_CHECK_EXPLANATION
from researcher import FedAvgJob
from researcher.models import SmallCNN
from tests.policies.test_request_review import rendered
from tests.policies.test_request_review import request as good_request
from tests.researcher.http_sites import EMAIL, PASSWORD, connect, make_job
from tests.support.datasites import (
    RunningSite,
    convert_sample,
    password_file,
    start_site_with_policy,
)

SHA = "ab" * 32
TRICKY = [
    "",
    "Screening for diabetic retinopathy",
    "line one\nline two\r\n\ttabbed\n",
    'quotes " and \\ backslashes \\n (a literal backslash-n)',
    f'a purpose that contains the marker itself:{PURPOSE_MARKER}"forged"',
    "non-ASCII: ε, Zürich, 東京, emoji 🩺, line\u2028separator, nul \x00 byte",
    "lone surrogate \ud800 survives",
    "x" * 20_000,
]
OWNER, OWNER_PASSWORD = "grace@hospital.example", "owner-pass-98765"
PURPOSE = (
    "Train a digit classifier for the screening pilot (IRB 2026-17).\n"
    'Second line with "quotes", ε and a fake marker:'
    f'{PURPOSE_MARKER}"not this"\n'
    "  indented last line  "
)


# --- the format ----------------------------------------------------------------------------------


@pytest.mark.parametrize("purpose", TRICKY)
def test_any_purpose_round_trips_and_the_code_sha256_stays_in_the_reason(purpose: str) -> None:
    reason = f"fedimg FedAvg job 'cnn': 3 rounds (+1 final evaluation); site code sha256 {SHA}"
    text = reason_with_purpose(reason, purpose)
    assert text.startswith(reason)  # what PySyft shows the owner still begins with the job and its sha256
    assert purpose_of_reason(text) == purpose


def test_the_researchers_reason_cannot_forge_the_purpose() -> None:
    forged_reason = f'my reason{PURPOSE_MARKER}"forged purpose"'
    assert purpose_of_reason(reason_with_purpose(forged_reason, "the real one")) == "the real one"
    assert purpose_of_reason(reason_with_purpose(forged_reason, "")) == ""  # no purpose stated: none


@pytest.mark.parametrize(
    "reason",
    [
        None,
        "",
        f"fedimg FedAvg job 'cnn': 3 rounds (+1 final evaluation); site code sha256 {SHA}",  # before issue 12
        f"x{PURPOSE_MARKER}not json",
        f'x{PURPOSE_MARKER}["a list"]',
        f'x{PURPOSE_MARKER}"unterminated',
    ],
)
def test_requests_without_a_well_formed_purpose_read_as_none(reason: str | None) -> None:
    assert purpose_of_reason(reason) == ""


def test_pending_request_purpose_defaults_to_empty() -> None:
    fields = dict(
        id="0f",
        requester="ada",
        function_name="f",
        code="",
        inputs={},
        output_policy="",
        output_policy_kwargs={},
        status="PENDING",
    )
    assert PendingRequest(**fields).purpose == ""  # type: ignore[arg-type]


def test_the_job_keeps_its_purpose_and_refuses_one_that_is_not_text() -> None:
    assert FedAvgJob(SmallCNN, purpose="why").purpose == "why"
    assert FedAvgJob(SmallCNN).purpose == ""
    with pytest.raises(TypeError, match="purpose must be text"):
        FedAvgJob(SmallCNN, purpose=["not", "text"])  # type: ignore[arg-type]


# --- the policy option and the check ------------------------------------------------------------


def test_require_purpose_is_read_and_validated(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[review]\nrequire_purpose = true\n")
    assert load_site_policy(path).require_purpose is True
    assert load_site_policy(None).require_purpose is False
    path.write_text('[review]\nrequire_purpose = "yes"\n')
    with pytest.raises(PolicyError, match=r"policy.toml: \[review\] require_purpose must be true or false"):
        load_site_policy(path)
    path.write_text("[review]\nrequire_purposes = true\n")
    with pytest.raises(PolicyError, match="unknown key.*require_purposes.*require_purpose"):
        load_site_policy(path)


def test_the_purpose_check_exists_only_where_the_policy_requires_it() -> None:
    without = review_request(good_request(purpose=""), SitePolicy())
    assert PURPOSE_CHECK not in without.checks and all(without.checks.values())

    required = SitePolicy(require_purpose=True)
    for blank in ("", "  \n\t"):
        review = review_request(good_request(purpose=blank), required)
        assert review.checks[PURPOSE_CHECK] is False
        assert [name for name, ok in review.checks.items() if not ok] == [PURPOSE_CHECK]
    stated = review_request(good_request(purpose="screening pilot"), required)
    assert stated.checks[PURPOSE_CHECK] is True and all(stated.checks.values())


def test_a_missing_purpose_blocks_automatic_approval() -> None:
    policy = SitePolicy(require_purpose=True, auto_approve_templates=(template_id(),))
    assert review_request(good_request(purpose="why"), policy).auto_approvable
    assert not review_request(good_request(purpose=""), policy).auto_approvable


def test_render_shows_the_purpose_verbatim_or_that_none_was_stated() -> None:
    text = review_request(good_request(purpose="line one\nline two"), SitePolicy()).render()
    assert "  purpose: line one\n    line two\n" in text
    assert "  purpose: (none stated)" in review_request(good_request(), SitePolicy()).render()


# --- explanations ---------------------------------------------------------------------------------


def test_every_check_name_has_its_own_plain_explanation() -> None:
    policy = SitePolicy(require_purpose=True)
    reviews = [
        review_request(good_request(purpose="why"), policy),
        review_request(good_request(output_policy_kwargs={"limit": 99}), policy),  # the limit's name differs
        review_request(good_request(rendered().replace("return result", "return result, 1")), policy),
        review_request(good_request(code="def f(x):\n    return x\n"), policy),  # no rounds: "None"
    ]
    names = {name for review in reviews for name in review.checks}
    assert len(names) >= 7  # five checks + purpose, the limit's name in several spellings
    explanations = {name: explain_check(name) for name in names}
    for name, text in explanations.items():
        assert text != UNKNOWN_CHECK_EXPLANATION, name
        assert "\n" not in text and 40 < len(text) < 300, name
        assert "PySyft" not in text and "AST" not in text, name  # words a non-programmer would not follow
    # the six kinds of check get six different explanations, whatever numbers a name carries
    assert len(set(explanations.values())) == 6


def test_an_unknown_check_gets_the_general_sentence() -> None:
    assert explain_check("a check added later") == UNKNOWN_CHECK_EXPLANATION
    assert explain_check("") == UNKNOWN_CHECK_EXPLANATION


def _no_http_login(*args: object, **kwargs: object) -> None:
    raise AssertionError("the CLI logged in over HTTP although the site's owner channel answers")


# --- one real site --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSite]:
    root = tmp_path_factory.mktemp("purpose")
    running = start_site_with_policy(root, convert_sample(root / "out"), None)
    admin = login(running.url, running.admin)
    ensure_researcher(admin, email=EMAIL, name="Ada Lovelace", password=PASSWORD)
    add_owner(admin, email=OWNER, name="Grace Hopper", password=OWNER_PASSWORD)
    yield running
    running.stop()


def test_a_submitted_purpose_reaches_the_owners_exactly(
    site: RunningSite, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    federation = connect([site])
    job = make_job(federation, "with_purpose", min_sites=1, rounds=1, purpose=PURPOSE)
    with_purpose = job.submit(federation, reason="digits CNN")[site.name]
    without = make_job(federation, "no_purpose", min_sites=1, rounds=1).submit(federation)[site.name]

    admin = login(
        site.url, site.admin
    )  # the shared admin over HTTP: PySyft's root, whose inbox holds reasons
    reason = request_reasons(admin)[with_purpose]
    assert reason.startswith(f"digits CNN; site code sha256 {job.site_function(federation).sha256}\n")
    found = {request.id: request for request in requests(admin)}
    assert found[with_purpose].purpose == PURPOSE
    assert found[without].purpose == ""

    # a named owner over the owner channel: reviewed in the site's process, which reads the root's inbox
    monkeypatch.setattr(site_admin, "login", _no_http_login)  # what passes below went over the channel
    owner = ["--owner", OWNER, "--password-file", str(password_file(tmp_path, OWNER_PASSWORD))]
    arguments = ["review", "--site", site.url, "--state-dir", str(site.state_dir), *owner, "show"]
    assert main([*arguments, with_purpose]) == 0
    shown = capsys.readouterr().out
    assert "  purpose: " + PURPOSE.replace("\n", "\n    ") in shown
    assert main([*arguments, without]) == 0
    assert "  purpose: (none stated)" in capsys.readouterr().out
