"""One site's enforcement state: its name, policy, state dir and the files the steps keep there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from policies.audit import AuditLog
from policies.enforcement.execution import Execution
from policies.privacy import PrivacyLedger
from policies.site_policy import SitePolicy

AUDIT_FILE = "audit.jsonl"
COUNTS_FILE = "executions.json"
LEDGER_FILE = "privacy-ledger.json"


@dataclass
class SiteEnforcer:
    """What the enforcement chain knows of the site it runs at.

    Parameters
    ----------
    site : str
        The site's name (the researcher sees it in every refusal).
    state_dir : Path
        The site's state dir: the audit log (``audit.jsonl``), the execution counts
        (``executions.json``) and the privacy ledger (``privacy-ledger.json``) live there.
    policy : SitePolicy
        The owner's release, privacy and secure-aggregation rules.
    num_classes : int
        The number of labels (the size of a released confusion matrix).

    Examples
    --------
    >>> from pathlib import Path
    >>> from policies.site_policy import SitePolicy
    >>> enforcer = SiteEnforcer("hospital-a", Path("state"), SitePolicy(), 10)
    >>> enforcer.refusal_message("too few samples")
    'release refused by site hospital-a: too few samples'
    >>> enforcer.audit.path.name, enforcer.counts_path.name
    ('audit.jsonl', 'executions.json')
    """

    site: str
    state_dir: Path
    policy: SitePolicy
    num_classes: int

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)

    @property
    def audit(self) -> AuditLog:
        """The site's hash-chained audit log."""
        return AuditLog(self.state_dir / AUDIT_FILE)

    @property
    def counts_path(self) -> Path:
        """Where the private runs of each approved code are counted (survives restarts)."""
        return self.state_dir / COUNTS_FILE

    @property
    def ledger(self) -> PrivacyLedger:
        """The researchers' privacy ledger at this site (a site with a ``[privacy]`` policy only).

        Raises
        ------
        ValueError
            When the site's policy has no ``[privacy]`` section.
        """
        if self.policy.privacy is None:
            raise ValueError(f"site {self.site} has no [privacy] policy, so no privacy ledger")
        return PrivacyLedger(self.state_dir / LEDGER_FILE, self.policy.privacy.delta)

    def record_refusal(self, execution: Execution, reason: str) -> None:
        """Write one refusal of ``execution`` to the audit log.

        Parameters
        ----------
        execution : Execution
            The refused call.
        reason : str
            The rule it broke, as the researcher sees it.

        Examples
        --------
        >>> from pathlib import Path
        >>> from policies.enforcement.execution import Execution
        >>> from policies.site_policy import SitePolicy
        >>> enforcer = SiteEnforcer("hospital-a", Path("refusals"), SitePolicy(), 10)
        >>> enforcer.record_refusal(Execution("c1", "f", "", "alice", 1, {}), "not approved")
        >>> [(r["event"], r["reason"]) for r in enforcer.audit.records()]
        [('refusal', 'not approved')]
        """
        self.audit.append(
            "refusal",
            code_id=execution.code_id,
            function=execution.function,
            researcher=execution.researcher,
            reason=reason,
        )

    def refusal_message(self, reason: str) -> str:
        """What the researcher reads when this site refuses: the site and the rule."""
        return f"release refused by site {self.site}: {reason}"
