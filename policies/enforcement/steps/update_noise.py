"""Step: clip and noise a released update as the privacy step charged it; report the charge."""

from __future__ import annotations

from policies.enforcement.execution import Execution
from policies.enforcement.site import SiteEnforcer
from policies.enforcement.step import Step
from policies.privacy import privatize_update


class AddUpdateNoise(Step):
    """Under ``mechanism = "update"``, clip the released update and add the noise the charge paid for.

    The noise multiplier is the one ``ChargePrivacy`` computed and charged; nothing
    is charged here. For a charged call (either mechanism) the charge goes into the
    result as ``privacy`` and into the release record (ε spent and the noise, rounded).

    Examples
    --------
    >>> from pathlib import Path
    >>> from policies.site_policy import SitePolicy
    >>> site = SiteEnforcer("hospital-a", Path("state"), SitePolicy(), 10)
    >>> call = Execution("c1", "f", "", "alice", 1, {})
    >>> call.result = {"round": 0}
    >>> call.privacy = {"mechanism": "update", "epsilon_spent": 0.5, "noise_multiplier": 2.0}
    >>> AddUpdateNoise().apply(call, site)
    >>> call.result["privacy"]["epsilon_spent"], call.release
    (0.5, {'mechanism': 'update', 'epsilon_spent': 0.5, 'noise_multiplier': 2.0})
    """

    def apply(self, execution: Execution, site: SiteEnforcer) -> None:
        charge, result = execution.privacy, execution.result
        if charge is None:
            return
        if charge["mechanism"] == "update" and "weights" in result:
            result["weights"] = privatize_update(
                execution.kwargs["weights"],  # present: the release check compared the update to it
                result["weights"],
                max_update_norm=charge["max_update_norm"],
                noise_multiplier=charge["noise_multiplier"],
            )
        result["privacy"] = dict(charge)
        execution.release.update(
            mechanism=charge["mechanism"],
            epsilon_spent=round(charge["epsilon_spent"], 4),
            noise_multiplier=round(charge["noise_multiplier"], 4),
        )
        if charge["mechanism"] == "dp-sgd":
            execution.release.update(sample_rate=round(charge["sample_rate"], 6), steps=charge["steps"])
