"""``fedimg up`` / ``status`` / ``down``: run every site of a ``federation.toml`` as a background process.

Each site runs ``fedimg datasite serve`` (the same command as compose/ and the
tests) in a clean environment (``site_environment``), with its rotating log in
``<state_dir>/datasite.log``; ``up`` reports each site's progress (starting,
ingesting n/N, answering) and waits as long as the site makes progress. The run file
``<state_root>/run.json`` records the pid of each site so that ``status`` and
``down`` find them; ``up`` on a running federation starts nothing. ``fedimg status``
asks each site over its owner channel (``owner_channel.client.status``: no PySyft
import, no login) and reads a site without one with ``http_status``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from datasite_setup.errors import FedimgError
from datasite_setup.private_file import write_private_file
from datasite_setup.site.credentials import admin_credentials, researcher_credentials, researcher_file
from datasite_setup.site.datasite import python_executable_command, serve_command
from datasite_setup.site.federation_config import FederationConfig, SiteConfig
from datasite_setup.site.owner_channel.site_status import SiteStatus
from datasite_setup.site.site_admin import dataset_summaries, ensure_researcher, is_answering, login
from datasite_setup.site.site_environment import site_environment
from datasite_setup.site.start_progress import PROGRESS_FILE, read_start_progress

LOG_FILE = "datasite.log"
OUTPUT_FILE = "datasite-output.log"
STALL_TIMEOUT_S = 180.0  # a starting site with no progress for this long is given up
STOP_TIMEOUT_S = 30.0
POLL_S = 0.5
PROGRESS_IO_BYTES = 2**20
PROGRESS_CPU_S = 1.0
COUNT_EVERY_S = 2.0  # at most one "ingesting n/N" line per site this often
REPORT_EVERY_S = 30.0  # and a line at least this often while nothing changes
Report = Callable[[str], None]


def log_path(site: SiteConfig) -> Path:
    """Where a site started by ``up`` logs: ``<state_dir>/datasite.log`` (rotated by the site)."""
    return site.state_dir / LOG_FILE


def output_path(site: SiteConfig) -> Path:
    """Where a site started by ``up`` writes below its log: ``<state_dir>/datasite-output.log``."""
    return site.state_dir / OUTPUT_FILE


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
    """Start one site's ``fedimg datasite serve`` in the background, in a clean environment.

    The process gets its own session (``down`` signals its whole group) and only the
    environment of ``site_environment``: the operator's allowlisted variables, the
    site's PostgreSQL URL (if any, from its ``db_url_env``) and its log file
    ``log_path(site)``, which the site rotates itself. Whatever it writes below
    Python's logging (an interpreter crash, a traceback after its log closed) goes to
    ``output_path(site)`` (0600, appended to).

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
    env = site_environment(site.db_url(), log_file=log_path(site))
    command = serve_command(
        name=site.name,
        data=str(site.data),
        port=site.port,
        host=site.host,
        state_dir=str(site.state_dir),
        threads=threads,
    )
    # --quiet: no progress bars in the log; 'up' follows the site's start-progress.json instead
    command = python_executable_command() + command[1:] + ["--quiet"]
    (site.state_dir / PROGRESS_FILE).unlink(missing_ok=True)
    fd = os.open(output_path(site), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as output:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
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


def print_progress(line: str) -> None:
    """``up``'s default progress report: one line on stderr.

    Examples
    --------
    >>> print_progress("hospital_a: answering, 12 s")
    """
    print(line, file=sys.stderr, flush=True)


def _last_lines(site: SiteConfig) -> str:
    text = f"last lines of {log_path(site)}:\n{tail(log_path(site))}"
    output = tail(output_path(site), 5)
    if output.strip() and output != "(no log)":
        text += f"\nand of {output_path(site)}:\n{output}"
    return text


def _activity(pid: int) -> tuple[int, float]:
    """Bytes the process has read and written (any file or socket) and its CPU seconds; 0 when unreadable."""
    try:
        counters = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        io_bytes = int(counters["rchar"]) + int(counters["wchar"])
    except (OSError, KeyError, ValueError):
        io_bytes = 0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    except (OSError, IndexError, ValueError):
        cpu = 0.0
    return io_bytes, cpu


class _StartWatch:
    """One starting site, followed until it answers, exits, or makes no progress for ``stall_timeout``.

    Progress is any of: a new phase or count in the site's ``start-progress.json``; at
    least ``PROGRESS_IO_BYTES`` read or written by the process (it reads its partition
    and writes its blobs); at least ``PROGRESS_CPU_S`` of CPU (PySyft serialises large
    arrays in memory). A site waiting on a database that does not answer, a lock or a
    hung disk shows none of them.
    """

    def __init__(self, site: SiteConfig, pid: int, stall_timeout: float, report: Report) -> None:
        self.site, self.pid, self.stall_timeout, self.report = site, pid, stall_timeout, report
        self.started = self.last_progress = self.last_line = time.monotonic()
        self.mark = _activity(pid)
        self.state = "starting"
        self.report(f"{site.name}: starting, 0 s")

    def poll(self) -> str | None:
        """None while the site starts; ``""`` once it answers; else why it will not."""
        now = time.monotonic()
        if is_answering(self.site.url, timeout=1.0):
            self.report(f"{self.site.name}: answering, {now - self.started:.0f} s")
            return ""
        if not _alive(self.pid):
            self.report(f"{self.site.name}: failed, {now - self.started:.0f} s")
            return f"exited before answering; {_last_lines(self.site)}"
        record = read_start_progress(self.site.state_dir, self.pid)
        state = record.describe() if record else self.state
        io_bytes, cpu = _activity(self.pid)
        busy = io_bytes - self.mark[0] >= PROGRESS_IO_BYTES or cpu - self.mark[1] >= PROGRESS_CPU_S
        if state != self.state or busy:
            self.last_progress, self.mark = now, (io_bytes, cpu)
        elif now - self.last_progress > self.stall_timeout:
            self.report(f"{self.site.name}: failed, {now - self.started:.0f} s")
            return (
                f"no progress for {self.stall_timeout:.0f} s while {state} "
                f"(nothing read, written or computed); {_last_lines(self.site)}"
            )
        new_phase = record is not None and record.phase != self.state.split(" ")[0]
        due = now - self.last_line >= (REPORT_EVERY_S if state == self.state else COUNT_EVERY_S)
        if new_phase or due:
            self.report(f"{self.site.name}: {state}, {now - self.started:.0f} s")
            self.last_line = now
        self.state = state
        return None


def wait_until_answering(
    started: dict[str, tuple[SiteConfig, int]],
    *,
    stall_timeout: float = STALL_TIMEOUT_S,
    report: Report = print_progress,
) -> dict[str, str]:
    """Wait until the sites started by ``start_site`` answer over HTTP, reporting their progress.

    There is no overall deadline: a site is waited for as long as it makes progress
    (``_StartWatch``), so a hospital's first ingest of gigabytes may take many minutes.

    Parameters
    ----------
    started : dict of str to (SiteConfig, int)
        Site name -> the site and its process.
    stall_timeout : float, default 180
        Seconds without any progress after which a site is given up.
    report : callable, default ``print_progress``
        Called with one line per step of each site: ``"<site>: starting, 0 s"``,
        ``"<site>: ingesting 120/300 (reading …), 14 s"``, ``"<site>: answering, 31 s"``.

    Returns
    -------
    dict of str to str
        Site name -> ``""`` if it answers, else why not (it exited, or made no
        progress), with the last lines of its log.
    """
    watches = {name: _StartWatch(site, pid, stall_timeout, report) for name, (site, pid) in started.items()}
    results: dict[str, str] = {}
    while len(results) < len(watches):
        for name, watch in watches.items():
            if name not in results:
                problem = watch.poll()
                if problem is not None:
                    results[name] = problem
        if len(results) < len(watches):
            time.sleep(POLL_S)
    return results


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


def up(
    config: FederationConfig, *, stall_timeout: float = STALL_TIMEOUT_S, report: Report = print_progress
) -> tuple[list[SiteStatus], bool]:
    """``fedimg up``: start every site not already running, wait for them, add the researchers.

    Each started site is waited for while it makes progress (``wait_until_answering``;
    a site that exits or stalls is stopped and reported ``"failed"``); on every
    answering site the admin logs in and creates the accounts of the researchers who
    may use it (``researcher_credentials``). The run file then lists the sites that run.

    Parameters
    ----------
    config : FederationConfig
        The federation.
    stall_timeout : float, default 180
        Seconds a starting site may go without any progress.
    report : callable, default ``print_progress``
        Receives each progress line (``wait_until_answering``).

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
    for site in to_start:
        site.db_url()  # an unset db_url_env is an error before any site starts
    threads = threads_per_site(len(config.sites))
    started = {site.name: start_site(site, threads=threads) for site in to_start}
    _write_run_file(config, {**running, **started})
    problems = wait_until_answering(
        {site.name: (site, started[site.name]) for site in to_start},
        stall_timeout=stall_timeout,
        report=report,
    )
    statuses = []
    for site in config.sites:
        if site.name in running:
            statuses.append(_provision(config, site, running[site.name]))
            continue
        pid = started[site.name]
        if problems[site.name]:
            _stop(pid)
            statuses.append(SiteStatus(site.name, site.url, "failed", pid, problem=problems[site.name]))
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


def http_status(config: FederationConfig, site: SiteConfig) -> SiteStatus:
    """One site's status from the run file, its HTTP side and an admin login (no owner channel).

    Parameters
    ----------
    config : FederationConfig
        The federation (its run file).
    site : SiteConfig
        The site.

    Returns
    -------
    SiteStatus
        ``"stopped"``, ``"not answering"`` or ``"running"`` with its dataset.
    """
    pid = read_run_file(config).get(site.name)
    if pid is None or not is_site_process(pid, site):
        return SiteStatus(site.name, site.url, "stopped", None)
    if not is_answering(site.url):
        return SiteStatus(site.name, site.url, "not answering", pid, problem=f"see {log_path(site)}")
    return _running_status(site, pid)


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
