"""``fedimg datasite serve``: open a site's datasite, ingest its partition, serve it over HTTP."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from datasite_setup.errors import FedimgError
from datasite_setup.site.contained import ContainedCalls, Probe, default_threads
from datasite_setup.site.credentials import ADMIN_PASSWORD_ENV, admin_credentials
from datasite_setup.site.datasite import clear_syft_import_environment, redact_url
from datasite_setup.site.owner_channel.handlers import SiteAnswers
from datasite_setup.site.owner_channel.server import ChannelUnavailable, OwnerChannel
from datasite_setup.site.sandbox.runner import SandboxUnavailable
from datasite_setup.site.site_environment import DB_URL_ENV, LOG_FILE_ENV
from datasite_setup.site.site_log import site_log
from datasite_setup.site.start_progress import StartReporter
from datasite_setup.site.syft_patches import register_enforcer
from policies import (
    POLICY_FILE,
    UNCONFINED_WARNING,
    PolicyError,
    SiteEnforcer,
    SitePolicy,
    load_or_create_site_key,
    load_site_policy,
    public_key_hex,
)

log = logging.getLogger("fedimg.sandbox")
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
    threads: int | None = None,
    log_file: Path | None = None,
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
    threads : int or None
        torch threads per sandbox worker when the policy's ``[sandbox] threads`` is 0
        (``fedimg up`` divides the machine's cores among its sites); None: all cores.
    log_file : Path or None
        Log to this file, rotated by size (``site_log``), with everything the process
        prints; None: ``$FEDIMG_LOG_FILE``, else stderr.

    Returns
    -------
    int
        The exit code.
    """
    from datasite_setup.convert.federated_format import check_client_name

    check_client_name(name)
    clear_syft_import_environment()  # before the first 'import syft' of this process
    state_dir = (state_dir or default_state_dir(name)).absolute()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    env_log_file = os.environ.get(LOG_FILE_ENV)
    log_file = log_file or (Path(env_log_file) if env_log_file else None)
    with site_log(log_file) as site:
        reporter = StartReporter(state_dir)
        try:
            return _start_and_serve(
                name, data, port, host, state_dir, db_url, show_progress, policy_file, threads, reporter, site
            )
        except FedimgError as exc:
            site.error("datasite %s did not start: %s", name, exc)
            raise
        except KeyboardInterrupt:
            site.warning("datasite %s interrupted while starting", name)
            raise
        except Exception:  # the traceback belongs in the log, not only on the process's stderr
            site.exception("datasite %s failed", name)
            raise
        finally:
            reporter.clear()


def _start_and_serve(
    name: str,
    data: Path,
    port: int,
    host: str,
    state_dir: Path,
    db_url: str | None,
    show_progress: bool,
    policy_file: Path | None,
    threads: int | None,
    reporter: StartReporter,
    site: logging.Logger,
) -> int:
    """``serve_site`` once its log is set up: start, ingest, serve; 0 after a normal stop."""
    policy = _read_site_policy(state_dir, policy_file)
    # the sandbox probe (a worker started and confined) runs while PySyft imports and the partition ingests
    sandbox = _SandboxStart(state_dir, policy, threads or default_threads())
    db_url = db_url or os.environ.get(DB_URL_ENV) or None
    database = redact_url(db_url) if db_url else "SQLite"
    admin = admin_credentials(state_dir, name)
    # read once: no code running in this process and nothing it starts finds them in its environment
    for secret in (DB_URL_ENV, ADMIN_PASSWORD_ENV):
        os.environ.pop(secret, None)
    reporter.phase("starting", "importing PySyft, opening the database")
    from datasite_setup.site.datasite import open_datasite, serve
    from datasite_setup.site.heap import use_serving_thresholds
    from datasite_setup.site.ingest import ingest_partition

    worker = open_datasite(name, state_dir, admin, db_url=db_url)
    site_key = public_key_hex(load_or_create_site_key(state_dir))
    reporter.phase("ingesting")
    result = ingest_partition(
        worker,
        data,
        show_progress=show_progress,
        extra_info={"secure_aggregation_public_key": site_key},
        journal=state_dir / INGEST_JOURNAL,
        state_dir=state_dir,
        progress=reporter.bar,  # `fedimg up` shows "ingesting n/N" from the start-progress file
    )
    contained = sandbox.finish()
    enforcer = SiteEnforcer(worker.name, state_dir, policy, _num_classes(data))
    if interrupted := enforcer.close_interrupted_runs():  # the last stop cut them short: not the job's fault
        print(
            f"datasite {name}: {interrupted} run(s) cut short by the last stop marked aborted and refunded",
            flush=True,
        )
    register_enforcer(worker, enforcer, contained)
    action = "ingested" if result.created else "already holds"
    removed = f"; removed previous version(s) {', '.join(result.removed)}" if result.removed else ""
    print(f"datasite {name} {action} {result.dataset} ({result.num_samples} samples){removed}", flush=True)
    print(
        f"datasite {name} release policy: {policy.source} (min {policy.min_samples} samples, "
        f"{'differential privacy on' if policy.privacy else 'no differential privacy'})",
        flush=True,
    )
    print(f"datasite {name} {sandbox.describe()}", flush=True)
    use_serving_thresholds()  # also when nothing was ingested: the same heap behaviour however it started
    print(
        f"datasite {name} serving http://{host}:{port} (state {state_dir}, database {database})", flush=True
    )
    channel = _open_owner_channel(worker, name, state_dir, policy, _local_url(host, port), site)
    reporter.phase("serving", f"http://{host}:{port}")
    try:
        serve(worker, host=host, port=port)
    except KeyboardInterrupt:
        # uvicorn shuts down on SIGTERM/SIGINT, then raises the signal again: a normal stop
        site.info("datasite %s stopped", name)
        return 0
    finally:
        if channel is not None:
            channel.close()
        if contained is not None:
            contained.close()
    return 0


def _local_url(host: str, port: int) -> str:
    """Where this machine reaches the site's HTTP side (a wildcard bind answers on loopback).

    Examples
    --------
    >>> _local_url("0.0.0.0", 8081), _local_url("10.0.0.5", 8081)
    ('http://127.0.0.1:8081', 'http://10.0.0.5:8081')
    """
    return f"http://{'127.0.0.1' if host in ('', '0.0.0.0', '::') else host}:{port}"


def _open_owner_channel(
    worker: object, name: str, state_dir: Path, policy: SitePolicy, url: str, site: logging.Logger
) -> OwnerChannel | None:
    """Serve the owner channel (``owner_channel``); without it the site still serves, owners use HTTP."""
    answers = SiteAnswers(worker, name, state_dir, policy, url)
    channel = OwnerChannel(state_dir, answers.answer, prepare=answers.prepare)
    try:
        channel.start()
    except ChannelUnavailable as exc:
        site.error(
            "datasite %s: owner channel off (%s); 'fedimg review' logs in over HTTP instead", name, exc
        )
        return None
    print(f"datasite {name} owner channel {channel.path} (0600, this user only)", flush=True)
    return channel


class _SandboxStart:
    """The site's sandbox, probed in the background while the site starts (see ``ContainedCalls.probe``).

    With ``[sandbox] mode = "off"`` there is nothing to start and code runs unconfined. With the
    sandbox on, a probe that fails leaves the site serving but refusing every call (fail closed),
    with the reason in its log and in every refusal.
    """

    def __init__(self, state_dir: Path, policy: SitePolicy, threads: int) -> None:
        self.policy = policy
        self.contained: ContainedCalls | None = None
        self.probe: Probe | None = None
        self.problem = ""
        self._thread: threading.Thread | None = None
        if not policy.sandbox.confined:
            return
        try:
            self.contained = ContainedCalls(
                state_dir, policy.sandbox, threads=threads, max_result_mb=policy.max_output_mb
            )
        except SandboxUnavailable as exc:
            raise FedimgError(f"the sandbox cannot protect this site: {exc}") from exc
        self._thread = threading.Thread(target=self._probe, name="fedimg-sandbox-probe", daemon=True)
        self._thread.start()

    def _probe(self) -> None:
        assert self.contained is not None
        try:
            self.probe = self.contained.probe()
        except SandboxUnavailable as exc:
            self.problem = str(exc)

    def finish(self) -> ContainedCalls | None:
        """Wait for the probe; the site's ``ContainedCalls`` (None with the sandbox off)."""
        if self._thread is not None:
            self._thread.join()
        if self.contained is not None:
            self.contained.reload_index()  # the ingest has (re)written the asset maps
            if self.problem:
                self.contained.refuse_all(self.problem)
                log.error("sandbox unavailable: this site refuses to run code (%s)", self.problem)
        if not self.policy.sandbox.confined:
            log.warning(UNCONFINED_WARNING)
        return self.contained

    def describe(self) -> str:
        """The sandbox line of the site's start-up output."""
        if not self.policy.sandbox.confined:
            return f"sandbox OFF: {UNCONFINED_WARNING}"
        if self.problem:
            return f"sandbox UNAVAILABLE: this site refuses to run code ({self.problem})"
        assert self.contained is not None and self.probe is not None
        return (
            f"sandbox on ({self.probe.describe()}; {self.contained.threads} torch thread(s) per worker, "
            f"{self.policy.sandbox.seconds_per_call:g} s and {self.policy.sandbox.memory_mb} MB per call)"
        )


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
