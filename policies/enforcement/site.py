"""One site's enforcement state: its name, policy, state dir and the files the steps keep there.

It also keeps a run's life in the audit log: ``started`` before the code touches the
data, then one end (release, refusal, failed execution, or ``aborted``). A run
left open by a crash of the site is closed when the site runs again
(``close_interrupted_runs``): marked aborted and its count refunded, since the
site, not the researcher's code, cut it short.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from policies.audit import AuditLog, open_runs
from policies.enforcement.execution import Execution
from policies.privacy import PrivacyLedger
from policies.release import ReleaseRefused
from policies.site_policy import SitePolicy

AUDIT_FILE = "audit.jsonl"
COUNTS_FILE = "executions.json"
LEDGER_FILE = "privacy-ledger.json"
PROCESS = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
"""This process, in every ``started`` record: an open run another process started was cut short."""
INTERRUPTED = "the site stopped while this run was in progress (a crash or a kill); its run is refunded"
_closing = threading.Lock()


@dataclass
class SiteEnforcer:
    """What the enforcement chain knows of the site it runs at.

    Parameters
    ----------
    site : str
        The site's name (the researcher sees it in every refusal).
    state_dir : Path
        The site's state dir: the audit log (``audit.jsonl``), the execution counts
        (``executions.json``) and the privacy ledger (``privacy-ledger.json``) live there.
    policy : SitePolicy
        The owner's release, privacy and secure-aggregation rules.
    num_classes : int
        The number of labels (the size of a released confusion matrix).

    Examples
    --------
    >>> from pathlib import Path
    >>> from policies.site_policy import SitePolicy
    >>> enforcer = SiteEnforcer("hospital-a", Path("state"), SitePolicy(), 10)
    >>> enforcer.refusal_message("too few samples")
    'release refused by site hospital-a: too few samples'
    >>> enforcer.audit.path.name, enforcer.counts_path.name
    ('audit.jsonl', 'executions.json')
    """

    site: str
    state_dir: Path
    policy: SitePolicy
    num_classes: int

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)

    @property
    def audit(self) -> AuditLog:
        """The site's hash-chained audit log."""
        return AuditLog(self.state_dir / AUDIT_FILE)

    @property
    def counts_path(self) -> Path:
        """Where the private runs of each approved code are counted (survives restarts)."""
        return self.state_dir / COUNTS_FILE

    @property
    def ledger(self) -> PrivacyLedger:
        """The researchers' privacy ledger at this site (a site with a ``[privacy]`` policy only).

        Raises
        ------
        ValueError
            When the site's policy has no ``[privacy]`` section.
        """
        if self.policy.privacy is None:
            raise ValueError(f"site {self.site} has no [privacy] policy, so no privacy ledger")
        return PrivacyLedger(self.state_dir / LEDGER_FILE, self.policy.privacy.delta)

    def count_run(self, code_id: str, limit: int) -> int:
        """Count one more run of ``code_id``; refuse (counting nothing) past ``limit``.

        Parameters
        ----------
        code_id : str
            The approved code.
        limit : int
            How many runs its owner approved.

        Returns
        -------
        int
            This run's number (1-based).

        Raises
        ------
        ReleaseRefused
            When ``limit`` runs are already counted.

        Examples
        --------
        >>> from pathlib import Path
        >>> from policies.site_policy import SitePolicy
        >>> enforcer = SiteEnforcer("hospital-a", Path("counted"), SitePolicy(), 10)
        >>> enforcer.count_run("c1", 2), enforcer.count_run("c1", 2), enforcer.runs("c1")
        (1, 2, 2)
        """
        with self._counts() as counts:
            done = counts.get(code_id, 0)
            if done >= limit:
                raise ReleaseRefused(f"this code has run {done} of the {limit} times its owner approved")
            counts[code_id] = done + 1
        return done + 1

    def runs(self, code_id: str) -> int:
        """How many runs of ``code_id`` are counted (refunds deducted)."""
        path = self.counts_path
        return int(json.loads(path.read_text()).get(code_id, 0)) if path.exists() else 0

    @contextmanager
    def _counts(self) -> Iterator[dict[str, int]]:
        """The counts, locked across processes; written back when the block ends without an error."""
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.counts_path
        fd = os.open(path.with_name(COUNTS_FILE + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            counts = json.loads(path.read_text()) if path.exists() else {}
            yield counts
            temporary = path.with_name(COUNTS_FILE + ".tmp")
            temporary.write_text(json.dumps(counts))
            os.chmod(temporary, 0o600)
            temporary.replace(path)

    def record_start(self, execution: Execution) -> None:
        """Write the ``started`` record of a counted run, before its code touches the data; sets ``run_id``.

        Examples
        --------
        >>> from pathlib import Path
        >>> from policies.site_policy import SitePolicy
        >>> enforcer = SiteEnforcer("hospital-a", Path("starts"), SitePolicy(), 10)
        >>> call = Execution("c1", "f", "", "alice", 1, {}, run=1)
        >>> enforcer.record_start(call)
        >>> [(r["event"], r["run_id"] == call.run_id) for r in enforcer.audit.records()]
        [('started', True)]
        """
        execution.run_id = uuid.uuid4().hex
        self.audit.append(
            "started",
            run_id=execution.run_id,
            code_id=execution.code_id,
            function=execution.function,
            researcher=execution.researcher,
            run=execution.run,
            limit=execution.limit,
            process=PROCESS,
        )

    def record_abort(self, execution: Execution, reason: str) -> None:
        """Write the ``aborted`` end of a started run that failed in the site's own machinery (still counted).

        Parameters
        ----------
        execution : Execution
            The started call.
        reason : str
            What went wrong (for the owner).
        """
        self.audit.append(
            "aborted",
            run_id=execution.run_id,
            code_id=execution.code_id,
            function=execution.function,
            researcher=execution.researcher,
            run=execution.run,
            reason=reason,
            refunded=False,
        )

    def close_interrupted_runs(self) -> int:
        """Mark every run another process started and never ended as aborted, and refund its count.

        Call when the site starts, before it serves (the enforcement chain also calls it
        once per process before it counts a run). A run is refunded because the site's
        crash, not the researcher's code, cut it short: the ``refund`` record is written
        before the count is given back (a crash in between loses the run rather than
        granting one twice), then the ``aborted`` record closes the run.

        Returns
        -------
        int
            How many runs were closed.

        Examples
        --------
        >>> from pathlib import Path
        >>> from policies.site_policy import SitePolicy
        >>> enforcer = SiteEnforcer("hospital-a", Path("crashed"), SitePolicy(), 10)
        >>> run = enforcer.count_run("c1", 4)
        >>> _ = enforcer.audit.append("started", run_id="r1", code_id="c1", run=run, process="gone")
        >>> enforcer.close_interrupted_runs(), enforcer.runs("c1")
        (1, 0)
        >>> [r["event"] for r in enforcer.audit.records()]
        ['started', 'refund', 'aborted']
        >>> enforcer.close_interrupted_runs()
        0
        """
        with _closing:
            records = self.audit.records()
            refunded = {r.get("run_id") for r in records if r.get("event") == "refund"}
            interrupted = [r for r in open_runs(records) if r.get("process") != PROCESS]
            for started in interrupted:
                fields = {
                    key: started.get(key) for key in ("run_id", "code_id", "function", "researcher", "run")
                }
                if started["run_id"] not in refunded:
                    self.audit.append("refund", **fields, reason=INTERRUPTED)
                    with self._counts() as counts:
                        code_id = str(started.get("code_id"))
                        counts[code_id] = max(counts.get(code_id, 0) - 1, 0)
                self.audit.append("aborted", **fields, reason=INTERRUPTED, refunded=True)
            _closed.add(self.state_dir.absolute())
        return len(interrupted)

    def close_interrupted_runs_once(self) -> None:
        """``close_interrupted_runs`` unless this process has already done it for this state dir."""
        if self.state_dir.absolute() not in _closed:
            self.close_interrupted_runs()

    def record_refusal(self, execution: Execution, reason: str) -> None:
        """Write one refusal of ``execution`` to the audit log.

        Parameters
        ----------
        execution : Execution
            The refused call.
        reason : str
            The rule it broke, as the researcher sees it.

        Examples
        --------
        >>> from pathlib import Path
        >>> from policies.enforcement.execution import Execution
        >>> from policies.site_policy import SitePolicy
        >>> enforcer = SiteEnforcer("hospital-a", Path("refusals"), SitePolicy(), 10)
        >>> enforcer.record_refusal(Execution("c1", "f", "", "alice", 1, {}), "not approved")
        >>> [(r["event"], r["reason"]) for r in enforcer.audit.records()]
        [('refusal', 'not approved')]
        """
        started = {"run_id": execution.run_id, "run": execution.run} if execution.run_id else {}
        self.audit.append(
            "refusal",
            code_id=execution.code_id,
            function=execution.function,
            researcher=execution.researcher,
            reason=reason,
            **started,
        )

    def refusal_message(self, reason: str) -> str:
        """What the researcher reads when this site refuses: the site and the rule."""
        return f"release refused by site {self.site}: {reason}"


_closed: set[Path] = set()  # state dirs whose interrupted runs this process has closed
