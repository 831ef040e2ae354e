"""Backoff on failed logins, per account and per client address (issue 11).

A wrong-password flood used to cost the site one bcrypt check per attempt (every
other user's login slowed from 2 to 5.5 s) and never stopped the attacker. Here,
after ``[limits] login_failures`` failures of one account (``4 ×`` that for one
client address, which may hold several users), the key is locked for
``login_backoff_seconds``, doubling with each further failure up to
``login_backoff_max_seconds``. While locked, an attempt is refused at once,
without the bcrypt work, with an answer that is the same whether the account
exists or not (the key is the e-mail as typed). A success clears the account's
failures; a key left alone for ``login_backoff_max_seconds`` after its last
failure or lock starts afresh.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from policies import LimitSettings

ADDRESS_FACTOR = 4  # one address may hold several users (a hospital's NAT): it gets more failures
MAX_KEYS = 10_000  # past this, keys whose lock and quiet time are over are dropped


@dataclass
class _Key:
    failures: int = 0
    locked_until: float = 0.0
    last: float = 0.0  # the last failure

    def quiet_since(self) -> float:
        return max(self.last, self.locked_until)


@dataclass(frozen=True)
class Lockout:
    """A key that has just been locked: what the audit log records.

    Parameters
    ----------
    kind : {"account", "address"}
        What was locked.
    value : str
        The e-mail as typed, or the client address.
    failures : int
        The failures counted so far.
    seconds : float
        How long the lock lasts.
    """

    kind: str
    value: str
    failures: int
    seconds: float


class LoginThrottle:
    """Failed-login counts and locks of one site (thread-safe).

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
    >>> throttle.failed("eve@x", "10.0.0.9")
    []
    >>> [(lock.kind, lock.seconds) for lock in throttle.failed("eve@x", "10.0.0.9")]
    [('account', 10.0)]
    >>> throttle.wait_seconds("eve@x", "10.0.0.7"), throttle.wait_seconds("ada@x", "10.0.0.7")
    (10.0, 0.0)
    >>> now[0] = 10.5
    >>> throttle.wait_seconds("eve@x", "10.0.0.9")
    0.0
    """

    def __init__(self, limits: LimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._keys: dict[tuple[str, str], _Key] = {}
        self._lock = threading.Lock()

    def wait_seconds(self, account: str, address: str | None) -> float:
        """How long ``account`` (from ``address``) must wait before its next attempt; 0 when it may try.

        Parameters
        ----------
        account : str
            The e-mail as typed.
        address : str or None
            The client's address (None when unknown: only the account counts).

        Returns
        -------
        float
            Seconds left of the longer of the account's and the address's lock.
        """
        now = self._clock()
        with self._lock:
            waits = [key.locked_until - now for key in self._entries(account, address, create=False)]
        return max([0.0, *waits])

    def failed(self, account: str, address: str | None) -> list[Lockout]:
        """Count a failed attempt; the keys it locks (an empty list while under the thresholds).

        Parameters
        ----------
        account : str
            The e-mail as typed.
        address : str or None
            The client's address.

        Returns
        -------
        list of Lockout
            One per key locked by this failure: what the audit log records.
        """
        now = self._clock()
        locks: list[Lockout] = []
        with self._lock:
            self._prune(now)
            for (kind, value), key in zip(
                self._names(account, address), self._entries(account, address, create=True), strict=True
            ):
                if key.failures and now > key.quiet_since() + self.limits.login_backoff_max_seconds:
                    key.failures = 0  # quiet long enough: start afresh
                key.failures += 1
                key.last = now
                threshold = self.limits.login_failures * (ADDRESS_FACTOR if kind == "address" else 1)
                if key.failures >= threshold:
                    seconds = float(
                        min(
                            self.limits.login_backoff_seconds * 2 ** (key.failures - threshold),
                            self.limits.login_backoff_max_seconds,
                        )
                    )
                    if key.locked_until <= now:  # one record per lockout: not for attempts already in flight
                        locks.append(Lockout(kind, value, key.failures, seconds))
                    key.locked_until = now + seconds
        return locks

    def succeeded(self, account: str, address: str | None) -> None:
        """Clear the failures of ``account`` after a successful login.

        The address keeps its count (an attacker's own account must not wipe its failures on others);
        it starts afresh once quiet for ``login_backoff_max_seconds`` after its lock.
        """
        with self._lock:
            self._keys.pop(self._names(account, None)[0], None)

    @staticmethod
    def _names(account: str, address: str | None) -> list[tuple[str, str]]:
        names = [("account", account.strip().lower()[:320])]
        if address:
            names.append(("address", address))
        return names

    def _entries(self, account: str, address: str | None, *, create: bool) -> list[_Key]:
        names = self._names(account, address)
        if create:
            return [self._keys.setdefault(name, _Key()) for name in names]
        return [self._keys[name] for name in names if name in self._keys]

    def _prune(self, now: float) -> None:
        if len(self._keys) < MAX_KEYS:
            return
        quiet = self.limits.login_backoff_max_seconds
        for name, key in list(self._keys.items()):
            if now > key.quiet_since() + quiet:
                del self._keys[name]


def locked_message(seconds: float) -> str:
    """The answer to an attempt while locked: the same for every account, known or not.

    Examples
    --------
    >>> locked_message(3.2)
    'Too many failed logins: try again in 4 s.'
    """
    return f"Too many failed logins: try again in {int(seconds) + 1} s."
