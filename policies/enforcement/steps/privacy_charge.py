"""Step: charge the call to the researcher's privacy budget, before the code touches the data."""

from __future__ import annotations

from typing import Any

from policies.enforcement.execution import Execution
from policies.enforcement.site import SiteEnforcer
from policies.enforcement.step import Step
from policies.privacy import SAMPLE_RATE, BudgetExceeded, noise_multiplier_for
from policies.release import ReleaseRefused


class ChargePrivacy(Step):
    """The one place the privacy ledger is charged: before the run, for every call that may release weights.

    - ``mechanism = "dp-sgd"``: a call ``DpSgdSettings`` calibrated is charged its
      DP-SGD steps, and the code is handed those settings as its ``privacy``
      argument (whatever the researcher sent there is replaced).
    - ``mechanism = "update"``: the whole update will be clipped and noised after
      the run (``AddUpdateNoise``); the noise multiplier makes ``limit`` releases
      meet ``(epsilon_per_job, delta)``. The job template's evaluation-only call is
      free; any other call of any code may return weights, so it is charged.

    A call over the budget is refused before it runs, and spends nothing. Fills
    ``execution.privacy``: the charge as the researcher will see it.

    Examples
    --------
    >>> from pathlib import Path
    >>> from policies.site_policy import PrivacySettings, SitePolicy
    >>> privacy = PrivacySettings(mechanism="update", epsilon_per_job=1.0, budget_epsilon=1.2)
    >>> site = SiteEnforcer("hospital-a", Path("state"), SitePolicy(privacy=privacy), 10)
    >>> call = Execution("c1", "f", "def f(rnd):\\n    return rnd\\n", "alice", 2, {"rnd": 0})
    >>> ChargePrivacy().apply(call, site)
    >>> call.privacy["mechanism"], round(call.privacy["epsilon_spent"], 1)
    ('update', 0.7)
    """

    def apply(self, execution: Execution, site: SiteEnforcer) -> None:
        privacy = site.policy.privacy
        if privacy is None:
            return
        if privacy.mechanism == "dp-sgd":
            if execution.dp_sgd is None:
                return  # not a training call
            settings: dict[str, Any] = dict(execution.dp_sgd)
            sample_rate, steps = settings["sample_rate"], settings["steps"]
        else:
            if execution.is_template_evaluation():
                return  # the template's evaluation call returns no weights
            multiplier = noise_multiplier_for(privacy.epsilon_per_job, privacy.delta, max(execution.limit, 1))
            settings = {"noise_multiplier": multiplier, "max_update_norm": privacy.max_update_norm}
            sample_rate, steps = SAMPLE_RATE, 1  # one release of the whole update
        try:
            spent = site.ledger.charge(
                execution.researcher,
                settings["noise_multiplier"],
                privacy.budget_epsilon,
                sample_rate=sample_rate,
                steps=steps,
            )
        except BudgetExceeded as exceeded:
            raise ReleaseRefused(str(exceeded)) from exceeded
        if execution.dp_sgd is not None:
            execution.kwargs = {**execution.kwargs, "privacy": dict(execution.dp_sgd)}
        execution.privacy = {
            "mechanism": privacy.mechanism,
            "epsilon_spent": spent,
            "delta": privacy.delta,
            **settings,
        }
