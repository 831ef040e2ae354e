"""The one interface of the enforcement chain: a step looks at a call and either lets it on or refuses it."""

from __future__ import annotations

from abc import ABC, abstractmethod

from policies.enforcement.execution import Execution
from policies.enforcement.site import SiteEnforcer


class Step(ABC):
    """One rule of the enforcement chain, applied to every private run in the chain's order.

    A step reads the call (``Execution``) and the site's state (``SiteEnforcer``),
    may fill in fields of the call for the steps after it, and refuses by raising
    ``policies.release.ReleaseRefused`` with a message safe to show to the researcher.
    It never audits its own refusal: the chain does that, once.

    Examples
    --------
    >>> from policies.release import ReleaseRefused
    >>> class NoMondays(Step):
    ...     def apply(self, execution, site):
    ...         if execution.kwargs.get("day") == "monday":
    ...             raise ReleaseRefused("no runs on mondays")
    >>> NoMondays().apply(Execution("c1", "f", "", "alice", 1, {"day": "tuesday"}), None)
    """

    @abstractmethod
    def apply(self, execution: Execution, site: SiteEnforcer) -> None:
        """Check (and possibly complete) ``execution`` at ``site``.

        Parameters
        ----------
        execution : Execution
            The call; the step may fill in the fields it owns.
        site : SiteEnforcer
            The site's name, policy and state files.

        Raises
        ------
        ReleaseRefused
            When the call breaks the step's rule.
        """
