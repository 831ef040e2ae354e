"""The environment a site process starts with: an allowlist, never the operator's whole environment.

``fedimg up`` runs in the operator's shell, which may hold the federation's
pseudonymisation key (``FEDIMG_SECRET``), other hospitals' database URLs and cloud
keys. None of that is any site's business, and the site runs researchers' code: it
starts from ``site_environment``, which copies only the variables below and adds the
site's own settings.

Copied from the operator's environment when set (none of them is a secret):

- ``PATH``: how the site finds programs, as the operator would;
- ``HOME``: where Python and its libraries look for per-user files (``~``), so that
  the site resolves ``~`` as the operator does;
- ``LANG``, ``LANGUAGE`` and ``LC_*``: the locale, i.e. the encoding Python uses for
  file names and text and the language of messages;
- ``TZ``: the time zone of the timestamps in the site's log;
- ``TMPDIR``: where temporary files go (PySyft's, and each sandbox worker's folder);
  an operator may point it at a larger disk.

Added by ``fedimg up`` for this site only:

- ``FEDIMG_DB_URL``: the site's PostgreSQL URL, taken from the variable its
  ``db_url_env`` names (``federation.toml``), never from another site's;
- ``FEDIMG_LOG_FILE``: the site's rotating log (``datasite_setup.site.site_log``);
- ``FEDIMG_ADMIN_EMAIL`` / ``FEDIMG_ADMIN_PASSWORD`` when the operator set them:
  the site's own admin login, which the site creates and ``up`` logs in with.

Deliberately not copied: ``PYTHONPATH`` and other ``PYTHON*`` variables (the site runs
the installed fedimg with ``sys.executable``), ``OMP_NUM_THREADS`` & co. (``up`` sets
each site's torch threads with ``--threads``; sandbox workers start with an empty
environment anyway), ``PG*`` (the database URL carries the connection), proxies
and certificate bundles (a site makes no outgoing connection), and PySyft's own
variables (``SERVER_PRIVATE_KEY``, ``SERVER_UID``: they would override the site's key).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from datasite_setup.site.credentials import ADMIN_EMAIL_ENV, ADMIN_PASSWORD_ENV

DB_URL_ENV = "FEDIMG_DB_URL"
LOG_FILE_ENV = "FEDIMG_LOG_FILE"
ALLOWED_VARIABLES = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR")
ALLOWED_PREFIXES = ("LC_",)
PASSED_CREDENTIALS = (ADMIN_EMAIL_ENV, ADMIN_PASSWORD_ENV)


def is_allowed(name: str) -> bool:
    """Whether the operator's variable ``name`` is copied into a site's environment.

    Parameters
    ----------
    name : str
        A variable's name.

    Returns
    -------
    bool
        True for the allowlist of the module docstring.

    Examples
    --------
    >>> [is_allowed(name) for name in ("LC_ALL", "PATH", "FEDIMG_SECRET", "AWS_SECRET_ACCESS_KEY")]
    [True, True, False, False]
    """
    return name in ALLOWED_VARIABLES or name.startswith(ALLOWED_PREFIXES)


def site_environment(
    db_url: str | None = None,
    *,
    log_file: Path | None = None,
    source: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The whole environment of one site process started by ``fedimg up``.

    Parameters
    ----------
    db_url : str or None
        The site's PostgreSQL URL (``SiteConfig.db_url()``), passed as ``FEDIMG_DB_URL``;
        None: no database variable at all (SQLite in the state dir).
    log_file : pathlib.Path or None
        The site's log, passed as ``FEDIMG_LOG_FILE``; None: the site logs to stderr.
    source : mapping or None
        The operator's environment (default ``os.environ``).

    Returns
    -------
    dict of str to str
        The allowlisted variables of ``source``, the admin login if set, and the site's own settings.

    Examples
    --------
    >>> operator = {"PATH": "/usr/bin", "LC_ALL": "C.UTF-8", "FEDIMG_SECRET": "k",
    ...             "HOSPITAL_B_DB_URL": "postgresql://b", "FEDIMG_DB_URL": "postgresql://other"}
    >>> environment = site_environment("postgresql://a", log_file=Path("/s/datasite.log"), source=operator)
    >>> for name, value in sorted(environment.items()):
    ...     print(name, value)
    FEDIMG_DB_URL postgresql://a
    FEDIMG_LOG_FILE /s/datasite.log
    LC_ALL C.UTF-8
    PATH /usr/bin
    """
    source = os.environ if source is None else source
    environment = {name: value for name, value in source.items() if is_allowed(name)}
    for name in PASSED_CREDENTIALS:  # the site creates its admin with these, and 'up' logs in with them
        if source.get(name):
            environment[name] = source[name]
    if db_url:
        environment[DB_URL_ENV] = db_url
    if log_file is not None:
        environment[LOG_FILE_ENV] = str(log_file)
    return environment
