"""Fixtures that run real fedimg datasites (``fedimg datasite serve`` subprocesses over HTTP).

Every site started here is stopped at teardown, whatever the test did to it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from datasite_setup.convert.federated_format import CLIENTS_DIR
from datasite_setup.convert.imaging import ImageSpec
from datasite_setup.convert.pipeline import ConvertOptions, convert
from datasite_setup.convert.sample_data import write_digits
from datasite_setup.convert.sources import CsvColumns
from datasite_setup.site.credentials import Credentials, admin_credentials
from datasite_setup.site.datasite import serve_command
from datasite_setup.site.site_admin import is_answering

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def convert_sample(
    out: Path, *, seed: int = 0, clients: int = 2, size: int = 16, scheme: str = "iid"
) -> Path:
    """The digits sample converted into ``clients`` clients (patients kept whole); returns OUT."""
    source = out.parent / f"{out.name}-source"
    if not source.exists():
        write_digits(source, layout="csv")
    secret = out.parent / f"{out.name}-secret"
    if not secret.exists():
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("5ec2e7" * 8 + "\n")
    convert(
        ConvertOptions(
            source=source,
            out=out,
            scheme=scheme,
            num_clients=clients,
            labels_csv=source / "labels.csv",
            columns=CsvColumns(group="patient_id"),
            spec=ImageSpec(size=size, mode="L"),
            seed=seed,
            workers=1,
            overwrite=True,
            secret_file=secret,
            show_progress=False,
        )
    )
    return out


@dataclass
class RunningSite:
    """One ``fedimg datasite serve`` process."""

    name: str
    data: Path
    state_dir: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    start_timeout: float = START_TIMEOUT_S  # a large partition's first ingest takes longer (benchmarks)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.state_dir.parent / f"{self.state_dir.name}.log"

    @property
    def admin(self) -> Credentials:
        return admin_credentials(self.state_dir, self.name)

    def command(self) -> list[str]:
        command = serve_command(
            name=self.name,
            data=str(self.data),
            port=self.port,
            host="127.0.0.1",
            state_dir=str(self.state_dir),
        )
        return [sys.executable, "-m", "datasite_setup.cli", *command[1:], "--quiet"]

    def start(self, *, wait: bool = True) -> RunningSite:
        env = {**os.environ, **self.env}
        for name in ("FEDIMG_ADMIN_EMAIL", "FEDIMG_ADMIN_PASSWORD"):
            if name not in self.env:
                env.pop(name, None)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_until_answering()
        return self

    def wait_until_answering(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if is_answering(self.url, timeout=1.0):
                return
            if self.process.poll() is not None:
                raise AssertionError(f"site {self.name} exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.3)
        raise AssertionError(
            f"site {self.name} did not answer within {self.start_timeout:.0f} s:\n{self.log()}"
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        os.killpg(self.process.pid, sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> RunningSite:
        self.stop()
        return self.start()


@pytest.fixture(scope="session")
def sample_federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits sample as a 2-client federation (16 px grayscale)."""
    return convert_sample(tmp_path_factory.mktemp("federation") / "out")


def start_site_with_policy(
    folder: Path, federation: Path, policy: str | None, name: str = "client_0"
) -> RunningSite:
    """Start site ``name`` of ``federation`` with ``policy`` as its ``policy.toml`` (None: the defaults)."""
    state = folder / f"state-{name}"
    state.mkdir(parents=True)
    if policy is not None:
        (state / "policy.toml").write_text(policy)
    return RunningSite(name, federation / CLIENTS_DIR / name, state, free_port()).start()


@pytest.fixture
def site_factory(tmp_path: Path) -> Iterator[Callable[..., RunningSite]]:
    """Start sites with ``site_factory(name, data_dir, state_dir=None, env=None)``; all are stopped at teardown."""
    sites: list[RunningSite] = []

    def start(
        name: str,
        data: Path,
        *,
        state_dir: Path | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> RunningSite:
        site = RunningSite(name, data, state_dir or tmp_path / f"state-{name}", free_port(), env or {})
        sites.append(site)
        return site.start(wait=wait)

    yield start
    for site in sites:
        site.stop()


@pytest.fixture
def postgres_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty PostgreSQL database URL on the test cluster (scripts/test-postgres.sh); dropped afterwards."""
    import secrets
    from urllib.parse import urlsplit, urlunsplit

    server = os.environ.get("FEDIMG_TEST_POSTGRES_URL")
    if not server:
        if os.environ.get("FEDIMG_REQUIRE_POSTGRES") == "1":
            pytest.fail(
                "FEDIMG_REQUIRE_POSTGRES=1 but FEDIMG_TEST_POSTGRES_URL is not set (scripts/test-postgres.sh did not start PostgreSQL)"
            )
        pytest.skip(
            "no PostgreSQL for tests: run through scripts/test.sh (it starts one when PostgreSQL is installed)"
        )
    import psycopg2

    name = f"fedimg_test_{secrets.token_hex(4)}"
    admin = psycopg2.connect(server)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(server)
    yield urlunsplit(parts._replace(path=f"/{name}"))
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def password_file(folder: Path, password: str) -> Path:
    """``password`` in an owner-only (0600) file in ``folder``, as ``--password-file`` wants it."""
    path = folder / f"password-{len(password)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    return path
