"""Step: count the private run against the number the owner approved, before it touches the data."""

from __future__ import annotations

import fcntl
import json
import os

from policies.enforcement.execution import Execution
from policies.enforcement.site import COUNTS_FILE, SiteEnforcer
from policies.enforcement.step import Step
from policies.release import ReleaseRefused


class CountExecution(Step):
    """Record one private run of the code; refuse (recording nothing) past the approved ``limit``.

    Counts are kept per code id in the state dir (``executions.json``), so a restart
    does not reset them. Fills ``execution.run``.

    Examples
    --------
    >>> from pathlib import Path
    >>> from policies.site_policy import SitePolicy
    >>> site = SiteEnforcer("hospital-a", Path("state"), SitePolicy(), 10)
    >>> site.state_dir.mkdir()
    >>> call = Execution("c1", "f", "", "alice", 1, {})
    >>> CountExecution().apply(call, site)
    >>> call.run
    1
    >>> CountExecution().apply(Execution("c1", "f", "", "alice", 1, {}), site)
    Traceback (most recent call last):
    ...
    policies.release.ReleaseRefused: this code has run 1 of the 1 times its owner approved
    """

    def apply(self, execution: Execution, site: SiteEnforcer) -> None:
        path = site.counts_path
        fd = os.open(path.with_name(COUNTS_FILE + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            counts = json.loads(path.read_text()) if path.exists() else {}
            done = counts.get(execution.code_id, 0)
            if done >= execution.limit:
                raise ReleaseRefused(
                    f"this code has run {done} of the {execution.limit} times its owner approved"
                )
            counts[execution.code_id] = done + 1
            temporary = path.with_name(COUNTS_FILE + ".tmp")
            temporary.write_text(json.dumps(counts))
            os.chmod(temporary, 0o600)
            temporary.replace(path)
        execution.run = done + 1
