"""The login backoff's and the gate-refusal records' bookkeeping (no site): what is admitted, locked, recorded."""

from __future__ import annotations

import threading

from datasite_setup.site.access import RefusalRecords
from datasite_setup.site.login_throttle import ACCOUNT_FACTOR, ADDRESS_FACTOR, LoginThrottle
from policies import LimitSettings

ADA = "ada@university.example"
LIMITS = LimitSettings(login_failures=3, login_backoff_seconds=5, login_backoff_max_seconds=100)


def throttle_at(now: list[float], limits: LimitSettings = LIMITS) -> LoginThrottle:
    return LoginThrottle(limits, clock=lambda: now[0])


def test_a_burst_is_checked_at_most_login_failures_times_and_locks_once() -> None:
    now = [0.0]
    throttle = throttle_at(now)
    burst = [throttle.begin(ADA, "10.0.0.9") for _ in range(40)]  # all in flight at once
    admitted = [attempt for attempt in burst if attempt.admitted]
    assert len(admitted) == 3  # login_failures: the rest are refused before any bcrypt work
    locks = [lock for attempt in admitted for lock in throttle.finish(attempt, ok=False)]
    assert [(lock.kind, lock.value, lock.address) for lock in locks] == [("account", ADA, "10.0.0.9")]
    assert throttle.begin(ADA, "10.0.0.9").wait == 5.0
    now[0] = 5.5  # the lock is over: one attempt at a time until one succeeds
    probes = [throttle.begin(ADA, "10.0.0.9") for _ in range(5)]
    assert [probe.admitted for probe in probes] == [True, False, False, False, False]
    (lock,) = throttle.finish(probes[0], ok=False)
    assert lock.seconds == 10.0  # doubled
    now[0] = 1000.0  # quiet past login_backoff_max_seconds after the lock: counted afresh
    assert sum(throttle.begin(ADA, "10.0.0.9").admitted for _ in range(10)) == 3


def test_concurrent_threads_cannot_pass_the_threshold() -> None:
    throttle = LoginThrottle(LIMITS)
    admitted: list[bool] = []
    start = threading.Barrier(40)

    def attempt(number: int) -> None:
        start.wait()
        admitted.append(throttle.begin(f"spray{number}@x", "10.0.0.5").admitted)

    threads = [threading.Thread(target=attempt, args=(number,)) for number in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(admitted) == ADDRESS_FACTOR * 3  # the address's threshold, however the threads interleave


def test_an_attacker_elsewhere_never_locks_the_owner_out() -> None:
    now = [0.0]
    throttle = throttle_at(now)
    attackers = [f"10.1.0.{number}" for number in range(ACCOUNT_FACTOR * 3 // 3 + 2)]
    locks = []
    for address in attackers:  # a distributed guess: 3 wrong passwords from each of 12 addresses
        for _ in range(3):
            attempt = throttle.begin(ADA, address)
            if attempt.admitted:
                locks += throttle.finish(attempt, ok=False)
    kinds = [lock.kind for lock in locks]
    assert kinds.count("account_wide") == 1  # past 10 x login_failures the account is watched, once
    assert kinds.count("account") == len(attackers)  # each attacking address is locked on it
    owner = throttle.begin(ADA, "192.168.1.20")  # the owner's own address never failed: admitted
    assert owner.admitted
    assert throttle.finish(owner, ok=True) == []
    newcomer = throttle.begin(ADA, "10.2.0.1")  # while watched, a new address gets one guess, not three
    assert newcomer.admitted
    (lock,) = throttle.finish(newcomer, ok=False)
    assert (lock.kind, lock.address) == (
        "account",
        "10.2.0.1",
    ) and lock.seconds > LIMITS.login_backoff_seconds
    assert not throttle.begin(ADA, "10.2.0.1").admitted
    assert throttle.begin(ADA, "192.168.1.20").admitted  # still not the owner


def test_a_success_clears_only_its_own_address() -> None:
    now = [0.0]
    throttle = throttle_at(now)
    for address in ("10.0.0.1", "10.0.0.2"):
        for _ in range(2):
            throttle.finish(throttle.begin(ADA, address), ok=False)
    throttle.finish(throttle.begin(ADA, "10.0.0.1"), ok=True)
    assert sum(throttle.begin(ADA, "10.0.0.1").admitted for _ in range(5)) == 3  # afresh here
    assert sum(throttle.begin(ADA, "10.0.0.2").admitted for _ in range(5)) == 1  # one failure left there
    unfinished = throttle.begin("bob@x", None)
    assert throttle.finish(unfinished, ok=None) == []  # a check that did not finish gives the slot back
    assert sum(throttle.begin("bob@x", None).admitted for _ in range(5)) == 3


def test_refusal_records_are_bounded_per_key_and_per_site() -> None:
    now = [0.0]
    records = RefusalRecords(window_s=60.0, per_window=4, clock=lambda: now[0])
    described: list[str] = []

    def note(caller: str, path: str = "user.get_all") -> list:
        def describe() -> dict:
            described.append(caller)
            return {"by": caller}

        return records.note(caller, path, "path", describe)

    assert [len(note("ada")) for _ in range(50)] == [1] + [0] * 49  # one record a minute per key
    assert [len(note(f"guest-{n}")) for n in range(10)] == [1, 1, 1] + [0] * 7  # the site's budget: 4
    assert described == ["ada", "guest-0", "guest-1", "guest-2"]  # only records read the store
    now[0] = 61.0  # a new window: keys that went quiet with refusals held back close (half the budget)...
    written = note("ada")  # ...and ada's next record carries the 49 held back
    assert [(r.caller, r.suppressed, r.closing) for r in written] == [
        ("guest-3", 1, True),
        ("guest-4", 1, True),
        ("ada", 49, False),
    ]
    now[0] = 122.0  # the five beyond the closing budget were carried on one shared key
    written = note("bob")
    assert [(r.caller, r.suppressed, r.closing) for r in written] == [("*", 5, True), ("bob", 0, False)]
