"""Step: write the run's ``started`` record, after it was counted and charged, before its code runs."""

from __future__ import annotations

from policies.enforcement.execution import Execution
from policies.enforcement.site import SiteEnforcer
from policies.enforcement.step import Step


class RecordStart(Step):
    """Append ``started`` (with a new ``run_id``): from here on the run ends in the log one way or another.

    A release, a refusal, a failed execution or ``aborted`` closes it; a run the site's
    crash cut short stays open until the site starts again and refunds it.

    Examples
    --------
    >>> from pathlib import Path
    >>> from policies.site_policy import SitePolicy
    >>> site = SiteEnforcer("hospital-a", Path("state"), SitePolicy(), 10)
    >>> call = Execution("c1", "f", "", "alice", 2, {}, run=1)
    >>> RecordStart().apply(call, site)
    >>> record = site.audit.records()[-1]
    >>> record["event"], record["run"], record["run_id"] == call.run_id
    ('started', 1, True)
    """

    def apply(self, execution: Execution, site: SiteEnforcer) -> None:
        site.record_start(execution)
