"""The console's calls to its sites: one owner-channel request per site, all sites at once.

The console reaches a site only through its owner channel (``owner_channel.client.ask``:
a Unix socket, no PySyft). Each page asks every site it shows once, in parallel on a
thread pool, so three sites answer in the time of the slowest. A site that is stopped,
does not answer, or answers garbage becomes an ``{"ok": false, "error": ...}`` answer
naming the site: a page shows the other sites and says what is wrong with that one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasite_setup.errors import FedimgError
from datasite_setup.site.owner_channel import client

READ_TIMEOUT_S = 60.0  # a page's question; a site busy with a long review may take this long
DECIDE_TIMEOUT_S = client.ANSWER_TIMEOUT_S  # an approval runs the review checks first
Ask = Callable[..., dict[str, Any] | None]


@dataclass(frozen=True)
class ConsoleSite:
    """A site the console serves: its name and state dir (where its owner channel listens).

    Parameters
    ----------
    name : str
        The site's name in ``federation.toml``.
    state_dir : Path
        Its state dir; the channel is ``<state_dir>/owner-channel/owner.sock``.

    Examples
    --------
    >>> ConsoleSite("hospital_a", Path("state/hospital_a")).name
    'hospital_a'
    """

    name: str
    state_dir: Path


class SiteLinks:
    """Ask the console's sites over their owner channels, in parallel.

    Parameters
    ----------
    sites : sequence of ConsoleSite
        The sites, in the order pages list them.
    ask : callable
        ``ask(state_dir, request, timeout=...)``: ``owner_channel.client.ask`` (a test may pass its own).

    Examples
    --------
    >>> import tempfile
    >>> links = SiteLinks([ConsoleSite("hospital_a", Path(tempfile.mkdtemp()))])
    >>> links.ask_all({"hospital_a": {"action": "ping"}})["hospital_a"]["ok"]  # nothing listens there
    False
    """

    def __init__(self, sites: Sequence[ConsoleSite], ask: Ask = client.ask) -> None:
        if not sites:
            raise FedimgError("the console needs at least one site (federation.toml lists none)")
        self.sites = {site.name: site for site in sites}
        self._ask = ask
        self._pool = ThreadPoolExecutor(max_workers=max(4, 2 * len(self.sites)), thread_name_prefix="site")

    @property
    def names(self) -> list[str]:
        """The sites' names, in order."""
        return list(self.sites)

    def ask_one(
        self, site: str, request: Mapping[str, Any], timeout: float = READ_TIMEOUT_S
    ) -> dict[str, Any]:
        """One site's answer to ``request``; an error answer when it cannot be reached.

        Parameters
        ----------
        site : str
            The site's name.
        request : mapping
            The owner-channel request.
        timeout : float
            Seconds to wait for the answer once the site took the request.

        Returns
        -------
        dict
            The site's answer (``ok`` true or false); a failure to reach it is ``ok`` false with
            an ``error`` naming the site and ``unreachable`` true.
        """
        known = self.sites.get(site)
        if known is None:
            return {"ok": False, "error": f"this console does not serve a site named {site!r}"}
        try:
            answer = self._ask(known.state_dir, dict(request), timeout=timeout)
        except FedimgError as exc:
            return {"ok": False, "error": f"site {site}: {exc}", "unreachable": True}
        except OSError as exc:  # a socket error the client did not turn into a message
            return {
                "ok": False,
                "error": f"site {site}: its owner channel broke off ({exc})",
                "unreachable": True,
            }
        if answer is None:
            return {
                "ok": False,
                "unreachable": True,
                "error": f"site {site} does not answer on its owner channel "
                f"({known.state_dir}/owner-channel/owner.sock): is it running? ('fedimg status')",
            }
        if not isinstance(answer, dict):
            return {"ok": False, "error": f"site {site}: its answer is not a JSON object"}
        return answer

    def ask_all(
        self, requests: Mapping[str, Mapping[str, Any]], timeout: float = READ_TIMEOUT_S
    ) -> dict[str, dict[str, Any]]:
        """Every named site's answer to its request, asked at the same time.

        Parameters
        ----------
        requests : mapping
            ``{site: request}``: one request per site.
        timeout : float
            As for ``ask_one``.

        Returns
        -------
        dict
            ``{site: answer}`` in the order of ``requests``.
        """
        futures = {
            site: self._pool.submit(self.ask_one, site, request, timeout)
            for site, request in requests.items()
        }
        return {site: future.result() for site, future in futures.items()}

    def close(self) -> None:
        """Stop the thread pool (the answers under way finish first)."""
        self._pool.shutdown(wait=True)
