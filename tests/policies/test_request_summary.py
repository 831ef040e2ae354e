"""Issue 12: a request in plain words, computed from the request itself and the site's policy.

The model's size is counted from its source and compared with PyTorch's own count of
the same model built for real; the other sentences follow the request's CONFIG, its
execution limit, its bound assets, the site's privacy and secure-aggregation settings;
the ε the summary promises is checked against the site's own calibration.
"""

from __future__ import annotations

import inspect
import json
import textwrap
import time

import pytest
import torch
import torch.nn as nn

from policies import (
    PrivacySettings,
    RequestSummary,
    SiteFacts,
    SitePolicy,
    dp_sgd_noise_multiplier,
    epsilon_of,
    match_template,
    review_request,
    schedule,
    summarize_request,
)
from policies.model_size import ModelSize, model_size
from policies.request_summary import MEMORISATION_WARNING
from policies.template import render_site_source
from researcher.models import SmallCNN
from tests.policies.test_request_review import rendered, request
from tests.support.job_config import job_config

FACTS = SiteFacts({"train": 1234, "val": 321}, None, None)


def summary(code: str | None = None, policy: SitePolicy | None = None, facts: SiteFacts = FACTS, **changes):
    policy = policy or SitePolicy()
    return summarize_request(review_request(request(code, **changes), policy), policy, facts)


def torch_counts(model: nn.Module) -> ModelSize:
    parameters = sum(p.numel() for p in model.parameters())
    return ModelSize(parameters, sum(v.numel() for v in model.state_dict().values()) - parameters)


def built(source: str, name: str, **kwargs) -> nn.Module:
    namespace: dict = {"nn": nn, "torch": torch}
    exec(compile(source, "model.py", "exec"), namespace)  # the test's own models, built to be counted
    return namespace[name](**kwargs)


def small_cnn_code(**model_kwargs) -> str:
    config = job_config(num_classes=model_kwargs.get("num_classes", 10), image_size=16, rounds=3)
    config["model_kwargs"] = model_kwargs
    return render_site_source("fedimg_fedavg_0123456789", inspect.getsource(SmallCNN), "SmallCNN", config)


# --- the model's size, counted without running it -------------------------------------------------


@pytest.mark.parametrize(
    "model_kwargs",
    [
        {"channels": 1, "image_size": 16, "num_classes": 4},
        {"channels": 1, "image_size": 28, "num_classes": 10, "width": 8},
        {"channels": 3, "image_size": 32, "num_classes": 2, "width": 32},
        {"image_size": 64, "width": 5},  # the other arguments from the class's defaults
    ],
)
def test_small_cnn_is_counted_as_pytorch_counts_it(model_kwargs: dict) -> None:
    expected = torch_counts(SmallCNN(**model_kwargs))
    assert model_size(small_cnn_code(**model_kwargs), model_kwargs) == expected
    number = f"{expected.weights:,}"
    code = small_cnn_code(**model_kwargs)
    assert summary(code, output_policy_kwargs={"limit": 4}).leaves.startswith(f"Weights of {number} numbers")


RICH_MODEL = textwrap.dedent(
    """\
    class Block(nn.Module):
        def __init__(self, channels, norm=True):
            super().__init__()
            self.conv = nn.Conv2d(channels, channels, kernel_size=(3, 5), padding=1, bias=not norm)
            self.norm = nn.BatchNorm2d(channels) if norm else nn.Identity()


    class Net(nn.Module):
        \"\"\"Loops, lists, sub-modules, keyword and positional arguments, buffers.\"\"\"

        def __init__(self, channels=3, num_classes=10, depth=2, width=8, *, affine=True):
            super().__init__()
            layers = []
            current = channels
            for index in range(depth):
                layers.append(nn.Conv2d(current, width * (index + 1), 3, 1, 1, groups=1))
                layers += [nn.BatchNorm2d(width * (index + 1), affine=affine), nn.ReLU()]
                current = width * (index + 1)
            self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.blocks = nn.ModuleList([Block(current), Block(current, norm=False)])
            hidden = max(current // 2, 4)
            self.extra = nn.ModuleDict({"norm": nn.LayerNorm(hidden), "group": nn.GroupNorm(2, current)})
            self.up = nn.ConvTranspose2d(current, 4, 2, groups=2)
            self.embed = nn.Embedding(7, 3)
            self.inorm = nn.InstanceNorm2d(4, affine=True, track_running_stats=True)
            self.act = nn.PReLU(hidden or 1)
            self.head = torch.nn.Sequential(nn.Linear(current, hidden), nn.Dropout(0.1), nn.Linear(hidden, num_classes, bias=False))

        def forward(self, x):
            return self.head(self.features(x))
    """
)


@pytest.mark.parametrize(
    "kwargs", [{}, {"depth": 3, "width": 6, "num_classes": 4}, {"affine": False, "channels": 1}]
)
def test_a_richer_model_is_counted_as_pytorch_counts_it(kwargs: dict) -> None:
    assert model_size(RICH_MODEL, kwargs, "Net") == torch_counts(built(RICH_MODEL, "Net", **kwargs))


@pytest.mark.parametrize(
    "change",
    [
        ("self.embed = nn.Embedding(7, 3)", "self.embed = nn.Parameter(torch.zeros(7, 3))"),
        ("self.embed = nn.Embedding(7, 3)", "self.embed = nn.Transformer(8)"),  # a layer it does not know
        ("self.embed = nn.Embedding(7, 3)", "self.register_buffer('stash', torch.zeros(100))"),
        ("self.embed = nn.Embedding(7, 3)", "self.embed = self.make_layer()"),
        ("self.embed = nn.Embedding(7, 3)", "self.embed = nn.Embedding(SIZE, 3)"),  # a name from elsewhere
        ("class Net(nn.Module):", "class Net(Base):"),
        ("for index in range(depth):", "for index in range(10**12):"),  # too long to follow: no count
        ("hidden = max(current // 2, 4)", "hidden = len([0] * 10**12)"),
        ("hidden = max(current // 2, 4)", "hidden = 2 ** 10**6"),
        ("hidden = max(current // 2, 4)", "while True:\n                pass"),
    ],
)
def test_what_cannot_be_followed_gives_no_count_and_fast(change: tuple[str, str]) -> None:
    source = RICH_MODEL.replace(*change)
    assert source != RICH_MODEL
    started = time.perf_counter()
    assert model_size(source, {}, "Net") is None
    assert time.perf_counter() - started < 2.0


def test_a_model_that_cannot_be_counted_is_said_so() -> None:
    model = "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
    model += "        self.w = nn.Parameter(torch.zeros(3))\n"
    code = rendered(model, "Net", model_kwargs={})
    leaves = summary(code).leaves
    assert leaves.startswith("Weights (their number could not be counted before it runs)")
    assert leaves.endswith("no image, label or per-patient value.")


def test_the_count_ignores_unused_classes_and_takes_the_one_the_template_builds() -> None:
    source = "class Helper(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
    source += "        self.big = nn.Linear(1000, 1000)\n\n\n" + inspect.getsource(SmallCNN)
    kwargs = {"channels": 1, "image_size": 16, "num_classes": 4}
    code = rendered(source, "SmallCNN", model_kwargs=kwargs)
    assert model_size(code, kwargs) == torch_counts(SmallCNN(**kwargs))


# --- the sentences ----------------------------------------------------------------------------------


def test_reads_names_each_split_with_its_images() -> None:
    reads = summary().reads
    assert "train split (1,234 images)" in reads and "val split (321 images)" in reads
    assert "the final evaluation reads only the 321 images of the val split" in reads
    assert "once (in batches of 32)" in summary().reads
    only_val = {"val_images": "fedimg-a/val_images", "val_labels": "fedimg-a/val_labels"}
    assert "train split" not in summary(bound_assets=only_val).reads
    assert summary(bound_assets={}).reads.startswith("Reads none of this site's data sets")
    unknown_size = summary(facts=SiteFacts({"train": 10}, None, None)).reads
    assert "val split (an unknown number of images)" in unknown_size


def test_runs_say_how_many_and_what_each_does() -> None:
    runs = summary().runs  # rounds 3, limit 4
    assert runs.startswith("Asks for 4 runs: 3 training rounds") and "1 final evaluation" in runs
    assert "declares" not in runs
    assert "the job declares 4 runs, not 9" in summary(output_policy_kwargs={"limit": 9}).runs
    secure = rendered(secure_aggregation=True, max_restarts=2)
    runs = summary(secure, output_policy_kwargs={"limit": 6}).runs
    assert runs.startswith("Asks for 6 runs") and "up to 2 restarts of a round" in runs
    assert "declares" not in runs


def test_code_that_is_not_the_template_is_warned_about() -> None:
    tampered = rendered().replace("    return result\n", "    return {'x': train_images}\n")
    result = summary(tampered)
    assert "not fedimg's template" in result.runs
    assert any("not fedimg's training template" in warning for warning in result.warnings)
    assert result.leaves.startswith("Weights (their number could not be counted")  # never guessed
    assert not any("not fedimg's training template" in warning for warning in summary().warnings)


def test_without_dp_the_memorisation_warning_is_given() -> None:
    result = summary()
    assert result.privacy.startswith("Differential privacy is OFF at this site")
    assert "memorise" in result.privacy and MEMORISATION_WARNING in result.warnings
    assert result.epsilon_job is None


def test_under_dp_the_job_epsilon_is_set_against_the_remaining_budget() -> None:
    policy = SitePolicy(privacy=PrivacySettings(epsilon_per_job=3.0, budget_epsilon=10.0))
    result = summary(policy=policy, facts=SiteFacts({"train": 1234, "val": 321}, 2.5, 10.0))
    assert result.epsilon_job == 3.0
    assert "Differential privacy applies" in result.privacy and "DP-SGD" in result.privacy
    assert "its 4 runs together spend at most ε 3" in result.privacy
    assert "spent ε 2.50 of 10, ε 7.50 remains" in result.privacy
    assert MEMORISATION_WARNING not in result.warnings and not result.warnings

    short = summary(policy=policy, facts=SiteFacts({"train": 1234, "val": 321}, 8.0, 10.0))
    assert any("ε 2.00 left at this site, less than this job's ε 3" in w for w in short.warnings)

    unknown = summary(policy=policy, facts=FACTS).privacy
    assert "what they spent so far is not known" in unknown
    update = SitePolicy(privacy=PrivacySettings(mechanism="update"))
    assert "adds noise to it" in summary(policy=update).privacy


def test_the_epsilon_promised_is_what_the_sites_calibration_spends_at_most() -> None:
    """All of the approved runs training at the site's DP-SGD noise stay within the summary's ε."""
    settings = PrivacySettings(epsilon_per_job=4.0)
    result = summary(policy=SitePolicy(privacy=settings))
    limit, config = 4, job_config_of(rendered())
    sample_rate, steps = schedule(1234, config["batch_size"], config["local_epochs"])
    multiplier = dp_sgd_noise_multiplier(settings.epsilon_per_job, settings.delta, sample_rate, steps * limit)
    spent = epsilon_of([(multiplier, sample_rate, steps)] * limit, settings.delta)
    assert result.epsilon_job is not None and spent <= result.epsilon_job + 1e-6


def job_config_of(code: str) -> dict:
    return match_template(code).config


def test_a_non_template_request_at_a_dp_sgd_site_is_said_to_be_refused() -> None:
    policy = SitePolicy(privacy=PrivacySettings())
    tampered = rendered().replace("    return result\n", "    return {'x': train_images}\n")
    assert any("every run of this code will be refused" in w for w in summary(tampered, policy).warnings)
    assert "not measured under this site's DP-SGD" in summary(policy=policy).leaves


def test_secure_aggregation_sentence_follows_the_site_and_the_job() -> None:
    assert summary().secure_aggregation.startswith("Secure aggregation is off")
    required = SitePolicy(require_secure_aggregation=True, min_cohort=3)
    text = summary(policy=required).secure_aggregation
    assert text.startswith("Secure aggregation is required here") and "at least 3 sites" in text
    assert "(masked)" in summary(policy=required).leaves and "(masked)" not in summary().leaves
    job = summary(rendered(secure_aggregation=True, max_restarts=0)).secure_aggregation
    assert job.startswith("The job uses secure aggregation")


def test_leaves_lists_the_figures_and_nothing_personal() -> None:
    leaves = summary(policy=SitePolicy(max_output_mb=20)).leaves
    assert "a 4×4 table of counts" in leaves and "at most 20 MB per run" in leaves
    assert leaves.endswith("no image, label or per-patient value.")


def test_a_small_site_is_warned_that_it_releases_nothing() -> None:
    small = summary(facts=SiteFacts({"train": 1234, "val": 5}, None, None))
    assert any("fewer than 20 images in its val split" in w for w in small.warnings)
    assert not any("fewer than" in w for w in summary().warnings)


def test_to_dict_is_json_with_the_contracts_keys() -> None:
    result = summary(policy=SitePolicy(privacy=PrivacySettings()))
    document = json.loads(json.dumps(result.to_dict()))
    assert set(document) == {
        "reads",
        "runs",
        "leaves",
        "privacy",
        "secure_aggregation",
        "warnings",
        "epsilon_job",
        "sentences",
    }
    assert document["sentences"] == [
        result.reads,
        result.runs,
        result.leaves,
        result.privacy,
        result.secure_aggregation,
    ]
    assert document["epsilon_job"] == 4.0 and isinstance(document["warnings"], list)
    assert isinstance(result, RequestSummary)
