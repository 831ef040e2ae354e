"""A site's policy file (TOML): what its data owner allows, in one place.

```toml
[review]
extra_allowed_imports = []            # on top of torch, numpy, math
auto_approve_templates = []           # template hashes (fedimg review shows them); empty: a person decides

[release]
min_samples = 20                      # a site with fewer training samples releases nothing
max_output_mb = 50                    # larger outputs are refused

[privacy]                             # differential privacy of the model updates (off when absent)
mechanism = "dp-sgd"                  # "dp-sgd" (default): the site trains with DP-SGD; "update": noise on the whole update
epsilon_per_job = 4.0                 # (epsilon, delta) target for one job's releases, all rounds together
delta = 1e-5
budget_epsilon = 10.0                 # total per researcher at this site, across jobs
max_grad_norm = 1.0                   # dp-sgd: L2 clipping of each training example's gradient
# max_update_norm = 1.0               # update: L2 clipping of each update (new weights - global weights)

[secure_aggregation]
required = false                      # true: model updates leave only masked
min_cohort = 2                        # smallest cohort a masked update is released to
peers = {}                            # site name -> X25519 public key (hex) of the other hospitals; empty: any
```
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from policies.static_review import DEFAULT_ALLOWED_IMPORTS, ReviewPolicy

POLICY_FILE = "policy.toml"
_KEYS = {
    "review": {"extra_allowed_imports", "auto_approve_templates"},
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
}


class PolicyError(ValueError):
    """The policy file is wrong; the message names the file and the setting."""


MECHANISMS = ("dp-sgd", "update")
# the clipping norm each mechanism reads; the other one's is a mistake in the file
_MECHANISM_KEYS = {"dp-sgd": "max_grad_norm", "update": "max_update_norm"}


@dataclass(frozen=True)
class PrivacySettings:
    """``[privacy]``: the mechanism, the (ε, δ) of one job, the researcher's budget at this site, the clipping norm."""

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
class SitePolicy:
    extra_allowed_imports: tuple[str, ...] = ()
    auto_approve_templates: tuple[str, ...] = ()
    min_samples: int = 20
    max_output_mb: float = 50.0
    privacy: PrivacySettings | None = None
    require_secure_aggregation: bool = False
    min_cohort: int = 2
    secure_aggregation_peers: dict = field(default_factory=dict)
    source: str = "defaults"

    @property
    def review_policy(self) -> ReviewPolicy:
        return ReviewPolicy(allowed_imports=DEFAULT_ALLOWED_IMPORTS | frozenset(self.extra_allowed_imports))


def load_site_policy(path: Path | None) -> SitePolicy:
    """The policy in ``path``; the defaults when ``path`` is None or does not exist."""
    if path is None or not Path(path).exists():
        return SitePolicy()
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: cannot be read as TOML ({exc})") from exc
    for section, values in document.items():
        if section not in _KEYS or not isinstance(values, dict):
            raise PolicyError(f"{path}: unknown section [{section}]; allowed: {sorted(_KEYS)}")
        unknown = sorted(set(values) - _KEYS[section])
        if unknown:
            raise PolicyError(
                f"{path}: unknown key(s) {unknown} in [{section}]; allowed: {sorted(_KEYS[section])}"
            )
    review, release = document.get("review", {}), document.get("release", {})
    for key in ("extra_allowed_imports", "auto_approve_templates"):
        names = review.get(key, [])
        if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
            raise PolicyError(f"{path}: [review] {key} must be a list of names (got {names!r})")
    privacy = None
    if "privacy" in document:
        values = dict(document["privacy"])
        mechanism = values.pop("mechanism", "dp-sgd")
        if mechanism not in MECHANISMS:
            raise PolicyError(
                f"{path}: [privacy] mechanism must be one of {list(MECHANISMS)} (got {mechanism!r})"
            )
        wrong = [key for other, key in _MECHANISM_KEYS.items() if other != mechanism and key in values]
        if wrong:
            raise PolicyError(
                f'{path}: [privacy] {wrong[0]} is a setting of mechanism = "{"update" if mechanism == "dp-sgd" else "dp-sgd"}", '
                f'not of mechanism = "{mechanism}"{" (the default)" if "mechanism" not in document["privacy"] else ""}: '
                f'use {_MECHANISM_KEYS[mechanism]}, or set mechanism = "{"update" if mechanism == "dp-sgd" else "dp-sgd"}"'
            )
        bad = {
            key: value
            for key, value in values.items()
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
        }
        if bad:
            raise PolicyError(f"{path}: [privacy] values must be finite numbers (got {bad})")
        try:
            privacy = PrivacySettings(mechanism=mechanism, **values)
        except PolicyError as exc:
            raise PolicyError(f"{path}: [privacy] {exc}") from exc
    max_output_mb = release.get("max_output_mb", 50.0)
    if (
        isinstance(max_output_mb, bool)
        or not isinstance(max_output_mb, (int, float))
        or not 0 < max_output_mb < math.inf
    ):
        raise PolicyError(
            f"{path}: [release] max_output_mb must be a finite number > 0 (got {max_output_mb!r})"
        )
    min_samples = release.get("min_samples", 20)
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
        raise PolicyError(f"{path}: [release] min_samples must be an integer >= 1 (got {min_samples!r})")
    secagg = document.get("secure_aggregation", {})
    min_cohort = secagg.get("min_cohort", 2)
    if isinstance(min_cohort, bool) or not isinstance(min_cohort, int) or min_cohort < 2:
        raise PolicyError(
            f"{path}: [secure_aggregation] min_cohort must be an integer >= 2 (got {min_cohort!r})"
        )
    peers = secagg.get("peers", {})
    if not isinstance(peers, dict) or not all(isinstance(v, str) and len(v) == 64 for v in peers.values()):
        raise PolicyError(
            f"{path}: [secure_aggregation] peers must map site names to 64-hex-digit public keys"
        )
    return SitePolicy(
        require_secure_aggregation=bool(secagg.get("required", False)),
        min_cohort=min_cohort,
        secure_aggregation_peers=dict(peers),
        extra_allowed_imports=tuple(review.get("extra_allowed_imports", ())),
        auto_approve_templates=tuple(review.get("auto_approve_templates", ())),
        min_samples=min_samples,
        max_output_mb=float(max_output_mb),
        privacy=privacy,
        source=str(path),
    )
