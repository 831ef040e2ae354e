"""Step: run the code on the private data, through the callable the site hands in."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from policies.enforcement.execution import Execution, Runner
from policies.enforcement.site import SiteEnforcer
from policies.enforcement.step import Step

log = logging.getLogger("fedimg.release")


@dataclass(frozen=True)
class RunCode(Step):
    """Run the code with the call's arguments (as the earlier steps left them); fills ``result``.

    A failed run releases nothing: the researcher sees only PySyft's "contact the
    admin", the owner's log gets the error and the audit log an ``execution``
    record with ``errored: true`` (the end of its ``started`` record; the run stays
    counted: the job's own code failed); the chain stops there.

    Parameters
    ----------
    runner : Runner
        Runs the code on keyword arguments and returns a ``RunOutput`` (the site's
        PySyft glue; a plain function in tests).

    Examples
    --------
    >>> from pathlib import Path
    >>> from policies.enforcement.execution import RunOutput
    >>> from policies.site_policy import SitePolicy
    >>> site = SiteEnforcer("hospital-a", Path("state"), SitePolicy(), 10)
    >>> call = Execution("c1", "f", "", "alice", 1, {"rnd": 3})
    >>> RunCode(lambda kwargs: RunOutput({"round": kwargs["rnd"]})).apply(call, site)
    >>> call.result, call.errored
    ({'round': 3}, False)
    """

    runner: Runner

    def apply(self, execution: Execution, site: SiteEnforcer) -> None:
        output = self.runner(execution.kwargs)
        execution.result, execution.errored = output.result, output.errored
        if not output.errored:
            return
        log.warning(
            "code %s (%s) failed at %s: %s",
            execution.function,
            execution.code_id,
            site.site,
            (output.stderr or "")[-2000:],
        )
        site.audit.append(
            "execution",
            code_id=execution.code_id,
            function=execution.function,
            researcher=execution.researcher,
            run=execution.run,
            run_id=execution.run_id,
            errored=True,
        )
