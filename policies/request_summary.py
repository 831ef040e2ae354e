"""A code request in plain words for its data owner: what it reads, runs, releases and spends here.

``summarize_request`` reads everything from the request itself — its code and
``CONFIG`` as the template match parsed them, its execution limit, its bound
assets — and from the site's policy and a few facts about the site (``SiteFacts``:
images per split, the requester's privacy spend). Nothing of the researcher's code
runs: the model's size is counted from its source (``policies.model_size``).
What leaves is what the release rules let out (``policies.release``): a training
run's weights and a few figures; an evaluation's figures; never an image, a label
or a value about one patient.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policies.model_size import model_size
from policies.request_review import RequestReview
from policies.site_policy import SitePolicy

__all__ = ["RequestSummary", "SiteFacts", "summarize_request"]

NOTHING_PERSONAL = "no image, label or per-patient value"
MEMORISATION_WARNING = (
    "Differential privacy is OFF at this site: a model can memorise training images in its weights "
    "and give them away, and every review check still passes; only differential privacy "
    "([privacy] in the site policy) or reading the model class yourself guards against it."
)


@dataclass(frozen=True)
class SiteFacts:
    """What the summary needs to know about the site that the request does not say.

    Parameters
    ----------
    split_counts : Mapping of str to int
        Images per split at this site (``{"train": 1234, "val": 321}``).
    epsilon_spent : float or None
        The requester's ε spent at this site so far; None when the site keeps no privacy budget.
    epsilon_budget : float or None
        The requester's total ε at this site; None when the site keeps no privacy budget.

    Examples
    --------
    >>> SiteFacts({"train": 100, "val": 20}, None, None).split_counts["val"]
    20
    """

    split_counts: Mapping[str, int]
    epsilon_spent: float | None
    epsilon_budget: float | None


@dataclass(frozen=True)
class RequestSummary:
    """A request in plain words: one sentence per topic, warnings apart.

    Parameters
    ----------
    reads : str
        Which splits the code reads and how many images each run reads.
    runs : str
        How many runs the owner is asked to allow and what each does.
    leaves : str
        What leaves the site: the weights (their number) and the figures, per run.
    privacy : str
        Whether differential privacy applies here and the ε this job would spend against the
        requester's remaining budget.
    secure_aggregation : str
        Whether the weights leave masked.
    warnings : tuple of str
        What the owner should not miss (no differential privacy, a budget too small, code that is not
        the template...).
    epsilon_job : float or None
        The most ε this job can spend here (the policy's ``epsilon_per_job``); None without DP.
    """

    reads: str
    runs: str
    leaves: str
    privacy: str
    secure_aggregation: str
    warnings: tuple[str, ...]
    epsilon_job: float | None

    def sentences(self) -> list[str]:
        """The five sentences, in reading order (the warnings are not among them: show them apart).

        Examples
        --------
        >>> RequestSummary("r.", "n.", "l.", "p.", "s.", ("careful",), None).sentences()
        ['r.', 'n.', 'l.', 'p.', 's.']
        """
        return [self.reads, self.runs, self.leaves, self.privacy, self.secure_aggregation]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: every field, the warnings as a list, and ``sentences``.

        Examples
        --------
        >>> sorted(RequestSummary("r.", "n.", "l.", "p.", "s.", (), 4.0).to_dict())
        ['epsilon_job', 'leaves', 'privacy', 'reads', 'runs', 'secure_aggregation', 'sentences', 'warnings']
        """
        return {
            "reads": self.reads,
            "runs": self.runs,
            "leaves": self.leaves,
            "privacy": self.privacy,
            "secure_aggregation": self.secure_aggregation,
            "warnings": list(self.warnings),
            "epsilon_job": self.epsilon_job,
            "sentences": self.sentences(),
        }


def summarize_request(review: RequestReview, policy: SitePolicy, facts: SiteFacts) -> RequestSummary:
    """The plain-language summary of a reviewed request at this site.

    Parameters
    ----------
    review : RequestReview
        The request's review (``review_request``): its code, ``CONFIG`` and execution limit.
    policy : SitePolicy
        The site's policy (privacy, secure aggregation, release limits).
    facts : SiteFacts
        Images per split here and the requester's privacy spend.

    Returns
    -------
    RequestSummary
        Computed without running the researcher's code.

    Examples
    --------
    >>> import inspect
    >>> from types import SimpleNamespace
    >>> from policies.request_review import ASSET_INPUTS, review_request
    >>> from policies.template import render_site_source
    >>> model = "class Net(nn.Module):\\n    def __init__(self):\\n        super().__init__()\\n"
    >>> model += "        self.fc = nn.Linear(16, 4)\\n"
    >>> config = {"rounds": 3, "local_epochs": 1, "batch_size": 32, "num_classes": 4, "model_kwargs": {}}
    >>> request = SimpleNamespace(
    ...     id="r1", requester="ada@university.example", function_name="f", code_sha256="",
    ...     code=render_site_source("f", model, "Net", config), inputs={}, purpose="",
    ...     bound_assets={name: f"fedimg-a/{name}" for name in ASSET_INPUTS},
    ...     output_policy="OutputPolicyExecuteCount", output_policy_kwargs={"limit": 4},
    ... )
    >>> facts = SiteFacts({"train": 1234, "val": 321}, None, None)
    >>> summary = summarize_request(review_request(request, SitePolicy()), SitePolicy(), facts)
    >>> print(summary.reads)
    Reads this site's train split (1,234 images) and val split (321 images), with their labels: ...
    >>> print(summary.runs)
    Asks for 4 runs: 3 training rounds (each trains the model it is sent ...) and 1 final evaluation ...
    >>> print(summary.leaves)
    Weights of 68 numbers per training run and 3 figures per run ...; no image, label or per-patient value.
    """
    config = review.template.config if review.template.matches else {}
    counts = {split: int(count) for split, count in facts.split_counts.items()}
    limit = review.request.output_policy_kwargs.get("limit")
    warnings: list[str] = []
    if not review.template.matches:
        warnings.append(
            "The code is not fedimg's training template: what it does is only in the code below, and its "
            "weights can carry anything of the right shape (do not force-approve it)."
        )
    privacy, epsilon_job = _privacy(policy, facts, limit, warnings)
    if policy.privacy is not None and policy.privacy.mechanism == "dp-sgd" and not review.template.matches:
        warnings.append(
            "This site trains only with its own DP-SGD, which runs only fedimg's template: every run of "
            "this code will be refused."
        )
    secure = _secure_aggregation(policy, config)
    _small_site_warning(policy, counts, warnings)
    return RequestSummary(
        reads=_reads(review, config, counts),
        runs=_runs(config, limit),
        leaves=_leaves(
            review, config, policy, secure_on=policy.require_secure_aggregation or _secure(config)
        ),
        privacy=privacy,
        secure_aggregation=secure,
        warnings=tuple(warnings),
        epsilon_job=epsilon_job,
    )


def _n(count: int) -> str:
    return f"{count:,}"


def _plural(count: int, word: str) -> str:
    ending = "" if count == 1 else "es" if word.endswith("s") else "s"
    return f"{_n(count)} {word}{ending}"


def _times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{_n(count)} times")


def _images(counts: Mapping[str, int], split: str) -> str:
    return _plural(counts[split], "image") if split in counts else "an unknown number of images"


def _reads(review: RequestReview, config: Mapping[str, Any], counts: Mapping[str, int]) -> str:
    bound = review.request.bound_assets or {}
    splits = [
        split for split in ("train", "val") if bound.get(f"{split}_images") or bound.get(f"{split}_labels")
    ]
    if not splits:
        return "Reads none of this site's data sets (no input is bound to one of its assets)."
    listed = " and ".join(f"{split} split ({_images(counts, split)})" for split in splits)
    opening = f"Reads this site's {listed}, with their labels"
    if not config:
        return f"{opening}; the code is not the template, so how much of them each run reads cannot be said."
    if splits != ["train", "val"]:
        return f"{opening}; its other inputs are bound to none of this site's data sets."
    epochs, batch = config.get("local_epochs"), config.get("batch_size")
    passes = _times(epochs) if isinstance(epochs, int) else "several times"
    train, val = _images(counts, "train"), _images(counts, "val")
    return (
        f"{opening}: each training run goes over the {train} of the train split {passes} "
        f"(in batches of {batch}) and then measures the model on the {val} of the val split; "
        f"the final evaluation reads only the {val} of the val split."
    )


def _secure(config: Mapping[str, Any]) -> bool:
    return bool(config.get("secure_aggregation"))


def _runs(config: Mapping[str, Any], limit: Any) -> str:
    asked = (
        f"Asks for {_plural(limit, 'run')}"
        if isinstance(limit, int)
        else "Asks for an unstated number of runs"
    )
    rounds = config.get("rounds")
    if not isinstance(rounds, int):
        return f"{asked} of code that is not fedimg's template: what each run does is only in the code below."
    restarts = config.get("max_restarts", 0) if _secure(config) else 0
    epochs = config.get("local_epochs")
    passes = _plural(epochs, "pass") if isinstance(epochs, int) else "some passes"
    text = (
        f"{asked}: {_plural(rounds, 'training round')} (each trains the model it is sent for {passes} "
        "over the train split and sends it back) and 1 final evaluation (measures the final model on the "
        "val split)"
    )
    if restarts:
        text += (
            f", plus up to {_plural(restarts, 'restart')} of a round if a site drops out (secure aggregation)"
        )
    declared = rounds + 1 + restarts
    if isinstance(limit, int) and limit != declared:
        text += f"; the job declares {_plural(declared, 'run')}, not {_n(limit)}"
    return text + "."


def _leaves(review: RequestReview, config: Mapping[str, Any], policy: SitePolicy, *, secure_on: bool) -> str:
    size = model_size(review.request.code, config.get("model_kwargs")) if config else None
    numbers = (
        f"Weights of {_n(size.weights)} numbers"
        if size
        else "Weights (their number could not be counted before it runs)"
    )
    masked = " (masked)" if secure_on else ""
    dp_sgd = policy.privacy is not None and policy.privacy.mechanism == "dp-sgd"
    unmeasured = ", not measured under this site's DP-SGD" if dp_sgd else ""
    num_classes = config.get("num_classes")
    table = f"a {num_classes}×{num_classes}" if isinstance(num_classes, int) else "a"
    return (
        f"{numbers}{masked} per training run and 3 figures per run (the val loss, accuracy and number of "
        f"val images) with {table} table of counts over the val images (true label × predicted label); a "
        f"training run adds 3 more (its number of train images, loss and accuracy{unmeasured}); at most "
        f"{policy.max_output_mb:g} MB per run; {NOTHING_PERSONAL}."
    )


def _privacy(
    policy: SitePolicy, facts: SiteFacts, limit: Any, warnings: list[str]
) -> tuple[str, float | None]:
    settings = policy.privacy
    if settings is None:
        warnings.append(MEMORISATION_WARNING)
        return (
            "Differential privacy is OFF at this site: the weights leave without noise, and a model can "
            "memorise training images without it.",
            None,
        )
    runs = f"its {_plural(limit, 'run')}" if isinstance(limit, int) else "its runs"
    how = (
        "the site trains with its own DP-SGD (each image's influence clipped, noise added at every step)"
        if settings.mechanism == "dp-sgd"
        else "the site clips each training run's update and adds noise to it"
    )
    epsilon_job = settings.epsilon_per_job
    text = (
        f"Differential privacy applies: {how}, calibrated so that {runs} together spend at most "
        f"ε {epsilon_job:g} (δ {settings.delta:g}) of the researcher's budget here"
    )
    budget = facts.epsilon_budget if facts.epsilon_budget is not None else settings.budget_epsilon
    if facts.epsilon_spent is None:
        text += f" (ε {budget:g} in all; what they spent so far is not known)."
    else:
        remaining = max(budget - facts.epsilon_spent, 0.0)
        text += f": they have spent ε {facts.epsilon_spent:.2f} of {budget:g}, ε {remaining:.2f} remains."
        if remaining + 1e-9 < epsilon_job:
            warnings.append(
                f"The researcher has ε {remaining:.2f} left at this site, less than this job's "
                f"ε {epsilon_job:g}: the site will refuse the runs that would pass the budget."
            )
    return text + " The val figures are released without noise.", epsilon_job


def _secure_aggregation(policy: SitePolicy, config: Mapping[str, Any]) -> str:
    if policy.require_secure_aggregation:
        return (
            "Secure aggregation is required here: the weights leave only masked, and the researcher can read "
            f"only their sum over a round of at least {policy.min_cohort} sites, never this site's alone."
        )
    if _secure(config):
        return (
            "The job uses secure aggregation: the weights leave masked, and the researcher can read only "
            "their sum over the round's sites, never this site's alone."
        )
    return "Secure aggregation is off: the researcher sees this site's own weights after each training round."


def _small_site_warning(policy: SitePolicy, counts: Mapping[str, int], warnings: list[str]) -> None:
    small = [split for split in ("train", "val") if split in counts and counts[split] < policy.min_samples]
    if small:
        warnings.append(
            f"This site has fewer than {policy.min_samples} images in its {' and '.join(small)} split: "
            "it releases nothing (its runs are refused)."
        )
