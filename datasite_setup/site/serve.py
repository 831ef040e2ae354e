"""``fedimg datasite serve``: open a site's datasite, ingest its partition, serve it over HTTP."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from datasite_setup.errors import FedimgError
from datasite_setup.site.credentials import admin_credentials
from datasite_setup.site.datasite import clear_syft_import_environment, redact_url
from datasite_setup.site.syft_patches import register_enforcer
from policies import (
    POLICY_FILE,
    PolicyError,
    SiteEnforcer,
    SitePolicy,
    load_or_create_site_key,
    load_site_policy,
    public_key_hex,
)

DB_URL_ENV = "FEDIMG_DB_URL"
INGEST_JOURNAL = "ingest-journal.json"  # blob files before an upload in progress (datasite_setup.site.ingest)


def default_state_dir(name: str) -> Path:
    """Where a site keeps its state when ``--state-dir`` is not given: ``$XDG_STATE_HOME/fedimg/<name>``.

    Parameters
    ----------
    name : str
        The site's name.

    Returns
    -------
    Path
        ``~/.local/state/fedimg/<name>`` when ``XDG_STATE_HOME`` is unset.

    Examples
    --------
    >>> default_state_dir("client_0").parts[-2:]
    ('fedimg', 'client_0')
    """
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "fedimg" / name


def serve_site(
    *,
    name: str,
    data: Path,
    port: int,
    host: str,
    state_dir: Path | None,
    db_url: str | None,
    show_progress: bool,
    policy_file: Path | None = None,
) -> int:
    """Open the site's datasite, ingest its partition, enforce its policy and serve it until SIGINT/SIGTERM.

    Parameters
    ----------
    name : str
        The site's name (a client of the converted federation).
    data : Path
        The site's partition (its client folder of the converted federation).
    port, host : int, str
        Where to serve HTTP.
    state_dir : Path or None
        The site's state dir (``default_state_dir(name)`` when None).
    db_url : str or None
        A PostgreSQL URL (else ``$FEDIMG_DB_URL``, else SQLite in the state dir).
    show_progress : bool
        Show the upload's progress.
    policy_file : Path or None
        The site's policy (else ``<state_dir>/policy.toml``, else the defaults).

    Returns
    -------
    int
        The exit code.
    """
    from datasite_setup.convert.federated_format import check_client_name

    check_client_name(name)
    clear_syft_import_environment()  # before the first 'import syft' of this process
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
    )
    # syft sets the root logger to CRITICAL when a server starts
    logging.getLogger("fedimg").setLevel(logging.INFO)
    state_dir = (state_dir or default_state_dir(name)).absolute()
    db_url = db_url or os.environ.get(DB_URL_ENV) or None
    database = redact_url(db_url) if db_url else "SQLite"
    admin = admin_credentials(state_dir, name)
    from datasite_setup.site.datasite import open_datasite, serve
    from datasite_setup.site.heap import use_serving_thresholds
    from datasite_setup.site.ingest import ingest_partition

    worker = open_datasite(name, state_dir, admin, db_url=db_url)
    site_key = public_key_hex(load_or_create_site_key(state_dir))
    result = ingest_partition(
        worker,
        data,
        show_progress=show_progress,
        extra_info={"secure_aggregation_public_key": site_key},
        journal=state_dir / INGEST_JOURNAL,
    )
    policy = _read_site_policy(state_dir, policy_file)
    register_enforcer(worker, SiteEnforcer(worker.name, state_dir, policy, _num_classes(data)))
    action = "ingested" if result.created else "already holds"
    removed = f"; removed previous version(s) {', '.join(result.removed)}" if result.removed else ""
    print(f"datasite {name} {action} {result.dataset} ({result.num_samples} samples){removed}", flush=True)
    print(
        f"datasite {name} release policy: {policy.source} (min {policy.min_samples} samples, "
        f"{'differential privacy on' if policy.privacy else 'no differential privacy'})",
        flush=True,
    )
    use_serving_thresholds()  # also when nothing was ingested: the same heap behaviour however it started
    print(
        f"datasite {name} serving http://{host}:{port} (state {state_dir}, database {database})", flush=True
    )
    serve(worker, host=host, port=port)
    return 0


def _read_site_policy(state_dir: Path, policy_file: Path | None) -> SitePolicy:
    """``--policy``, else ``<state_dir>/policy.toml``, else the defaults."""
    if policy_file is not None and not policy_file.exists():
        raise FedimgError(f"{policy_file}: policy file not found")
    try:
        return load_site_policy(policy_file or state_dir / POLICY_FILE)
    except PolicyError as exc:
        raise FedimgError(str(exc)) from exc


def _num_classes(data: Path) -> int:
    from datasite_setup.convert.client_data import find_federation_root
    from datasite_setup.convert.federated_format import load_federation

    return len(load_federation(find_federation_root(data))["label_map"])
