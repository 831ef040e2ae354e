"""``fedimg datasite serve``: open a site's datasite, ingest its partition, serve it over HTTP."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from datasite_setup.site.credentials import admin_credentials
from datasite_setup.site.datasite import clear_syft_import_environment, redact_url
from policies import (
    POLICY_FILE,
    PolicyError,
    install,
    load_or_create_site_key,
    load_site_policy,
    public_key_hex,
)

DB_URL_ENV = "FEDIMG_DB_URL"
INGEST_JOURNAL = "ingest-journal.json"  # blob files before an upload in progress (datasite_setup.site.ingest)


def default_state_dir(name: str) -> Path:
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
    """Run until SIGINT/SIGTERM; returns the exit code."""
    from datasite_setup.convert.federated_format import check_client_name

    check_client_name(name)
    clear_syft_import_environment()  # before the first 'import syft' of this process
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("fedimg").setLevel(
        logging.INFO
    )  # syft sets the root logger to CRITICAL when a server starts
    state_dir = (state_dir or default_state_dir(name)).absolute()
    db_url = db_url or os.environ.get(DB_URL_ENV) or None
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
    policy = _install_release_policy(worker, state_dir, policy_file, data)
    action = "ingested" if result.created else "already holds"
    removed = f"; removed previous version(s) {', '.join(result.removed)}" if result.removed else ""
    print(f"datasite {name} {action} {result.dataset} ({result.num_samples} samples){removed}", flush=True)
    print(
        f"datasite {name} release policy: {policy.source} (min {policy.min_samples} samples, "
        f"{'differential privacy on' if policy.privacy else 'no differential privacy'})",
        flush=True,
    )
    use_serving_thresholds()  # also when nothing was ingested: the same heap behaviour however the site started
    print(
        f"datasite {name} serving http://{host}:{port} (state {state_dir}, database {redact_url(db_url) if db_url else 'SQLite'})",
        flush=True,
    )
    serve(worker, host=host, port=port)
    return 0


def _install_release_policy(worker, state_dir: Path, policy_file: Path | None, data: Path):
    """The site's policy (``--policy``, else ``<state_dir>/policy.toml``, else the defaults), enforced on every run."""
    from datasite_setup.convert.client_data import find_federation_root
    from datasite_setup.convert.federated_format import load_federation
    from datasite_setup.errors import FedimgError

    if policy_file is not None and not policy_file.exists():
        raise FedimgError(f"{policy_file}: policy file not found")
    try:
        policy = load_site_policy(policy_file or state_dir / POLICY_FILE)
    except PolicyError as exc:
        raise FedimgError(str(exc)) from exc
    num_classes = len(load_federation(find_federation_root(data))["label_map"])
    install(worker, state_dir, policy, num_classes=num_classes)
    return policy
