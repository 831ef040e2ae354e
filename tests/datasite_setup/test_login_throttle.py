"""The login backoff's bookkeeping (no site): locks, and one audit record per lockout."""

from __future__ import annotations

from datasite_setup.site.login_throttle import LoginThrottle
from policies import LimitSettings


def test_failures_in_flight_past_the_threshold_record_one_lockout() -> None:
    now = [0.0]
    throttle = LoginThrottle(LimitSettings(login_failures=3, login_backoff_seconds=5), clock=lambda: now[0])
    records = [throttle.failed("ada@university.example", None) for _ in range(8)]  # a burst, checked at once
    assert [len(found) for found in records] == [0, 0, 1, 0, 0, 0, 0, 0]
    assert throttle.wait_seconds("ada@university.example", None) > 0
    now[0] += 1000.0  # quiet past login_backoff_max_seconds after the lock: counted afresh
    again = [throttle.failed("ada@university.example", None) for _ in range(3)]
    assert [len(found) for found in again] == [0, 0, 1]
