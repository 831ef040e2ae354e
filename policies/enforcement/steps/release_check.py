"""Step: check the result against the site's release rules."""

from __future__ import annotations

from policies.enforcement.execution import Execution
from policies.enforcement.site import SiteEnforcer
from policies.enforcement.step import Step
from policies.release import ReleaseRefused, check_release


class CheckRelease(Step):
    """Refuse a result the release rules (``policies.release.check_release``) do not accept.

    At a differentially private site, model weights may leave only from a call the
    privacy step charged (and, under DP-SGD, trained with the site's own loop).

    Examples
    --------
    >>> from pathlib import Path
    >>> from policies.site_policy import SitePolicy
    >>> site = SiteEnforcer("hospital-a", Path("state"), SitePolicy(), 10)
    >>> call = Execution("c1", "f", "", "alice", 1, {"train_labels": [0] * 5, "val_labels": [0] * 5})
    >>> call.result = {"round": 0}
    >>> CheckRelease().apply(call, site)
    Traceback (most recent call last):
    ...
    policies.release.ReleaseRefused: this site has 5 training samples, fewer than its minimum of 20: ...
    """

    def apply(self, execution: Execution, site: SiteEnforcer) -> None:
        kwargs, result = execution.kwargs, execution.result
        check_release(
            result,
            global_weights=kwargs.get("weights"),
            num_train=len(kwargs["train_labels"]) if "train_labels" in kwargs else 0,
            num_val=len(kwargs["val_labels"]) if "val_labels" in kwargs else 0,
            num_classes=site.num_classes,
            min_samples=site.policy.min_samples,
            max_output_bytes=int(site.policy.max_output_mb * 2**20),
        )
        privacy = site.policy.privacy
        if privacy is None or execution.privacy is not None or "weights" not in result:
            return
        if privacy.mechanism == "dp-sgd":
            raise ReleaseRefused("model weights from a call this site did not train with its DP-SGD")
        raise ReleaseRefused("model weights from a call this site did not charge to its privacy budget")
