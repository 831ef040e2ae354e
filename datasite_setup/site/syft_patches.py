"""Fixes fedimg applies to PySyft 0.9.5 inside its own datasite processes.

Output-policy execution limits: ``UserCodeService.is_execution_allowed``
(``syft/service/code/user_code_service.py``) ignores a ``False`` from
``OutputPolicy.is_valid``, so ``SingleExecutionExactOutput`` or
``OutputPolicyExecuteCount(limit=N)`` let approved code run any number of
times. A data owner who approves "N rounds" must get N rounds: a call past the
limit is refused.

Login failures: ``UserService.exchange_credentials`` answers an unknown e-mail
with a "not found" error (and at once) but a wrong password with "Invalid
credentials." (after a bcrypt check), which tells anyone which accounts exist.
Both now get the same message after the same work.
"""

from __future__ import annotations

import functools


def apply_syft_fixes() -> None:
    """Idempotent; call before a datasite serves requests."""
    from syft.service.code.user_code_service import IsExecutionAllowedEnum, UserCodeService

    original = UserCodeService.is_execution_allowed
    if getattr(original, "_fedimg_fixed", False):
        return

    def is_execution_allowed(self, code, context, output_policy):  # type: ignore[no-untyped-def]
        verdict = original(self, code, context, output_policy)
        if (
            verdict is IsExecutionAllowedEnum.ALLOWED
            and output_policy is not None
            and not output_policy.is_valid(context)
        ):
            return IsExecutionAllowedEnum.INVALID_OUTPUT_POLICY
        return verdict

    is_execution_allowed._fedimg_fixed = True  # type: ignore[attr-defined]
    UserCodeService.is_execution_allowed = is_execution_allowed
    _uniform_login_failures()


def _uniform_login_failures() -> None:
    from syft.service.user.user import check_pwd, salt_and_hash_password
    from syft.service.user.user_service import UserService
    from syft.store.document_store_errors import NotFoundException
    from syft.types.errors import CredentialsError, SyftException

    original = UserService.exchange_credentials
    if getattr(original, "_fedimg_fixed", False):
        return
    stand_in: list[str] = []  # a bcrypt hash with syft's 12 rounds, made on the first unknown e-mail

    @functools.wraps(original)  # syft looks services up by the method's qualified name
    def exchange_credentials(self, context):  # type: ignore[no-untyped-def]
        try:
            return original(self, context)
        except NotFoundException:
            if context.login_credentials is not None:
                if not stand_in:
                    stand_in.append(salt_and_hash_password("fedimg: no such account", 12)[1])
                check_pwd(context.login_credentials.password, stand_in[0])  # the time a wrong password takes
            raise SyftException(public_message=CredentialsError.public_message) from None

    exchange_credentials._fedimg_fixed = True  # type: ignore[attr-defined]
    UserService.exchange_credentials = exchange_credentials
