"""A site's policy file (TOML): what its data owner allows, in one place.

```toml
[review]
extra_allowed_imports = []            # on top of torch, numpy, math
auto_approve_templates = []           # template hashes (fedimg review shows them); empty: a person decides

[release]
min_samples = 20                      # a site with fewer training samples releases nothing
max_output_mb = 50                    # larger outputs are refused

[privacy]                             # differential privacy of the model updates (off when absent)
epsilon_per_job = 4.0                 # (epsilon, delta) target for one job's releases, all rounds together
delta = 1e-5
max_update_norm = 1.0                 # L2 clipping of each update (new weights - global weights)
budget_epsilon = 10.0                 # total per researcher at this site, across jobs
```
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from policies.review import DEFAULT_ALLOWED_IMPORTS, ReviewPolicy

POLICY_FILE = "policy.toml"
_KEYS = {
    "review": {"extra_allowed_imports", "auto_approve_templates"},
    "release": {"min_samples", "max_output_mb"},
    "privacy": {"epsilon_per_job", "delta", "max_update_norm", "budget_epsilon"},
}


class PolicyError(ValueError):
    """The policy file is wrong; the message names the file and the setting."""


@dataclass(frozen=True)
class PrivacySettings:
    epsilon_per_job: float = 4.0
    delta: float = 1e-5
    max_update_norm: float = 1.0
    budget_epsilon: float = 10.0

    def __post_init__(self) -> None:
        if not (self.epsilon_per_job > 0 and 0 < self.delta < 1 and self.max_update_norm > 0 and self.budget_epsilon > 0):
            raise PolicyError(f"privacy settings must be positive with 0 < delta < 1 (got {self})")


@dataclass(frozen=True)
class SitePolicy:
    extra_allowed_imports: tuple[str, ...] = ()
    auto_approve_templates: tuple[str, ...] = ()
    min_samples: int = 20
    max_output_mb: float = 50.0
    privacy: PrivacySettings | None = None
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
            raise PolicyError(f"{path}: unknown key(s) {unknown} in [{section}]; allowed: {sorted(_KEYS[section])}")
    review, release = document.get("review", {}), document.get("release", {})
    privacy = PrivacySettings(**document["privacy"]) if "privacy" in document else None
    min_samples = release.get("min_samples", 20)
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
        raise PolicyError(f"{path}: [release] min_samples must be an integer >= 1 (got {min_samples!r})")
    return SitePolicy(
        extra_allowed_imports=tuple(review.get("extra_allowed_imports", ())),
        auto_approve_templates=tuple(review.get("auto_approve_templates", ())),
        min_samples=min_samples,
        max_output_mb=float(release.get("max_output_mb", 50.0)),
        privacy=privacy,
        source=str(path),
    )
