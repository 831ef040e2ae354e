"""The release policy, enforced inside the datasite process around every execution of user code.

PySyft 0.9.5 runs approved code in the server process and returns whatever it
returns. fedimg owns that process, so it wraps the one place user code executes
(``syft.service.action.action_service.execute_byte_code``) and, for every run:

1. refuses code whose output policy is researcher-written (a ``UserPolicy``);
2. refuses a run past the number of executions the owner approved (counted per
   code in the state dir, so a restart does not reset it) — before it touches data;
3. checks the output against the release rules (``policies.release``);
4. applies differential privacy when the site's policy asks for it: with
   ``mechanism = "dp-sgd"`` a training call runs only as fedimg's job template,
   whose training is then the site's DP-SGD loop (``policies.dp_sgd``) with the
   noise this hook calibrates and hands it, charged to the researcher's budget
   before the code touches data; with ``mechanism = "update"`` the released update
   is clipped and noised afterwards (``policies.privacy``);
5. writes every execution, release and refusal to the audit log (``policies.audit``).

A refusal reaches the researcher as an error naming the rule; nothing is stored.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policies.audit import AuditLog
from policies.privacy import (
    BudgetExceeded,
    PrivacyLedger,
    dp_sgd_noise_multiplier,
    noise_multiplier_for,
    privatize_update,
)
from policies.release import ReleaseRefused, check_release
from policies.site_policy import SitePolicy

AUDIT_FILE = "audit.jsonl"
COUNTS_FILE = "executions.json"
LEDGER_FILE = "privacy-ledger.json"
MOCK_RESULT = "not computed: fedimg runs approved code on the private data only (run it on the mocks locally)"
_enforcers: dict[str, SiteEnforcer] = {}
log = logging.getLogger("fedimg.release")
_call = threading.local()  # which run of the current call this is: the private run comes first


@dataclass
class SiteEnforcer:
    site: str
    state_dir: Path
    policy: SitePolicy
    num_classes: int

    @property
    def audit(self) -> AuditLog:
        return AuditLog(self.state_dir / AUDIT_FILE)

    def count_execution(self, code_id: str, limit: int) -> int:
        """Record one private execution of ``code_id``; refuse (without recording) past ``limit``."""
        path = self.state_dir / COUNTS_FILE
        fd = os.open(path.with_name(COUNTS_FILE + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            counts = json.loads(path.read_text()) if path.exists() else {}
            done = counts.get(code_id, 0)
            if done >= limit:
                raise ReleaseRefused(f"this code has run {done} of the {limit} times its owner approved")
            counts[code_id] = done + 1
            temporary = path.with_name(COUNTS_FILE + ".tmp")
            temporary.write_text(json.dumps(counts))
            os.chmod(temporary, 0o600)
            temporary.replace(path)
            return done + 1


def install(worker: Any, state_dir: Path, policy: SitePolicy, *, num_classes: int) -> SiteEnforcer:
    """Enforce ``policy`` on every user-code run of ``worker`` (idempotent per process)."""
    enforcer = SiteEnforcer(worker.name, Path(state_dir), policy, num_classes)
    if policy.privacy is not None and policy.privacy.mechanism == "dp-sgd":
        import policies.dp_sgd  # noqa: F401  (imported now, before any researcher code runs: it binds what it calls)
    _enforcers[str(worker.id)] = enforcer
    _patch_syft()
    return enforcer


def _patch_syft() -> None:
    import syft.service.action.action_service as action_service

    if getattr(action_service.execute_byte_code, "_fedimg_release", False):
        return
    original_execute = action_service.execute_byte_code
    original_call = action_service.ActionService._user_code_execute

    def user_code_execute(self, context, code_item, kwargs, result_id=None):  # type: ignore[no-untyped-def]
        _call.runs = 0
        try:
            return original_call(self, context, code_item, kwargs, result_id)
        finally:
            _call.runs = 0

    def execute_byte_code(code_item, kwargs, context):  # type: ignore[no-untyped-def]
        enforcer = _enforcers.get(str(context.server.id))
        if enforcer is None:
            return original_execute(code_item, kwargs, context)
        private = getattr(_call, "runs", 0) == 0
        _call.runs = getattr(_call, "runs", 0) + 1
        return _enforced_run(enforcer, original_execute, code_item, kwargs, context, private)

    execute_byte_code._fedimg_release = True  # type: ignore[attr-defined]
    action_service.execute_byte_code = execute_byte_code
    action_service.ActionService._user_code_execute = user_code_execute
    _audit_syft_refusals()


def _audit_syft_refusals() -> None:
    """Log PySyft's own refusals too: a call past the approved runs (syft_fixes), of pending or denied code.

    Those are refused before any user code runs, so the hook above never sees them.
    """
    from syft.service.code.user_code_service import IsExecutionAllowedEnum, UserCodeService

    original = UserCodeService.is_execution_allowed

    def is_execution_allowed(self, code, context, output_policy):  # type: ignore[no-untyped-def]
        from syft.service.policy.policy import UserPolicy

        enforcer = _enforcers.get(str(context.server.id))
        if enforcer is not None and any(
            isinstance(p, UserPolicy) for p in (code.output_policy_type, code.input_policy_type)
        ):
            # refused here, before PySyft calls the researcher's own is_valid (unreviewed code in this process)
            _refuse(
                enforcer,
                code,
                str(code.user_verify_key),
                "researcher-written output (or input) policies are not accepted; use the job template's",
            )
        verdict = original(self, code, context, output_policy)
        if enforcer is not None and verdict is not IsExecutionAllowedEnum.ALLOWED:
            enforcer.audit.append(
                "refusal",
                code_id=str(code.id),
                function=code.service_func_name,
                researcher=str(code.user_verify_key),
                reason=str(verdict.value),
            )
        return verdict

    is_execution_allowed._fedimg_fixed = getattr(original, "_fedimg_fixed", False)  # type: ignore[attr-defined]
    UserCodeService.is_execution_allowed = is_execution_allowed


def _refuse(enforcer: SiteEnforcer, code_item: Any, researcher: str, reason: str) -> None:
    from syft.types.errors import SyftException

    enforcer.audit.append(
        "refusal",
        code_id=str(code_item.id),
        function=code_item.service_func_name,
        researcher=researcher,
        reason=reason,
    )
    raise SyftException(public_message=f"release refused by site {enforcer.site}: {reason}")


def _enforced_run(
    enforcer: SiteEnforcer, original: Any, code_item: Any, kwargs: dict, context: Any, private: bool
) -> Any:
    from syft.service.policy.policy import UserPolicy

    researcher = str(code_item.user_verify_key)
    if isinstance(code_item.output_policy_type, UserPolicy):
        _refuse(
            enforcer,
            code_item,
            researcher,
            "researcher-written output policies are not accepted; use the job template's",
        )
    if not private:
        return _mock_run_skipped(code_item)
    limit = int((code_item.output_policy_init_kwargs or {}).get("limit", 1))
    try:
        dp_sgd = _dp_sgd_settings(enforcer, code_item, kwargs, limit)
    except ReleaseRefused as refusal:
        _refuse(enforcer, code_item, researcher, str(refusal))
    try:
        run = enforcer.count_execution(str(code_item.id), limit)
    except ReleaseRefused as refusal:
        _refuse(enforcer, code_item, researcher, str(refusal))
    if dp_sgd is not None:  # charged before the code touches the data: a refusal spends nothing
        try:
            spent = PrivacyLedger(enforcer.state_dir / LEDGER_FILE, enforcer.policy.privacy.delta).charge(
                researcher,
                dp_sgd["noise_multiplier"],
                enforcer.policy.privacy.budget_epsilon,
                sample_rate=dp_sgd["sample_rate"],
                steps=dp_sgd["steps"],
            )
        except BudgetExceeded as exceeded:
            _refuse(enforcer, code_item, researcher, str(exceeded))
        kwargs = {**kwargs, "privacy": dict(dp_sgd)}  # whatever the researcher sent is replaced
    outcome = original(code_item, kwargs, context)
    if outcome.errored:
        # the researcher sees only "contact the admin"; the owner's log gets the error
        log.warning(
            "code %s (%s) failed at %s: %s",
            code_item.service_func_name,
            code_item.id,
            enforcer.site,
            (getattr(outcome, "stderr", "") or "")[-2000:],
        )
        enforcer.audit.append(
            "execution",
            code_id=str(code_item.id),
            function=code_item.service_func_name,
            researcher=researcher,
            run=run,
            errored=True,
        )
        return outcome
    global_weights = kwargs.get("weights")
    try:
        check_release(
            outcome.result,
            global_weights=global_weights,
            num_train=len(kwargs["train_labels"]) if "train_labels" in kwargs else 0,
            num_val=len(kwargs["val_labels"]) if "val_labels" in kwargs else 0,
            num_classes=enforcer.num_classes,
            min_samples=enforcer.policy.min_samples,
            max_output_bytes=int(enforcer.policy.max_output_mb * 2**20),
        )
    except ReleaseRefused as refusal:
        _refuse(enforcer, code_item, researcher, str(refusal))
    release: dict[str, Any] = {
        "code_id": str(code_item.id),
        "function": code_item.service_func_name,
        "researcher": researcher,
        "run": run,
        "limit": limit,
    }
    privacy = enforcer.policy.privacy
    if dp_sgd is not None:
        outcome.result["privacy"] = {
            "mechanism": "dp-sgd",
            "epsilon_spent": spent,
            "delta": privacy.delta,
            **dp_sgd,
        }
        release.update(
            mechanism="dp-sgd",
            epsilon_spent=round(spent, 4),
            noise_multiplier=round(dp_sgd["noise_multiplier"], 4),
            sample_rate=round(dp_sgd["sample_rate"], 6),
            steps=dp_sgd["steps"],
        )
    elif privacy is not None and privacy.mechanism == "dp-sgd" and "weights" in outcome.result:
        _refuse(
            enforcer,
            code_item,
            researcher,
            "model weights from a call this site did not train with its DP-SGD",
        )
    elif privacy is not None and "weights" in outcome.result:
        # the researcher picks the round number, so any of the `limit` runs may be a training release
        multiplier = noise_multiplier_for(privacy.epsilon_per_job, privacy.delta, max(limit, 1))
        ledger = PrivacyLedger(enforcer.state_dir / LEDGER_FILE, privacy.delta)
        try:
            spent = ledger.charge(researcher, multiplier, privacy.budget_epsilon)
        except BudgetExceeded as exceeded:
            _refuse(enforcer, code_item, researcher, str(exceeded))
        outcome.result["weights"] = privatize_update(
            global_weights,
            outcome.result["weights"],
            max_update_norm=privacy.max_update_norm,
            noise_multiplier=multiplier,
        )
        outcome.result["privacy"] = {
            "mechanism": "update",
            "epsilon_spent": spent,
            "delta": privacy.delta,
            "noise_multiplier": multiplier,
            "max_update_norm": privacy.max_update_norm,
        }
        release.update(
            mechanism="update", epsilon_spent=round(spent, 4), noise_multiplier=round(multiplier, 4)
        )
    cohort = kwargs.get("cohort")
    if cohort and "weights" in outcome.result:
        try:
            outcome.result["weights"] = _masked_update(
                enforcer, code_item, outcome.result, cohort, int(kwargs.get("rnd", 0))
            )
        except ValueError as problem:
            _refuse(enforcer, code_item, researcher, f"secure aggregation: {problem}")
        release["secure_aggregation_cohort"] = sorted(cohort)
    elif enforcer.policy.require_secure_aggregation and "weights" in outcome.result:
        _refuse(
            enforcer,
            code_item,
            researcher,
            "this site releases model updates only under secure aggregation (send a cohort)",
        )
    release["keys"] = sorted(outcome.result)
    release["bytes"] = int(sum(np.asarray(v).nbytes for v in outcome.result.get("weights", {}).values()))
    enforcer.audit.append("release", **release)
    return outcome


def _dp_sgd_settings(enforcer: SiteEnforcer, code_item: Any, kwargs: dict, limit: int) -> dict | None:
    """The DP-SGD settings this call trains with at a ``mechanism = "dp-sgd"`` site; None when it does not train.

    Only fedimg's job template is run (its training is the site's ``train_private``);
    its CONFIG gives the rounds, batch size and local epochs. The noise multiplier is
    calibrated so that ``limit`` training calls (the researcher picks the round
    number, so any approved run may train) meet ``(epsilon_per_job, delta)``.
    Raises ``ReleaseRefused`` for other code.
    """
    privacy = enforcer.policy.privacy
    if privacy is None or privacy.mechanism != "dp-sgd":
        return None
    config = _template_config(code_item.raw_code)
    if config is None:
        raise ReleaseRefused(
            "this site trains only with its own DP-SGD, so it runs only fedimg's job template (the code differs from it)"
        )
    rounds, rnd = config.get("rounds"), kwargs.get("rnd")
    if isinstance(rounds, bool) or not isinstance(rounds, int):
        raise ReleaseRefused(f"the job's CONFIG must give an integer number of rounds (got {rounds!r})")
    if isinstance(rnd, int) and not isinstance(rnd, bool) and rnd >= rounds:
        return None  # the evaluation-only call: no training, nothing spent
    from policies.dp_sgd import schedule

    try:
        sample_rate, steps = schedule(
            len(kwargs["train_labels"]), config["batch_size"], config["local_epochs"]
        )
        multiplier = dp_sgd_noise_multiplier(
            privacy.epsilon_per_job, privacy.delta, sample_rate, steps * max(limit, 1)
        )
    except (KeyError, TypeError, ValueError) as problem:
        raise ReleaseRefused(f"cannot set up DP-SGD for this call: {problem}") from problem
    return {
        "noise_multiplier": multiplier,
        "max_grad_norm": privacy.max_grad_norm,
        "sample_rate": sample_rate,
        "steps": steps,
    }


_templates: dict[str, dict | None] = {}


def _template_config(code: str) -> dict | None:
    """The CONFIG of ``code`` if it is fedimg's job template exactly (model aside), else None; cached per source."""
    import hashlib

    from policies.template import match_template

    key = hashlib.sha256(code.encode()).hexdigest()
    if key not in _templates:
        match = match_template(code)
        _templates[key] = match.config if match.matches else None
    return _templates[key]


def _mock_run_skipped(code_item: Any) -> Any:
    """What PySyft's second run of an approved call (on the assets' mock twins) gets instead of running.

    PySyft 0.9.5 runs every approved call twice, on the private data and then on
    the mocks, to build a twin result whose mock half nobody reads here: that run
    doubled a training round's compute at the site. Researchers run the site
    function on the mocks locally (``FedAvgJob.dry_run``).
    """
    from syft.service.code.user_code import UserCodeExecutionOutput
    from syft.types.uid import UID

    return UserCodeExecutionOutput(
        id=UID(), user_code_id=code_item.id, stdout="", stderr="", result=MOCK_RESULT
    )


def _masked_update(
    enforcer: SiteEnforcer, code_item: Any, result: dict, cohort: Any, round_number: int
) -> dict:
    """``n · weights`` of the float tensors, masked for the cohort (``policies.secure_aggregation``)."""
    from policies.secure_aggregation import context_bytes, load_or_create_site_key, mask_weights

    if not isinstance(cohort, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in cohort.items()
    ):
        raise ValueError("the cohort must map site names to public keys")
    if len(cohort) < enforcer.policy.min_cohort:
        raise ValueError(
            f"a cohort of {len(cohort)} site(s) is below this site's minimum of {enforcer.policy.min_cohort}"
        )
    peers = enforcer.policy.secure_aggregation_peers
    unknown = sorted(
        name for name, key in cohort.items() if name != enforcer.site and peers and peers.get(name) != key
    )
    if unknown:
        raise ValueError(f"cohort members {unknown} are not this site's known peers (or their keys differ)")
    weighted = {
        name: np.asarray(value, dtype=np.float64) * result["num_samples"]
        for name, value in result["weights"].items()
        if np.asarray(value).dtype.kind == "f"
    }
    key = load_or_create_site_key(enforcer.state_dir)
    # every site holds its own copy of the code (its own id); the function name is what the cohort shares
    return mask_weights(
        weighted,
        enforcer.site,
        key,
        cohort,
        context=context_bytes(code_item.service_func_name, round_number, cohort),
    )
