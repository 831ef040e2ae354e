"""Step: the DP-SGD settings a call trains with at a ``mechanism = "dp-sgd"`` site (nothing charged yet)."""

from __future__ import annotations

from policies.dp_sgd import schedule
from policies.enforcement.execution import Execution, is_plain_int
from policies.enforcement.site import SiteEnforcer
from policies.enforcement.step import Step
from policies.privacy import dp_sgd_noise_multiplier
from policies.release import ReleaseRefused


class DpSgdSettings(Step):
    """Calibrate the DP-SGD noise for a training call, or refuse code the site cannot train privately.

    Only fedimg's job template runs at a DP-SGD site (its training is the site's
    ``train_private``); its CONFIG gives the rounds, batch size and local epochs. The
    noise multiplier is calibrated so that ``limit`` training calls (the researcher
    picks the round number, so any approved run may train) meet
    ``(epsilon_per_job, delta)``. The template's evaluation-only call
    (``rnd >= rounds``) trains nothing and gets no settings. This runs before the
    execution count, so a call refused here does not use up an approved run.
    Fills ``execution.dp_sgd``.

    Examples
    --------
    >>> from pathlib import Path
    >>> from policies.site_policy import PrivacySettings, SitePolicy
    >>> site = SiteEnforcer("hospital-a", Path("state"), SitePolicy(privacy=PrivacySettings()), 10)
    >>> DpSgdSettings().apply(Execution("c1", "f", "def f(rnd):\\n    return rnd\\n", "alice", 1, {}), site)
    Traceback (most recent call last):
    ...
    policies.release.ReleaseRefused: this site trains only with its own DP-SGD, so it runs only fedimg's ...
    """

    def apply(self, execution: Execution, site: SiteEnforcer) -> None:
        privacy = site.policy.privacy
        if privacy is None or privacy.mechanism != "dp-sgd":
            return
        config = execution.template_config()
        if config is None:
            raise ReleaseRefused(
                "this site trains only with its own DP-SGD, so it runs only fedimg's job template "
                "(the code differs from it)"
            )
        rounds = config.get("rounds")
        if not is_plain_int(rounds):
            raise ReleaseRefused(f"the job's CONFIG must give an integer number of rounds (got {rounds!r})")
        if execution.is_template_evaluation():
            return  # no training, nothing spent
        try:
            sample_rate, steps = schedule(
                len(execution.kwargs["train_labels"]), config["batch_size"], config["local_epochs"]
            )
            multiplier = dp_sgd_noise_multiplier(
                privacy.epsilon_per_job, privacy.delta, sample_rate, steps * max(execution.limit, 1)
            )
        except (KeyError, TypeError, ValueError) as problem:
            raise ReleaseRefused(f"cannot set up DP-SGD for this call: {problem}") from problem
        execution.dp_sgd = {
            "noise_multiplier": multiplier,
            "max_grad_norm": privacy.max_grad_norm,
            "sample_rate": sample_rate,
            "steps": steps,
        }
