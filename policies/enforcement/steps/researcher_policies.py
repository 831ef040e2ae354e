"""Step: refuse code whose output (or input) policy the researcher wrote."""

from __future__ import annotations

from dataclasses import dataclass

from policies.enforcement.execution import Execution
from policies.enforcement.site import SiteEnforcer
from policies.enforcement.step import Step
from policies.release import ReleaseRefused


@dataclass(frozen=True)
class RefuseResearcherPolicies(Step):
    """Refuse a researcher-written (``UserPolicy``) output policy, and at admission an input policy too.

    PySyft calls a policy's own ``is_valid`` in the server process: a researcher's
    policy would be unreviewed code run with the server's rights.

    Parameters
    ----------
    check_input_policy : bool
        Also refuse a researcher-written input policy (at admission, before PySyft
        calls either policy's code).

    Examples
    --------
    >>> from pathlib import Path
    >>> from policies.site_policy import SitePolicy
    >>> site = SiteEnforcer("hospital-a", Path("state"), SitePolicy(), 10)
    >>> call = Execution("c1", "f", "", "alice", 1, {}, researcher_output_policy=True)
    >>> RefuseResearcherPolicies().apply(call, site)
    Traceback (most recent call last):
    ...
    policies.release.ReleaseRefused: researcher-written output policies are not accepted; ...
    """

    check_input_policy: bool = False

    def apply(self, execution: Execution, site: SiteEnforcer) -> None:
        if self.check_input_policy:
            if execution.researcher_output_policy or execution.researcher_input_policy:
                raise ReleaseRefused(
                    "researcher-written output (or input) policies are not accepted; use the job template's"
                )
        elif execution.researcher_output_policy:
            raise ReleaseRefused(
                "researcher-written output policies are not accepted; use the job template's"
            )
