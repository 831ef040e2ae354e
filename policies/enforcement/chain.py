"""The enforcement chain: the steps in order, with one exit for a refusal."""

from __future__ import annotations

from dataclasses import dataclass

from policies.enforcement.execution import Execution, Runner
from policies.enforcement.site import SiteEnforcer
from policies.enforcement.step import Step
from policies.enforcement.steps import (
    AddUpdateNoise,
    ChargePrivacy,
    CheckRelease,
    CountExecution,
    DpSgdSettings,
    MaskUpdate,
    RecordRelease,
    RecordStart,
    RefuseResearcherPolicies,
    RunCode,
)
from policies.release import ReleaseRefused


@dataclass(frozen=True)
class Chain:
    """Steps applied in order to one call; the first refusal is audited once and re-raised.

    Any other error after the run's ``started`` record (the site's own machinery failing)
    is audited as ``aborted`` (still counted) and re-raised, so no started run is left open.

    Parameters
    ----------
    steps : tuple of Step
        The rules, in the order they apply.

    Examples
    --------
    >>> from pathlib import Path
    >>> from policies.site_policy import SitePolicy
    >>> site = SiteEnforcer("hospital-a", Path("admission"), SitePolicy(), 10)
    >>> call = Execution("c1", "f", "", "alice", 1, {}, researcher_output_policy=True)
    >>> admission_chain().run(call, site)
    Traceback (most recent call last):
    ...
    policies.release.ReleaseRefused: researcher-written output (or input) policies are not accepted; ...
    >>> [record["event"] for record in site.audit.records()]
    ['refusal']
    """

    steps: tuple[Step, ...]

    def run(self, execution: Execution, site: SiteEnforcer) -> Execution:
        """Apply every step to ``execution`` at ``site``, stopping after a failed run.

        Parameters
        ----------
        execution : Execution
            The call; the steps fill in its fields.
        site : SiteEnforcer
            The site whose rules apply.

        Returns
        -------
        Execution
            The same call, with its (possibly noised or masked) result.

        Raises
        ------
        ReleaseRefused
            The first step's refusal, after one ``refusal`` record in the audit log.
        """
        try:
            for step in self.steps:
                step.apply(execution, site)
                if execution.errored:
                    break  # nothing to release; the run step has logged it
        except ReleaseRefused as refusal:
            site.record_refusal(execution, str(refusal))
            raise
        except Exception as problem:
            if execution.run_id is not None:
                site.record_abort(execution, f"{type(problem).__name__}: {str(problem)[:300]}")
            raise
        return execution


def admission_chain() -> Chain:
    """The checks made before PySyft looks at the code's policies at all (a researcher's policy is code).

    Returns
    -------
    Chain
        Refuses researcher-written output or input policies.

    Examples
    --------
    >>> [type(step).__name__ for step in admission_chain().steps]
    ['RefuseResearcherPolicies']
    """
    return Chain((RefuseResearcherPolicies(check_input_policy=True),))


def release_chain(runner: Runner) -> Chain:
    """Every rule around one private run, in order: what runs, what it may spend, and what may leave.

    Parameters
    ----------
    runner : Runner
        Runs the code on keyword arguments (the site's PySyft glue).

    Returns
    -------
    Chain
        Researcher policies → DP-SGD settings → count → privacy charge → started record →
        run → release check → update noise → masking → release record.

    Examples
    --------
    >>> import numpy as np
    >>> from pathlib import Path
    >>> from policies.enforcement.execution import RunOutput
    >>> from policies.site_policy import SitePolicy
    >>> site = SiteEnforcer("hospital-a", Path("release"), SitePolicy(), 2)
    >>> site.state_dir.mkdir()
    >>> val = {"loss": 0.7, "accuracy": 0.5, "num_samples": 20, "confusion": np.array([[10, 0], [10, 0]])}
    >>> call = Execution("c1", "f", "", "alice", 1, {"train_labels": [0] * 20, "val_labels": [0] * 20})
    >>> release_chain(lambda kwargs: RunOutput({"round": 1, "val": val})).run(call, site).run
    1
    >>> [record["event"] for record in site.audit.records()]
    ['started', 'release']
    """
    return Chain(
        (
            RefuseResearcherPolicies(),
            DpSgdSettings(),
            CountExecution(),
            ChargePrivacy(),
            RecordStart(),
            RunCode(runner),
            CheckRelease(),
            AddUpdateNoise(),
            MaskUpdate(),
            RecordRelease(),
        )
    )
