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
from typing import Any

from datasite_setup.errors import FedimgError
from datasite_setup.private_file import read_private_file, write_private_file

ADMIN_EMAIL_ENV = "FEDIMG_ADMIN_EMAIL"
ADMIN_PASSWORD_ENV = "FEDIMG_ADMIN_PASSWORD"
ADMIN_FILE = "admin-credentials.json"
MIN_PASSWORD_CHARS = 12
SYFT_DEFAULT_PASSWORD = "changethis"


@dataclass(frozen=True)
class Credentials:
    """A PySyft login; the password never shows in its repr.

    Parameters
    ----------
    email : str
        The account's e-mail address.
    password : str
        The account's password.

    Examples
    --------
    >>> Credentials("ada@university.example", "correct horse battery")
    Credentials(email='ada@university.example')
    """

    email: str
    password: str = field(repr=False)


def email_problem(email: str) -> str | None:
    """Why PySyft would refuse an e-mail address, or None when it would accept it.

    PySyft's ``EmailStr`` runs email-validator without a DNS check; so does this.

    Parameters
    ----------
    email : str
        The address to check.

    Returns
    -------
    str or None
        email-validator's explanation, or None for an address PySyft accepts.

    Examples
    --------
    >>> email_problem("ada@university.example") is None
    True
    >>> email_problem("ada..lovelace@university.example")
    '...two periods in a row.'
    """
    import email_validator  # installed with syft (pydantic[email])

    try:
        email_validator.validate_email(email, check_deliverability=False)
    except email_validator.EmailNotValidError as exc:
        return str(exc)
    return None


def generate_password() -> str:
    """A random password: 24 bytes from ``secrets``, URL-safe base64 (32 characters).

    Examples
    --------
    >>> len(generate_password()), generate_password() == generate_password()
    (32, False)
    """
    return secrets.token_urlsafe(24)


def admin_credentials(state_dir: Path, site_name: str) -> Credentials:
    """The site admin's login, from the environment or from a file in the state dir.

    ``$FEDIMG_ADMIN_EMAIL`` and ``$FEDIMG_ADMIN_PASSWORD`` when set; else
    ``<state_dir>/admin-credentials.json``, generated (0600) on first use with
    ``generated_admin_email`` and a random password.

    Parameters
    ----------
    state_dir : pathlib.Path
        The site's state dir.
    site_name : str
        The site's name, for a generated e-mail address.

    Returns
    -------
    Credentials
        The admin's e-mail and password.

    Raises
    ------
    FedimgError
        Only one of the two variables is set, the file is unreadable, readable by
        others or malformed, the e-mail is one PySyft refuses, or the password is
        PySyft's default or shorter than 12 characters.

    Examples
    --------
    >>> import os
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, clear=True):  # neither variable set: a generated file
    ...     credentials = admin_credentials(Path("state"), "hospital_a")
    >>> credentials
    Credentials(email='hospital_a.admin@fedimg.example')
    >>> oct((Path("state") / ADMIN_FILE).stat().st_mode & 0o777)
    '0o600'
    """
    email, password = os.environ.get(ADMIN_EMAIL_ENV), os.environ.get(ADMIN_PASSWORD_ENV)
    if email or password:
        if not (email and password):
            raise FedimgError(
                f"set both {ADMIN_EMAIL_ENV} and {ADMIN_PASSWORD_ENV}, or neither "
                f"(then a generated password is kept in {state_dir / ADMIN_FILE})"
            )
        return _checked(Credentials(email, password), f"${ADMIN_EMAIL_ENV}/${ADMIN_PASSWORD_ENV}")
    path = Path(state_dir) / ADMIN_FILE
    if not path.exists():
        write_private_file(
            path, _dump({"email": generated_admin_email(site_name), "password": generate_password()})
        )
    return _checked(_load_credentials(path), str(path))


def generated_admin_email(site_name: str) -> str:
    """The admin e-mail generated for a site: ``<site>.admin@fedimg.example``, valid for every site name.

    A site name may hold runs of dots or end in a dot; an e-mail local part may
    not (email-validator, which PySyft's EmailStr runs, refuses '..').

    Parameters
    ----------
    site_name : str
        An allowed site name.

    Returns
    -------
    str
        An address PySyft accepts.

    Examples
    --------
    >>> generated_admin_email("hospital_a")
    'hospital_a.admin@fedimg.example'
    >>> generated_admin_email("st..mary.")
    'st.mary.admin@fedimg.example'
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
            f"{where}: the admin password must have at least {MIN_PASSWORD_CHARS} characters "
            "and not be PySyft's default"
        )
    return credentials


def _load_credentials(path: Path) -> Credentials:
    try:
        document = json.loads(read_private_file(path, "credentials file"))
        return Credentials(document["email"], document["password"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise FedimgError(f"{path}: not a credentials file ({exc})") from exc


def _dump(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def researcher_file(secrets_dir: Path, email: str) -> Path:
    """Where a researcher's credentials live: one 0600 JSON file per researcher.

    Parameters
    ----------
    secrets_dir : pathlib.Path
        The federation's secrets dir.
    email : str
        The researcher's e-mail address.

    Returns
    -------
    pathlib.Path
        ``<secrets_dir>/researchers/<email>.json``; an address with characters unsafe
        in a file name gets them replaced and a hash of the address appended, so two
        researchers never share a file.

    Examples
    --------
    >>> researcher_file(Path("secrets"), "ada@university.example").as_posix()
    'secrets/researchers/ada@university.example.json'
    >>> researcher_file(Path("secrets"), "a+b@x.org").name
    'a_b@x.org-....json'
    """
    safe = re.sub(r"[^A-Za-z0-9._@-]", "_", email)
    if safe != email:  # keep the name unique: 'a+b@x.org' and 'a_b@x.org' are two researchers
        safe += "-" + hashlib.sha256(email.encode()).hexdigest()[:12]
    return Path(secrets_dir) / "researchers" / (safe + ".json")


def researcher_credentials(
    secrets_dir: Path, email: str, name: str, site_urls: dict[str, str]
) -> dict[str, Any]:
    """Load (or create) a researcher's credentials file: one generated password per site.

    Existing passwords are kept, so running ``fedimg up`` again changes nothing;
    new sites get a new password.

    Parameters
    ----------
    secrets_dir : pathlib.Path
        The federation's secrets dir (created 0700 if missing).
    email : str
        The researcher's e-mail address (their login on every site).
    name : str
        The researcher's name, recorded in a new file.
    site_urls : dict of str to str
        Site name -> URL of the sites this researcher gets a login on.

    Returns
    -------
    dict
        The file's content: ``email``, ``name`` and ``sites`` (site name -> ``url``, ``password``).

    Raises
    ------
    FedimgError
        When the file holds another researcher's credentials or is readable by others.

    Examples
    --------
    >>> sites = {"hospital_a": "http://127.0.0.1:8081"}
    >>> document = researcher_credentials(Path("secrets"), "ada@university.example", "Ada", sites)
    >>> sorted(document["sites"]["hospital_a"])
    ['password', 'url']
    >>> researcher_credentials(Path("secrets"), "ada@university.example", "Ada", sites) == document
    True
    """
    Path(secrets_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    path = researcher_file(secrets_dir, email)
    if path.exists():
        document = json.loads(read_private_file(path, "credentials file"))
    else:
        document = {"email": email, "name": name, "sites": {}}
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
