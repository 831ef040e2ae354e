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
    """What ``up``, ``status`` and ``down`` report for one site.

    Parameters
    ----------
    name, url : str
        The site's name and base URL.
    state : str
        ``"running"``, ``"stopped"``, ``"not answering"`` or ``"failed"`` (did not start).
    pid : int or None
        The site's process (the leader of its process group), when known.
    dataset : str
        The first fedimg dataset the site holds ("" if none, or if it could not be read).
    split_counts : dict of str to int
        That dataset's samples per split.
    researchers_created : int
        How many researcher accounts ``up`` added to the site.
    problem : str
        What went wrong: why it did not start or answer, or why its dataset could not be read.
    """

    name: str
    url: str
    state: str
    pid: int | None = None
    dataset: str = ""
    split_counts: dict[str, int] = field(default_factory=dict)
    researchers_created: int = 0
    problem: str = ""


def log_path(site: SiteConfig) -> Path:
    """Where a site started by ``up`` logs: ``<state_dir>/datasite.log``."""
    return site.state_dir / LOG_FILE


def read_run_file(config: FederationConfig) -> dict[str, int]:
    """The pid of every site ``up`` recorded in the run file.

    Parameters
    ----------
    config : FederationConfig
        The federation (its ``run_file``).

    Returns
    -------
    dict of str to int
        Site name -> pid; empty when there is no run file.

    Raises
    ------
    FedimgError
        When the run file is not what ``up`` writes.
    """
    try:
        document = json.loads(config.run_file.read_text())
        return {name: int(entry["pid"]) for name, entry in document.items()}
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError) as exc:
        raise FedimgError(
            f"{config.run_file}: unreadable run file ({exc}); "
            "check for stray 'fedimg datasite serve' processes and delete it"
        ) from exc


def _write_run_file(config: FederationConfig, pids: dict[str, int]) -> None:
    document = {name: {"pid": pid, "url": config.site(name).url} for name, pid in sorted(pids.items())}
    if document:
        write_private_file(config.run_file, (json.dumps(document, indent=2) + "\n").encode(), replace=True)
    else:
        config.run_file.unlink(missing_ok=True)


def is_site_process(pid: int, site: SiteConfig) -> bool:
    """Whether ``pid`` is alive and is this site's ``datasite serve`` (not a recycled pid).

    Parameters
    ----------
    pid : int
        A pid from the run file.
    site : SiteConfig
        The site it was recorded for.

    Returns
    -------
    bool
        True when the process's command line holds ``serve`` and the site's name.

    Examples
    --------
    >>> import os
    >>> site = SiteConfig("hospital_a", 8081, "127.0.0.1", Path("data"), Path("state"))
    >>> is_site_process(os.getpid(), site)
    False
    """
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"serve" in cmdline and site.name.encode() in cmdline


def threads_per_site(num_sites: int) -> int:
    """torch threads for each site's sandbox workers when ``num_sites`` sites share this machine.

    Three sites with torch's default threads on two cores ran 18x slower than with one
    thread each (the FedAvg benchmark's context run): the cores are divided, at least one each.

    Examples
    --------
    >>> threads_per_site(1) == len(os.sched_getaffinity(0))
    True
    >>> threads_per_site(10_000)
    1
    """
    return max(1, len(os.sched_getaffinity(0)) // max(1, num_sites))


def start_site(site: SiteConfig, *, threads: int | None = None) -> int:
    """Start one site's ``fedimg datasite serve`` in the background.

    The process gets its own session (``down`` signals its whole group), the
    site's PostgreSQL URL (if any) in ``FEDIMG_DB_URL``, and ``log_path(site)``
    (0600, appended to) as its stdout and stderr.

    Parameters
    ----------
    site : SiteConfig
        The site to start.
    threads : int or None
        torch threads per sandbox worker (``threads_per_site``); None: the site's default.

    Returns
    -------
    int
        The new process's pid.

    Raises
    ------
    FedimgError
        When the site's data dir does not exist, or its ``db_url_env`` is unset.
    """
    if not site.data.is_dir():
        raise FedimgError(f"site {site.name}: data dir {site.data} not found (run 'fedimg convert' first)")
    site.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = dict(os.environ)
    db_url = site.db_url()
    if db_url:
        env["FEDIMG_DB_URL"] = db_url
    command = serve_command(
        name=site.name,
        data=str(site.data),
        port=site.port,
        host=site.host,
        state_dir=str(site.state_dir),
        threads=threads,
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
    r"""The last ``lines`` lines of a log file, or ``"(no log)"`` when it cannot be read.

    Examples
    --------
    >>> _ = Path("site.log").write_text("one\ntwo\nthree\n")
    >>> tail(Path("site.log"), 2)
    'two\nthree'
    >>> tail(Path("missing.log"))
    '(no log)'
    """
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until_answering(site: SiteConfig, pid: int, timeout: float = START_TIMEOUT_S) -> str:
    """Wait until a site started by ``start_site`` answers over HTTP.

    Parameters
    ----------
    site : SiteConfig
        The site.
    pid : int
        Its process, watched so that a site that exits is not waited for.
    timeout : float, default 180
        Seconds to wait.

    Returns
    -------
    str
        ``""`` once the site answers; otherwise why it did not (it exited, or the
        timeout passed) with the last lines of its log.
    """
    last_lines = f"last lines of {log_path(site)}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_answering(site.url):
            return ""
        if not _alive(pid):
            return f"exited before answering; {last_lines}:\n{tail(log_path(site))}"
        time.sleep(0.5)
    return f"did not answer within {timeout:.0f} s; {last_lines}:\n{tail(log_path(site))}"


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
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        return True
    # the state letter follows the command name, which is in parentheses and may hold spaces
    state = stat.read_text().split(")")[-1].split()[0]
    return state != "Z"  # a zombie has exited; only its parent has not reaped it yet


def up(config: FederationConfig, *, timeout: float = START_TIMEOUT_S) -> tuple[list[SiteStatus], bool]:
    """``fedimg up``: start every site not already running, wait for them, add the researchers.

    Each started site is waited for (a site that fails to answer is stopped and
    reported ``"failed"``); on every answering site the admin logs in and creates
    the accounts of the researchers who may use it (``researcher_credentials``).
    The run file then lists the sites that run.

    Parameters
    ----------
    config : FederationConfig
        The federation.
    timeout : float, default 180
        Seconds each started site has to answer.

    Returns
    -------
    tuple of (list of SiteStatus, bool)
        Every site's status, in config order, and whether all of them were already
        running (then nothing was started).

    Raises
    ------
    FedimgError
        When a site to start is already answering on its address without being in
        the run file, or a site cannot be started (``start_site``).
    """
    running = _running_sites(config)
    to_start = [site for site in config.sites if site.name not in running]
    for site in to_start:
        if is_answering(site.url, timeout=0.5):
            raise FedimgError(
                f"site {site.name}: {site.url} already answers but is not in {config.run_file}; "
                f"stop whatever listens on port {site.port}"
            )
    threads = threads_per_site(len(config.sites))
    started = {site.name: start_site(site, threads=threads) for site in to_start}
    _write_run_file(config, {**running, **started})
    statuses = []
    for site in config.sites:
        if site.name in running:
            statuses.append(_provision(config, site, running[site.name]))
            continue
        pid = started[site.name]
        problem = wait_until_answering(site, pid, timeout)
        if problem:
            _stop(pid)
            statuses.append(SiteStatus(site.name, site.url, "failed", pid, problem=problem))
        else:
            statuses.append(_provision(config, site, pid))
    _write_run_file(config, _running_pids(statuses))
    return statuses, not to_start


def _running_sites(config: FederationConfig) -> dict[str, int]:
    """The sites of the run file whose process is still that site's server, with their pids."""
    names = {site.name for site in config.sites}
    running = {}
    for name, pid in read_run_file(config).items():
        if name in names and is_site_process(pid, config.site(name)):
            running[name] = pid
    return running


def _running_pids(statuses: list[SiteStatus]) -> dict[str, int]:
    pids = {}
    for site in statuses:
        if site.state == "running" and site.pid:
            pids[site.name] = site.pid
    return pids


def _provision(config: FederationConfig, site: SiteConfig, pid: int) -> SiteStatus:
    """Log in to a running site as its admin, add its researchers, and read its dataset."""
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
    """``fedimg status``: whether each site runs and answers, and the dataset it holds.

    Parameters
    ----------
    config : FederationConfig
        The federation.

    Returns
    -------
    list of SiteStatus
        One per site, in config order: ``"stopped"`` (no live process in the run
        file), ``"not answering"``, or ``"running"`` with its dataset (a problem
        reading it is in ``problem``).
    """
    pids = read_run_file(config)
    result = []
    for site in config.sites:
        pid = pids.get(site.name)
        if pid is None or not is_site_process(pid, site):
            result.append(SiteStatus(site.name, site.url, "stopped", None))
        elif not is_answering(site.url):
            result.append(
                SiteStatus(site.name, site.url, "not answering", pid, problem=f"see {log_path(site)}")
            )
        else:
            result.append(_running_status(site, pid))
    return result


def _running_status(site: SiteConfig, pid: int) -> SiteStatus:
    """A running site's status with its dataset, read as its admin (nothing is changed)."""
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
    """``fedimg down``: stop every site recorded in the run file, then remove the run file.

    Each site's process group gets SIGTERM, then SIGKILL if it is still alive after ``timeout``.

    Parameters
    ----------
    config : FederationConfig
        The federation.
    timeout : float, default 30
        Seconds each site has to exit after SIGTERM.

    Returns
    -------
    list of SiteStatus
        One ``"stopped"`` status per site, in config order.
    """
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
    """Each researcher's credentials file (``researcher_file``), by e-mail."""
    return {r.email: researcher_file(config.secrets_dir, r.email) for r in config.researchers}
