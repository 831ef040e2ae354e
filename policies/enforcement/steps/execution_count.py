"""Step: count the private run against the number the owner approved, before it touches the data."""

from __future__ import annotations

from policies.enforcement.execution import Execution
from policies.enforcement.site import SiteEnforcer
from policies.enforcement.step import Step


class CountExecution(Step):
    """Record one private run of the code; refuse (recording nothing) past the approved ``limit``.

    Counts are kept per code id in the state dir (``executions.json``), so a restart
    does not reset them. Runs a crash of the site interrupted are refunded first (once
    per process: ``SiteEnforcer.close_interrupted_runs``). Fills ``execution.run``.

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
        site.close_interrupted_runs_once()
        execution.run = site.count_run(execution.code_id, execution.limit)
