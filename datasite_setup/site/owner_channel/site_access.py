"""Which site an owner command means: its name, URL and state dir (light: no PySyft, no policies)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datasite_setup.errors import FedimgError
from datasite_setup.site.federation_config import load_federation_config


@dataclass(frozen=True)
class SiteAccess:
    """Where to reach one site as its owner.

    Parameters
    ----------
    name : str
        The site's name (its admin credentials are generated for it).
    url : str
        The site's base URL, without a trailing slash.
    state_dir : pathlib.Path
        The site's state dir: its admin credentials, ``policy.toml``, audit log and owner channel.
    """

    name: str
    url: str
    state_dir: Path


def resolve_site(site: str, config: Path | None, state_dir: Path | None) -> SiteAccess:
    """A site by name (through ``federation.toml``) or by URL (with its state dir).

    Parameters
    ----------
    site : str
        A site name from the config, or the site's ``http(s)://`` URL.
    config : pathlib.Path or None
        The ``federation.toml`` to read a name from (default ``./federation.toml``).
    state_dir : pathlib.Path or None
        The site's state dir: required with a URL; with a name it overrides the config's.

    Returns
    -------
    SiteAccess
        The site's name, URL and state dir.

    Raises
    ------
    FedimgError
        A URL without ``state_dir``, a missing config, or a name the config does not hold.

    Examples
    --------
    >>> access = resolve_site("http://127.0.0.1:8081/", None, Path("state/hospital_a"))
    >>> access.name, access.url
    ('hospital_a', 'http://127.0.0.1:8081')
    """
    if site.startswith(("http://", "https://")):
        if state_dir is None:
            raise FedimgError(
                f"--site {site}: give --state-dir (the site's admin credentials and audit log live there)"
            )
        return SiteAccess(state_dir.name, site.rstrip("/"), state_dir)
    path = config or Path("federation.toml")
    if not path.exists():
        raise FedimgError(
            f"--site {site}: no {path}; pass --config federation.toml or the site's URL with --state-dir"
        )
    found = load_federation_config(path).site(site)
    return SiteAccess(found.name, found.url, state_dir or found.state_dir)
