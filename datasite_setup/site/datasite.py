"""One hospital's PySyft 0.9.5 datasite, built and served by fedimg rather than ``sy.orchestra``.

``sy.orchestra.launch`` goes through ``Server.named()``, which derives the
server's signing key and id from ``sha256(name)``: anyone who knows a
hospital's name would know its key. fedimg builds the ``Datasite`` itself with a
random key and id generated once into the state dir (0600), SQLite and blob
storage under the state dir (or PostgreSQL through ``db_url``), our own admin
credentials, no interactive warnings, and serves it with uvicorn on loopback.

PySyft reads ``SERVER_PRIVATE_KEY``/``SERVER_UID`` (which would override our
key and id) and ``ENABLE_SIGNUP`` at import time; ``open_datasite`` refuses to
run when they are set, and ``fedimg datasite serve`` clears them before
importing syft.

What the site serves over HTTP, and to whom (issue 11): guest sessions and
sign-up are off in the server's settings (``open_datasite``), the API-call gate
(``access``, installed by ``syft_patches``) refuses every call from an
unregistered key and limits researchers, and ``make_app`` puts ``HttpGuard``
(request-size cap, a budget and timeouts for bodies still arriving, closed
routes, password reset off) in front of PySyft's
routes and serves no OpenAPI documentation.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasite_setup.errors import FedimgError
from datasite_setup.private_file import read_private_file, write_private_file
from datasite_setup.site.credentials import Credentials
from datasite_setup.site.http_guard import HttpGuard

if TYPE_CHECKING:
    from syft.server.datasite import Datasite

SYFT_IMPORT_TIME_ENV = ("SERVER_PRIVATE_KEY", "SERVER_UID", "ENABLE_SIGNUP", "DEV_MODE")
KEY_FILE = "signing_key"
ID_FILE = "server_id"
API_PREFIX = "/api/v2"
MAX_HEADER_BYTES = 64 * 1024  # a request's line and headers (PySyft's are under 1 KB)
KEEP_ALIVE_SECONDS = 5  # an idle connection between requests is closed after this
log = logging.getLogger("fedimg.datasite")


def clear_syft_import_environment() -> None:
    """Drop the variables syft would read at import to override our key, id or signup setting.

    Call before the first ``import syft`` of a process.
    """
    for name in SYFT_IMPORT_TIME_ENV:
        os.environ.pop(name, None)


def _check_syft_environment() -> None:
    import syft.server.server as syft_server

    if syft_server.signing_key_env or syft_server.server_uid_env:
        raise FedimgError(
            "SERVER_PRIVATE_KEY or SERVER_UID was set when syft was imported: "
            "it would override this datasite's own key; "
            "unset them (fedimg keeps each datasite's key in its state dir)"
        )


def redact_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` → ``postgresql://user:***@host/db``."""
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


def open_datasite(name: str, state_dir: Path, admin: Credentials, *, db_url: str | None = None) -> Datasite:
    """Build (first start) or reopen (later starts) the datasite whose state lives in ``state_dir``."""
    _check_syft_environment()
    from syft.server.credentials import SyftSigningKey
    from syft.server.datasite import Datasite
    from syft.store.blob_storage.on_disk import OnDiskBlobStorageClientConfig, OnDiskBlobStorageConfig
    from syft.store.db.sqlite import SQLiteDBConfig
    from syft.types.uid import UID

    from datasite_setup.site.syft_patches import apply_syft_patches

    apply_syft_patches()  # the one place a datasite process patches PySyft, before the server exists
    state_dir = Path(state_dir).absolute()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = _persistent(state_dir / KEY_FILE, lambda: str(SyftSigningKey.generate()), "signing key")
    server_id = _persistent(state_dir / ID_FILE, lambda: UID().no_dash, "server id")
    for folder in ("db", "blob"):
        (state_dir / folder).mkdir(exist_ok=True, mode=0o700)
    storage = (
        {"db_url": db_url}
        if db_url
        else {"db_config": SQLiteDBConfig(filename="datasite.db", path=state_dir / "db")}
    )
    previous_umask = os.umask(0o077)  # SQLite and blob files are created 0644 otherwise
    try:
        # syft prints its database URL (password included) while building: keep it out of the logs.
        with contextlib.redirect_stdout(io.StringIO()):
            worker = Datasite(
                name=name,
                id=UID.from_string(server_id),
                signing_key=SyftSigningKey.from_string(key),
                root_email=admin.email,
                root_username=f"{name} admin",
                root_password=admin.password,
                blob_storage_config=OnDiskBlobStorageConfig(
                    client_config=OnDiskBlobStorageClientConfig(base_directory=state_dir / "blob"),
                    min_blob_size=1,
                ),
                reset=False,
                enable_warnings=False,
                dev_mode=False,
                background_tasks=False,
                association_request_auto_approval=False,
                **storage,
            )
    finally:
        os.umask(previous_umask)
    _close_to_guests(worker)
    log.info(
        "datasite %s opened (state %s, database %s)",
        name,
        state_dir,
        redact_url(db_url) if db_url else "SQLite",
    )
    return worker


def _close_to_guests(worker: Datasite) -> None:
    """Guest sessions and sign-up off in the server's settings (PySyft's defaults allow guests)."""
    from syft.service.context import AuthedServiceContext
    from syft.service.settings.settings import ServerSettingsUpdate
    from syft.service.user.user_roles import ServiceRole

    context = AuthedServiceContext(server=worker, credentials=worker.verify_key, role=ServiceRole.ADMIN)
    update = ServerSettingsUpdate(allow_guest_sessions=False, signup_enabled=False)
    worker.services.settings._update(context, update).unwrap()


def _persistent(path: Path, make: Any, what: str) -> str:
    if not path.exists():
        write_private_file(path, (make() + "\n").encode())
    return read_private_file(path, what).decode().strip()


def make_app(worker: Datasite) -> Any:
    """The FastAPI app PySyft's own uvicorn launcher builds, around our worker."""
    from contextlib import asynccontextmanager

    from fastapi import APIRouter, FastAPI
    from syft.server.routes import make_routes

    from datasite_setup.site.syft_patches import has_logged_in, site_limits

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        try:
            yield
        finally:
            worker.stop()

    # no /docs, /redoc or /openapi.json: nothing is served without a login but the login itself
    app = FastAPI(
        title=f"fedimg datasite {worker.name}",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    router = APIRouter()
    router.include_router(make_routes(worker=worker))
    app.include_router(router, prefix=API_PREFIX)
    server_id = str(worker.id)
    # inside starlette's error middleware, outside its exception middleware: a route's exception reaches it
    app.add_middleware(
        HttpGuard,
        limits=lambda: site_limits(server_id),
        registered=lambda key, address: has_logged_in(server_id, key, address),
        prefix=API_PREFIX,
    )
    return app


def serve(worker: Datasite, *, host: str, port: int) -> None:
    """Serve ``worker`` over HTTP until SIGINT/SIGTERM."""
    import uvicorn

    # proxy_headers off: uvicorn would otherwise take X-Forwarded-For from a local caller as its address.
    # h11, not httptools (uvicorn's pick when installed): httptools buffers request headers without a
    # bound (20 connections x 3 MB of headers: +60 MB), h11 refuses headers over MAX_HEADER_BYTES.
    # limit_concurrency stays off: it counts idle and half-sent connections too, so a flood of them
    # would turn every researcher's request into a 503; HttpGuard bounds what costs memory instead.
    config = uvicorn.Config(
        make_app(worker),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        http="h11",
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        limit_concurrency=None,
    )
    uvicorn.Server(config).run()


def serve_command(
    *,
    name: str,
    data: str,
    port: int,
    host: str,
    state_dir: str,
    executable: str = "fedimg",
    threads: int | None = None,
) -> list[str]:
    """The ``fedimg datasite serve`` command line, as ``fedimg up``, the tests and compose/ run it."""
    extra = [] if threads is None else ["--threads", str(threads)]
    return [
        executable,
        "datasite",
        "serve",
        "--name",
        name,
        "--data",
        data,
        "--port",
        str(port),
        "--host",
        host,
        "--state-dir",
        state_dir,
        *extra,
    ]


def python_executable_command() -> list[str]:
    """How to run the ``fedimg`` CLI with this interpreter (for subprocesses, independent of PATH)."""
    return [sys.executable, "-m", "datasite_setup.cli"]
