"""Which audit log belongs to each datasite served by this process, by PySyft server id.

``syft_patches.register_enforcer`` fills it when a site starts serving (the site's
``SiteEnforcer`` knows its state dir); ``decisions``, which ``syft_patches`` imports
and so cannot import back, reads it to put the site's own records (decisions on
requests and on accounts) in the right log. A plain module both import: no cycle,
and no guessing a site's state dir from where its storage happens to live.
"""

from __future__ import annotations

import threading

from policies import AuditLog

_audit_logs: dict[str, AuditLog] = {}  # by server id
_lock = threading.Lock()


def register_site_audit(server_id: str, audit: AuditLog) -> None:
    """Name ``audit`` as the audit log of the datasite ``server_id`` (a second call replaces it).

    Parameters
    ----------
    server_id : str
        The PySyft server id (``str(worker.id)``).
    audit : AuditLog
        The site's hash-chained log (``<state_dir>/audit.jsonl``).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> log = AuditLog(pathlib.Path(tempfile.mkdtemp()) / "audit.jsonl")
    >>> register_site_audit("0f" * 16, log)
    >>> site_audit("0f" * 16) is log
    True
    """
    with _lock:
        _audit_logs[str(server_id)] = audit


def site_audit(server_id: str) -> AuditLog | None:
    """The audit log registered for the datasite ``server_id``; None for a server never registered.

    Parameters
    ----------
    server_id : str
        The PySyft server id.

    Returns
    -------
    AuditLog or None
        The site's log.

    Examples
    --------
    >>> site_audit("no-such-server") is None
    True
    """
    with _lock:
        return _audit_logs.get(str(server_id))
