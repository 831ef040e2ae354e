"""Issue 11, finding 6: every decision, whatever the path, is recorded by the site itself, naming who decided.

One running site serves every test here (module scope): a researcher submits small
jobs, and each test decides on one through another path — a plain PySyft admin
client, the code status changed directly, the Python helpers, ``fedimg review`` as
the shared admin, and ``fedimg review --owner`` as a named owner created with
``fedimg owner add``. Decisions on accounts likewise: an account created, its role
raised, its password reset or the account deleted — through ``fedimg owner add``, a
plain PySyft admin client or a named owner's client — is one ``owner`` record
written by the site, naming the acting account and the target, never a password.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from datasite_setup.cli import main
from datasite_setup.site import code_requests
from datasite_setup.site.credentials import Credentials
from datasite_setup.site.decisions import ACCOUNT_EVENT
from datasite_setup.site.owners import add_owner
from datasite_setup.site.site_admin import ensure_researcher, login
from policies import AUDIT_FILE, AuditLog, verify_audit_log
from tests.researcher.http_sites import EMAIL, PASSWORD, submit
from tests.support.datasites import (
    RunningSite,
    convert_sample,
    password_file,
    start_site_with_policy,
)

OWNER, OWNER_NAME, OWNER_PASSWORD = "grace@hospital.example", "Grace Hopper", "owner-pass-98765"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSite]:
    root = tmp_path_factory.mktemp("owners")
    running = start_site_with_policy(root, convert_sample(root / "out"), None)
    ensure_researcher(login(running.url, running.admin), email=EMAIL, name="Ada Lovelace", password=PASSWORD)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def federation_toml(site: RunningSite) -> Path:
    path = site.state_dir.parent / "federation.toml"
    path.write_text(
        f'[federation]\ndata = "{site.data.parent.parent}"\nstate_root = "{site.state_dir.parent}"\n\n'
        f'[[site]]\nname = "{site.name}"\nport = {site.port}\nstate_dir = "{site.state_dir}"\n'
    )
    return path


def decisions(site: RunningSite, request_id: str) -> list[dict]:
    records = AuditLog(site.state_dir / AUDIT_FILE).records()
    return [r for r in records if r["event"] == "decision" and r["request_id"] == request_id]


def account_records(site: RunningSite, email: str) -> list[dict]:
    records = AuditLog(site.state_dir / AUDIT_FILE).records()
    return [r for r in records if r["event"] == ACCOUNT_EVENT and r.get("email") == email]


def user_id(client, email: str):
    (found,) = [user.id for user in client.users.get_all() if user.email == email]
    return found


def admin_request(site: RunningSite, request_id: str):
    admin = login(site.url, site.admin)
    (request,) = [r for r in admin.requests if str(r.id) == request_id]
    return admin, request


def test_a_plain_pysyft_admin_client_approving_and_denying_is_recorded(site: RunningSite) -> None:
    request_id = submit(site, "plain_client")
    _, request = admin_request(site, request_id)
    request.approve()
    (approved,) = decisions(site, request_id)
    assert approved["decision"] == "approved" and approved["shared_admin"] is True
    assert approved["by"] == site.admin.email and approved["researcher_email"] == EMAIL
    assert approved["researcher_name"] == "Ada Lovelace" and approved["function"].startswith("fedimg_plain")
    assert "forced" not in approved  # the plain client said nothing of the checks
    request.deny("changed my mind")
    approved_again, denied = decisions(site, request_id)
    assert approved_again == approved
    assert (denied["decision"], denied["reason"], denied["code_id"]) == (
        "denied",
        "changed my mind",
        approved["code_id"],
    )


def test_changing_the_code_status_directly_is_recorded_once(site: RunningSite) -> None:
    from syft.service.code.user_code import ApprovalDecision, UserCodeStatus

    request_id = submit(site, "status_direct")
    admin, request = admin_request(site, request_id)
    status_id = request.code.status_link.object_uid
    decision = ApprovalDecision(status=UserCodeStatus.APPROVED, reason="")
    admin.api.services.code_status.update(id=status_id, decision=decision)
    admin.api.services.code_status.update(id=status_id, decision=decision)  # the same again: no new decision
    (record,) = decisions(site, request_id)  # the request was found from the code
    assert record["decision"] == "approved" and record["shared_admin"] is True


def test_the_python_helpers_are_recorded(site: RunningSite) -> None:
    request_id = submit(site, "helpers")
    admin = login(site.url, site.admin)
    code_requests.deny(admin, request_id, "not this quarter")
    (record,) = decisions(site, request_id)
    assert (record["decision"], record["reason"], record["by"]) == (
        "denied",
        "not this quarter",
        site.admin.email,
    )


def test_fedimg_review_as_the_shared_admin_is_recorded_once_with_the_forced_flag(site: RunningSite) -> None:
    request_id = submit(site, "review_admin")
    arguments = ["review", "--site", site.url, "--state-dir", str(site.state_dir), "approve", request_id]
    assert main(arguments) == 0
    (record,) = decisions(site, request_id)  # the CLI no longer writes a second one
    assert record["forced"] is False and record["via"] == "fedimg review" and record["shared_admin"] is True


def test_a_named_owner_decides_as_themself(site: RunningSite, federation_toml: Path, tmp_path: Path) -> None:
    secret = password_file(tmp_path, OWNER_PASSWORD)
    added = [
        "owner",
        "add",
        str(federation_toml),
        "--site",
        site.name,
        "--email",
        OWNER,
        "--name",
        OWNER_NAME,
    ]
    assert main([*added, "--password-file", str(secret)]) == 0
    assert main([*added, "--password-file", str(secret)]) == 0  # already there: unchanged
    (created,) = account_records(site, OWNER)  # recorded once, by the site, though the CLI ran twice
    assert (created["action"], created["name"], created["role"]) == ("created", OWNER_NAME, "DATA_OWNER")
    assert created["by"] == site.admin.email and created["shared_admin"] is True
    request_id = submit(site, "review_owner")
    review = ["review", "--site", site.name, "--config", str(federation_toml), "--owner", OWNER]
    assert (
        main([*review, "--password-file", str(secret), "deny", request_id, "--reason", "too many rounds"])
        == 0
    )
    (record,) = decisions(site, request_id)
    assert (record["by"], record["by_name"], record["by_role"]) == (OWNER, OWNER_NAME, "DATA_OWNER")
    assert record["shared_admin"] is False and record["reason"] == "too many rounds"
    wrong = password_file(tmp_path, "not-the-password!")
    assert main([*review, "--password-file", str(wrong), "list"]) == 2  # cannot log in: nothing decided
    assert verify_audit_log(site.state_dir / AUDIT_FILE) == []


def test_an_owner_account_needs_its_own_e_mail(site: RunningSite) -> None:
    from datasite_setup.errors import FedimgError

    with pytest.raises(FedimgError, match="already has a DATA_SCIENTIST account"):
        add_owner(login(site.url, site.admin), email=EMAIL, name="Ada Lovelace", password="x" * 16)


def test_a_password_file_others_can_read_is_refused(
    site: RunningSite, federation_toml: Path, tmp_path: Path
) -> None:
    secret = password_file(tmp_path, OWNER_PASSWORD)
    secret.chmod(0o644)
    arguments = ["owner", "add", str(federation_toml), "--site", site.name, "--email", "x@hospital.example"]
    assert main([*arguments, "--name", "X", "--password-file", str(secret)]) == 2


def test_account_changes_through_a_plain_pysyft_admin_client_are_recorded_once_each(
    site: RunningSite,
) -> None:
    from syft.service.user.user_roles import ServiceRole

    admin = login(site.url, site.admin)
    owner, owner_password = "eve@hospital.example", "created-by-client-24680"
    admin.users.create(
        name="Eve Admin-Made",
        email=owner,
        password=owner_password,
        password_verify=owner_password,
        role=ServiceRole.DATA_OWNER,
        institution="",
    )
    (created,) = account_records(site, owner)
    assert (created["action"], created["role"], created["name"]) == (
        "created",
        "DATA_OWNER",
        "Eve Admin-Made",
    )
    assert (created["by"], created["by_role"], created["shared_admin"]) == (site.admin.email, "ADMIN", True)

    researcher, new_password = "mallory@university.example", "reset-by-admin-13579"
    ensure_researcher(admin, email=researcher, name="Mallory", password="researcher-pass-1357")
    uid = user_id(admin, researcher)
    admin.api.services.user.update(uid=uid, role=ServiceRole.DATA_OWNER)
    admin.api.services.user.update(uid=uid, role=ServiceRole.DATA_OWNER)  # the same role again: no change
    admin.api.services.user.update(uid=uid, password=new_password)
    admin.api.services.user.delete(uid=uid)
    made, raised, reset, deleted = account_records(site, researcher)
    assert (made["action"], made["role"]) == ("created", "DATA_SCIENTIST")
    assert (raised["action"], raised["changed"], raised["role"], raised["previous_role"]) == (
        "updated",
        ["role"],
        "DATA_OWNER",
        "DATA_SCIENTIST",
    )
    assert (reset["action"], reset["changed"]) == ("updated", ["password"])
    assert (deleted["action"], deleted["role"]) == ("deleted", "DATA_OWNER")
    assert {r["by"] for r in (made, raised, reset, deleted)} == {site.admin.email}
    text = (site.state_dir / AUDIT_FILE).read_text()
    for secret in (owner_password, new_password, "researcher-pass-1357", "$2b$", "hashed_password", "salt"):
        assert secret not in text
    assert verify_audit_log(site.state_dir / AUDIT_FILE) == []


def test_a_named_owner_changing_accounts_is_recorded_as_themself(site: RunningSite) -> None:
    from syft.service.user.user_roles import ServiceRole

    admin = login(site.url, site.admin)
    owner = Credentials("linus@hospital.example", "named-owner-pass-8642")
    add_owner(admin, email=owner.email, name="Linus Owner", password=owner.password)
    researcher = "trent@university.example"
    ensure_researcher(admin, email=researcher, name="Trent", password="researcher-pass-2468")
    as_owner = login(site.url, owner)
    uid = user_id(as_owner, researcher)
    with pytest.raises(Exception, match="tried to update user"):  # an owner cannot make another owner
        as_owner.api.services.user.update(uid=uid, role=ServiceRole.DATA_OWNER)
    as_owner.api.services.user.delete(uid=uid)
    made, deleted = account_records(site, researcher)  # the refused update recorded nothing
    assert made["by"] == site.admin.email and deleted["action"] == "deleted"
    assert (deleted["by"], deleted["by_name"], deleted["by_role"]) == (
        owner.email,
        "Linus Owner",
        "DATA_OWNER",
    )
    assert deleted["shared_admin"] is False
