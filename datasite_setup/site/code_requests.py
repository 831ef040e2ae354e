"""The data owner's side of a request: list what is pending, read it, approve or deny it."""

from __future__ import annotations

import contextlib
import hashlib
import io
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PendingRequest:
    """A code request as an owner reviews it."""

    id: str
    requester: str
    function_name: str
    code: str
    inputs: dict
    output_policy: str
    output_policy_kwargs: dict
    status: str
    bound_assets: dict = (
        None  # input name -> "dataset/asset" it is matched to (None: not an asset of this site)
    )

    @property
    def code_sha256(self) -> str:
        """sha256 of the code as submitted (equals the researcher's ``SiteFunction.sha256``)."""
        return hashlib.sha256(self.code.encode()).hexdigest()


def describe(request: Any, assets: dict[str, str] | None = None) -> PendingRequest:
    """An owner's view of ``request``; ``assets`` maps asset action ids to "dataset/asset" names."""
    code = request.code
    output_policy = getattr(code, "output_policy_type", None)
    return PendingRequest(
        id=str(request.id),
        requester=str(getattr(request, "requesting_user_email", "") or ""),
        function_name=code.service_func_name,
        code=code.raw_code,
        inputs=_inputs(code),
        output_policy=getattr(output_policy, "__name__", str(output_policy)),
        output_policy_kwargs={k: v for k, v in (code.output_policy_init_kwargs or {}).items() if k != "id"},
        status=request.status.name,
        bound_assets=_bound_assets(code, assets or {}),
    )


def _bound_assets(code: Any, assets: dict[str, str]) -> dict[str, str | None]:
    bound = {}
    for kwargs in (code.input_policy_init_kwargs or {}).values():
        for name, rule in kwargs.items():
            value = getattr(rule, "val", None)
            if value is not None:
                bound[name] = assets.get(str(value))
    return bound


def site_assets(admin: Any) -> dict[str, str]:
    """Action id of every asset on the site -> "dataset/asset"."""
    return {
        str(asset.action_id): f"{dataset.name}/{asset.name}"
        for dataset in admin.datasets
        for asset in dataset.assets
    }


def _inputs(code: Any) -> dict[str, str]:
    """Each input of the function and the rule it must satisfy (an asset it must match, or a researcher-owned value)."""
    rules = {}
    for kwargs in (code.input_policy_init_kwargs or {}).values():
        for name, rule in kwargs.items():
            rules[name] = getattr(rule, "__name__", None) or str(rule).rsplit(".", 1)[-1]
    return rules


def requests(admin: Any, *, status: str | None = "PENDING") -> list[PendingRequest]:
    """The site's code requests (pending ones by default), oldest first."""
    assets = site_assets(admin)
    found = [describe(r, assets) for r in admin.requests if getattr(r, "code", None) is not None]
    return [r for r in found if status is None or r.status == status]


def _find(admin: Any, request_id: str) -> Any:
    for request in admin.requests:
        if str(request.id) == request_id or str(request.id).startswith(request_id):
            return request
    raise KeyError(f"no request {request_id!r} on this site")


def approve(admin: Any, request_id: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        _find(admin, request_id).approve()


def deny(admin: Any, request_id: str, reason: str) -> None:
    if not reason.strip():
        raise ValueError("a denial needs a reason: the researcher sees it")
    with contextlib.redirect_stdout(io.StringIO()):
        _find(admin, request_id).deny(reason=reason)
