"""Step: write the release to the audit log."""

from __future__ import annotations

import numpy as np

from policies.enforcement.execution import Execution
from policies.enforcement.site import SiteEnforcer
from policies.enforcement.step import Step


class RecordRelease(Step):
    """Append the ``release`` record: the code, the researcher, the run, what the steps added, keys and bytes.

    It is also the end of the run's ``started`` record (same ``run_id``).

    Examples
    --------
    >>> from pathlib import Path
    >>> from policies.site_policy import SitePolicy
    >>> site = SiteEnforcer("hospital-a", Path("state"), SitePolicy(), 10)
    >>> call = Execution("c1", "f", "", "alice", 2, {}, run=1)
    >>> call.result = {"round": 0, "val": {}}
    >>> RecordRelease().apply(call, site)
    >>> record = site.audit.records()[-1]
    >>> record["event"], record["run"], record["limit"], record["keys"], record["bytes"]
    ('release', 1, 2, ['round', 'val'], 0)
    """

    def apply(self, execution: Execution, site: SiteEnforcer) -> None:
        result = execution.result
        weights = result.get("weights", {})
        site.audit.append(
            "release",
            code_id=execution.code_id,
            function=execution.function,
            researcher=execution.researcher,
            run=execution.run,
            run_id=execution.run_id,
            limit=execution.limit,
            **execution.release,
            keys=sorted(result),
            bytes=int(sum(np.asarray(value).nbytes for value in weights.values())),
        )
