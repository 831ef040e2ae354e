"""Slow and stalled request bodies against a real site (issue 11's slow-loris finding).

Clients that sent part of a large body and stalled were held with no budget and no
timeout: 300 of them took a site from 708 to 1,575 MB, for ever. The site now bounds
the bytes of bodies still arriving (site-wide and per client address), the bodies one
address may send at once, and how long a body may take (``HttpGuard``).

One site for the module, with small ``[limits]`` so that each limit is reached in
seconds. Attackers send from 127.0.0.3 and up with raw sockets; the researcher uses a
normal PySyft client from 127.0.0.1. Each test closes its sockets (the site then frees
what they held), so the tests stand alone.
"""

from __future__ import annotations

import re
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import requests

from datasite_setup.site.site_admin import ensure_researcher, login
from tests.support.datasites import start_site_with_policy

MB = 1024 * 1024
IDLE_S, TOTAL_S = 3.0, 8.0
LIMITS = f"""[limits]
max_request_mb = 24
max_inflight_mb = 48
max_uploads_per_address = 3
body_idle_seconds = {IDLE_S}
body_total_seconds = {TOTAL_S}
"""
ADA, PASSWORD = "ada@university.example", "researcher-pass-1234"


@pytest.fixture(scope="module")
def site(tmp_path_factory, sample_federation):
    running = start_site_with_policy(tmp_path_factory.mktemp("slow-bodies"), sample_federation, LIMITS)
    ensure_researcher(login(running.url, running.admin), email=ADA, name="Ada", password=PASSWORD)
    yield running
    running.stop()


def rss_mb(site) -> float:
    status = Path(f"/proc/{site.process.pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def open_body(site, address: str, declared: int | None) -> socket.socket:
    """A POST whose headers are sent (``declared`` bytes of body, None: chunked) and nothing of its body."""
    sock = socket.create_connection(("127.0.0.1", site.port), timeout=10, source_address=(address, 0))
    length = "Transfer-Encoding: chunked" if declared is None else f"Content-Length: {declared}"
    head = f"POST /api/v2/api_call HTTP/1.1\r\nHost: 127.0.0.1\r\n{length}\r\n\r\n"
    sock.sendall(head.encode())
    return sock


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str
    closed: bool  # the site closed the connection after it


def read_answer(sock: socket.socket, wait: float) -> Answer | None:
    """The site's answer within ``wait`` seconds (None: none yet), and whether it closed the connection."""
    sock.settimeout(wait)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        if not data:
            return None
        raise
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        key.strip().lower(): value.strip() for key, _, value in (line.partition(":") for line in lines[1:])
    }
    sock.settimeout(5)
    closed = False
    try:
        while chunk := sock.recv(65536):
            rest += chunk
        closed = True
    except TimeoutError:
        pass
    except ConnectionResetError:
        closed = True
    return Answer(int(lines[0].split()[1]), headers, rest.decode(errors="replace"), closed)


def is_silent(sock: socket.socket, wait: float) -> bool:
    """No answer (and no close) within ``wait`` seconds: the site is waiting for the body."""
    return not select.select([sock], [], [], wait)[0]


@dataclass(eq=False)  # a thread: hashable by identity
class SlowLoris(threading.Thread):
    """Keeps ``count`` POSTs open from ``address``, each declaring ``declared`` bytes, sending ``sent`` of
    them and then nothing; opens a new one for each the site answers, and records the answers."""

    port: int
    address: str
    count: int
    declared: int
    sent: int
    answers: list[Answer | str] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True)

    def run(self) -> None:
        waiting: dict[socket.socket, float] = {}  # socket -> when its headers went (None once its body did)
        stalled: set[socket.socket] = set()
        opened = 0.0
        while not self.stopped.is_set():
            while len(waiting) + len(stalled) < self.count and time.monotonic() - opened > 0.02:
                opened = time.monotonic() if len(self.answers) else 0.0  # all at once, then 50 a second
                sock = socket.create_connection(("127.0.0.1", self.port), source_address=(self.address, 0))
                head = f"POST /api/v2/api_call HTTP/1.1\r\nHost: x\r\nContent-Length: {self.declared}\r\n\r\n"
                sock.sendall(head.encode())
                waiting[sock] = time.monotonic()
            readable, _, _ = select.select([*waiting, *stalled], [], [], 0.05)
            for sock in readable:
                try:
                    self.answers.append(read_answer(sock, 5) or "no answer")
                except OSError as exc:
                    self.answers.append(type(exc).__name__)
                waiting.pop(sock, None)
                stalled.discard(sock)
                sock.close()
            for sock, since in list(waiting.items()):
                if sock not in readable and time.monotonic() - since > 1.0:  # admitted: send, then stall
                    del waiting[sock]
                    try:
                        sock.sendall(b"\0" * self.sent)
                    except OSError as exc:  # refused (and closed) while the body went
                        self.answers.append(type(exc).__name__)
                        sock.close()
                    else:
                        stalled.add(sock)
        for sock in [*waiting, *stalled]:
            sock.close()

    def statuses(self) -> list[int | str]:
        return [answer.status if isinstance(answer, Answer) else answer for answer in self.answers]


def test_one_address_cannot_hold_more_than_its_share_and_a_researcher_is_unaffected(site) -> None:
    import syft as sy

    before = rss_mb(site)
    loris = SlowLoris(site.port, "127.0.0.3", count=40, declared=8 * MB, sent=2 * MB)
    loris.start()
    try:
        time.sleep(1.0)
        during = rss_mb(site)
        started = time.perf_counter()
        ada = sy.login(url=site.url, email=ADA, password=PASSWORD)
        assert len(ada.datasets.get_all()) == 1
        weights = np.random.default_rng(0).random(20 * MB // 8)  # 20 MB that do not compress
        stored = sy.ActionObject.from_obj(weights).send(ada)
        assert not isinstance(stored, sy.SyftError), stored
        researcher_s = time.perf_counter() - started
        time.sleep(max(0.0, IDLE_S + 1.5 - (time.perf_counter() - started)))  # the stalled bodies' timeout
        peak = rss_mb(site)
    finally:
        loris.stopped.set()
        loris.join(30)
    statuses = loris.statuses()
    print(
        f"\nRSS {before:.0f} MB before, {during:.0f} MB 1 s into the attack, {peak:.0f} MB after "
        f"{len(statuses)} answers to 127.0.0.3 ({statuses.count(429)} x 429, {statuses.count(408)} x 408); "
        f"the researcher's login, listing and 20 MB upload took {researcher_s:.1f} s"
    )
    assert statuses.count(429) >= 30  # 40 at once, 3 bodies from one address: the rest refused at once
    assert statuses.count(408) >= 3  # the stalled ones dropped after body_idle_seconds
    assert set(statuses) <= {429, 408}, statuses
    refusals = [answer for answer in loris.answers if isinstance(answer, Answer)]
    assert all(answer.closed for answer in refusals)  # no connection outlives its refusal
    assert all(answer.headers.get("retry-after") == "3" for answer in refusals if answer.status == 429)
    assert "max_uploads_per_address" in next(a.body for a in refusals if a.status == 429)


def test_bodies_past_the_site_wide_budget_get_503_at_once_chunked_ones_as_they_arrive(site) -> None:
    from syft.service.user.user import UserPrivateKey

    held = []
    try:
        for address in ("127.0.0.4", "127.0.0.5"):  # 2 x 20 MB of 48 MB, each within its address's share
            sock = open_body(site, address, 20 * MB)
            assert is_silent(sock, 0.5)
            sock.sendall(b"\0" * MB)
            held.append(sock)
        refused = read_answer(open_body(site, "127.0.0.6", 20 * MB), 5)
        assert refused is not None and refused.status == 503 and refused.closed
        assert refused.headers["retry-after"] == "3" and "max_inflight_mb" in refused.body

        chunked, sent = open_body(site, "127.0.0.7", None), 0
        answer = None
        while answer is None and sent < 12 * MB:  # 8 MB fit beside the 40 MB held
            chunked.sendall(b"%x\r\n%s\r\n" % (MB, b"\0" * MB))
            sent += MB
            answer = None if is_silent(chunked, 0.3) else read_answer(chunked, 5)
        assert answer is not None and answer.status == 503 and answer.closed, answer
        assert 8 * MB < sent <= 9 * MB  # refused at the chunk that passed the budget, not before

        # the researcher's login (a small body) still fits beside them
        response = requests.post(
            f"{site.url}/api/v2/login", json={"email": ADA, "password": PASSWORD}, timeout=30
        )
        from syft.serde.deserialize import _deserialize

        assert isinstance(_deserialize(response.content, from_bytes=True), UserPrivateKey)
    finally:
        for sock in held:
            sock.close()


def test_a_stalled_body_and_a_trickled_one_are_answered_408_and_dropped(site) -> None:
    idle = open_body(site, "127.0.0.8", MB)
    trickle = open_body(site, "127.0.0.9", MB)
    started = time.monotonic()
    idle.sendall(b"\0" * (100 * 1024))
    idle_answer: list[tuple[Answer | None, float]] = []

    def wait_idle() -> None:
        idle_answer.append((read_answer(idle, IDLE_S + 10), time.monotonic() - started))

    waiter = threading.Thread(target=wait_idle)
    waiter.start()
    trickled = 0
    try:
        while is_silent(trickle, 1.0):  # a byte a second: never idle, never complete
            trickle.sendall(b"\0")
            trickled += 1
            assert time.monotonic() - started < TOTAL_S + 6, "the trickled body was never dropped"
        trickled_after = time.monotonic() - started
        answer = read_answer(trickle, 5)
    finally:
        waiter.join(30)
        idle.close()
        trickle.close()
    stalled, stalled_after = idle_answer[0]
    assert stalled is not None and stalled.status == 408 and stalled.closed
    assert "body_idle_seconds" in stalled.body
    assert IDLE_S - 0.5 <= stalled_after <= IDLE_S + 4
    assert answer is not None and answer.status == 408 and answer.closed
    assert TOTAL_S - 0.5 <= trickled_after <= TOTAL_S + 4 and trickled >= TOTAL_S - 2
