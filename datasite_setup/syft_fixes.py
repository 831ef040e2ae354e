"""Fixes fedimg applies to PySyft 0.9.5 inside its own datasite processes.

Output-policy execution limits: ``UserCodeService.is_execution_allowed``
(``syft/service/code/user_code_service.py``) ignores a ``False`` from
``OutputPolicy.is_valid``, so ``SingleExecutionExactOutput`` or
``OutputPolicyExecuteCount(limit=N)`` let approved code run any number of
times. A data owner who approves "N rounds" must get N rounds: a call past the
limit is refused.
"""

from __future__ import annotations


def apply_syft_fixes() -> None:
    """Idempotent; call before a datasite serves requests."""
    from syft.service.code.user_code_service import IsExecutionAllowedEnum, UserCodeService

    original = UserCodeService.is_execution_allowed
    if getattr(original, "_fedimg_fixed", False):
        return

    def is_execution_allowed(self, code, context, output_policy):  # type: ignore[no-untyped-def]
        verdict = original(self, code, context, output_policy)
        if verdict is IsExecutionAllowedEnum.ALLOWED and output_policy is not None and not output_policy.is_valid(context):
            return IsExecutionAllowedEnum.INVALID_OUTPUT_POLICY
        return verdict

    is_execution_allowed._fedimg_fixed = True  # type: ignore[attr-defined]
    UserCodeService.is_execution_allowed = is_execution_allowed
