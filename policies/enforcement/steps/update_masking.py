"""Step: mask a released update for secure aggregation (the cohort sums it; no one sees it alone)."""

from __future__ import annotations

from typing import Any

import numpy as np

from policies.enforcement.execution import Execution
from policies.enforcement.site import SiteEnforcer
from policies.enforcement.step import Step
from policies.release import ReleaseRefused
from policies.secure_aggregation import context_bytes, load_or_create_site_key, mask_weights


class MaskUpdate(Step):
    """Release ``n · weights`` masked for the call's cohort; where masking is required, refuse it unmasked.

    The cohort (site name → public key) must meet the site's ``min_cohort`` and, when
    the owner listed peers, hold only those peers with their keys. Adds the cohort
    to the release record.

    Examples
    --------
    >>> from pathlib import Path
    >>> from policies.site_policy import SitePolicy
    >>> site = SiteEnforcer("hospital-a", Path("state"), SitePolicy(require_secure_aggregation=True), 10)
    >>> call = Execution("c1", "f", "", "alice", 1, {})
    >>> call.result = {"round": 0, "weights": {}}
    >>> MaskUpdate().apply(call, site)
    Traceback (most recent call last):
    ...
    policies.release.ReleaseRefused: this site releases model updates only under secure aggregation ...
    """

    def apply(self, execution: Execution, site: SiteEnforcer) -> None:
        cohort, result = execution.kwargs.get("cohort"), execution.result
        if cohort and "weights" in result:
            try:
                round_number = int(execution.kwargs.get("rnd", 0))
                result["weights"] = _masked_update(site, execution.function, result, cohort, round_number)
            except ValueError as problem:
                raise ReleaseRefused(f"secure aggregation: {problem}") from problem
            execution.release["secure_aggregation_cohort"] = sorted(cohort)
        elif site.policy.require_secure_aggregation and "weights" in result:
            raise ReleaseRefused(
                "this site releases model updates only under secure aggregation (send a cohort)"
            )


def _masked_update(site: SiteEnforcer, function: str, result: dict, cohort: Any, round_number: int) -> dict:
    _check_cohort(site, cohort)
    weighted = {
        name: np.asarray(value, dtype=np.float64) * result["num_samples"]
        for name, value in result["weights"].items()
        if np.asarray(value).dtype.kind == "f"
    }
    key = load_or_create_site_key(site.state_dir)
    # every site holds its own copy of the code (its own id); the function name is what the cohort shares
    context = context_bytes(function, round_number, cohort)
    return mask_weights(weighted, site.site, key, cohort, context=context)


def _check_cohort(site: SiteEnforcer, cohort: Any) -> None:
    if not isinstance(cohort, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in cohort.items()
    ):
        raise ValueError("the cohort must map site names to public keys")
    if len(cohort) < site.policy.min_cohort:
        raise ValueError(
            f"a cohort of {len(cohort)} site(s) is below this site's minimum of {site.policy.min_cohort}"
        )
    peers = site.policy.secure_aggregation_peers
    unknown = sorted(
        name for name, key in cohort.items() if name != site.site and peers and peers.get(name) != key
    )
    if unknown:
        raise ValueError(f"cohort members {unknown} are not this site's known peers (or their keys differ)")
