"""A site's policy file (TOML): what its data owner allows, in one place.

```toml
[review]
extra_allowed_imports = []            # on top of torch, numpy, math
auto_approve_templates = []           # template hashes (fedimg review shows them); empty: a person decides
require_purpose = false               # true: a request whose researcher stated no purpose fails a check
                                      # (FedAvgJob(..., purpose="...")); the purpose is shown either way

[release]
min_samples = 20                      # a site with fewer training samples releases nothing
max_output_mb = 50                    # larger outputs are refused

[privacy]                             # differential privacy of the model updates (off when absent)
mechanism = "dp-sgd"                  # "dp-sgd" (default): the site trains with DP-SGD;
                                      # "update": noise on the whole update
epsilon_per_job = 4.0                 # (epsilon, delta) target for one job's releases, all rounds together
delta = 1e-5
budget_epsilon = 10.0                 # total per researcher at this site, across jobs
max_grad_norm = 1.0                   # dp-sgd: L2 clipping of each training example's gradient
# max_update_norm = 1.0               # update: L2 clipping of each update (new weights - global weights)

[secure_aggregation]
required = false                      # true: model updates leave only masked
min_cohort = 2                        # smallest cohort a masked update is released to
peers = {}                            # other hospitals: site name -> X25519 public key (hex); empty: any

[sandbox]                             # where approved code runs
mode = "on"                           # "on": a confined worker per job (the site refuses code without one);
                                      # "off": inside the site process, unconfined (said in every answer)
seconds_per_call = 900                # wall-clock limit of one call; the worker is killed past it
memory_mb = 4096                      # memory a worker may allocate on top of its interpreter and inputs
threads = 0                           # torch threads per worker; 0: the cores `fedimg up` gives this site
device = "cpu"                        # "auto": cuda when a GPU is visible to the worker, else cpu

[limits]                              # the site's network surface (see LimitSettings)
max_request_mb = 64                   # larger HTTP request bodies are refused (413) before they are read;
                                      # raise it for models whose weights are larger (one call carries them)
researcher_store_mb = 256             # what one researcher may upload to the store in any 24 hours
max_pending_requests = 8              # code requests one researcher may have waiting for the owner
login_failures = 5                    # failed logins of an account from one address (4x per address): backoff
login_backoff_seconds = 2.0           # first backoff; doubles with each further failure
login_backoff_max_seconds = 300.0     # longest backoff
# max_inflight_mb = 256               # body bytes arrived and held, site-wide (default 4 x max_request_mb);
                                      # a large body that does not fit is answered 503 with Retry-After
max_uploads_per_address = 8           # large bodies being received at once from one address (then 429)
body_idle_seconds = 30.0              # a body with no new bytes for this long is answered 408, dropped
body_total_seconds = 300.0            # a body not complete this long after its request began: the same
```
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from datasite_setup import RELEASE_MIN_SAMPLES  # one number: convert warns about clients below it
from policies.static_review import DEFAULT_ALLOWED_IMPORTS, ReviewPolicy

POLICY_FILE = "policy.toml"
_KEYS = {
    "review": {"extra_allowed_imports", "auto_approve_templates", "require_purpose"},
    "release": {"min_samples", "max_output_mb"},
    "privacy": {
        "mechanism",
        "epsilon_per_job",
        "delta",
        "budget_epsilon",
        "max_grad_norm",
        "max_update_norm",
    },
    "secure_aggregation": {"required", "min_cohort", "peers"},
    "sandbox": {"mode", "seconds_per_call", "memory_mb", "threads", "device"},
    "limits": {
        "max_request_mb",
        "researcher_store_mb",
        "max_pending_requests",
        "login_failures",
        "login_backoff_seconds",
        "login_backoff_max_seconds",
        "max_inflight_mb",
        "max_uploads_per_address",
        "body_idle_seconds",
        "body_total_seconds",
    },
}
SANDBOX_MODES = ("on", "off")
UNCONFINED_WARNING = (
    'approved code runs UNCONFINED in the site process ([sandbox] mode = "off" in the site policy): '
    "it can read the state dir, open sockets and start programs"
)
DEVICES = ("cpu", "auto")


class PolicyError(ValueError):
    """The policy file is wrong; the message names the file and the setting."""


MECHANISMS = ("dp-sgd", "update")
# the clipping norm each mechanism reads; the other one's is a mistake in the file
_MECHANISM_KEYS = {"dp-sgd": "max_grad_norm", "update": "max_update_norm"}


@dataclass(frozen=True)
class PrivacySettings:
    """``[privacy]``: the mechanism, one job's (ε, δ), the researcher's budget here, the clipping norm.

    Parameters
    ----------
    mechanism : {"dp-sgd", "update"}
        DP-SGD at the site, or noise on the whole update.
    epsilon_per_job, delta : float
        The (ε, δ) target of one job's releases, all rounds together.
    budget_epsilon : float
        The total ε per researcher at this site, across jobs.
    max_grad_norm : float
        dp-sgd: the L2 clipping of each training example's gradient.
    max_update_norm : float
        update: the L2 clipping of each update.

    Raises
    ------
    PolicyError
        For an unknown mechanism or a setting out of range.

    Examples
    --------
    >>> PrivacySettings(epsilon_per_job=2.0).budget_epsilon
    10.0
    >>> PrivacySettings(delta=1.5)
    Traceback (most recent call last):
    ...
    policies.site_policy.PolicyError: privacy settings must be positive with 0 < delta < 1 (got ...)
    """

    mechanism: str = "dp-sgd"
    epsilon_per_job: float = 4.0
    delta: float = 1e-5
    budget_epsilon: float = 10.0
    max_grad_norm: float = 1.0  # dp-sgd: per-example gradient clipping
    max_update_norm: float = 1.0  # update: whole-update clipping

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise PolicyError(f"mechanism must be one of {list(MECHANISMS)} (got {self.mechanism!r})")
        if not (
            self.epsilon_per_job > 0
            and 0 < self.delta < 1
            and self.max_grad_norm > 0
            and self.max_update_norm > 0
            and self.budget_epsilon > 0
        ):
            raise PolicyError(f"privacy settings must be positive with 0 < delta < 1 (got {self})")


@dataclass(frozen=True)
class SandboxSettings:
    """``[sandbox]``: whether approved code runs in a confined worker, and the worker's limits.

    Parameters
    ----------
    mode : {"on", "off"}
        "on" (the default): every approved call runs in a sandbox worker, and a site that cannot
        establish one runs no code. "off": approved code runs inside the site process, unconfined.
    seconds_per_call : float
        Wall-clock limit of one call; past it the worker (its whole process group) is killed.
    memory_mb : int
        Memory a worker may allocate on top of its interpreter and its mapped inputs.
    threads : int
        torch threads in a worker; 0 means the cores ``fedimg up`` gives the site (all cores when the
        site is started alone).
    device : {"cpu", "auto"}
        "auto": the job template trains on cuda when a GPU is visible to the worker.

    Raises
    ------
    PolicyError
        For an unknown mode or device, or a limit out of range.

    Examples
    --------
    >>> SandboxSettings().confined, SandboxSettings(mode="off").confined
    (True, False)
    >>> SandboxSettings(memory_mb=10)
    Traceback (most recent call last):
    ...
    policies.site_policy.PolicyError: [sandbox] memory_mb must be an integer >= 256 (got 10)
    """

    mode: str = "on"
    seconds_per_call: float = 900.0
    memory_mb: int = 4096
    threads: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.mode not in SANDBOX_MODES:
            raise PolicyError(f"[sandbox] mode must be one of {list(SANDBOX_MODES)} (got {self.mode!r})")
        if self.device not in DEVICES:
            raise PolicyError(f"[sandbox] device must be one of {list(DEVICES)} (got {self.device!r})")
        if not _is_finite_number(self.seconds_per_call) or not self.seconds_per_call >= 1:
            raise PolicyError(
                f"[sandbox] seconds_per_call must be a number >= 1 (got {self.seconds_per_call!r})"
            )
        for key, lowest in (("memory_mb", 256), ("threads", 0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise PolicyError(f"[sandbox] {key} must be an integer >= {lowest} (got {value!r})")

    @property
    def confined(self) -> bool:
        """Whether approved code runs in a sandbox worker."""
        return self.mode == "on"


# [limits] key -> (lowest, highest, integer only): checked before the site serves
_LIMIT_RANGES: dict[str, tuple[float, float, bool]] = {
    "max_request_mb": (1, 16384, False),
    "researcher_store_mb": (1, 1048576, False),
    "max_pending_requests": (1, 10000, True),
    "login_failures": (1, 1000, True),
    "login_backoff_seconds": (0.1, 3600, False),
    "login_backoff_max_seconds": (0.1, 86400, False),
    "max_inflight_mb": (1, 65536, False),
    "max_uploads_per_address": (1, 10000, True),
    "body_idle_seconds": (0.5, 3600, False),
    "body_total_seconds": (1, 86400, False),
}


@dataclass(frozen=True)
class LimitSettings:
    """``[limits]``: what one request, one researcher and one login attempt may cost the site.

    Parameters
    ----------
    max_request_mb : float
        Larger HTTP request bodies are answered 413 before they are read (1 to 16384). One training
        call carries the model's weights: for a model whose weights (float32) are larger than about
        half of this, raise it, e.g. ``max_request_mb = 512``.
    researcher_store_mb : float
        What one researcher may upload to the site's store (``action.set``, blob storage) in any
        24 hours (1 to 1048576). A job uploads its weights once per call.
    max_pending_requests : int
        Code requests one researcher may have waiting for the owner's decision (1 to 10000).
    login_failures : int
        Failed logins of one account from one client address before that address is refused on
        that account (1 to 1000); a client address over all accounts gets 4x as many; the count
        across addresses never refuses an address that has not failed, but past 10x it watches the
        account (each address that then fails on it is refused on it).
    login_backoff_seconds : float
        The first backoff (0.1 to 3600); it doubles with each further failure.
    login_backoff_max_seconds : float
        The longest backoff (0.1 to 86400, at least ``login_backoff_seconds``).
    max_inflight_mb : float or None
        Request-body bytes the site holds while they are still arriving, all clients together
        (1 to 65536, at least ``max_request_mb``; None, the default: 4 x ``max_request_mb``). A body
        is charged the bytes that arrived, not the size it declares, until it is complete. A large
        body (over 64 KB) whose declared size would not fit beside the bytes held is answered 503
        with ``Retry-After`` at once, and so is one whose arriving bytes pass it; one client address
        may hold at most 1/8 of it (at least one ``max_request_mb``), beyond that: 429. Small bodies
        (a login, most calls) are never refused for it. Clients that send part of a large body and
        stall used to hold its memory for ever (300 of them took a site from 708 to 1,575 MB).
    max_uploads_per_address : int
        Large request bodies (over 64 KB) being received at once from one client address (1 to
        10000); the next is answered 429 with ``Retry-After`` before it is read (small bodies: 32
        at once per address). A researcher's job sends one call at a time to a site; raise it when
        many researchers share one address (a NAT).
    body_idle_seconds : float
        A body with no new bytes for this long is answered 408 and its connection closed
        (0.5 to 3600).
    body_total_seconds : float
        A body not complete this long after its request began: the same (1 to 86400, at least
        ``body_idle_seconds``). The slowest upload the site accepts is ``max_request_mb`` over this
        (64 MB in 300 s: 0.2 MB/s); raise it with ``max_request_mb`` for large models on slow links.

    Raises
    ------
    PolicyError
        For a setting out of its range; the message names the key and the range.

    Examples
    --------
    >>> LimitSettings().max_request_bytes
    67108864
    >>> LimitSettings(max_request_mb=16).max_inflight_bytes // (1024 * 1024)
    64
    >>> LimitSettings(max_pending_requests=0)
    Traceback (most recent call last):
    ...
    policies.site_policy.PolicyError: [limits] max_pending_requests must be an integer from 1 to 10000 (got 0)
    """

    max_request_mb: float = 64.0
    researcher_store_mb: float = 256.0
    max_pending_requests: int = 8
    login_failures: int = 5
    login_backoff_seconds: float = 2.0
    login_backoff_max_seconds: float = 300.0
    max_inflight_mb: float | None = None
    max_uploads_per_address: int = 8
    body_idle_seconds: float = 30.0
    body_total_seconds: float = 300.0

    def __post_init__(self) -> None:
        for key, (lowest, highest, integer) in _LIMIT_RANGES.items():
            value = getattr(self, key)
            if key == "max_inflight_mb" and value is None:
                continue  # 4 x max_request_mb
            fits = isinstance(value, int) if integer else _is_finite_number(value)
            if not fits or isinstance(value, bool) or not lowest <= value <= highest:
                kind = "an integer" if integer else "a number"
                raise PolicyError(
                    f"[limits] {key} must be {kind} from {lowest:g} to {highest:g} (got {value!r})"
                )
        if self.login_backoff_max_seconds < self.login_backoff_seconds:
            raise PolicyError(
                "[limits] login_backoff_max_seconds must be >= login_backoff_seconds "
                f"(got {self.login_backoff_max_seconds!r} < {self.login_backoff_seconds!r})"
            )
        if self.max_inflight_mb is not None and self.max_inflight_mb < self.max_request_mb:
            raise PolicyError(
                "[limits] max_inflight_mb must be >= max_request_mb, or a body of the largest size "
                f"allowed could never be received (got {self.max_inflight_mb!r} < {self.max_request_mb!r})"
            )
        if self.body_total_seconds < self.body_idle_seconds:
            raise PolicyError(
                "[limits] body_total_seconds must be >= body_idle_seconds "
                f"(got {self.body_total_seconds!r} < {self.body_idle_seconds!r})"
            )

    @property
    def max_request_bytes(self) -> int:
        """``max_request_mb`` in bytes."""
        return int(self.max_request_mb * 1024 * 1024)

    @property
    def max_inflight_bytes(self) -> int:
        """``max_inflight_mb`` in bytes (4 x ``max_request_mb`` when it is not set)."""
        if self.max_inflight_mb is None:
            return 4 * self.max_request_bytes
        return int(self.max_inflight_mb * 1024 * 1024)

    @property
    def researcher_store_bytes(self) -> int:
        """``researcher_store_mb`` in bytes."""
        return int(self.researcher_store_mb * 1024 * 1024)


@dataclass(frozen=True)
class SitePolicy:
    """What a site's data owner allows: the settings of ``policy.toml`` (the defaults without one).

    Parameters
    ----------
    extra_allowed_imports : tuple of str
        Modules code may import on top of torch, numpy and math.
    auto_approve_templates : tuple of str
        Template ids approved without a person when every check passes.
    require_purpose : bool
        True: ``review_request`` adds a check that fails when the researcher stated no purpose
        (``FedAvgJob(..., purpose=...)``); False (the default): no such check.
    min_samples : int
        A site with fewer training (or validation) samples releases nothing.
    max_output_mb : float
        Larger outputs are refused.
    privacy : PrivacySettings or None
        Differential privacy of the model updates (off when None).
    require_secure_aggregation : bool
        True: model updates leave only masked.
    min_cohort : int
        The smallest cohort a masked update is released to.
    secure_aggregation_peers : dict
        Site name → X25519 public key (hex) of the other hospitals; empty: any.
    sandbox : SandboxSettings
        Where approved code runs (a confined worker unless the owner turns it off).
    limits : LimitSettings
        Request size, per-researcher store and pending requests, login backoff.
    source : str
        Where the policy was read from (``"defaults"`` without a file).

    Examples
    --------
    >>> policy = SitePolicy(extra_allowed_imports=("scipy",))
    >>> sorted(policy.review_policy.allowed_imports)
    ['math', 'numpy', 'scipy', 'torch']
    """

    extra_allowed_imports: tuple[str, ...] = ()
    auto_approve_templates: tuple[str, ...] = ()
    require_purpose: bool = False
    min_samples: int = RELEASE_MIN_SAMPLES
    max_output_mb: float = 50.0
    privacy: PrivacySettings | None = None
    require_secure_aggregation: bool = False
    min_cohort: int = 2
    secure_aggregation_peers: dict = field(default_factory=dict)
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    source: str = "defaults"

    @property
    def review_policy(self) -> ReviewPolicy:
        """The static review's policy: the default imports and this site's extra ones."""
        return ReviewPolicy(allowed_imports=DEFAULT_ALLOWED_IMPORTS | frozenset(self.extra_allowed_imports))


def load_site_policy(path: Path | None) -> SitePolicy:
    """The policy in ``path``; the defaults when ``path`` is None or does not exist.

    Parameters
    ----------
    path : Path or None
        A ``policy.toml`` (see the module's documentation for its sections).

    Returns
    -------
    SitePolicy
        The file's settings, the defaults for what it leaves out.

    Raises
    ------
    PolicyError
        When the file is not TOML, has an unknown section or key, or a setting is wrong; the message
        names the file and the setting.

    Examples
    --------
    >>> from pathlib import Path
    >>> load_site_policy(None) == SitePolicy()
    True
    >>> text = "[release]\\nmin_samples = 50\\n[privacy]\\nepsilon_per_job = 2.0\\n"
    >>> _ = Path("policy.toml").write_text(text)
    >>> policy = load_site_policy(Path("policy.toml"))
    >>> policy.min_samples, policy.privacy.mechanism, policy.privacy.epsilon_per_job
    (50, 'dp-sgd', 2.0)
    >>> _ = Path("policy.toml").write_text("[release]\\nmin_sample = 50\\n")
    >>> load_site_policy(Path("policy.toml"))
    Traceback (most recent call last):
    ...
    policies.site_policy.PolicyError: policy.toml: unknown key(s) ['min_sample'] in [release]; allowed: [...]
    """
    if path is None or not Path(path).exists():
        return SitePolicy()
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: cannot be read as TOML ({exc})") from exc
    _check_sections(path, document)
    review, release = document.get("review", {}), document.get("release", {})
    _check_review(path, review)
    privacy = _read_privacy(path, document["privacy"]) if "privacy" in document else None
    max_output_mb, min_samples = _read_release(path, release)
    secagg = document.get("secure_aggregation", {})
    min_cohort, peers = _read_secure_aggregation(path, secagg)
    return SitePolicy(
        sandbox=_read_sandbox(path, document.get("sandbox", {})),
        limits=_read_limits(path, document.get("limits", {})),
        require_secure_aggregation=bool(secagg.get("required", False)),
        min_cohort=min_cohort,
        secure_aggregation_peers=dict(peers),
        extra_allowed_imports=tuple(review.get("extra_allowed_imports", ())),
        auto_approve_templates=tuple(review.get("auto_approve_templates", ())),
        require_purpose=review.get("require_purpose", False),
        min_samples=min_samples,
        max_output_mb=float(max_output_mb),
        privacy=privacy,
        source=str(path),
    )


def _check_sections(path: Path, document: dict) -> None:
    """Only the known sections, each a table of known keys."""
    for section, values in document.items():
        if section not in _KEYS or not isinstance(values, dict):
            raise PolicyError(f"{path}: unknown section [{section}]; allowed: {sorted(_KEYS)}")
        unknown = sorted(set(values) - _KEYS[section])
        if unknown:
            raise PolicyError(
                f"{path}: unknown key(s) {unknown} in [{section}]; allowed: {sorted(_KEYS[section])}"
            )


def _check_review(path: Path, review: dict) -> None:
    for key in ("extra_allowed_imports", "auto_approve_templates"):
        names = review.get(key, [])
        if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
            raise PolicyError(f"{path}: [review] {key} must be a list of names (got {names!r})")
    require = review.get("require_purpose", False)
    if not isinstance(require, bool):
        raise PolicyError(f"{path}: [review] require_purpose must be true or false (got {require!r})")


def _read_privacy(path: Path, section: dict) -> PrivacySettings:
    values = dict(section)
    mechanism = values.pop("mechanism", "dp-sgd")
    if mechanism not in MECHANISMS:
        raise PolicyError(
            f"{path}: [privacy] mechanism must be one of {list(MECHANISMS)} (got {mechanism!r})"
        )
    wrong = [key for other, key in _MECHANISM_KEYS.items() if other != mechanism and key in values]
    if wrong:
        raise PolicyError(_other_mechanisms_key_message(path, wrong[0], mechanism, "mechanism" in section))
    bad = {key: value for key, value in values.items() if not _is_finite_number(value)}
    if bad:
        raise PolicyError(f"{path}: [privacy] values must be finite numbers (got {bad})")
    try:
        return PrivacySettings(mechanism=mechanism, **values)
    except PolicyError as exc:
        raise PolicyError(f"{path}: [privacy] {exc}") from exc


def _other_mechanisms_key_message(path: Path, key: str, mechanism: str, mechanism_set: bool) -> str:
    """Why ``key``, the clipping norm of the other mechanism, is a mistake under ``mechanism``."""
    other = "update" if mechanism == "dp-sgd" else "dp-sgd"
    default_note = "" if mechanism_set else " (the default)"
    return (
        f'{path}: [privacy] {key} is a setting of mechanism = "{other}", '
        f'not of mechanism = "{mechanism}"{default_note}: '
        f'use {_MECHANISM_KEYS[mechanism]}, or set mechanism = "{other}"'
    )


def _read_sandbox(path: Path, section: dict) -> SandboxSettings:
    try:
        return SandboxSettings(**section)
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from exc


def _read_limits(path: Path, section: dict) -> LimitSettings:
    try:
        return LimitSettings(**section)
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from exc


def _read_release(path: Path, release: dict) -> tuple[float, int]:
    """``(max_output_mb, min_samples)``."""
    max_output_mb = release.get("max_output_mb", 50.0)
    if not _is_finite_number(max_output_mb) or not max_output_mb > 0:
        raise PolicyError(
            f"{path}: [release] max_output_mb must be a finite number > 0 (got {max_output_mb!r})"
        )
    min_samples = release.get("min_samples", RELEASE_MIN_SAMPLES)
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
        raise PolicyError(f"{path}: [release] min_samples must be an integer >= 1 (got {min_samples!r})")
    return max_output_mb, min_samples


def _read_secure_aggregation(path: Path, secagg: dict) -> tuple[int, dict]:
    """``(min_cohort, peers)``."""
    min_cohort = secagg.get("min_cohort", 2)
    if isinstance(min_cohort, bool) or not isinstance(min_cohort, int) or min_cohort < 2:
        raise PolicyError(
            f"{path}: [secure_aggregation] min_cohort must be an integer >= 2 (got {min_cohort!r})"
        )
    peers = secagg.get("peers", {})
    if not isinstance(peers, dict) or not all(_is_public_key_hex(key) for key in peers.values()):
        raise PolicyError(
            f"{path}: [secure_aggregation] peers must map site names to 64-hex-digit public keys"
        )
    return min_cohort, peers


def _is_finite_number(value: object) -> bool:
    """An int or a float (not a bool), finite."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _is_public_key_hex(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64
