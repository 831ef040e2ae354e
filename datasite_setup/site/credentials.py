"""Admin and researcher credentials: from the environment, or generated once into 0600 files.

PySyft's own defaults (``info@openmined.org`` / ``changethis``) are never used.
Passwords never reach a log or a command line: child processes get them through
files or their environment, and ``Credentials`` hides the password in its repr.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from datasite_setup.errors import FedimgError
from datasite_setup.private_file import read_private_file, write_private_file

ADMIN_EMAIL_ENV = "FEDIMG_ADMIN_EMAIL"
ADMIN_PASSWORD_ENV = "FEDIMG_ADMIN_PASSWORD"
ADMIN_FILE = "admin-credentials.json"
MIN_PASSWORD_CHARS = 12
SYFT_DEFAULT_PASSWORD = "changethis"


@dataclass(frozen=True)
class Credentials:
    email: str
    password: str = field(repr=False)


def email_problem(email: str) -> str | None:
    """Why PySyft would refuse ``email`` (its ``EmailStr`` runs email-validator without a DNS check), or None."""
    import email_validator  # installed with syft (pydantic[email])

    try:
        email_validator.validate_email(email, check_deliverability=False)
    except email_validator.EmailNotValidError as exc:
        return str(exc)
    return None


def generate_password() -> str:
    return secrets.token_urlsafe(24)


def admin_credentials(state_dir: Path, site_name: str) -> Credentials:
    """The site admin's login: ``$FEDIMG_ADMIN_EMAIL``/``$FEDIMG_ADMIN_PASSWORD``, else ``<state_dir>/admin-credentials.json``.

    The file is generated (0600) on first use with a random password.
    """
    email, password = os.environ.get(ADMIN_EMAIL_ENV), os.environ.get(ADMIN_PASSWORD_ENV)
    if email or password:
        if not (email and password):
            raise FedimgError(
                f"set both {ADMIN_EMAIL_ENV} and {ADMIN_PASSWORD_ENV}, or neither (then a generated password is kept in {state_dir / ADMIN_FILE})"
            )
        return _checked(Credentials(email, password), f"${ADMIN_EMAIL_ENV}/${ADMIN_PASSWORD_ENV}")
    path = Path(state_dir) / ADMIN_FILE
    if not path.exists():
        write_private_file(
            path, _dump({"email": generated_admin_email(site_name), "password": generate_password()})
        )
    return _checked(_load_credentials(path), str(path))


def generated_admin_email(site_name: str) -> str:
    """``<site>.admin@fedimg.example``, kept valid for every allowed site name.

    A site name may hold runs of dots or end in a dot; an e-mail local part may
    not (email-validator, which PySyft's EmailStr runs, refuses '..').
    """
    local = re.sub(r"\.{2,}", ".", site_name).rstrip(".")
    return f"{local}.admin@fedimg.example"


def _checked(credentials: Credentials, where: str) -> Credentials:
    problem = email_problem(credentials.email)
    if problem:
        raise FedimgError(
            f"{where}: the admin e-mail {credentials.email!r} is not an address PySyft accepts ({problem})"
        )
    if credentials.password == SYFT_DEFAULT_PASSWORD or len(credentials.password) < MIN_PASSWORD_CHARS:
        raise FedimgError(
            f"{where}: the admin password must have at least {MIN_PASSWORD_CHARS} characters and not be PySyft's default"
        )
    return credentials


def _load_credentials(path: Path) -> Credentials:
    try:
        document = json.loads(read_private_file(path, "credentials file"))
        return Credentials(document["email"], document["password"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise FedimgError(f"{path}: not a credentials file ({exc})") from exc


def _dump(document: dict) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def researcher_file(secrets_dir: Path, email: str) -> Path:
    """Where a researcher's credentials live: one 0600 JSON file per researcher."""
    safe = re.sub(r"[^A-Za-z0-9._@-]", "_", email)
    if safe != email:  # keep the name unique: 'a+b@x.org' and 'a_b@x.org' are two researchers
        safe += "-" + hashlib.sha256(email.encode()).hexdigest()[:12]
    return Path(secrets_dir) / "researchers" / (safe + ".json")


def researcher_credentials(secrets_dir: Path, email: str, name: str, site_urls: dict[str, str]) -> dict:
    """Load (or create) a researcher's credentials file: one generated password per site.

    Existing passwords are kept, so running ``fedimg up`` again changes nothing;
    new sites get a new password. Returns the file's content.
    """
    Path(secrets_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    path = researcher_file(secrets_dir, email)
    document = (
        json.loads(read_private_file(path, "credentials file"))
        if path.exists()
        else {"email": email, "name": name, "sites": {}}
    )
    if document.get("email") != email:
        raise FedimgError(
            f"{path}: holds the credentials of {document.get('email')!r}, not {email!r}; move it away"
        )
    changed = not path.exists()
    for site, url in site_urls.items():
        entry = document["sites"].setdefault(site, {})
        if entry.get("url") != url or "password" not in entry:
            entry.setdefault("password", generate_password())
            entry["url"] = url
            changed = True
    if changed:
        write_private_file(path, _dump(document), replace=True)
    return document
