"""The owner channel's socket, served by the datasite process on one thread.

The socket lives in ``<state_dir>/owner-channel/`` (0700, owned by the site's user;
the state dir itself writable by no one else), is 0600, and every connection's peer
credentials (``SO_PEERCRED``) are checked and logged: another uid is refused even if
the modes were loosened. A stale socket left by a killed site is removed at start; a
socket another live process answers on is left alone (the channel then stays off).
One request per connection, one JSON line each way (``protocol``), at most
``MAX_REQUEST_BYTES``; a malformed or oversized request gets an error answer and
the channel goes on serving.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasite_setup.site.owner_channel.protocol import (
    MAX_REQUEST_BYTES,
    ProtocolError,
    check_request,
    decode,
    encode,
    socket_address,
    socket_path,
)

log = logging.getLogger("fedimg.owner_channel")
READ_TIMEOUT_S = 10.0  # a client that connects and sends nothing holds the one thread this long at most
ACCEPT_POLL_S = 0.5  # how often the loop notices ``close``
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class ChannelUnavailable(Exception):
    """The channel cannot be made private (or another process serves it): the site serves without it.

    Examples
    --------
    >>> str(ChannelUnavailable("state/owner-channel: mode 0755, not 0700"))
    'state/owner-channel: mode 0755, not 0700'
    """


@dataclass(frozen=True)
class Peer:
    """The process at the other end of a connection, as the kernel reports it (``SO_PEERCRED``).

    Examples
    --------
    >>> Peer(pid=4242, uid=1000, gid=1000)
    Peer(pid=4242, uid=1000, gid=1000)
    """

    pid: int
    uid: int
    gid: int


Answer = Callable[[dict[str, Any], Peer], dict[str, Any]]


class OwnerChannel:
    """A site's owner channel: ``start`` binds the socket and serves it on a thread; ``close`` removes it.

    Parameters
    ----------
    state_dir : Path
        The site's state dir (the socket is ``protocol.socket_path(state_dir)``).
    answer : callable
        ``answer(request, peer) -> dict``: the site's answer to a well-formed request from
        the site's own uid (``handlers.SiteAnswers.answer``); may raise (logged, answered as
        an internal error).
    prepare : callable, optional
        Run once on the channel's thread before the first request is read (e.g. build the
        site's in-process client); connections wait in the socket's backlog meanwhile.

    Examples
    --------
    >>> import tempfile
    >>> from datasite_setup.site.owner_channel.client import ask
    >>> state = Path(tempfile.mkdtemp())
    >>> channel = OwnerChannel(state, lambda request, peer: {"ok": True, "echo": request["action"]})
    >>> channel.start()
    >>> ask(state, {"action": "ping"})
    {'ok': True, 'echo': 'ping'}
    >>> oct(socket_path(state).stat().st_mode & 0o777)
    '0o600'
    >>> channel.close()
    >>> ask(state, {"action": "ping"}) is None  # gone: callers fall back
    True
    """

    def __init__(self, state_dir: Path, answer: Answer, prepare: Callable[[], None] | None = None) -> None:
        self.path = socket_path(state_dir)
        self.answer = answer
        self.prepare = prepare
        self._socket: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind the private socket and serve it on a daemon thread.

        Raises
        ------
        ChannelUnavailable
            When the folder or the socket cannot be made private to this uid, or another
            live process answers on the socket.
        """
        _private_dir(self.path.parent)
        _remove_stale(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with socket_address(self.path) as address:
                listener.bind(address)  # inside the 0700 folder: nobody else can reach it before the chmod
            os.chmod(self.path, 0o600)
            mode = os.lstat(self.path).st_mode
            if stat.S_IMODE(mode) != 0o600 or not stat.S_ISSOCK(mode):
                raise ChannelUnavailable(f"{self.path}: mode {stat.S_IMODE(mode):04o}, not 0600")
            listener.listen(16)
            listener.settimeout(ACCEPT_POLL_S)
        except OSError as exc:
            listener.close()
            raise ChannelUnavailable(f"{self.path}: cannot listen ({exc.strerror or exc})") from None
        except ChannelUnavailable:
            listener.close()
            raise
        self._socket = listener
        self._thread = threading.Thread(target=self._serve, name="fedimg-owner-channel", daemon=True)
        self._thread.start()
        log.info("owner channel listening on %s", self.path)

    def close(self) -> None:
        """Stop serving and remove the socket (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=READ_TIMEOUT_S + 2 * ACCEPT_POLL_S)
        if self._socket is not None:
            self._socket.close()
            self._socket = None
            self.path.unlink(missing_ok=True)

    def _serve(self) -> None:
        if self.prepare is not None:
            try:
                self.prepare()
            except Exception:  # the channel still answers; each request retries what it needs
                log.exception("owner channel: preparing failed")
        assert self._socket is not None
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                log.exception("owner channel: accept failed")
                continue
            with connection:
                try:
                    self._handle(connection)
                except Exception:  # one broken connection never stops the channel
                    log.exception("owner channel: a connection failed")

    def _handle(self, connection: socket.socket) -> None:
        connection.settimeout(READ_TIMEOUT_S)
        peer = Peer(*_PEERCRED.unpack(connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)))
        if peer.uid != os.geteuid():
            log.warning(
                "owner channel: refused pid %s uid %s (serves uid %s only)", peer.pid, peer.uid, os.geteuid()
            )
            _send(connection, {"ok": False, "error": f"refused: this channel serves uid {os.geteuid()} only"})
            return
        try:
            request = decode(_read_line(connection))
            action = check_request(request)
        except ProtocolError as exc:
            log.warning("owner channel: bad request from pid %s uid %s: %s", peer.pid, peer.uid, exc)
            _send(connection, {"ok": False, "error": str(exc)})
            return
        log.info(
            "owner channel: %s %s from pid %s uid %s", action, request.get("review", ""), peer.pid, peer.uid
        )
        try:
            answer = self.answer(request, peer)
        except Exception:
            log.exception("owner channel: %s failed", action)
            answer = {"ok": False, "error": f"the site failed to answer {action}; see its log"}
        _send(connection, answer)


def _private_dir(folder: Path) -> None:
    """Create ``folder`` 0700 (or make it so) and check that only this uid can reach or change it."""
    parent = os.lstat(folder.parent)
    if parent.st_uid != os.geteuid() or stat.S_IMODE(parent.st_mode) & 0o022:
        raise ChannelUnavailable(
            f"{folder.parent}: the state dir must belong to uid {os.geteuid()} and be writable by no one "
            f"else (mode {stat.S_IMODE(parent.st_mode):04o}); chmod 700 it"
        )
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(folder)
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid():
            os.chmod(folder, 0o700)
            info = os.lstat(folder)
    except OSError as exc:
        raise ChannelUnavailable(f"{folder}: cannot create it private ({exc.strerror})") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) != 0o700:
        raise ChannelUnavailable(
            f"{folder}: not a 0700 folder of uid {os.geteuid()} (mode {stat.S_IMODE(info.st_mode):04o}, "
            f"uid {info.st_uid}); remove it and start the site again"
        )


def _remove_stale(path: Path) -> None:
    """Remove a socket left by a site that was killed; refuse one a live process still answers on."""
    if not os.path.lexists(path):
        return
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise ChannelUnavailable(f"{path}: exists and is not a socket; remove it and start the site again")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        with socket_address(path) as address:
            probe.connect(address)
    except OSError:  # nobody listens: stale
        path.unlink()
        return
    finally:
        probe.close()
    raise ChannelUnavailable(f"{path}: another process serves this state dir's owner channel")


def _read_line(connection: socket.socket) -> bytes:
    """One request line of at most ``MAX_REQUEST_BYTES`` (its newline excluded)."""
    data = b""
    while b"\n" not in data:
        try:
            chunk = connection.recv(65536)
        except TimeoutError:
            raise ProtocolError(f"request: no complete line within {READ_TIMEOUT_S:g} s") from None
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise ProtocolError(f"request: larger than {MAX_REQUEST_BYTES} bytes; nothing was done")
    line = data.split(b"\n", 1)[0]
    if len(line) > MAX_REQUEST_BYTES:
        raise ProtocolError(f"request: larger than {MAX_REQUEST_BYTES} bytes; nothing was done")
    if not line.strip():
        raise ProtocolError("request: empty (send one JSON object per line)")
    return line


def _send(connection: socket.socket, message: dict[str, Any]) -> None:
    try:
        connection.sendall(encode(message))
    except OSError:  # the client went away: nothing to tell it
        log.info("owner channel: the client left before its answer")
