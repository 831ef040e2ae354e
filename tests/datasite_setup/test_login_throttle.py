"""The login backoff's and the gate-refusal records' bookkeeping (no site): what is admitted, locked, recorded."""

from __future__ import annotations

import threading

from datasite_setup.site.access import RefusalRecords
from datasite_setup.site.login_throttle import (
    ACCOUNT_FACTOR,
    ADDRESS_FACTOR,
    KNOWN_GOOD_PER_ACCOUNT,
    Lockout,
    LoginThrottle,
    address_key,
)
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
    attackers = [f"10.1.0.{number}" for number in range(ACCOUNT_FACTOR + 2)]
    locks = []
    for address in attackers:  # a distributed guess: 3 wrong passwords from each of 12 addresses
        for _ in range(3):
            locks += _guess(throttle, address)[1]
    kinds = [lock.kind for lock in locks]
    assert kinds.count("account_wide") == 1  # past 10 x login_failures the account is watched, once
    assert kinds.count("account") == ACCOUNT_FACTOR  # the addresses locked before the watch; none after
    owner = throttle.begin(ADA, "192.168.1.20")  # an address that never failed waits for the shared check
    assert not owner.admitted and owner.wait == LIMITS.login_backoff_seconds
    now[0] += owner.wait
    assert _login(throttle, "192.168.1.20")  # then the owner gets in
    assert _guess(throttle, attackers[-1]) == (True, [])  # the attacker takes the next shared check
    assert throttle.begin(ADA, attackers[0]).wait == 10.0  # and waits a doubled backoff for another
    assert _login(throttle, "192.168.1.20")  # while the owner, known-good now, gets in again


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


def _guess(throttle: LoginThrottle, address: str, account: str = ADA) -> tuple[bool, list[Lockout]]:
    """One wrong password from ``address``: whether it was checked, and the locks it began."""
    attempt = throttle.begin(account, address)
    return attempt.admitted, throttle.finish(attempt, ok=False) if attempt.admitted else []


def _watch(throttle: LoginThrottle, account: str = ADA) -> list[Lockout]:
    """Make ``account`` watched by a distributed guess (each address below its own threshold)."""
    locks: list[Lockout] = []
    for number in range(ACCOUNT_FACTOR * LIMITS.login_failures):
        admitted, new = _guess(throttle, f"10.1.{number // 2}.{number % 2}", account)
        assert admitted
        locks += new
    return locks


def _login(throttle: LoginThrottle, address: str, account: str = ADA) -> bool:
    attempt = throttle.begin(account, address)
    if attempt.admitted:
        throttle.finish(attempt, ok=True)
    return attempt.admitted


def test_rotating_addresses_while_watched_share_one_check_per_backoff() -> None:
    now = [0.0]
    throttle = throttle_at(now)
    locks = _watch(throttle)
    assert [lock.kind for lock in locks] == ["account_wide"]  # no address reached its own threshold
    burst = [throttle.begin(ADA, f"10.9.0.{number}") for number in range(30)]  # 30 new addresses at once
    assert sum(attempt.admitted for attempt in burst) == 0  # the first shared check waits one backoff
    assert all(attempt.wait == LIMITS.login_backoff_seconds for attempt in burst)
    now[0] = 5.0
    burst = [throttle.begin(ADA, f"10.9.1.{number}") for number in range(30)]
    assert [attempt.admitted for attempt in burst] == [True] + [False] * 29  # one check for all 30
    assert throttle.finish(burst[0], ok=False) == []  # the watch's one record is written already
    assert throttle.begin(ADA, "10.9.2.1").wait == 10.0  # the next shared check: the backoff doubled
    now[0] = 15.0  # it is free: not for an address that failed while watched, refused until the watch
    refused = throttle.begin(ADA, "10.9.1.0")  # could end (the shared check's backoff, then quiet)
    assert not refused.admitted and refused.wait == 15 + LIMITS.login_backoff_max_seconds - now[0]
    # an attacker with a fresh address every 0.25 s for 75 s
    checked, records = 0, list[Lockout]()
    for step in range(300):
        now[0] = 15.0 + step * 0.25
        admitted, new = _guess(throttle, f"10.8.{step // 200}.{step % 200}")
        checked, records = checked + admitted, records + new
    assert checked == 3  # at 15, 35 and 75 s (before: one per address, 300)
    assert records == []  # one login_lockout record per watch, not one per address
    fresh = throttle.begin(ADA, "10.7.0.1")  # the next waits 80 s after the last
    assert not fresh.admitted and fresh.wait == 75 + 80 - now[0]


def test_a_known_good_address_is_never_refused_by_the_account_wide_rule() -> None:
    now = [0.0]
    throttle = throttle_at(now)
    assert _login(throttle, "192.168.1.20")  # the owner logged in before the attack
    _watch(throttle)
    busy = throttle.begin(ADA, "10.9.0.1")  # the attacker holds no shared check yet: watched, waiting
    assert not busy.admitted
    owner = throttle.begin(ADA, "192.168.1.20")
    assert owner.admitted and owner.known_good
    assert throttle.finish(owner, ok=False) == []  # a typo: the owner keeps login_failures, not one
    assert throttle.finish(throttle.begin(ADA, "192.168.1.20"), ok=False) == []
    assert _login(throttle, "192.168.1.20")  # and gets in, however the attacker keeps the account watched
    for step in range(100):
        now[0] = step * 1.0
        _guess(throttle, f"10.6.0.{step}")
        assert _login(throttle, "192.168.1.20"), step
    # the trade-off: a never-seen address of the owner waits for the shared check like the attacker
    fresh = throttle.begin(ADA, "172.16.0.5")
    assert not fresh.admitted and fresh.wait > 0 and not fresh.known_good
    now[0] += fresh.wait
    assert _login(throttle, "172.16.0.5")  # once it is free, the right password gets in, and is remembered
    assert throttle.begin(ADA, "172.16.0.5").known_good


def test_known_good_addresses_are_bounded_per_account() -> None:
    throttle = throttle_at([0.0])
    addresses = [f"192.168.2.{number}" for number in range(KNOWN_GOOD_PER_ACCOUNT + 1)]
    for address in addresses:
        assert _login(throttle, address)
    assert not throttle.begin(ADA, addresses[0]).known_good  # the least recent is forgotten
    assert all(throttle.begin(ADA, address).known_good for address in addresses[1:])
    assert not throttle.begin("bob@x", addresses[1]).known_good  # known for that account only


def test_an_ipv6_host_counts_as_its_64_and_a_mapped_ipv4_as_the_ipv4() -> None:
    throttle = throttle_at([0.0])
    one_host = [f"2001:db8:7:1::{number:x}" for number in range(1, 40)]  # each a fresh address in one /64
    checked = [admitted for address in one_host for admitted, _ in [_guess(throttle, address)]]
    assert sum(checked) == LIMITS.login_failures  # one account from one address, not 39
    assert throttle.begin(ADA, "2001:db8:7:2::1").admitted  # the next /64 is another client
    for _ in range(LIMITS.login_failures):
        _guess(throttle, "::ffff:10.0.0.8")
    refused = throttle.begin(ADA, "10.0.0.8")
    assert not refused.admitted and refused.address == "10.0.0.8"
    assert address_key("fe80::1%eth0") == "fe80::/64"


def test_a_distributed_burst_before_a_watch_is_capped_across_addresses() -> None:
    now = [0.0]
    throttle = throttle_at(now)
    assert _login(throttle, "192.168.1.20")
    burst = [throttle.begin(ADA, f"10.5.0.{number}") for number in range(100)]  # 100 addresses at once
    admitted = [attempt for attempt in burst if attempt.admitted]
    assert len(admitted) == ACCOUNT_FACTOR * LIMITS.login_failures  # 30, not 100
    assert throttle.begin(ADA, "192.168.1.20").admitted  # the known-good owner is not in the cap
    locks = [lock for attempt in admitted for lock in throttle.finish(attempt, ok=False)]
    assert [(lock.kind, lock.failures) for lock in locks] == [("account_wide", 30)]


def test_a_watch_ends_when_quiet_and_a_new_one_is_recorded_again() -> None:
    now = [0.0]
    throttle = throttle_at(now)
    assert len(_watch(throttle)) == 1
    now[0] = 5.0 + LIMITS.login_backoff_max_seconds + 1  # quiet for login_backoff_max_seconds after it
    admitted = [_guess(throttle, "10.4.0.1")[0] for _ in range(5)]
    assert admitted == [True] * 3 + [False] * 2  # login_failures again from a new address
    locks = [lock for number in range(1, 30) for lock in _guess(throttle, f"10.4.1.{number}")[1]]
    assert [lock.kind for lock in locks] == ["account_wide"]  # the new watch: one record again


def test_refusal_records_are_bounded_per_caller_and_per_site() -> None:
    now = [0.0]
    records = RefusalRecords(window_s=60.0, per_window=4, clock=lambda: now[0])
    described: list[str] = []

    def note(caller: str, path: str = "user.get_all") -> list:
        def describe() -> dict:
            described.append(caller)
            return {"by": caller}

        return records.note(caller, path, "path", describe)

    assert [len(note("ada")) for _ in range(50)] == [1] + [0] * 49  # one record a minute per (caller, call)
    assert [len(note(f"guest-{n}")) for n in range(10)] == [1, 1, 1] + [0] * 7  # the site's budget: 4
    assert described == ["ada"] + [f"guest-{n}" for n in range(10)]  # once per caller and window
    now[0] = 61.0  # a new window starts with the first refusals that waited for room (4 of 7)...
    assert [(r.caller, r.closing) for r in records.flush()] == [(f"guest-{n}", False) for n in range(3, 7)]
    now[0] = 122.0  # ...then the other 3 (first refusals before counts)...
    assert [(r.caller, r.closing) for r in records.flush()] == [(f"guest-{n}", False) for n in range(7, 10)]
    now[0] = 183.0  # ...then ada's count of the 49 held back, once
    assert [(r.caller, r.suppressed, r.closing) for r in records.flush()] == [("ada", 49, True)]
    assert records.flush() == []
