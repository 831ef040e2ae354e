"""The release policy, enforced inside the datasite process around every execution of user code.

PySyft 0.9.5 runs approved code in the server process and returns whatever it
returns. fedimg owns that process: its PySyft glue
(``datasite_setup.site.syft_patches``) describes every private run as an
``Execution`` and hands it, with a callable that runs the code, to the
``release_chain``. The chain applies one small rule per step (``steps/``, one
module each), in order:

1. refuse code whose output policy is researcher-written (a ``UserPolicy``);
2. at a ``mechanism = "dp-sgd"`` site, calibrate the DP-SGD noise of a training
   call — only fedimg's job template runs there, its training being the site's
   DP-SGD loop (``policies.dp_sgd``) — or refuse other code;
3. refuse a run past the number of executions the owner approved (counted per
   code in the state dir, so a restart does not reset it);
4. charge the researcher's privacy budget (``policies.privacy``), the one place
   the ledger is charged, before the code touches data: DP-SGD steps, or with
   ``mechanism = "update"`` one noised release for every call that may return
   weights;
5. write the run's ``started`` record to the audit log, then run the code (every
   started run ends in the log: release, refusal, failed execution or ``aborted``;
   a run the site's crash cut short is aborted and refunded when the site starts
   again, ``SiteEnforcer.close_interrupted_runs``);
6. check the output against the release rules (``policies.release``);
7. with ``mechanism = "update"``, clip and noise the released update with the
   noise charged in 4;
8. mask the update for secure aggregation (``policies.secure_aggregation``);
9. write the release to the audit log (``policies.audit``).

Any step may refuse (``ReleaseRefused``): the chain writes the refusal to the
audit log once and re-raises it; the researcher sees "release refused by site
<site>: <rule>" and nothing is stored. Before PySyft even looks at a call's
policies, the ``admission_chain`` refuses researcher-written input or output
policies. This package never imports PySyft.
"""

from policies.enforcement.chain import Chain, admission_chain, release_chain
from policies.enforcement.execution import MOCK_RESULT, Execution, Runner, RunOutput
from policies.enforcement.site import AUDIT_FILE, COUNTS_FILE, LEDGER_FILE, SiteEnforcer
from policies.enforcement.step import Step

__all__ = [
    "AUDIT_FILE",
    "COUNTS_FILE",
    "Chain",
    "Execution",
    "LEDGER_FILE",
    "MOCK_RESULT",
    "RunOutput",
    "Runner",
    "SiteEnforcer",
    "Step",
    "admission_chain",
    "release_chain",
]
