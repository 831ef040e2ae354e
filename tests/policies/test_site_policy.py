"""The site policy file: defaults, a full file, and every mistake is a PolicyError naming the file and the setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from policies.site_policy import POLICY_FILE, PolicyError, PrivacySettings, SitePolicy, load_site_policy
from policies.static_review import DEFAULT_ALLOWED_IMPORTS


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / POLICY_FILE
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file(tmp_path: Path) -> None:
    for policy in (load_site_policy(None), load_site_policy(tmp_path / "missing.toml"), SitePolicy()):
        assert policy.extra_allowed_imports == () and policy.auto_approve_templates == ()
        assert policy.min_samples == 20 and policy.max_output_mb == 50.0
        assert policy.privacy is None
        assert policy.source == "defaults"
        assert policy.review_policy.allowed_imports == DEFAULT_ALLOWED_IMPORTS


def test_an_empty_file_gives_the_defaults_with_its_source(tmp_path: Path) -> None:
    path = write(tmp_path, "# nothing set\n")
    policy = load_site_policy(path)
    assert policy.min_samples == 20 and policy.max_output_mb == 50.0 and policy.privacy is None
    assert policy.source == str(path)


def test_privacy_section_with_defaults() -> None:
    assert PrivacySettings() == PrivacySettings(
        mechanism="dp-sgd", epsilon_per_job=4.0, delta=1e-5, max_grad_norm=1.0, budget_epsilon=10.0
    )


def test_a_full_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[review]
extra_allowed_imports = ["scipy", "sklearn"]
auto_approve_templates = ["fedavg-4:0123456789ab"]

[release]
min_samples = 50
max_output_mb = 5

[privacy]
epsilon_per_job = 2.5
delta = 1e-6
max_grad_norm = 0.5
budget_epsilon = 8
""",
    )
    policy = load_site_policy(path)
    assert policy.extra_allowed_imports == ("scipy", "sklearn")
    assert policy.auto_approve_templates == ("fedavg-4:0123456789ab",)
    assert policy.min_samples == 50
    assert policy.max_output_mb == 5.0 and isinstance(policy.max_output_mb, float)
    assert policy.privacy == PrivacySettings(
        mechanism="dp-sgd", epsilon_per_job=2.5, delta=1e-6, max_grad_norm=0.5, budget_epsilon=8
    )
    assert policy.source == str(path)
    assert policy.review_policy.allowed_imports == DEFAULT_ALLOWED_IMPORTS | {"scipy", "sklearn"}


def test_a_partial_privacy_section_takes_the_other_defaults(tmp_path: Path) -> None:
    policy = load_site_policy(write(tmp_path, "[privacy]\nepsilon_per_job = 1.0\n"))
    assert policy.privacy == PrivacySettings(epsilon_per_job=1.0)
    assert policy.privacy.mechanism == "dp-sgd"


def test_the_update_level_mechanism(tmp_path: Path) -> None:
    policy = load_site_policy(
        write(tmp_path, '[privacy]\nmechanism = "update"\nmax_update_norm = 0.25\nbudget_epsilon = 3\n')
    )
    assert policy.privacy == PrivacySettings(mechanism="update", max_update_norm=0.25, budget_epsilon=3)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[reviews]\nextra_allowed_imports = []\n", r"unknown section \[reviews\]"),
        ("min_samples = 3\n", r"unknown section \[min_samples\]"),
        ("[review]\nallowed_imports = ['os']\n", r"unknown key\(s\) \['allowed_imports'\] in \[review\]"),
        ("[release]\nmin_sample = 5\n", r"unknown key\(s\) \['min_sample'\] in \[release\]"),
        ("[privacy]\nepsilon = 1.0\n", r"unknown key\(s\) \['epsilon'\] in \[privacy\]"),
        ("[release]\nmin_samples = 0\n", r"\[release\] min_samples must be an integer >= 1 \(got 0\)"),
        ("[release]\nmin_samples = -5\n", r"min_samples must be an integer >= 1"),
        ("[release]\nmin_samples = 2.5\n", r"min_samples must be an integer >= 1 \(got 2.5\)"),
        ("[release]\nmin_samples = '20'\n", r"min_samples must be an integer >= 1 \(got '20'\)"),
        ("[release]\nmin_samples = true\n", r"min_samples must be an integer >= 1 \(got True\)"),
        ("[release]\nmax_output_mb = 0\n", r"\[release\] max_output_mb must be a finite number > 0"),
        ("[release]\nmax_output_mb = 'big'\n", r"max_output_mb must be a finite number > 0 \(got 'big'\)"),
        ("[release]\nmax_output_mb = inf\n", r"max_output_mb must be a finite number > 0"),
        ("[privacy]\nepsilon_per_job = 0\n", r"\[privacy\] privacy settings must be positive"),
        ("[privacy]\nepsilon_per_job = -1.0\n", r"\[privacy\] privacy settings must be positive"),
        ("[privacy]\ndelta = 1.0\n", r"0 < delta < 1"),
        ("[privacy]\ndelta = 0\n", r"0 < delta < 1"),
        ("[privacy]\nmax_grad_norm = 0.0\n", r"\[privacy\] privacy settings must be positive"),
        (
            "[privacy]\nmechanism = 'update'\nmax_update_norm = 0.0\n",
            r"\[privacy\] privacy settings must be positive",
        ),
        (
            "[privacy]\nmechanism = 'dpsgd'\n",
            r"\[privacy\] mechanism must be one of \['dp-sgd', 'update'\] \(got 'dpsgd'\)",
        ),
        ("[privacy]\nmechanism = 1\n", r"\[privacy\] mechanism must be one of"),
        (
            "[privacy]\nmax_update_norm = 1.0\n",
            r'\[privacy\] max_update_norm is a setting of mechanism = "update", not of mechanism = "dp-sgd" \(the default\): use max_grad_norm, or set mechanism = "update"',
        ),
        (
            "[privacy]\nmechanism = 'update'\nmax_grad_norm = 1.0\n",
            r'\[privacy\] max_grad_norm is a setting of mechanism = "dp-sgd", not of mechanism = "update": use max_update_norm',
        ),
        ("[privacy]\nbudget_epsilon = -3\n", r"\[privacy\] privacy settings must be positive"),
        (
            "[privacy]\nepsilon_per_job = '4'\n",
            r"\[privacy\] values must be finite numbers \(got \{'epsilon_per_job': '4'\}\)",
        ),
        ("[privacy]\nbudget_epsilon = true\n", r"\[privacy\] values must be finite numbers"),
        ("[privacy]\nepsilon_per_job = nan\n", r"\[privacy\] values must be finite numbers"),
        ("[privacy]\nbudget_epsilon = inf\n", r"\[privacy\] values must be finite numbers"),
        (
            "[review]\nextra_allowed_imports = 'scipy'\n",
            r"\[review\] extra_allowed_imports must be a list of names",
        ),
        (
            "[review]\nextra_allowed_imports = [1]\n",
            r"\[review\] extra_allowed_imports must be a list of names",
        ),
        (
            "[review]\nauto_approve_templates = 'fedavg-4:0123'\n",
            r"\[review\] auto_approve_templates must be a list of names",
        ),
        ("[review\n", r"cannot be read as TOML"),
        ("[release]\nmin_samples = \n", r"cannot be read as TOML"),
    ],
)
def test_mistakes_are_policy_errors_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError, match=message) as caught:
        load_site_policy(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_non_utf8_file_is_a_policy_error(tmp_path: Path) -> None:
    path = tmp_path / POLICY_FILE
    path.write_bytes(b"[review]\n# \xff\xfe\n")
    with pytest.raises(PolicyError, match=re.escape(f"{path}: cannot be read as TOML")):
        load_site_policy(path)


def test_policy_error_is_a_value_error() -> None:
    assert issubclass(PolicyError, ValueError)
