"""``[limits]`` of the site policy: read, defaulted and validated up front (issue 11)."""

from __future__ import annotations

import pytest

from policies import LimitSettings, PolicyError, load_site_policy


def test_limits_default_without_a_section(tmp_path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[release]\nmin_samples = 20\n")
    assert load_site_policy(path).limits == LimitSettings()
    assert LimitSettings().max_request_mb == 64 and LimitSettings().max_pending_requests == 8


def test_limits_are_read(tmp_path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[limits]\nmax_request_mb = 512\nresearcher_store_mb = 1024\nmax_pending_requests = 3\n")
    limits = load_site_policy(path).limits
    assert (limits.max_request_bytes, limits.researcher_store_mb, limits.max_pending_requests) == (
        512 * 1024 * 1024,
        1024,
        3,
    )


def test_body_limits_default_and_are_read(tmp_path) -> None:
    limits = LimitSettings(max_request_mb=16)
    assert limits.max_inflight_bytes == 64 * 1024 * 1024  # 4 x max_request_mb when not set
    assert (limits.max_uploads_per_address, limits.body_idle_seconds, limits.body_total_seconds) == (
        8,
        30,
        300,
    )
    path = tmp_path / "policy.toml"
    path.write_text(
        "[limits]\nmax_inflight_mb = 100\nmax_uploads_per_address = 2\n"
        "body_idle_seconds = 5\nbody_total_seconds = 60\n"
    )
    limits = load_site_policy(path).limits
    assert (limits.max_inflight_bytes, limits.max_uploads_per_address) == (100 * 1024 * 1024, 2)
    assert (limits.body_idle_seconds, limits.body_total_seconds) == (5, 60)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_request_mb = 0", r"\[limits\] max_request_mb must be a number from 1 to 16384 \(got 0\)"),
        ("max_request_mb = 'big'", r"max_request_mb must be a number"),
        ("researcher_store_mb = -1", r"researcher_store_mb must be a number from 1"),
        ("max_pending_requests = 2.5", r"max_pending_requests must be an integer from 1 to 10000"),
        ("login_failures = true", r"login_failures must be an integer"),
        (
            "login_backoff_seconds = 10\nlogin_backoff_max_seconds = 5",
            r"login_backoff_max_seconds must be >=",
        ),
        ("max_requests = 3", r"unknown key\(s\) \['max_requests'\] in \[limits\]"),
        ("max_inflight_mb = 32", r"max_inflight_mb must be >= max_request_mb"),
        ("max_uploads_per_address = 0", r"max_uploads_per_address must be an integer from 1 to 10000"),
        ("body_idle_seconds = 0", r"body_idle_seconds must be a number from 0.5 to 3600"),
        (
            "body_idle_seconds = 60\nbody_total_seconds = 30",
            r"body_total_seconds must be >= body_idle_seconds",
        ),
    ],
)
def test_a_wrong_limit_names_the_file_the_key_and_the_range(tmp_path, text, message) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(f"[limits]\n{text}\n")
    with pytest.raises(PolicyError, match=message) as raised:
        load_site_policy(path)
    assert str(path) in str(raised.value)
