"""Admin and researcher credentials: environment first, else generated once into 0600 files; never PySyft's defaults."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from pydantic import EmailStr, TypeAdapter

from datasite_setup.errors import FedimgError
from datasite_setup.site.credentials import (
    ADMIN_EMAIL_ENV,
    ADMIN_FILE,
    ADMIN_PASSWORD_ENV,
    MIN_PASSWORD_CHARS,
    SYFT_DEFAULT_PASSWORD,
    Credentials,
    admin_credentials,
    researcher_credentials,
    researcher_file,
)

EMAIL = TypeAdapter(EmailStr)  # what PySyft validates a user's e-mail with


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def no_admin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ADMIN_EMAIL_ENV, raising=False)
    monkeypatch.delenv(ADMIN_PASSWORD_ENV, raising=False)


# --- admin ---------------------------------------------------------------------------------


def test_generated_once_into_a_0600_file(tmp_path: Path) -> None:
    state = tmp_path / "state" / "hospital_a"
    first = admin_credentials(state, "hospital_a")
    path = state / ADMIN_FILE
    assert path.is_file() and mode(path) == 0o600
    assert mode(state) == 0o700
    assert json.loads(path.read_text()) == {"email": first.email, "password": first.password}
    assert len(first.password) >= MIN_PASSWORD_CHARS and first.password != SYFT_DEFAULT_PASSWORD
    assert first.email != "info@openmined.org"

    content = path.read_bytes()
    again = admin_credentials(state, "hospital_a")
    assert again == first
    assert path.read_bytes() == content, "a second call must not rewrite the file"


def test_every_site_gets_its_own_random_password(tmp_path: Path) -> None:
    a = admin_credentials(tmp_path / "a", "hospital_a")
    b = admin_credentials(tmp_path / "b", "hospital_b")
    assert a.password != b.password and a.email != b.email


@pytest.mark.parametrize(
    "site",
    ["hospital_a", "Hospital-B.2", "x", "a.", "a..b", "site_with_underscores_", "h" * 64, "a" + "." * 63],
)
def test_generated_email_is_valid_for_pydantic_and_email_validator(tmp_path: Path, site: str) -> None:
    import email_validator

    email = admin_credentials(tmp_path, site).email
    assert EMAIL.validate_python(email)
    email_validator.validate_email(email, check_deliverability=False)
    domain = email.rsplit("@", 1)[1]
    assert "_" not in domain


def test_generated_email_keeps_the_site_name_when_it_can(tmp_path: Path) -> None:
    assert admin_credentials(tmp_path, "hospital_a").email.startswith("hospital_a")


def test_environment_takes_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    admin_credentials(tmp_path, "hospital_a")  # a generated file exists
    monkeypatch.setenv(ADMIN_EMAIL_ENV, "root@hospital.example")
    monkeypatch.setenv(ADMIN_PASSWORD_ENV, "a-long-enough-password")
    assert admin_credentials(tmp_path, "hospital_a") == Credentials(
        "root@hospital.example", "a-long-enough-password"
    )


def test_environment_needs_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADMIN_EMAIL_ENV, "root@hospital.example")
    monkeypatch.setenv(ADMIN_PASSWORD_ENV, "a-long-enough-password")
    admin_credentials(tmp_path / "state", "hospital_a")
    assert not (tmp_path / "state" / ADMIN_FILE).exists()


@pytest.mark.parametrize("which", [ADMIN_EMAIL_ENV, ADMIN_PASSWORD_ENV])
def test_only_one_variable_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: str) -> None:
    monkeypatch.setenv(
        which, "root@hospital.example" if which == ADMIN_EMAIL_ENV else "a-long-enough-password"
    )
    with pytest.raises(FedimgError) as info:
        admin_credentials(tmp_path, "hospital_a")
    assert ADMIN_EMAIL_ENV in str(info.value) and ADMIN_PASSWORD_ENV in str(info.value)
    assert not (tmp_path / ADMIN_FILE).exists()


@pytest.mark.parametrize("password", [SYFT_DEFAULT_PASSWORD, "x" * (MIN_PASSWORD_CHARS - 1), "short"])
def test_weak_environment_password_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    monkeypatch.setenv(ADMIN_EMAIL_ENV, "root@hospital.example")
    monkeypatch.setenv(ADMIN_PASSWORD_ENV, password)
    with pytest.raises(FedimgError) as info:
        admin_credentials(tmp_path, "hospital_a")
    assert ADMIN_PASSWORD_ENV in str(info.value)
    assert password not in str(info.value), "the message must not echo the password"


def test_password_of_exactly_the_minimum_length_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ADMIN_EMAIL_ENV, "root@hospital.example")
    monkeypatch.setenv(ADMIN_PASSWORD_ENV, "p" * MIN_PASSWORD_CHARS)
    assert admin_credentials(tmp_path, "hospital_a").password == "p" * MIN_PASSWORD_CHARS


@pytest.mark.parametrize("email", ["not-an-address", "root@host_name.example", "a..b@hospital.example"])
def test_environment_email_pysyft_would_refuse_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, email: str
) -> None:
    monkeypatch.setenv(ADMIN_EMAIL_ENV, email)
    monkeypatch.setenv(ADMIN_PASSWORD_ENV, "a-long-enough-password")
    with pytest.raises(FedimgError, match=ADMIN_EMAIL_ENV):
        admin_credentials(tmp_path, "hospital_a")


def test_weak_password_in_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / ADMIN_FILE
    path.write_text(json.dumps({"email": "root@hospital.example", "password": SYFT_DEFAULT_PASSWORD}))
    path.chmod(0o600)
    with pytest.raises(FedimgError, match="default") as info:
        admin_credentials(tmp_path, "hospital_a")
    assert str(path) in str(info.value)


def test_loose_file_permissions_are_refused(tmp_path: Path) -> None:
    admin_credentials(tmp_path, "hospital_a")
    (tmp_path / ADMIN_FILE).chmod(0o644)
    with pytest.raises(FedimgError, match="chmod 600"):
        admin_credentials(tmp_path, "hospital_a")


@pytest.mark.parametrize("content", ["not json", '{"email": "a@b.example"}', "[1, 2]"])
def test_malformed_file_is_a_config_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / ADMIN_FILE
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(FedimgError, match="not a credentials file") as info:
        admin_credentials(tmp_path, "hospital_a")
    assert str(path) in str(info.value)


def test_repr_never_shows_the_password(tmp_path: Path) -> None:
    credentials = admin_credentials(tmp_path, "hospital_a")
    for text in (
        repr(credentials),
        str(credentials),
        f"{credentials}",
        repr([credentials]),
        repr({"c": credentials}),
    ):
        assert credentials.password not in text
        assert credentials.email in text


# --- researchers ---------------------------------------------------------------------------


def test_one_0600_file_per_researcher_with_a_password_per_site(tmp_path: Path) -> None:
    secrets_dir = tmp_path / "state" / "secrets"
    urls = {"hospital_a": "http://127.0.0.1:8081", "hospital_b": "http://127.0.0.1:8082"}
    ada = researcher_credentials(secrets_dir, "ada@university.example", "Ada", urls)
    alan = researcher_credentials(
        secrets_dir, "alan@university.example", "Alan", {"hospital_a": urls["hospital_a"]}
    )

    assert mode(secrets_dir) == 0o700
    assert mode(secrets_dir / "researchers") == 0o700
    ada_file, alan_file = (
        researcher_file(secrets_dir, "ada@university.example"),
        researcher_file(secrets_dir, "alan@university.example"),
    )
    assert ada_file != alan_file
    assert sorted(p.name for p in (secrets_dir / "researchers").iterdir()) == sorted(
        [ada_file.name, alan_file.name]
    )
    for path, document in ((ada_file, ada), (alan_file, alan)):
        assert mode(path) == 0o600
        assert json.loads(path.read_text()) == document

    assert ada["email"] == "ada@university.example" and ada["name"] == "Ada"
    assert {site: entry["url"] for site, entry in ada["sites"].items()} == urls
    passwords = [entry["password"] for entry in ada["sites"].values()] + [
        alan["sites"]["hospital_a"]["password"]
    ]
    assert len(set(passwords)) == 3, "one password per site and researcher"
    assert all(len(p) >= MIN_PASSWORD_CHARS and p != SYFT_DEFAULT_PASSWORD for p in passwords)


def test_rerun_keeps_passwords_and_adds_new_sites(tmp_path: Path) -> None:
    email = "ada@university.example"
    first = researcher_credentials(tmp_path, email, "Ada", {"hospital_a": "http://127.0.0.1:8081"})
    path = researcher_file(tmp_path, email)
    content = path.read_bytes()

    assert researcher_credentials(tmp_path, email, "Ada", {"hospital_a": "http://127.0.0.1:8081"}) == first
    assert path.read_bytes() == content, "nothing changed: the file is not rewritten"

    second = researcher_credentials(tmp_path, email, "Ada", {"hospital_b": "http://127.0.0.1:8082"})
    assert second["sites"]["hospital_a"] == first["sites"]["hospital_a"]
    assert set(second["sites"]) == {"hospital_a", "hospital_b"}
    assert second["sites"]["hospital_b"]["password"] != first["sites"]["hospital_a"]["password"]
    assert json.loads(path.read_text()) == second and mode(path) == 0o600

    moved = researcher_credentials(tmp_path, email, "Ada", {"hospital_a": "http://10.0.0.5:8081"})
    assert moved["sites"]["hospital_a"] == {
        "url": "http://10.0.0.5:8081",
        "password": first["sites"]["hospital_a"]["password"],
    }


def test_researcher_file_is_refused_when_readable_by_others(tmp_path: Path) -> None:
    researcher_credentials(tmp_path, "ada@university.example", "Ada", {"a": "http://127.0.0.1:1"})
    researcher_file(tmp_path, "ada@university.example").chmod(0o640)
    with pytest.raises(FedimgError, match="chmod 600"):
        researcher_credentials(tmp_path, "ada@university.example", "Ada", {"a": "http://127.0.0.1:1"})


def test_researcher_file_names_stay_inside_the_folder_and_never_collide(tmp_path: Path) -> None:
    emails = ["a+b@x.example", "a_b@x.example", "a/b@x.example", "../../etc@x.example", "ada@x.example"]
    paths = [researcher_file(tmp_path, email) for email in emails]
    assert len(set(paths)) == len(emails)
    for path in paths:
        assert path.parent == tmp_path / "researchers"
        assert "/" not in path.name and path.name not in (".", "..")
    assert researcher_file(tmp_path, "ada@x.example").name == "ada@x.example.json"

    first = researcher_credentials(tmp_path, "a+b@x.example", "A", {"s": "http://127.0.0.1:1"})
    second = researcher_credentials(tmp_path, "a_b@x.example", "B", {"s": "http://127.0.0.1:1"})
    assert second["email"] == "a_b@x.example"
    assert first["sites"]["s"]["password"] != second["sites"]["s"]["password"]
