"""``federation.toml``: the sites an admin runs and the researchers who may use them.

```toml
[federation]
data = "demo_out/federated"        # the output of 'fedimg convert' (default data dir: <data>/clients/<site>)
state_root = "demo_out/state"      # default state dir of a site: <state_root>/<site>
secrets_dir = "demo_out/secrets"   # generated credentials (0600); default <state_root>/secrets

[[site]]
name = "hospital_a"
port = 8081
# host = "127.0.0.1"               # loopback unless you say otherwise
# data = "…/clients/hospital_a"    # default <federation.data>/clients/<name>
# state_dir = "…"                  # default <federation.state_root>/<name>
# db_url_env = "HOSPITAL_A_DB_URL" # PostgreSQL URL read from this variable (never inline: a password)

[[researcher]]
email = "ada@university.example"
name = "Ada Lovelace"
# sites = ["hospital_a"]           # default: every site
```

Relative paths are relative to the config file. Unknown keys are errors, so a
typo never silently falls back to a default.

``db_url_env`` is the only way a site started by ``fedimg up`` gets a database URL:
``up`` reads that variable and passes its value to that site alone (as
``FEDIMG_DB_URL``); every site starts from an allowlist of the operator's
environment (``datasite_setup.site.site_environment``), so one hospital's URL never
reaches another hospital's site.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasite_setup.convert.federated_format import CLIENTS_DIR, check_client_name
from datasite_setup.errors import FedimgError
from datasite_setup.site.credentials import email_problem

LOOPBACK = "127.0.0.1"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_KEYS = {
    "federation": {"data", "state_root", "secrets_dir"},
    "site": {"name", "port", "host", "data", "state_dir", "db_url_env"},
    "researcher": {"email", "name", "sites"},
}


@dataclass(frozen=True)
class SiteConfig:
    """One ``[[site]]`` of ``federation.toml``, with its defaults filled in.

    Parameters
    ----------
    name : str
        The site's (client's) name.
    port : int
        The port it serves on.
    host : str
        The address it listens on (loopback by default).
    data : pathlib.Path
        Its partition: ``<federation data>/clients/<name>`` by default.
    state_dir : pathlib.Path
        Its state dir: ``<state_root>/<name>`` by default.
    db_url_env : str or None
        The environment variable holding its PostgreSQL URL; None for SQLite in the state dir.
        ``fedimg up`` passes its value to this site only.

    Examples
    --------
    >>> site = SiteConfig("hospital_a", 8081, "127.0.0.1", Path("data"), Path("state"))
    >>> site.url, site.db_url()
    ('http://127.0.0.1:8081', None)
    """

    name: str
    port: int
    host: str
    data: Path
    state_dir: Path
    db_url_env: str | None = None

    @property
    def url(self) -> str:
        """The site's base URL, ``http://<host>:<port>``."""
        return f"http://{self.host}:{self.port}"

    def db_url(self) -> str | None:
        """The PostgreSQL URL from ``db_url_env``, or None without one.

        Raises
        ------
        FedimgError
            When the variable is unset or empty: an error, not a silent SQLite fallback.
        """
        if not self.db_url_env:
            return None
        value = os.environ.get(self.db_url_env)
        if not value:
            raise FedimgError(
                f"site {self.name}: environment variable {self.db_url_env} (db_url_env) is not set"
            )
        return value


@dataclass(frozen=True)
class ResearcherConfig:
    """One ``[[researcher]]``: who gets a login, on which sites.

    Parameters
    ----------
    email : str
        Their e-mail address (their login).
    name : str
        Their name (default: the address's local part).
    sites : tuple of str
        The sites they get a login on (default: every site).
    """

    email: str
    name: str
    sites: tuple[str, ...]


@dataclass(frozen=True)
class FederationConfig:
    """A checked ``federation.toml`` (``load_federation_config``), its paths made absolute.

    Parameters
    ----------
    path : pathlib.Path
        The config file.
    state_root : pathlib.Path
        Default parent of the sites' state dirs, and home of the run file.
    secrets_dir : pathlib.Path
        Where generated researcher credentials go.
    sites : tuple of SiteConfig
        The sites, in file order.
    researchers : tuple of ResearcherConfig
        The researchers, in file order.
    data : pathlib.Path or None
        ``[federation] data``: the output of ``fedimg convert``.
    """

    path: Path
    state_root: Path
    secrets_dir: Path
    sites: tuple[SiteConfig, ...]
    researchers: tuple[ResearcherConfig, ...] = field(default=())
    data: Path | None = None  # [federation] data: the output of 'fedimg convert'

    @property
    def run_file(self) -> Path:
        """``<state_root>/run.json``: the pid of every site ``fedimg up`` started."""
        return self.state_root / "run.json"

    def site(self, name: str) -> SiteConfig:
        """The site called ``name``.

        Raises
        ------
        FedimgError
            When there is none (the message lists the sites there are).
        """
        for site in self.sites:
            if site.name == name:
                return site
        raise FedimgError(
            f"{self.path}: no site named {name!r} (sites: {', '.join(s.name for s in self.sites)})"
        )


def load_federation_config(path: Path) -> FederationConfig:
    """Parse and check ``federation.toml`` (format in the module docstring).

    Parameters
    ----------
    path : pathlib.Path
        The config file; relative paths in it are relative to its folder.

    Returns
    -------
    FederationConfig
        The sites and researchers with every default filled in.

    Raises
    ------
    FedimgError
        When the file cannot be read or parsed, has an unknown section or key, a
        missing or invalid setting, or a duplicate site name, address or researcher;
        every message names the file and the setting.

    Examples
    --------
    >>> _ = Path("federation.toml").write_text('''
    ... [federation]
    ... data = "out"
    ... [[site]]
    ... name = "hospital_a"
    ... port = 8081
    ... [[researcher]]
    ... email = "ada@university.example"
    ... ''')
    >>> config = load_federation_config(Path("federation.toml"))
    >>> site = config.site("hospital_a")
    >>> site.url, site.data.relative_to(Path.cwd()).as_posix(), site.state_dir.name
    ('http://127.0.0.1:8081', 'out/clients/hospital_a', 'hospital_a')
    >>> config.researchers
    (ResearcherConfig(email='ada@university.example', name='ada', sites=('hospital_a',)),)
    """
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FedimgError(f"{path}: cannot be read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise FedimgError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise FedimgError(f"{path}: not valid TOML ({exc})") from exc
    unknown = sorted(set(document) - set(_KEYS))
    if unknown:
        raise FedimgError(
            f"{path}: unknown section(s) {unknown}; allowed: [federation], [[site]], [[researcher]]"
        )
    base = path.absolute().parent
    federation = _table(path, document.get("federation", {}), "federation")
    data = _path(base, federation.get("data"))
    state_root = _path(base, federation.get("state_root")) or base / "fedimg-state"
    secrets_dir = _path(base, federation.get("secrets_dir")) or state_root / "secrets"
    sites = tuple(_site(path, base, raw, data, state_root) for raw in _tables(path, document, "site"))
    if not sites:
        raise FedimgError(f"{path}: no [[site]] entries")
    _check_unique(path, "site name", [s.name for s in sites])
    _check_unique(path, "site address", [f"{s.host}:{s.port}" for s in sites])
    researchers = tuple(
        _researcher(path, raw, [s.name for s in sites]) for raw in _tables(path, document, "researcher")
    )
    _check_unique(path, "researcher email", [r.email for r in researchers])
    return FederationConfig(path, state_root, secrets_dir, sites, researchers, data)


def _tables(path: Path, document: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = document.get(key, [])
    if not isinstance(value, list):
        raise FedimgError(f"{path}: '{key}' must be an array of tables ([[{key}]])")
    return [_table(path, item, key) for item in value]


def _table(path: Path, value: object, section: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FedimgError(f"{path}: [{section}] must be a table")
    unknown = sorted(set(value) - _KEYS[section])
    if unknown:
        raise FedimgError(
            f"{path}: unknown key(s) {unknown} in [{section}]; allowed: {sorted(_KEYS[section])}"
        )
    return value


def _path(base: Path, value: object) -> Path | None:
    if value is None:
        return None
    return (base / str(value)).absolute()


def _site(path: Path, base: Path, raw: dict[str, Any], data: Path | None, state_root: Path) -> SiteConfig:
    name = raw.get("name")
    if not isinstance(name, str):
        raise FedimgError(f"{path}: every [[site]] needs a name")
    try:
        check_client_name(name)
    except FedimgError as exc:
        raise FedimgError(f"{path}: site {exc}") from exc
    port = raw.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise FedimgError(f"{path}: site {name}: port must be an integer from 1 to 65535 (got {port!r})")
    site_data = _path(base, raw.get("data")) or (data / CLIENTS_DIR / name if data else None)
    if site_data is None:
        raise FedimgError(f"{path}: site {name}: no data dir (set data here or [federation] data)")
    db_url_env = raw.get("db_url_env")
    if db_url_env is not None and not (
        isinstance(db_url_env, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", db_url_env)
    ):
        raise FedimgError(
            f"{path}: site {name}: db_url_env must name an environment variable (got {db_url_env!r})"
        )
    return SiteConfig(
        name=name,
        port=port,
        host=str(raw.get("host", LOOPBACK)),
        data=site_data,
        state_dir=_path(base, raw.get("state_dir")) or state_root / name,
        db_url_env=db_url_env,
    )


def _researcher(path: Path, raw: dict[str, Any], site_names: list[str]) -> ResearcherConfig:
    email = raw.get("email")
    if not isinstance(email, str) or not _EMAIL.match(email):
        raise FedimgError(f"{path}: researcher email {email!r} is not an e-mail address")
    problem = email_problem(email)
    if problem:
        raise FedimgError(
            f"{path}: researcher email {email!r} is not an e-mail address PySyft accepts ({problem})"
        )
    sites = raw.get("sites", site_names)
    if not isinstance(sites, list) or not sites or any(s not in site_names for s in sites):
        raise FedimgError(
            f"{path}: researcher {email}: sites must be a non-empty list of {site_names} (got {sites!r})"
        )
    return ResearcherConfig(email=email, name=str(raw.get("name", email.split("@")[0])), sites=tuple(sites))


def _check_unique(path: Path, what: str, values: list[str]) -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise FedimgError(f"{path}: {what} {value!r} appears twice")
        seen.add(value)
