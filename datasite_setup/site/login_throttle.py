"""Backoff on failed logins, per account and client address (issue 11).

A wrong-password flood used to cost the site one bcrypt check per attempt (every
other user's login slowed from 2 to 5.5 s) and never stopped the attacker. The
policy, with ``n = [limits] login_failures``:

- **an account from one address** (the e-mail as typed, and the client's
  address): after ``n`` failures it is refused for ``login_backoff_seconds``,
  doubling with each further failure up to ``login_backoff_max_seconds``;
- **an address** (any accounts; it may hold several users, a hospital's NAT):
  likewise after ``ADDRESS_FACTOR × n`` failures;
- **an account across all addresses** (a distributed guess): from addresses it
  does not know, its failures plus its checks under way stay under
  ``ACCOUNT_FACTOR × n``; past that many failures the account is
  *watched*, until ``login_backoff_max_seconds`` pass without a failure after its
  current backoff. While watched, the addresses it does not know **share one
  password check per backoff period** (``login_backoff_seconds`` after the watch
  begins, doubling with each further failure up to ``login_backoff_max_seconds``),
  one at a time, and an address that fails on it then is refused on it until the
  watch, as it stood, could end. Rotating client addresses buys an attacker
  ``ACCOUNT_FACTOR × n`` guesses before the watch and one per backoff period in it:
  30 new addresses at once get one check, not 30 (39 addresses in turn for 75 s at
  the default ``[limits]``: 55 checks and one audit record, before 95 and 46).

An address *counts* as what one host can hold: an IPv6 address by its /64 prefix (one
host is routinely given a whole /64), an IPv4-mapped IPv6 address as its IPv4 address
(``address_key``); the audit records name the address so.

**Known-good addresses.** An address that logged into an account successfully is
remembered for it (the ``KNOWN_GOOD_PER_ACCOUNT`` most recent): the account-wide rule
never refuses it and a watch does not cut its own ``n`` failures to one, so an
attacker who knows an e-mail cannot lock its owner out — the right password from an
address the owner used before still gets in. The trade-off: a real user's *new*
address (a new laptop, a phone on another network) during a watch is one of the
addresses the account does not know, so it waits for the shared check like the
attacker's, and may lose the race for it; the owner can log in from an address used
before (or wait for the watch to end) and the rule bounds the attacker to one guess
per backoff period either way.

Checking and reserving are one step (``begin``): an attempt is admitted only while
the failures so far plus the attempts still being checked (in flight) stay under
each threshold, so a burst of concurrent wrong passwords costs at most ``n`` bcrypt
checks for one account from one address (``ADDRESS_FACTOR × n`` for one address,
``ACCOUNT_FACTOR × n`` for one account from addresses it does not know); once a
key's lock is over, one attempt at a time is admitted until one succeeds. ``finish``
settles the attempt. A refused attempt costs no bcrypt work and gets an answer that
is the same whether the account exists or not. A success clears the failures of that
account from that address only (the account-wide and the address's counts stay: an
attacker's own account must not wipe its failures on others); a key left alone for
``login_backoff_max_seconds`` after its last failure or lock starts afresh. Each lock
is one ``Lockout``: the caller writes one ``login_lockout`` audit record per lockout,
not per attempt — and one per watch of an account (``account_wide``), not one per
address refused during it.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from policies import LimitSettings

ADDRESS_FACTOR = 4  # one address may hold several users (a hospital's NAT): it gets more failures
ACCOUNT_FACTOR = 10  # failures of one account over all addresses before it is watched
KNOWN_GOOD_PER_ACCOUNT = 8  # addresses remembered per account: a user's few machines and networks
MAX_KEYS = 10_000  # past this, keys whose lock and quiet time are over are dropped
MAX_KNOWN_ACCOUNTS = 10_000  # accounts whose known-good addresses are kept (least recent dropped first)
IPV6_PREFIX = 64  # the block one IPv6 host is routinely given
KINDS = ("account", "address", "account_wide")
"""What a ``Lockout`` locks: an account from one address, an address, an account everywhere (watched)."""


@dataclass
class _Key:
    failures: int = 0
    in_flight: int = 0  # admitted attempts still being checked
    locked_until: float = 0.0  # for a watched account: when the shared check is next free
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
        The client's address as counted (``address_key``: an IPv6 address by its /64).
    wait : float
        0 when the attempt was admitted (and reserved: settle it with ``finish``);
        otherwise the seconds to wait before the next attempt.
    known_good : bool
        Whether the address logged into the account before: the account-wide rule
        does not apply to it.
    """

    account: str
    address: str | None
    wait: float
    known_good: bool = False

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
        every address it does not know (watched: one shared check per backoff period).
    value : str
        The e-mail as typed, or the client address (an IPv6 one as its /64).
    address : str or None
        For ``account``: the address it is locked from.
    failures : int
        The failures of that key counted so far.
    seconds : float
        How long the lock lasts; for ``account_wide``, the first period between
        shared checks (the watch lasts until the account has been quiet for
        ``login_backoff_max_seconds``).
    """

    kind: str
    value: str
    address: str | None
    failures: int
    seconds: float

    def audit_fields(self) -> dict[str, object]:
        """The ``login_lockout`` audit record's fields (the address only when there is one).

        Examples
        --------
        >>> Lockout("address", "127.0.0.9", None, 12, 2.0).audit_fields()
        {'kind': 'address', 'value': '127.0.0.9', 'failures': 12, 'seconds': 2.0}
        """
        address = {"address": self.address} if self.address else {}
        return {
            "kind": self.kind,
            "value": self.value,
            **address,
            "failures": self.failures,
            "seconds": round(self.seconds, 1),
        }


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
        self._known: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()  # account -> addresses
        self._lock = threading.Lock()

    @property
    def _account_threshold(self) -> int:
        return ACCOUNT_FACTOR * self.limits.login_failures

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
        account, address = _normalised(account), address_key(address)
        with self._lock:
            self._prune(now)
            pair, by_address, everywhere = self._entries(account, address)
            for key in (pair, by_address, everywhere):
                if key is not None and key.in_flight == 0 and self._quiet(key, now):
                    key.failures, key.locked_until = 0, 0.0  # quiet long enough: start afresh
            known_good = self._is_known_good(account, address)
            watched = everywhere.failures >= self._account_threshold
            limits: list[tuple[_Key | None, int]] = [
                (pair, 1 if watched and not known_good else self.limits.login_failures),
                (by_address, ADDRESS_FACTOR * self.limits.login_failures),
            ]
            if not known_good:  # the account-wide rule: one shared check per backoff while watched
                limits.append((everywhere, self._account_threshold))
            wait = max([0.0, *(self._wait(key, threshold, now) for key, threshold in limits if key)])
            if wait <= 0:
                for key, _ in limits:
                    if key is not None:
                        key.in_flight += 1
        return Attempt(account, address, wait, known_good)

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
            when the key was locked already, or for an address refused during a watch):
            what the audit log records.
        """
        if not attempt.admitted:
            return []
        now = self._clock()
        with self._lock:
            pair, by_address, everywhere = self._entries(attempt.account, attempt.address)
            reserved = (pair, by_address) if attempt.known_good else (pair, by_address, everywhere)
            for key in reserved:
                if key is not None:
                    key.in_flight = max(0, key.in_flight - 1)
            locks: list[Lockout] = []
            if ok:
                pair.failures, pair.locked_until = 0, 0.0
                self._remember(attempt.account, attempt.address)
            elif ok is False:
                locks = self._count_failure(attempt, pair, by_address, everywhere, now)
            self._drop_idle(attempt.account, attempt.address, now)
        return locks

    def _count_failure(
        self, attempt: Attempt, pair: _Key, by_address: _Key | None, everywhere: _Key, now: float
    ) -> list[Lockout]:
        """Count a wrong password on the attempt's keys; the locks that begin with it."""
        watched = everywhere.failures >= self._account_threshold and not attempt.known_good
        # the account everywhere first: a watched account's pair lock lasts until the watch can end
        watch = self._fail(everywhere, self._account_threshold, now)
        if watch is not None and everywhere.failures > self._account_threshold:
            watch = None  # the watch began earlier: its one record is written
        pair_lock = self._fail(pair, 1 if watched else self.limits.login_failures, now)
        if watched:  # refused from here until the watch ends; the watch's record covers it
            end = everywhere.quiet_since() + self.limits.login_backoff_max_seconds
            pair.locked_until = max(pair.locked_until, end)
            pair_lock = None
        address_lock = None
        if by_address is not None:
            address_lock = self._fail(by_address, ADDRESS_FACTOR * self.limits.login_failures, now)
        locks = []
        for kind, value, lock in (
            ("account", attempt.account, pair_lock),
            ("address", attempt.address or "", address_lock),
            ("account_wide", attempt.account, watch),
        ):
            if lock is not None:
                address = attempt.address if kind == "account" else None
                locks.append(Lockout(kind, value, address, failures=lock[0], seconds=lock[1]))
        return locks

    def _fail(self, key: _Key, threshold: int, now: float) -> tuple[int, float] | None:
        """Count one failure on ``key`` and lock it past ``threshold``: (failures, seconds) of a new lock."""
        key.failures += 1
        key.last = now
        if key.failures < threshold:
            return None
        seconds = self._backoff(key.failures - threshold)
        new = key.locked_until <= now  # one record per lockout: not for attempts already in flight
        key.locked_until = max(key.locked_until, now + seconds)
        return (key.failures, seconds) if new else None

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

    def _is_known_good(self, account: str, address: str | None) -> bool:
        return (address or "") in self._known.get(account, ())

    def _remember(self, account: str, address: str | None) -> None:
        """Remember ``address`` as known-good for ``account`` (the latest few, of the latest accounts)."""
        addresses = self._known.setdefault(account, OrderedDict())
        self._known.move_to_end(account)
        addresses[address or ""] = None
        addresses.move_to_end(address or "")
        while len(addresses) > KNOWN_GOOD_PER_ACCOUNT:
            addresses.popitem(last=False)
        while len(self._known) > MAX_KNOWN_ACCOUNTS:
            self._known.popitem(last=False)

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


def address_key(address: str | None) -> str | None:
    """A client address as the throttle counts it: what one host can hold.

    Parameters
    ----------
    address : str or None
        The client's address as the server saw it.

    Returns
    -------
    str or None
        An IPv6 address as its /64 network (one host is routinely given a whole /64,
        so each of its addresses would otherwise be a fresh client), an IPv4-mapped
        IPv6 address as its IPv4 address, an IPv4 address as itself; anything else
        (a test client's name) stripped; None stays None.

    Examples
    --------
    >>> address_key("2001:db8:7:1:aaaa::1"), address_key("2001:db8:7:1:bbbb::2")
    ('2001:db8:7:1::/64', '2001:db8:7:1::/64')
    >>> address_key("::ffff:10.0.0.9"), address_key(" 10.0.0.9 "), address_key("testclient")
    ('10.0.0.9', '10.0.0.9', 'testclient')
    """
    if address is None:
        return None
    text = address.strip()
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])  # a zone (fe80::1%eth0) names no other host
    except ValueError:
        return text[:100]  # bounded: it is a key held in memory
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # a dual-stack socket's view of an IPv4 client
            return str(ip.ipv4_mapped)
        return str(
            ipaddress.IPv6Network((int(ip) >> (128 - IPV6_PREFIX) << (128 - IPV6_PREFIX), IPV6_PREFIX))
        )
    return str(ip)


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
