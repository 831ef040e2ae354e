"""The console's server-side sessions: a random cookie in the browser, the owner's site tokens here.

The browser holds only ``fedimg_console`` (32 random bytes, HttpOnly, SameSite=Strict);
the session behind it holds the owner's e-mail, one token per site that accepted the
sign-in, a CSRF token every form carries, and at most one flash message. A session ends
after ``IDLE_S`` without a request or ``ABSOLUTE_S`` after sign-in, whichever comes first;
the site tokens expire on their own (8 h) and a site that forgets one answers
``signed_out`` (the console then drops that site from the session).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

COOKIE_NAME = "fedimg_console"
LOGIN_COOKIE_NAME = "fedimg_console_login"  # the sign-in form's CSRF token, before any session exists
IDLE_S = 30 * 60
ABSOLUTE_S = 8 * 3600
MAX_SESSIONS = 1000  # past this the oldest are dropped: a flood of sign-ins cannot grow memory without bound


@dataclass
class Session:
    """One signed-in owner.

    Parameters
    ----------
    key : str
        The cookie's value.
    owner : str
        The owner's e-mail (what every site names in its audit records).
    name : str
        The owner's display name, as the first site that accepted the sign-in gave it.
    tokens : dict
        ``{site: token}`` of the sites that accepted the sign-in and have not signed it out since.
    csrf : str
        The token every form of this session carries.
    created, seen : float
        When it was signed in, and its last request (seconds, the store's clock).
    flash : tuple or None
        ``("notice" | "error", text)`` shown once by the next page.
    """

    key: str
    owner: str
    name: str
    tokens: dict[str, str]
    csrf: str
    created: float
    seen: float
    flash: tuple[str, str] | None = field(default=None)

    def take_flash(self) -> tuple[str, str] | None:
        """The flash message, removed (it is shown once).

        Examples
        --------
        >>> session = Session("k", "o@x.org", "O", {}, "c", 0.0, 0.0, flash=("notice", "Denied."))
        >>> session.take_flash(), session.take_flash()
        (('notice', 'Denied.'), None)
        """
        flash, self.flash = self.flash, None
        return flash


class SessionStore:
    """The console's sessions, in memory (thread-safe); a restart signs everyone out.

    Parameters
    ----------
    clock : callable
        Seconds (a test's own clock).
    idle_s, absolute_s : float
        The idle and absolute lifetimes.

    Examples
    --------
    >>> now = [0.0]
    >>> store = SessionStore(clock=lambda: now[0])
    >>> session = store.create("owner@hospital.example", "Olga", {"hospital_a": "t0k"})
    >>> store.get(session.key) is session
    True
    >>> now[0] = IDLE_S + 1  # idle too long
    >>> store.get(session.key) is None
    True
    """

    def __init__(
        self, clock: Callable[[], float] = time.time, idle_s: float = IDLE_S, absolute_s: float = ABSOLUTE_S
    ) -> None:
        self._clock = clock
        self.idle_s = idle_s
        self.absolute_s = absolute_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, owner: str, name: str, tokens: Mapping[str, str]) -> Session:
        """A new session (a fresh key: a cookie set before sign-in is never reused).

        Parameters
        ----------
        owner, name : str
            The owner's e-mail and display name.
        tokens : mapping
            ``{site: token}``.

        Returns
        -------
        Session
            The session; its ``key`` goes into the cookie.
        """
        now = self._clock()
        session = Session(
            secrets.token_urlsafe(32), owner, name, dict(tokens), secrets.token_urlsafe(32), now, now
        )
        with self._lock:
            self._sessions[session.key] = session
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.pop(next(iter(self._sessions)))
        return session

    def get(self, key: str | None) -> Session | None:
        """The live session behind a cookie value (its idle clock restarted), or None.

        Parameters
        ----------
        key : str or None
            The cookie's value.

        Returns
        -------
        Session or None
            None for no cookie, an unknown one, or an expired session (then forgotten).
        """
        if not key:
            return None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if now - session.seen > self.idle_s or now - session.created > self.absolute_s:
                del self._sessions[key]
                return None
            session.seen = now
            return session

    def drop(self, key: str) -> Session | None:
        """Forget a session (sign-out); the session, or None when there was none.

        Examples
        --------
        >>> store = SessionStore()
        >>> key = store.create("o@x.org", "O", {"a": "t"}).key
        >>> store.drop(key).owner, store.get(key)
        ('o@x.org', None)
        """
        with self._lock:
            return self._sessions.pop(key, None)

    def drop_sites(self, session: Session, sites: set[str]) -> bool:
        """Remove sites that signed the session out; whether any site is left.

        Parameters
        ----------
        session : Session
            The session.
        sites : set of str
            The sites whose answer said ``signed_out``.

        Returns
        -------
        bool
            False when no site is left: the session is then forgotten.

        Examples
        --------
        >>> store = SessionStore()
        >>> session = store.create("o@x.org", "O", {"a": "t1", "b": "t2"})
        >>> store.drop_sites(session, {"a"}), sorted(session.tokens)
        (True, ['b'])
        >>> store.drop_sites(session, {"b"}), store.get(session.key)
        (False, None)
        """
        with self._lock:
            for site in sites:
                session.tokens.pop(site, None)
            if session.tokens:
                return True
            self._sessions.pop(session.key, None)
            return False


def same_token(expected: str, given: object) -> bool:
    """Whether a form's CSRF field equals the expected token (in constant time).

    Parameters
    ----------
    expected : str
        The session's (or the sign-in cookie's) token.
    given : object
        The form field as received (None or an upload when missing or forged).

    Returns
    -------
    bool
        True only for a non-empty string equal to ``expected``.

    Examples
    --------
    >>> same_token("abc", "abc"), same_token("abc", "abd"), same_token("abc", None), same_token("", "")
    (True, False, False, False)
    """
    if not expected or not isinstance(given, str):
        return False
    return hmac.compare_digest(expected.encode(), given.encode())
