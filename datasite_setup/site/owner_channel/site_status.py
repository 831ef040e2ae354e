"""What ``fedimg up``, ``status`` and ``down`` report for one site (light: the CLI's channel path uses it)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SiteStatus:
    """One site's state as ``fedimg up``, ``status`` and ``down`` show it.

    Parameters
    ----------
    name, url : str
        The site's name and base URL.
    state : str
        ``"running"``, ``"stopped"``, ``"not answering"`` or ``"failed"`` (did not start).
    pid : int or None
        The site's process (the leader of its process group), when known.
    dataset : str
        The first fedimg dataset the site holds ("" if none, or if it could not be read).
    split_counts : dict of str to int
        That dataset's samples per split.
    researchers_created : int
        How many researcher accounts ``up`` added to the site.
    problem : str
        What went wrong: why it did not start or answer, or why its dataset could not be read.
    sandbox : str
        The running site's sandbox as it reported it over its owner channel (``"on"`` or
        ``"OFF (unconfined)"``); "" when the site did not say (read its policy file instead).
    warning : str
        What the site warns its owner of in every answer (an unconfined sandbox), or "".

    Examples
    --------
    >>> SiteStatus("hospital_a", "http://127.0.0.1:8081", "stopped").sandbox
    ''
    """

    name: str
    url: str
    state: str
    pid: int | None = None
    dataset: str = ""
    split_counts: dict[str, int] = field(default_factory=dict)
    researchers_created: int = 0
    problem: str = ""
    sandbox: str = ""
    warning: str = ""
