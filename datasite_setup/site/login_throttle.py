"""Backoff on failed logins, per account and client address (issue 11).

A wrong-password flood used to cost the site one bcrypt check per attempt (every
other user's login slowed from 2 to 5.5 s) and never stopped the attacker. The
policy, with ``n = [limits] login_failures``:

- **an account from one address** (the e-mail as typed, and the client's
  address): after ``n`` failures it is refused for ``login_backoff_seconds``,
  doubling with each further failure up to ``login_backoff_max_seconds``;
- **an address** (any accounts; it may hold several users, a hospital's NAT):
  likewise after ``ADDRESS_FACTOR × n`` failures;
- **an account across all addresses** (a distributed guess): past
  ``ACCOUNT_FACTOR × n`` failures the account is *watched* for a backoff of its own
  (doubling likewise): while watched, an address that fails on it once is refused on
  it until the watch ends, so each guessing address gets one guess per watch instead
  of ``n`` per backoff. The account-wide count never refuses an address that has not
  failed: an attacker who knows an e-mail cannot lock its owner out — the right
  password from the owner's own address still gets in.

Checking and reserving are one step (``begin``): an attempt is admitted only while
the failures so far plus the attempts still being checked (in flight) stay under
each threshold, so a burst of concurrent wrong passwords costs at most ``n`` bcrypt
checks for one account from one address (``ADDRESS_FACTOR × n`` for one address);
once a key's lock is over, one attempt at a time is admitted until one succeeds.
``finish`` settles the attempt. A refused attempt costs no bcrypt work and gets an
answer that is the same whether the account exists or not. A success clears the
failures of that account from that address only (the account-wide and the address's
counts stay: an attacker's own account must not wipe its failures on others); a key
left alone for ``login_backoff_max_seconds`` after its last failure or lock starts
afresh. Each lock is one ``Lockout``: the caller writes one ``login_lockout`` audit
record per lockout, not per attempt.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from policies import LimitSettings

ADDRESS_FACTOR = 4  # one address may hold several users (a hospital's NAT): it gets more failures
ACCOUNT_FACTOR = 10  # failures of one account over all addresses before it is watched
MAX_KEYS = 10_000  # past this, keys whose lock and quiet time are over are dropped
KINDS = ("account", "address", "account_wide")
"""What a ``Lockout`` locks: an account from one address, an address, an account everywhere (watched)."""


@dataclass
class _Key:
    failures: int = 0
    in_flight: int = 0  # admitted attempts still being checked
    locked_until: float = 0.0
    last: float = 0.0  # the last failure

    def quiet_since(self) -> float:
        return max(self.last, self.locked_until)

    def idle(self, now: float) -> bool:
        return self.in_flight == 0 and self.failures == 0 and self.locked_until <= now


@dataclass(frozen=True)
class Attempt:
    """One login attempt as ``LoginThrottle.begin`` answered it.

    Parameters
    ----------
    account : str
        The e-mail as typed, normalised (stripped, lower case).
    address : str or None
        The client's address.
    wait : float
        0 when the attempt was admitted (and reserved: settle it with ``finish``);
        otherwise the seconds to wait before the next attempt.
    """

    account: str
    address: str | None
    wait: float

    @property
    def admitted(self) -> bool:
        """Whether the password may be checked."""
        return self.wait <= 0


@dataclass(frozen=True)
class Lockout:
    """A key that has just been locked: what the audit log records.

    Parameters
    ----------
    kind : {"account", "address", "account_wide"}
        What was locked: an account from one address, an address, or an account from
        every address that fails on it (watched).
    value : str
        The e-mail as typed, or the client address.
    address : str or None
        For ``account``: the address it is locked from.
    failures : int
        The failures of that key counted so far.
    seconds : float
        How long the lock (or the watch) lasts.
    """

    kind: str
    value: str
    address: str | None
    failures: int
    seconds: float


class LoginThrottle:
    """Failed-login counts and locks of one site (thread-safe); the module docstring has the policy.

    Parameters
    ----------
    limits : LimitSettings
        The site's ``[limits]``: ``login_failures``, ``login_backoff_seconds``,
        ``login_backoff_max_seconds``.
    clock : callable
        Seconds, monotonic (a test's own clock).

    Examples
    --------
    >>> now = [0.0]
    >>> limits = LimitSettings(login_failures=2, login_backoff_seconds=10)
    >>> throttle = LoginThrottle(limits, clock=lambda: now[0])
    >>> burst = [throttle.begin("eve@x", "10.0.0.9") for _ in range(5)]  # five at once: two are checked
    >>> [attempt.admitted for attempt in burst]
    [True, True, False, False, False]
    >>> throttle.finish(burst[0], ok=False)
    []
    >>> [(lock.kind, lock.address, lock.seconds) for lock in throttle.finish(burst[1], ok=False)]
    [('account', '10.0.0.9', 10.0)]
    >>> throttle.begin("eve@x", "10.0.0.9").wait  # locked from that address...
    10.0
    >>> attempt = throttle.begin("eve@x", "10.0.0.7")  # ...not from another one
    >>> attempt.admitted, throttle.finish(attempt, ok=True)
    (True, [])
    >>> now[0] = 10.5
    >>> throttle.begin("eve@x", "10.0.0.9").admitted
    True
    """

    def __init__(self, limits: LimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._keys: dict[tuple[str, ...], _Key] = {}
        self._lock = threading.Lock()

    def begin(self, account: str, address: str | None) -> Attempt:
        """Admit and reserve an attempt in one step, or say how long to wait (nothing reserved then).

        Parameters
        ----------
        account : str
            The e-mail as typed.
        address : str or None
            The client's address (None when unknown: the account alone is the key).

        Returns
        -------
        Attempt
            Admitted (``wait == 0``, settle it with ``finish``), or refused with the seconds
            left of the longest lock in its way.
        """
        now = self._clock()
        account = _normalised(account)
        with self._lock:
            self._prune(now)
            pair, by_address, everywhere = self._entries(account, address)
            for key in (pair, by_address, everywhere):
                if key is not None and key.in_flight == 0 and self._quiet(key, now):
                    key.failures, key.locked_until = 0, 0.0  # quiet long enough: start afresh
            waits = [
                self._wait(key, threshold, now)
                for key, threshold in (
                    (pair, 1 if everywhere.locked_until > now else self.limits.login_failures),
                    (by_address, ADDRESS_FACTOR * self.limits.login_failures),
                )
                if key is not None
            ]
            wait = max([0.0, *waits])
            if wait <= 0:
                for key in (pair, by_address, everywhere):
                    if key is not None:
                        key.in_flight += 1
        return Attempt(account, address, wait)

    def finish(self, attempt: Attempt, ok: bool | None) -> list[Lockout]:
        """Settle an admitted attempt: its outcome counted, the keys it locks returned.

        Parameters
        ----------
        attempt : Attempt
            What ``begin`` answered (a refused one is ignored).
        ok : bool or None
            True for the right password, False for a wrong one (or an unknown e-mail),
            None when the check did not finish (only the reservation is given back).

        Returns
        -------
        list of Lockout
            One per key this failure locked (an empty list while under the thresholds, or
            when the key was locked already): what the audit log records.
        """
        if not attempt.admitted:
            return []
        now = self._clock()
        locks: list[Lockout] = []
        with self._lock:
            pair, by_address, everywhere = self._entries(attempt.account, attempt.address)
            for key in (pair, by_address, everywhere):
                if key is not None:
                    key.in_flight = max(0, key.in_flight - 1)
            if ok:
                pair.failures, pair.locked_until = 0, 0.0
            elif ok is False:
                watched_until = everywhere.locked_until if everywhere.locked_until > now else 0.0
                counted = [
                    ("account", attempt.account, pair, 1 if watched_until else self.limits.login_failures),
                    (
                        "address",
                        attempt.address or "",
                        by_address,
                        ADDRESS_FACTOR * self.limits.login_failures,
                    ),
                    (
                        "account_wide",
                        attempt.account,
                        everywhere,
                        ACCOUNT_FACTOR * self.limits.login_failures,
                    ),
                ]
                for kind, value, key, threshold in counted:
                    if key is None:
                        continue
                    key.failures += 1
                    key.last = now
                    if key.failures < threshold:
                        continue
                    seconds = self._backoff(key.failures - threshold)
                    if kind == "account":  # a watched account: refused from here until the watch ends
                        seconds = max(seconds, watched_until - now)
                    if key.locked_until <= now:  # one record per lockout: not for attempts already in flight
                        address = attempt.address if kind == "account" else None
                        locks.append(Lockout(kind, value, address, key.failures, seconds))
                    key.locked_until = max(key.locked_until, now + seconds)
            self._drop_idle(attempt.account, attempt.address, now)
        return locks

    def _wait(self, key: _Key, threshold: int, now: float) -> float:
        """Seconds ``key`` must wait: its lock, or the backoff while its attempts in flight fill the room."""
        if key.locked_until > now:
            return key.locked_until - now
        if key.in_flight >= max(1, threshold - key.failures):  # after a lock: one attempt at a time
            return float(self.limits.login_backoff_seconds)
        return 0.0

    def _backoff(self, past_threshold: int) -> float:
        first, longest = self.limits.login_backoff_seconds, self.limits.login_backoff_max_seconds
        return float(min(first * 2 ** min(past_threshold, 64), longest))

    def _quiet(self, key: _Key, now: float) -> bool:
        return bool(key.failures) and now > key.quiet_since() + self.limits.login_backoff_max_seconds

    @staticmethod
    def _names(
        account: str, address: str | None
    ) -> tuple[tuple[str, ...], tuple[str, ...] | None, tuple[str, ...]]:
        return (
            ("pair", account, address or ""),
            (("address", address) if address else None),
            ("account", account),
        )

    def _entries(self, account: str, address: str | None) -> tuple[_Key, _Key | None, _Key]:
        pair, by_address, everywhere = self._names(account, address)
        return (
            self._keys.setdefault(pair, _Key()),
            self._keys.setdefault(by_address, _Key()) if by_address else None,
            self._keys.setdefault(everywhere, _Key()),
        )

    def _drop_idle(self, account: str, address: str | None, now: float) -> None:
        """Forget this attempt's keys that hold nothing (a successful login leaves no entry behind)."""
        for name in self._names(account, address):
            if name is not None and name in self._keys and self._keys[name].idle(now):
                del self._keys[name]

    def _prune(self, now: float) -> None:
        if len(self._keys) < MAX_KEYS:
            return
        quiet = self.limits.login_backoff_max_seconds
        for name, key in list(self._keys.items()):
            if key.in_flight == 0 and now > key.quiet_since() + quiet:
                del self._keys[name]


def _normalised(account: str) -> str:
    return account.strip().lower()[:320]


def locked_message(seconds: float) -> str:
    """The answer to an attempt while locked: the same for every account, known or not.

    Examples
    --------
    >>> locked_message(3.2)
    'Too many failed logins: try again in 4 s.'
    """
    return f"Too many failed logins: try again in {int(seconds) + 1} s."
