"""The site's console sign-ins: a random token per signed-in owner, held in the site's memory for 8 hours.

``fedimg console`` sends an owner's e-mail and password to the site once (``owner_login``);
the site checks them against its own user store and hands back a token the console
presents with every later request. The token is 32 random bytes (hex), never written to
disk and gone when the site restarts (the owner signs in again). The site keeps only its
sha256, so a token cannot be read back out of the table, and a lookup by hash costs the
same whatever the token. A token expires ``TOKEN_TTL_S`` after it was issued, or when
the owner signs out (``owner_logout``).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TOKEN_TTL_S = 8 * 3600.0  # a working day: the console's own session is no longer than this
TOKEN_BYTES = 32
MAX_TOKENS = 1000  # signed-in consoles per site; past this the oldest token is dropped


@dataclass(frozen=True)
class OwnerSession:
    """Who a valid token signs in, and until when.

    Parameters
    ----------
    owner : str
        The owner's e-mail (every action is audited with it).
    name : str
        The owner's display name.
    signing_key : object
        The owner's PySyft signing key: the site acts with a client holding it.
    expires : float
        Unix time after which the token is refused.
    """

    owner: str
    name: str
    signing_key: Any
    expires: float


class OwnerTokens:
    """The site's table of console tokens (thread-safe).

    Parameters
    ----------
    ttl : float, default TOKEN_TTL_S
        Seconds a token is valid after it is issued.
    clock : callable, default time.time
        Unix time (a test's own clock).

    Examples
    --------
    >>> now = [1000.0]
    >>> tokens = OwnerTokens(ttl=60.0, clock=lambda: now[0])
    >>> token, expires = tokens.issue("grace@hospital.example", "Grace Hopper", signing_key=None)
    >>> len(token), expires
    (64, 1060.0)
    >>> tokens.session(token).owner
    'grace@hospital.example'
    >>> tokens.session("0" * 64) is None  # unknown
    True
    >>> now[0] = 1060.5
    >>> tokens.session(token) is None  # expired
    True
    >>> token, _ = tokens.issue("grace@hospital.example", "Grace Hopper", signing_key=None)
    >>> tokens.drop(token), tokens.session(token) is None
    (True, True)
    """

    def __init__(self, ttl: float = TOKEN_TTL_S, clock: Callable[[], float] = time.time) -> None:
        self.ttl = ttl
        self._clock = clock
        self._sessions: dict[str, OwnerSession] = {}  # sha256(token) -> session, oldest first
        self._lock = threading.Lock()

    def issue(self, owner: str, name: str, signing_key: Any) -> tuple[str, float]:
        """A new token for ``owner``.

        Parameters
        ----------
        owner, name : str
            The owner's e-mail and display name.
        signing_key : object
            The owner's PySyft signing key.

        Returns
        -------
        tuple of (str, float)
            The token (64 hex digits) and when it expires (Unix time).
        """
        token = secrets.token_hex(TOKEN_BYTES)
        now = self._clock()
        session = OwnerSession(owner, name, signing_key, now + self.ttl)
        with self._lock:
            self._prune(now)
            while len(self._sessions) >= MAX_TOKENS:
                del self._sessions[next(iter(self._sessions))]
            self._sessions[_digest(token)] = session
        return token, session.expires

    def session(self, token: object) -> OwnerSession | None:
        """The session ``token`` signs in; None when it is not a token, unknown, signed out or expired.

        Parameters
        ----------
        token : object
            What the console sent (anything: a non-string is refused).

        Returns
        -------
        OwnerSession or None
            The owner and their key.
        """
        if not isinstance(token, str) or not token:
            return None
        key = _digest(token)
        with self._lock:
            found = self._sessions.get(key)
            if found is not None and found.expires <= self._clock():
                del self._sessions[key]
                return None
            return found

    def drop(self, token: object) -> bool:
        """Sign ``token`` out; whether it was signed in.

        Parameters
        ----------
        token : object
            The token.

        Returns
        -------
        bool
            True when a token was removed.
        """
        if not isinstance(token, str) or not token:
            return False
        with self._lock:
            return self._sessions.pop(_digest(token), None) is not None

    def _prune(self, now: float) -> None:
        for key in [key for key, session in self._sessions.items() if session.expires <= now]:
            del self._sessions[key]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
