"""What each console page shows, built from the sites' answers (pure functions, no I/O).

The sites answer in the owner channel's shapes (the contract of issue 12); these
functions merge the sites' answers into rows, order them as the owner reads them
(pending requests first), and turn numbers and times into words. Anything a site
leaves out is shown as missing rather than failing the page.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from policies import describe_record

STATE_ORDER = ("pending", "approved", "denied", "running", "done")
TEMPLATE_MATCH = "matches the fedimg training template; the researcher's own part is the model below"
MAX_MOCKS = 24
_BASE64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
AUDIT_KINDS = (
    ("request", "A researcher submitted code"),
    ("review", "An owner opened a request"),
    ("decision", "An owner approved or denied a request"),
    ("owner", "An owner signed in, or a sign-in was refused"),
    ("account", "An account was created, changed or removed"),
    ("started", "A run started"),
    ("execution", "A run failed with an error"),
    ("release", "A run's result was released"),
    ("refusal", "A run was refused by the site's rules"),
    ("aborted", "A run was stopped"),
    ("refund", "Privacy budget given back"),
    ("login_lockout", "Sign-ins locked after failed passwords"),
)
"""The Audit page's Kind filter: each audit event (``policies.audit.EVENTS``) in plain words."""

Answer = Mapping[str, Any]


def request_rows(answers: Mapping[str, Answer]) -> list[dict[str, Any]]:
    """Every site's requests as one list: pending first, then approved, denied, running, done; newest first.

    Parameters
    ----------
    answers : mapping
        ``{site: answer}`` to ``console`` ``requests`` (answers that are not ``ok`` are skipped).

    Returns
    -------
    list of dict
        Each request with ``site`` added, and ``failing`` (the names of its failing checks).

    Examples
    --------
    >>> answers = {"a": {"ok": True, "requests": [
    ...     {"id": "1", "state": "done", "created": "2026-12-01T10:00:00"},
    ...     {"id": "2", "state": "pending", "created": "2026-12-01T09:00:00",
    ...      "checks": [{"name": "imports", "ok": False}]}]}}
    >>> [(row["site"], row["id"], row["failing"]) for row in request_rows(answers)]
    [('a', '2', ['imports']), ('a', '1', [])]
    """
    rows = []
    for site, answer in answers.items():
        if not answer.get("ok"):
            continue
        for request in answer.get("requests") or []:
            row = dict(request)
            row["site"] = site
            row["failing"] = [
                str(check.get("name", "")) for check in row.get("checks") or [] if not check.get("ok")
            ]
            rows.append(row)
    rows.sort(key=lambda row: str(row.get("created") or ""), reverse=True)  # newest first within a state
    rows.sort(key=lambda row: _state_rank(str(row.get("state") or "")))
    return rows


def _state_rank(state: str) -> int:
    return STATE_ORDER.index(state) if state in STATE_ORDER else len(STATE_ORDER)


def find_request(answer: Answer, request_id: str) -> dict[str, Any] | None:
    """The request named ``request_id`` in a site's ``requests`` answer (exact id, else a unique prefix).

    Examples
    --------
    >>> find_request({"ok": True, "requests": [{"id": "abc1"}, {"id": "abd2"}]}, "abc1")
    {'id': 'abc1'}
    >>> find_request({"ok": True, "requests": [{"id": "abc1"}, {"id": "abd2"}]}, "ab") is None
    True
    """
    requests = [r for r in answer.get("requests") or [] if isinstance(r, Mapping)]
    for request in requests:
        if str(request.get("id")) == request_id:
            return dict(request)
    starting = [r for r in requests if str(r.get("id", "")).startswith(request_id)]
    return dict(starting[0]) if len(starting) == 1 and request_id else None


def summary_items(summary: Mapping[str, Any] | None) -> list[tuple[str, bool]]:
    """The summary's sentences then its warnings, each once, as ``(text, is_warning)``.

    Examples
    --------
    >>> summary_items({"sentences": ["Reads the train split.", "DP is OFF."], "warnings": ["DP is OFF."]})
    [('Reads the train split.', False), ('DP is OFF.', True)]
    >>> summary_items(None)
    []
    """
    if not summary:
        return []
    warnings = [str(text) for text in summary.get("warnings") or []]
    sentences = summary.get("sentences")
    if sentences is None:
        keys = ("reads", "runs", "leaves", "privacy", "secure_aggregation")
        sentences = [summary[key] for key in keys if summary.get(key)]
    items = [(str(text), False) for text in sentences if str(text) not in warnings]
    return items + [(text, True) for text in warnings]


def diff_lines(diff: str) -> list[tuple[str, str]]:
    """A unified diff as ``(css class, line)``: ``add``, ``del``, ``hunk`` or ``ctx``.

    Examples
    --------
    >>> diff_lines("@@ -1 +1 @@\\n-a\\n+b\\n c")
    [('hunk', '@@ -1 +1 @@'), ('del', '-a'), ('add', '+b'), ('ctx', ' c')]
    """
    kinds = []
    for line in diff.splitlines():
        if line.startswith(("+++", "---", "@@")):
            kinds.append(("hunk", line))
        elif line.startswith("+"):
            kinds.append(("add", line))
        elif line.startswith("-"):
            kinds.append(("del", line))
        else:
            kinds.append(("ctx", line))
    return kinds


def rows_of(answers: Mapping[str, Answer], key: str) -> list[dict[str, Any]]:
    """The list ``key`` of every ``ok`` answer, each item with its ``site``, in site order.

    Examples
    --------
    >>> rows_of({"a": {"ok": True, "jobs": [{"id": "1"}]}, "b": {"ok": False}}, "jobs")
    [{'id': '1', 'site': 'a'}]
    """
    rows = []
    for site, answer in answers.items():
        if answer.get("ok"):
            rows += [{**item, "site": site} for item in answer.get(key) or [] if isinstance(item, Mapping)]
    return rows


def mock_images(mocks: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The mock images that really are base64 PNGs (at most ``MAX_MOCKS``), as ``{"label", "src"}``.

    Anything else is dropped: only a ``data:image/png`` URI of checked base64 reaches the page.

    Examples
    --------
    >>> png = base64.b64encode(b"\\x89PNG\\r\\n\\x1a\\n....").decode()
    >>> [m["label"] for m in mock_images([{"label": "3", "png": png}, {"label": "x", "png": "javascript:1"}])]
    ['3']
    """
    shown = []
    for mock in mocks:
        data = str(mock.get("png") or "")
        if not _BASE64.match(data):
            continue
        try:
            head = base64.b64decode(data[:24] + "=" * (-len(data[:24]) % 4))
        except (binascii.Error, ValueError):
            continue
        if head.startswith(b"\x89PNG"):
            shown.append({"label": str(mock.get("label", "")), "src": f"data:image/png;base64,{data}"})
        if len(shown) == MAX_MOCKS:
            break
    return shown


def audit_rows(answers: Mapping[str, Answer], limit: int) -> list[dict[str, Any]]:
    """Every site's audit records as rows, newest first, at most ``limit``.

    Returns
    -------
    list of dict
        ``site``, ``kind`` (the record's event), ``when`` (local time), ``details``
        (its other fields as ``key=value``, ids shortened).

    Examples
    --------
    >>> rows = audit_rows({"a": {"ok": True, "records": [
    ...     {"seq": 0, "time": 10.0, "event": "owner", "action": "console sign-in"},
    ...     {"seq": 1, "time": 20.0, "event": "decision", "decision": "deny", "reason": "no purpose"}]}}, 200)
    >>> [(row["kind"], row["details"]) for row in rows]
    [('decision', 'decision=deny reason=no purpose'), ('owner', 'action=console sign-in')]
    """
    rows: list[dict[str, Any]] = []
    for site, answer in answers.items():
        if not answer.get("ok"):
            continue
        for record in answer.get("records") or []:
            if not isinstance(record, Mapping):
                continue
            line = describe_record(readable_record(record))
            parts = line.split(None, 3)
            rows.append(
                {
                    "site": site,
                    "kind": str(record.get("event", "?")),
                    "time": _number(record.get("time")),
                    "when": local_time(_number(record.get("time"))),
                    "details": parts[3] if len(parts) > 3 else "",
                }
            )
    rows.sort(key=lambda row: row["time"], reverse=True)
    return rows[:limit]


def readable_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record as the Audit page shows it: the researcher by e-mail, not by their account's key.

    Run records name the researcher by the verify key their code carries; the site adds
    the account's ``researcher_email`` (``console_answers``), which then takes the key's place.

    Examples
    --------
    >>> readable_record({"event": "release", "researcher": "6e72...", "researcher_email": "ada@uni.example"})
    {'event': 'release', 'researcher': 'ada@uni.example'}
    >>> describe_record(readable_record({"event": "release", "researcher": "6e72" * 16,
    ...                                  "researcher_email": "ada.lovelace@university.example"}))[-42:]
    'researcher=ada.lovelace@university.example'
    >>> readable_record({"event": "owner", "email": "grace@hospital.example"})
    {'event': 'owner', 'email': 'grace@hospital.example'}
    """
    shown = dict(record)
    email = shown.pop("researcher_email", None)
    if email:
        shown["researcher"] = email
    return shown


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def local_time(epoch: float | None) -> str:
    """A Unix time as local ``YYYY-MM-DD HH:MM:SS``; "unknown" for none.

    Examples
    --------
    >>> local_time(None)
    'unknown'
    >>> len(local_time(0.0))
    19
    """
    if epoch is None:
        return "unknown"
    return datetime.fromtimestamp(float(epoch)).strftime("%Y-%m-%d %H:%M:%S")


def ago(epoch: float | None, now: float | None = None) -> str:
    """How long ago, in words.

    Examples
    --------
    >>> ago(1000.0, now=1000.0 + 3 * 3600 + 120)
    '3 h 2 min ago'
    >>> ago(None)
    ''
    """
    if epoch is None:
        return ""
    seconds = max(0, int((time.time() if now is None else now) - float(epoch)))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h ago"
    if hours:
        return f"{hours} h {minutes} min ago"
    return f"{minutes} min ago" if minutes else f"{seconds} s ago"


def size(count: Any) -> str:
    """A byte count in words.

    Examples
    --------
    >>> size(1536), size(3 * 2**30), size(None)
    ('1.5 KB', '3.0 GB', 'unknown')
    """
    if not isinstance(count, int | float):
        return "unknown"
    value = float(count)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover


def epsilon(spent: Any, budget: Any = None) -> str:
    """ε spent (of the budget) in words; "no DP budget at this site" when the site has none.

    Examples
    --------
    >>> epsilon(1.25, 8.0), epsilon(None, None), epsilon(0.5)
    ('1.25 of 8', 'no DP budget at this site', '0.5')
    """
    if spent is None and budget is None:
        return "no DP budget at this site"
    text = f"{float(spent or 0):g}"
    return f"{text} of {float(budget):g}" if budget is not None else text
