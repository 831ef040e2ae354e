"""``fedimg up`` / ``status`` / ``down``: run every site of a ``federation.toml`` as a background process.

Each site runs ``fedimg datasite serve`` (the same command as compose/ and the
tests), with its log in ``<state_dir>/datasite.log``. The run file
``<state_root>/run.json`` records the pid of each site so that ``status`` and
``down`` find them; ``up`` on a running federation starts nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from datasite_setup.errors import FedimgError
from datasite_setup.private_file import write_private_file
from datasite_setup.site.credentials import admin_credentials, researcher_credentials, researcher_file
from datasite_setup.site.datasite import python_executable_command, serve_command
from datasite_setup.site.federation_config import FederationConfig, SiteConfig
from datasite_setup.site.site_admin import dataset_summaries, ensure_researcher, is_answering, login

LOG_FILE = "datasite.log"
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0


@dataclass
class SiteStatus:
    name: str
    url: str
    state: str  # running | stopped | not answering | failed
    pid: int | None = None
    dataset: str = ""
    split_counts: dict[str, int] = field(default_factory=dict)
    researchers_created: int = 0
    problem: str = ""


def log_path(site: SiteConfig) -> Path:
    return site.state_dir / LOG_FILE


def read_run_file(config: FederationConfig) -> dict[str, int]:
    try:
        return {name: int(entry["pid"]) for name, entry in json.loads(config.run_file.read_text()).items()}
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError) as exc:
        raise FedimgError(
            f"{config.run_file}: unreadable run file ({exc}); check for stray 'fedimg datasite serve' processes and delete it"
        ) from exc


def _write_run_file(config: FederationConfig, pids: dict[str, int]) -> None:
    document = {name: {"pid": pid, "url": config.site(name).url} for name, pid in sorted(pids.items())}
    if document:
        write_private_file(config.run_file, (json.dumps(document, indent=2) + "\n").encode(), replace=True)
    else:
        config.run_file.unlink(missing_ok=True)


def is_site_process(pid: int, site: SiteConfig) -> bool:
    """True when ``pid`` is alive and is this site's ``datasite serve`` (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"serve" in cmdline and site.name.encode() in cmdline


def start_site(site: SiteConfig) -> int:
    """Start one site in the background (new session, log file); return its pid."""
    if not site.data.is_dir():
        raise FedimgError(f"site {site.name}: data dir {site.data} not found (run 'fedimg convert' first)")
    site.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = dict(os.environ)
    db_url = site.db_url()
    if db_url:
        env["FEDIMG_DB_URL"] = db_url
    command = serve_command(
        name=site.name, data=str(site.data), port=site.port, host=site.host, state_dir=str(site.state_dir)
    )
    command = python_executable_command() + command[1:]
    fd = os.open(log_path(site), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return process.pid


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until_answering(site: SiteConfig, pid: int, timeout: float = START_TIMEOUT_S) -> str:
    """Empty string once the site answers; otherwise why it did not (process died, or timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_answering(site.url):
            return ""
        if not _alive(pid):
            return f"exited before answering; last lines of {log_path(site)}:\n{tail(log_path(site))}"
        time.sleep(0.5)
    return f"did not answer within {timeout:.0f} s; last lines of {log_path(site)}:\n{tail(log_path(site))}"


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat")
    return not (state.exists() and state.read_text().split(")")[-1].split()[0] == "Z")


def up(config: FederationConfig, *, timeout: float = START_TIMEOUT_S) -> tuple[list[SiteStatus], bool]:
    """Start every site not already running, wait for them, add researchers. Returns (statuses, already_running)."""
    running = {
        name: pid
        for name, pid in read_run_file(config).items()
        if name in {s.name for s in config.sites} and is_site_process(pid, config.site(name))
    }
    to_start = [site for site in config.sites if site.name not in running]
    for site in to_start:
        if is_answering(site.url, timeout=0.5):
            raise FedimgError(
                f"site {site.name}: {site.url} already answers but is not in {config.run_file}; stop whatever listens on port {site.port}"
            )
    started = {site.name: start_site(site) for site in to_start}
    _write_run_file(config, {**running, **started})
    statuses = []
    for site in config.sites:
        pid = running.get(site.name) or started.get(site.name)
        problem = wait_until_answering(site, pid, timeout) if site.name in started else ""
        if problem:
            _stop(pid)
            statuses.append(SiteStatus(site.name, site.url, "failed", pid, problem=problem))
            continue
        statuses.append(_provision(config, site, pid))
    _write_run_file(config, {s.name: s.pid for s in statuses if s.state == "running" and s.pid})
    return statuses, not to_start


def _provision(config: FederationConfig, site: SiteConfig, pid: int | None) -> SiteStatus:
    status = SiteStatus(site.name, site.url, "running", pid)
    try:
        admin = login(site.url, admin_credentials(site.state_dir, site.name))
        for researcher in config.researchers:
            if site.name in researcher.sites:
                document = researcher_credentials(
                    config.secrets_dir, researcher.email, researcher.name, {site.name: site.url}
                )
                password = document["sites"][site.name]["password"]
                status.researchers_created += ensure_researcher(
                    admin, email=researcher.email, name=researcher.name, password=password
                )
        summaries = dataset_summaries(admin)
    except Exception as exc:  # the site answers but cannot be administered: report, keep the others
        status.state, status.problem = "not answering", f"{type(exc).__name__}: {exc}"
        return status
    if summaries:
        status.dataset, status.split_counts = summaries[0].name, summaries[0].split_counts
    return status


def status(config: FederationConfig) -> list[SiteStatus]:
    pids = read_run_file(config)
    result = []
    for site in config.sites:
        pid = pids.get(site.name)
        alive = pid is not None and is_site_process(pid, site)
        if not alive:
            result.append(SiteStatus(site.name, site.url, "stopped", None))
        elif not is_answering(site.url):
            result.append(
                SiteStatus(site.name, site.url, "not answering", pid, problem=f"see {log_path(site)}")
            )
        else:
            site_status = _provision_view(site, pid)
            result.append(site_status)
    return result


def _provision_view(site: SiteConfig, pid: int) -> SiteStatus:
    state = SiteStatus(site.name, site.url, "running", pid)
    try:
        summaries = dataset_summaries(login(site.url, admin_credentials(site.state_dir, site.name)))
    except Exception as exc:
        state.problem = f"{type(exc).__name__}: {exc}"
        return state
    if summaries:
        state.dataset, state.split_counts = summaries[0].name, summaries[0].split_counts
    return state


def down(config: FederationConfig, *, timeout: float = STOP_TIMEOUT_S) -> list[SiteStatus]:
    """Stop every site recorded in the run file (SIGTERM, then SIGKILL after ``timeout``)."""
    pids = read_run_file(config)
    result = []
    for site in config.sites:
        pid = pids.get(site.name)
        if pid is not None and is_site_process(pid, site):
            _stop(pid, timeout)
        result.append(SiteStatus(site.name, site.url, "stopped", pid))
    _write_run_file(config, {})
    return result


def _stop(pid: int | None, timeout: float = STOP_TIMEOUT_S) -> None:
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def researcher_files(config: FederationConfig) -> dict[str, Path]:
    return {r.email: researcher_file(config.secrets_dir, r.email) for r in config.researchers}
