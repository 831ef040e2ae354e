"""``fedimg datasite serve``: open a site's datasite, ingest its partition, serve it over HTTP."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from datasite_setup.credentials import admin_credentials
from datasite_setup.datasite import clear_syft_import_environment, redact_url

DB_URL_ENV = "FEDIMG_DB_URL"


def default_state_dir(name: str) -> Path:
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "fedimg" / name


def serve_site(*, name: str, data: Path, port: int, host: str, state_dir: Path | None, db_url: str | None, show_progress: bool) -> int:
    """Run until SIGINT/SIGTERM; returns the exit code."""
    from datasite_setup.federated_format import check_client_name

    check_client_name(name)
    clear_syft_import_environment()  # before the first 'import syft' of this process
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    state_dir = (state_dir or default_state_dir(name)).absolute()
    db_url = db_url or os.environ.get(DB_URL_ENV) or None
    admin = admin_credentials(state_dir, name)
    from datasite_setup.datasite import open_datasite, serve
    from datasite_setup.ingest import ingest_partition

    worker = open_datasite(name, state_dir, admin, db_url=db_url)
    result = ingest_partition(worker, data, show_progress=show_progress)
    action = "ingested" if result.created else "already holds"
    removed = f"; removed previous version(s) {', '.join(result.removed)}" if result.removed else ""
    print(f"datasite {name} {action} {result.dataset} ({result.num_samples} samples){removed}", flush=True)
    print(f"datasite {name} serving http://{host}:{port} (state {state_dir}, database {redact_url(db_url) if db_url else 'SQLite'})", flush=True)
    serve(worker, host=host, port=port)
    return 0
