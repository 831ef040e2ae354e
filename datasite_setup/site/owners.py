"""Named owner accounts: each person who decides on requests at a site logs in as themself.

A site starts with one shared admin account (its credentials in the state dir).
``fedimg owner add`` creates a DATA_OWNER account for a named person at a running
site; PySyft lets a data owner read, approve and deny requests, and the site's
audit log names the person behind every decision (``decisions``). The site itself
records the new account (an ``owner`` record, ``action: created``, naming the admin
who made it), as it records any account created, changed or deleted by any client:
nothing here writes to the audit log, so the account is recorded once. Passwords come
from a 0600 file or are typed (twice when an account is created): never from the
command line or the environment, where other users and child processes see them.
"""

from __future__ import annotations

import contextlib
import getpass
import io
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasite_setup.errors import FedimgError
from datasite_setup.site.credentials import MIN_PASSWORD_CHARS, Credentials, email_problem

Prompt = Callable[[str], str]
OWNER_ROLES = ("DATA_OWNER", "ADMIN")  # the roles PySyft lets approve and deny requests


def read_password(password_file: Path | None, *, confirm: bool, prompt: Prompt = getpass.getpass) -> str:
    """A password from ``password_file`` (first line; the file must not be readable by others) or typed.

    Parameters
    ----------
    password_file : Path or None
        A file holding the password; None: ask with ``prompt``.
    confirm : bool
        Ask twice and require the same answer (a new account's password).
    prompt : callable
        Asks for one line without echo (``getpass.getpass``).

    Returns
    -------
    str
        The password.

    Raises
    ------
    FedimgError
        A missing or group/world-readable file, an empty password, or two answers that differ.

    Examples
    --------
    >>> answers = iter(["correct horse battery", "correct horse battery"])
    >>> read_password(None, confirm=True, prompt=lambda text: next(answers))
    'correct horse battery'
    >>> read_password(None, confirm=True, prompt=lambda text: text)
    Traceback (most recent call last):
    ...
    datasite_setup.errors.FedimgError: the two passwords differ; nothing was changed
    """
    if password_file is not None:
        try:
            mode = password_file.stat().st_mode
            text = password_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise FedimgError(f"{password_file}: cannot read the password file ({exc.strerror})") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise FedimgError(f"{password_file}: others can read this password file; chmod 600 it")
        password = text[0] if text else ""
    else:
        password = prompt("password: ")
        if confirm and prompt("password again: ") != password:
            raise FedimgError("the two passwords differ; nothing was changed")
    if not password:
        raise FedimgError("empty password")
    return password


def add_owner(admin: Any, *, email: str, name: str, password: str) -> bool:
    """Create a DATA_OWNER account for a named person at a site, unless it exists as an owner.

    Parameters
    ----------
    admin : syft DatasiteClient
        The site's admin client (``site_admin.login`` with its admin credentials).
    email, name : str
        The person's login and full name (every decision they make is recorded with both).
    password : str
        At least ``MIN_PASSWORD_CHARS`` characters.

    Returns
    -------
    bool
        True when created; False when an owner (or admin) account with this e-mail exists
        (left unchanged).

    Raises
    ------
    FedimgError
        An invalid e-mail, a short password, a blank name, or an existing account with
        this e-mail that is not an owner (a researcher's account never becomes an owner).

    Examples
    --------
    >>> add_owner(None, email="not-an-email", name="Grace Hopper", password="x" * 16)
    Traceback (most recent call last):
    ...
    datasite_setup.errors.FedimgError: --email 'not-an-email': An email address must have an @-sign.
    """
    problem = email_problem(email)
    if problem:
        raise FedimgError(f"--email {email!r}: {problem}")
    if not name.strip():
        raise FedimgError("--name: give the owner's full name (decisions are recorded with it)")
    if len(password) < MIN_PASSWORD_CHARS:
        raise FedimgError(f"the password needs at least {MIN_PASSWORD_CHARS} characters")
    from syft.service.user.user_roles import ServiceRole

    for user in admin.users.get_all():
        if user.email == email:
            if user.role.name in OWNER_ROLES:
                return False
            raise FedimgError(
                f"{email} already has a {user.role.name} account at this site; an owner needs its own e-mail"
            )
    with contextlib.redirect_stdout(io.StringIO()):
        admin.users.create(
            name=name.strip(),
            email=email,
            password=password,
            password_verify=password,
            role=ServiceRole.DATA_OWNER,
            institution="",
        )
    return True


def owner_login(email: str, password_file: Path | None, prompt: Prompt = getpass.getpass) -> Credentials:
    """An owner's credentials for ``fedimg review --owner``: the password from the file or typed once.

    Examples
    --------
    >>> owner_login("grace@hospital.example", None, prompt=lambda text: "s3cret-enough-here")
    Credentials(email='grace@hospital.example')
    """
    return Credentials(email, read_password(password_file, confirm=False, prompt=prompt))
