"""The enforcement chain's steps, one rule per module, in the order the chain applies them.

- ``RefuseResearcherPolicies``: no researcher-written output (or input) policy;
- ``DpSgdSettings``: at a DP-SGD site, calibrate a training call's noise (or refuse other code);
- ``CountExecution``: at most the approved number of runs;
- ``ChargePrivacy``: the only charge to the privacy ledger, before the run;
- ``RecordStart``: the run's ``started`` record, before the code touches the data;
- ``RunCode``: the run, through the site's callable;
- ``CheckRelease``: the release rules;
- ``AddUpdateNoise``: clip and noise an update-level release, report the charge;
- ``MaskUpdate``: secure aggregation;
- ``RecordRelease``: the audit's release record.
"""

from policies.enforcement.steps.dp_sgd_settings import DpSgdSettings
from policies.enforcement.steps.execution_count import CountExecution
from policies.enforcement.steps.privacy_charge import ChargePrivacy
from policies.enforcement.steps.release_check import CheckRelease
from policies.enforcement.steps.release_record import RecordRelease
from policies.enforcement.steps.researcher_policies import RefuseResearcherPolicies
from policies.enforcement.steps.run_code import RunCode
from policies.enforcement.steps.run_start import RecordStart
from policies.enforcement.steps.update_masking import MaskUpdate
from policies.enforcement.steps.update_noise import AddUpdateNoise

__all__ = [
    "AddUpdateNoise",
    "ChargePrivacy",
    "CheckRelease",
    "CountExecution",
    "DpSgdSettings",
    "MaskUpdate",
    "RecordRelease",
    "RecordStart",
    "RefuseResearcherPolicies",
    "RunCode",
]
