"""The data owner's side of a request: list what is pending, review it, approve or deny it.

This is the one owner path: ``fedimg review`` (over HTTP or the site's owner
channel), the Python helpers here and ``notebooks/data_owner.ipynb`` (which runs
``fedimg review``) all list with ``reviews``, check and compare with the job
template through ``policies.review_request``, and approve through
``approve_reviewed`` (refused while a check fails, unless forced).

Every function takes an owner's PySyft client (``site_admin.login`` as the site's
admin or a named owner, ``owners``; in the site's own process, a client of its own
server). A request is read into a ``PendingRequest`` (plain strings and dicts),
which is what ``policies.review_request`` checks and ``fedimg review`` prints. The
site records every decision in its audit log itself, whoever makes it and however
(``decisions``); ``approve`` adds what only the caller knows (whether the checks
were overridden, and through which tool). ``approve`` and ``deny`` are the bare
decisions, for tests and tools that have reviewed by other means.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from datasite_setup.errors import FedimgError
from datasite_setup.site.decisions import CLIENT_NOTE
from policies import RequestReview, SitePolicy, purpose_of_reason, review_request


@dataclass(frozen=True)
class PendingRequest:
    """A code request as an owner reviews it.

    Parameters
    ----------
    id : str
        PySyft's request id (hex).
    requester : str
        The e-mail of the researcher who submitted it.
    function_name : str
        The submitted function's name (``service_func_name``).
    code : str
        The function's source, exactly as submitted.
    inputs : dict of str to str
        Each input of the function and the kind of rule it must satisfy
        (``"Matches"``: an asset it must match; ``"UserOwned"``: a value the researcher owns).
    output_policy : str
        The output policy's class name (``"OutputPolicyExecuteCount"`` for fedimg jobs).
    output_policy_kwargs : dict
        The output policy's settings (``limit``: how many executions are allowed).
    status : str
        ``"PENDING"``, ``"APPROVED"`` or ``"REJECTED"``.
    bound_assets : dict of str to (str or None), optional
        Input name -> the ``"dataset/asset"`` it is matched to; None for a value
        that is not an asset of this site. Empty when no input is bound.
    purpose : str, optional
        Why the researcher wants the data, verbatim (``FedAvgJob(..., purpose=...)``, carried in the
        request's reason text); "" when they stated none or the reason text could not be read.

    Examples
    --------
    >>> request = PendingRequest(
    ...     id="0f" * 16, requester="ada@university.example", function_name="train",
    ...     code="def train(): ...", inputs={}, output_policy="OutputPolicyExecuteCount",
    ...     output_policy_kwargs={"limit": 4}, status="PENDING",
    ... )
    >>> request.bound_assets, request.purpose
    ({}, '')
    >>> request.code_sha256[:12]
    'a385d4f93e69'
    """

    id: str
    requester: str
    function_name: str
    code: str
    inputs: dict[str, str]
    output_policy: str
    output_policy_kwargs: dict[str, Any]
    status: str
    bound_assets: dict[str, str | None] = field(default_factory=dict)
    purpose: str = ""

    @property
    def code_sha256(self) -> str:
        """sha256 of the code as submitted (equals the researcher's ``SiteFunction.sha256``)."""
        return hashlib.sha256(self.code.encode()).hexdigest()


def describe(
    request: Any, assets: dict[str, str] | None = None, reasons: dict[str, str] | None = None
) -> PendingRequest:
    """An owner's view of one PySyft code request.

    Parameters
    ----------
    request : syft Request
        A request from ``admin.requests`` that carries code.
    assets : dict of str to str, optional
        Asset action id -> ``"dataset/asset"`` (``site_assets``), to name what
        each input is bound to; without it no input is named.
    reasons : dict of str to str, optional
        Request id -> its reason text (``request_reasons``), to read the researcher's purpose
        from; without it the purpose is "".

    Returns
    -------
    PendingRequest
        The request's code, inputs, output policy, status, bound assets and purpose.

    Examples
    --------
    >>> from types import SimpleNamespace as Fake
    >>> code = Fake(
    ...     service_func_name="train", raw_code="def train(images): ...",
    ...     input_policy_init_kwargs={"site": {"images": Fake(__name__="Matches", val="a1")}},
    ...     output_policy_type=Fake(__name__="OutputPolicyExecuteCount"),
    ...     output_policy_init_kwargs={"limit": 4, "id": "x"},
    ... )
    >>> request = Fake(id="0f0f", requesting_user_email="ada@university.example",
    ...                code=code, status=Fake(name="PENDING"))
    >>> reasons = {"0f0f": 'digits CNN\\nfedimg purpose (JSON): "Screening\\\\nstudy"'}
    >>> pending = describe(request, {"a1": "fedimg-a-1/train_images"}, reasons)
    >>> pending.inputs, pending.bound_assets, pending.output_policy_kwargs
    ({'images': 'Matches'}, {'images': 'fedimg-a-1/train_images'}, {'limit': 4})
    >>> pending.purpose
    'Screening\\nstudy'
    """
    code = request.code
    output_policy = getattr(code, "output_policy_type", None)
    # the policy's own id is PySyft bookkeeping, not a setting the owner reviews
    policy_settings = {
        key: value for key, value in (code.output_policy_init_kwargs or {}).items() if key != "id"
    }
    return PendingRequest(
        id=str(request.id),
        requester=str(getattr(request, "requesting_user_email", "") or ""),
        function_name=code.service_func_name,
        code=code.raw_code,
        inputs=_inputs(code),
        output_policy=getattr(output_policy, "__name__", str(output_policy)),
        output_policy_kwargs=policy_settings,
        status=request.status.name,
        bound_assets=_bound_assets(code, assets or {}),
        purpose=purpose_of_reason((reasons or {}).get(str(request.id))),
    )


def _input_rules(code: Any) -> Iterator[tuple[str, Any]]:
    """(input name, rule) for every input of ``code``, over all of its input policies' sites."""
    for kwargs in (code.input_policy_init_kwargs or {}).values():
        yield from kwargs.items()


def _bound_assets(code: Any, assets: dict[str, str]) -> dict[str, str | None]:
    bound: dict[str, str | None] = {}
    for name, rule in _input_rules(code):
        value = getattr(rule, "val", None)
        if value is not None:
            bound[name] = assets.get(str(value))
    return bound


def _inputs(code: Any) -> dict[str, str]:
    """Each input of the function and the kind of rule it must satisfy (``Matches``, ``UserOwned``)."""
    rules = {}
    for name, rule in _input_rules(code):
        rules[name] = getattr(rule, "__name__", None) or str(rule).rsplit(".", 1)[-1]
    return rules


def site_assets(admin: Any) -> dict[str, str]:
    """Every asset on the site, by the action id a request's input is bound to.

    Parameters
    ----------
    admin : syft DatasiteClient
        The site admin's client.

    Returns
    -------
    dict of str to str
        Asset action id -> ``"dataset/asset"``.

    Examples
    --------
    >>> from types import SimpleNamespace as Fake
    >>> dataset = Fake(name="fedimg-a-1", assets=[Fake(action_id="a1", name="train_images")])
    >>> site_assets(Fake(datasets=[dataset]))
    {'a1': 'fedimg-a-1/train_images'}
    """
    names = {}
    for dataset in admin.datasets:
        for asset in dataset.assets:
            names[str(asset.action_id)] = f"{dataset.name}/{asset.name}"
    return names


def request_reasons(admin: Any) -> dict[str, str]:
    """The reason text of every code request on the site, by request id.

    PySyft 0.9.5 keeps a request's reason (``request_code_execution(code, reason=...)``)
    on neither the ``Request`` nor the ``UserCode``: only as the subject of the notification
    it sends the site's root admin, linked to the request. In the site's own process
    (the owner channel, the console) that inbox is read from the site's store whoever
    the owner is; over HTTP only the shared admin (the root account) can read it, and a
    named owner gets no reasons (purposes then show as "").

    Parameters
    ----------
    admin : syft DatasiteClient
        An owner's client.

    Returns
    -------
    dict of str to str
        Request id -> its reason; only notifications sent by the request's own researcher count.
        Empty when the inbox cannot be read.

    Examples
    --------
    >>> request_reasons(None)  # no client: no reasons
    {}
    """
    try:
        return _reasons(admin, list(admin.requests))
    except Exception:  # noqa: BLE001 - a site that cannot say gives no purposes, never a failed review
        return {}


def _reasons(admin: Any, site_requests: list[Any]) -> dict[str, str]:
    """``request_reasons`` for ``site_requests`` (already fetched); raises when the inbox cannot be read."""
    inbox = _root_inbox(admin)
    by_id = {str(request.id): request for request in site_requests}
    reasons = {}
    for notification in inbox:
        linked = getattr(notification, "linked_obj", None)
        request = by_id.get(str(getattr(linked, "object_uid", "")))
        # the researcher's own submission, not a notification someone else linked to their request
        if request is not None and notification.from_user_verify_key == request.requesting_user_verify_key:
            reasons[str(request.id)] = str(notification.subject)
    return reasons


def _root_inbox(admin: Any) -> list[Any]:
    """The notifications sent to the site's root admin (where PySyft puts a request's reason)."""
    server = getattr(admin.connection, "server", None)
    if server is not None:  # in the site's process: read the store as its root, whichever owner asks
        root = server.services.user.root_verify_key  # the key PySyft sends a request's reason to
        return list(server.services.notification.stash.get_all_inbox_for_verify_key(root, root).unwrap())
    with contextlib.redirect_stdout(io.StringIO()):
        return list(admin.api.services.notifications.get_all())  # the root's inbox; nobody else's


def requests(admin: Any, *, status: str | None = "PENDING") -> list[PendingRequest]:
    """The site's code requests, oldest first.

    Parameters
    ----------
    admin : syft DatasiteClient
        The site admin's client.
    status : str or None, default "PENDING"
        Keep only requests with this status; None keeps every request.

    Returns
    -------
    list of PendingRequest
        The requests that carry code (others are not the owner's to review), with their purposes
        (``request_reasons``).
    """
    assets, site_requests = site_assets(admin), list(admin.requests)
    try:
        reasons = _reasons(admin, site_requests)
    except Exception:  # noqa: BLE001 - as request_reasons: no purposes rather than no review
        reasons = {}
    with_code = [request for request in site_requests if getattr(request, "code", None) is not None]
    found = [describe(request, assets, reasons) for request in with_code]
    return [request for request in found if status is None or request.status == status]


def _find(admin: Any, request_id: str) -> Any:
    for request in admin.requests:
        if str(request.id) == request_id or str(request.id).startswith(request_id):
            return request
    raise KeyError(f"no request {request_id!r} on this site")


def approve(admin: Any, request_id: str, *, forced: bool | None = None, via: str = "") -> None:
    """Approve a request: its function may now run on the private data (up to its execution limit).

    Parameters
    ----------
    admin : syft DatasiteClient
        An owner's (or the site admin's) client.
    request_id : str
        The request's id, or a prefix of it (the first request whose id starts with it).
    forced : bool or None
        Whether the approval overrides failing checks (recorded in the site's
        ``decision`` record); None when the caller did not check.
    via : str
        The tool that approved (``"fedimg review"``), for the record.

    Raises
    ------
    KeyError
        When no request on the site has this id.
    """
    note: dict[str, Any] = {"via": via} if via else {}
    if forced is not None:
        note["forced"] = forced
    with contextlib.redirect_stdout(io.StringIO()):
        # PySyft hands extra keyword arguments of request.apply to the server (the decision's record)
        _find(admin, request_id).approve(**({CLIENT_NOTE: note} if note else {}))


def deny(admin: Any, request_id: str, reason: str) -> None:
    """Deny a request, with the reason the researcher will read.

    Parameters
    ----------
    admin : syft DatasiteClient
        The site admin's client.
    request_id : str
        The request's id, or a prefix of it (the first request whose id starts with it).
    reason : str
        Why: shown to the researcher, so it may not be blank.

    Raises
    ------
    ValueError
        When ``reason`` is blank.
    KeyError
        When no request on the site has this id.

    Examples
    --------
    >>> deny(admin=None, request_id="0f0f", reason="  ")
    Traceback (most recent call last):
    ...
    ValueError: a denial needs a reason: the researcher sees it
    """
    if not reason.strip():
        raise ValueError("a denial needs a reason: the researcher sees it")
    with contextlib.redirect_stdout(io.StringIO()):
        _find(admin, request_id).deny(reason=reason)


def reviews(
    admin: Any, policy: SitePolicy, *, status: str | None = "PENDING", request_id: str | None = None
) -> list[RequestReview]:
    """The site's code requests with their review: checks, template comparison, static findings.

    Parameters
    ----------
    admin : syft DatasiteClient
        An owner's (or the site admin's) client.
    policy : SitePolicy
        The site's policy (its allowed imports, templates and execution limits).
    status : str or None, default "PENDING"
        Keep only requests with this status; None keeps every request.
    request_id : str or None
        Keep only the request with this id or id prefix; then exactly one must match.

    Returns
    -------
    list of RequestReview
        One per request, oldest first.

    Raises
    ------
    FedimgError
        When ``request_id`` matches no request or more than one.
    """
    found = [review_request(request, policy) for request in requests(admin, status=status)]
    if request_id:
        found = [review for review in found if review.request.id.startswith(request_id)]
        if len(found) != 1:
            raise FedimgError(f"{len(found)} requests match {request_id!r}")
    return found


def failing_checks(review: RequestReview) -> list[str]:
    """The names of a review's checks that fail.

    Examples
    --------
    >>> from types import SimpleNamespace as Fake
    >>> failing_checks(Fake(checks={"inputs bound": True, "template matches": False}))
    ['template matches']
    """
    return [name for name, ok in review.checks.items() if not ok]


def approve_reviewed(admin: Any, review: RequestReview, *, force: bool = False, via: str = "") -> bool:
    """Approve a reviewed request, refused while one of its checks fails unless ``force``.

    Parameters
    ----------
    admin : syft DatasiteClient
        The deciding owner's client (the site's audit record names its account).
    review : RequestReview
        The request's review (``reviews``).
    force : bool, default False
        Approve although checks fail (recorded as ``forced`` in the site's decision).
    via : str
        The tool that approved, for the record.

    Returns
    -------
    bool
        Whether the approval overrode failing checks.

    Raises
    ------
    FedimgError
        When a check fails and ``force`` is False: nothing is approved.

    Examples
    --------
    >>> from types import SimpleNamespace as Fake
    >>> review = Fake(request=Fake(id="0f0f"), checks={"template matches": False})
    >>> approve_reviewed(None, review)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    datasite_setup.errors.FedimgError: request 0f0f: 1 check(s) fail (template matches); approve anyway...
    """
    failed = failing_checks(review)
    if failed and not force:
        raise FedimgError(
            f"request {review.request.id}: {len(failed)} check(s) fail ({'; '.join(failed)}); "
            "approve anyway with --force"
        )
    approve(admin, review.request.id, forced=bool(failed), via=via)
    return bool(failed)
