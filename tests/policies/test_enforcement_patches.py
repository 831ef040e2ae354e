"""The one module that patches PySyft: idempotent, one wrapper per method, and the glue around the chain."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("syft")

from syft.service.action import action_service  # noqa: E402
from syft.service.code.user_code_service import IsExecutionAllowedEnum, UserCodeService  # noqa: E402
from syft.service.policy.policy import UserPolicy  # noqa: E402
from syft.service.user.user_service import UserService  # noqa: E402
from syft.types.errors import SyftException  # noqa: E402
from syft.types.uid import UID  # noqa: E402

from datasite_setup.site import syft_patches  # noqa: E402
from policies import MOCK_RESULT, SiteEnforcer, SitePolicy  # noqa: E402
from tests.policies.test_enforcement_steps import evaluation  # noqa: E402

SERVER_ID = "fedimg-test-server"


def patched_methods() -> list:
    return [
        UserCodeService.is_execution_allowed,
        UserService.exchange_credentials,
        action_service.ActionService._user_code_execute,
        action_service.execute_byte_code,
    ]


def test_the_patches_apply_once() -> None:
    syft_patches.apply_syft_patches()
    first = patched_methods()
    syft_patches.apply_syft_patches()
    assert patched_methods() == first and all(syft_patches.is_patched(method) for method in first)
    # one wrapper of is_execution_allowed, around PySyft's own method (no wrapper of a wrapper)
    original = UserCodeService.is_execution_allowed.__wrapped__
    assert not syft_patches.is_patched(original) and not hasattr(original, "__wrapped__")
    assert original.__module__ == "syft.service.code.user_code_service"
    assert UserService.exchange_credentials.__qualname__.endswith("exchange_credentials")


@pytest.fixture
def enforcer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SiteEnforcer:
    syft_patches.apply_syft_patches()
    site = SiteEnforcer("site-a", tmp_path, SitePolicy(), 2)
    monkeypatch.setitem(syft_patches._enforcers, SERVER_ID, site)
    return site


def context(server_id: str = SERVER_ID) -> SimpleNamespace:
    return SimpleNamespace(server=SimpleNamespace(id=server_id))


def user_code(
    *, approved: bool = True, output_policy_type: object = None, code_id: object = "code-1"
) -> SimpleNamespace:
    status = SimpleNamespace(get_is_approved=lambda context: approved)
    return SimpleNamespace(
        id=code_id,
        service_func_name="job_fn",
        raw_code="def job_fn(rnd):\n    return {}\n",
        user_verify_key="alice",
        output_policy_init_kwargs={"limit": 2},
        output_policy_type=output_policy_type,
        input_policy_type=None,
        get_status=lambda context: SimpleNamespace(unwrap=lambda: status),
        is_output_policy_approved=lambda context: True,
    )


SERVICE = SimpleNamespace(has_code_permission=lambda code, context: None)
SPENT_POLICY = SimpleNamespace(is_valid=lambda context: False)


def records(site: SiteEnforcer) -> list[tuple[str, str]]:
    return [(r["event"], r["reason"]) for r in site.audit.records()]


def test_the_execution_limit_holds_at_any_datasite() -> None:
    syft_patches.apply_syft_patches()
    verdict = UserCodeService.is_execution_allowed(SERVICE, user_code(), context("elsewhere"), SPENT_POLICY)
    assert verdict is IsExecutionAllowedEnum.INVALID_OUTPUT_POLICY


def test_pysyfts_own_refusals_are_audited(enforcer: SiteEnforcer) -> None:
    verdict = UserCodeService.is_execution_allowed(
        SERVICE, user_code(approved=False), context(), SPENT_POLICY
    )
    assert verdict is IsExecutionAllowedEnum.NOT_APPROVED
    verdict = UserCodeService.is_execution_allowed(SERVICE, user_code(), context(), SPENT_POLICY)
    assert verdict is IsExecutionAllowedEnum.INVALID_OUTPUT_POLICY
    assert records(enforcer) == [
        ("refusal", str(IsExecutionAllowedEnum.NOT_APPROVED.value)),
        ("refusal", str(IsExecutionAllowedEnum.INVALID_OUTPUT_POLICY.value)),
    ]


def test_a_researcher_policy_is_refused_before_pysyft_calls_it(enforcer: SiteEnforcer) -> None:
    called = []
    policy = SimpleNamespace(is_valid=lambda context: called.append(1) or True)
    code = user_code(output_policy_type=UserPolicy.__new__(UserPolicy))
    with pytest.raises(SyftException) as refused:
        UserCodeService.is_execution_allowed(SERVICE, code, context(), policy)
    assert refused.value.public_message == (
        "release refused by site site-a: researcher-written output (or input) policies are not accepted; "
        "use the job template's"
    )
    assert called == [] and len(records(enforcer)) == 1


def test_the_mock_run_is_skipped(enforcer: SiteEnforcer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(syft_patches._call, "runs", 1, raising=False)  # the private run has started
    code = user_code(code_id=UID())
    output = action_service.execute_byte_code(code, {}, context())
    assert (
        output.user_code_id == code.id
        and output.result == MOCK_RESULT
        and not output.errored
        and enforcer.audit.records() == []
    )


def test_the_private_run_goes_through_the_chain(enforcer: SiteEnforcer) -> None:
    kwargs = {"train_labels": [0] * 40, "val_labels": [0] * 20, "rnd": 2}
    syft_output = SimpleNamespace(result=evaluation(), errored=False, stderr="")
    output = syft_patches._enforced_run(enforcer, lambda *args: syft_output, user_code(), kwargs, context())
    assert output is syft_output and set(output.result) == {"round", "val"}
    bad = SimpleNamespace(result={"round": 2}, errored=False, stderr="")
    with pytest.raises(SyftException) as refused:
        syft_patches._enforced_run(enforcer, lambda *args: bad, user_code(), kwargs, context())
    assert refused.value.public_message.startswith(
        "release refused by site site-a: the output must be a dict"
    )
    assert [r["event"] for r in enforcer.audit.records()] == ["started", "release", "started", "refusal"]
