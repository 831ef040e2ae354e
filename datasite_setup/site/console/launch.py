"""``fedimg console``: check the address, bind it, print the URL, serve until Ctrl-C.

The console is for the owner on the sites' machine: it listens on loopback unless
``allow_remote`` says otherwise, because it speaks plain HTTP (a password typed into it
would cross the network readable) and its sign-in is the only door to every decision
of every site it serves. To reach it from another machine, use an SSH tunnel
(``ssh -L 8090:127.0.0.1:8090 site-host``), or put a TLS proxy in front and pass
``--allow-remote``.

The console answers only the ``Host`` names it serves (``guards.served_hosts``: a page of
another name pointed at 127.0.0.1 is refused), and it takes the client's address from
the connection, never from ``X-Forwarded-For``: on loopback every local process could
write that header and pick the address its failed sign-ins are counted (and audited)
under. Behind a TLS proxy every client then counts as the proxy's address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence

import uvicorn

from datasite_setup.errors import FedimgError
from datasite_setup.site.console.app import create_app
from datasite_setup.site.console.guards import served_hosts
from datasite_setup.site.console.site_links import ConsoleSite

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8090


def check_host(host: str, allow_remote: bool = False) -> None:
    """Refuse a non-loopback address unless ``allow_remote``.

    Parameters
    ----------
    host : str
        The address to listen on.
    allow_remote : bool
        Whether the operator accepts other machines reaching the console.

    Raises
    ------
    FedimgError
        For a non-loopback ``host`` without ``allow_remote``, saying why and what to do.

    Examples
    --------
    >>> check_host("127.0.0.1"), check_host("localhost"), check_host("0.0.0.0", allow_remote=True)
    (None, None, None)
    >>> check_host("0.0.0.0")
    Traceback (most recent call last):
    ...
    datasite_setup.errors.FedimgError: --host 0.0.0.0 is not a loopback address: ...
    """
    if allow_remote or _loopback(host):
        return
    raise FedimgError(
        f"--host {host} is not a loopback address: the console speaks plain HTTP, so owners' passwords and "
        "decisions would cross the network readable. Reach it over an SSH tunnel "
        "(ssh -L 8090:127.0.0.1:8090 HOST), or put a TLS proxy in front and pass --allow-remote."
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    sites: Sequence[ConsoleSite],
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    allow_remote: bool = False,
    echo: Callable[[str], None] = print,
    server_names: Sequence[str] = (),
) -> None:
    """Serve the console for ``sites`` until Ctrl-C or SIGTERM; prints its URL once it listens.

    Parameters
    ----------
    sites : sequence of ConsoleSite
        The sites it serves.
    host : str
        The address (loopback unless ``allow_remote``).
    port : int
        The port; 0 picks a free one (the printed URL has the real port).
    allow_remote : bool
        Allow a non-loopback ``host``.
    echo : callable
        Prints ``fedimg console: http://HOST:PORT/ (sites: a, b, c)``.
    server_names : sequence of str
        More names (``name`` or ``name:port``) browsers may reach it by, e.g. a TLS proxy's public
        name; with ``allow_remote`` the machine's host name and FQDN are served too.

    Raises
    ------
    FedimgError
        A non-loopback host without ``allow_remote``, or a port that is taken.
    """
    check_host(host, allow_remote)
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host.strip("[]"), port))
    except OSError as exc:
        listener.close()
        raise FedimgError(
            f"the console cannot listen on {host}:{port} ({exc.strerror or exc}): choose --port"
        ) from None
    listener.listen(128)
    bound = listener.getsockname()[1]
    names = [*server_names, *((socket.gethostname(), socket.getfqdn()) if allow_remote else ())]
    hosts = served_hosts(host, bound) | {n.lower() if ":" in n else f"{n.lower()}:{bound}" for n in names}
    app = create_app(sites, hosts=hosts)
    shown = f"[{host.strip('[]')}]" if family == socket.AF_INET6 else host
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        server_header=False,
        lifespan="off",
        proxy_headers=False,  # the address is the connection's: a header cannot choose it
        h11_max_incomplete_event_size=16 * 1024,  # a request line and headers past this are refused
    )
    server = uvicorn.Server(config)
    echo(f"fedimg console: http://{shown}:{bound}/ (sites: {', '.join(site.name for site in sites)})")
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled once it has shut down
        pass
    finally:
        listener.close()
        app.state.console.links.close()
