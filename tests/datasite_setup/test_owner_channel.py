"""Issue 11, finding 9: the owner's CLI answers over a local, owner-only channel served by the site.

One running site serves the module (a researcher submits small jobs). The channel's
socket must be private (0600 in a 0700 folder, another uid refused), survive bad
requests, run ``fedimg review`` in the site's process as a named owner (whose
password it checks, recording a refusal) or the shared admin, answer ``fedimg status``,
and, once the site is gone, leave the CLI to its HTTP path.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import datasite_setup.site.site_admin as site_admin
from datasite_setup.cli import main
from datasite_setup.site.owner_channel import client as owner_channel
from datasite_setup.site.owner_channel.protocol import MAX_REQUEST_BYTES, SUN_PATH_BYTES, socket_path
from datasite_setup.site.owner_channel.server import OwnerChannel
from datasite_setup.site.owners import add_owner
from datasite_setup.site.site_admin import ensure_researcher, login
from policies import AUDIT_FILE, AuditLog, verify_audit_log
from tests.researcher.http_sites import EMAIL, PASSWORD, submit
from tests.support.datasites import (
    REPO,
    RunningSite,
    convert_sample,
    password_file,
    start_site_with_policy,
)

OWNER, OWNER_NAME, OWNER_PASSWORD = "grace@hospital.example", "Grace Hopper", "owner-pass-98765"
NOBODY = 65534


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSite]:
    root = tmp_path_factory.mktemp("channel")
    running = start_site_with_policy(root, convert_sample(root / "out"), None)
    admin = login(running.url, running.admin)
    ensure_researcher(admin, email=EMAIL, name="Ada Lovelace", password=PASSWORD)
    add_owner(admin, email=OWNER, name=OWNER_NAME, password=OWNER_PASSWORD)
    yield running
    running.stop()


@pytest.fixture
def no_http_login(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's HTTP path fails loudly: what passes here went over the owner channel."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the CLI logged in over HTTP although the site's owner channel answers")

    monkeypatch.setattr(site_admin, "login", refuse)


def records(site: RunningSite, event: str) -> list[dict]:
    return [r for r in AuditLog(site.state_dir / AUDIT_FILE).records() if r["event"] == event]


def review(site: RunningSite, capsys: pytest.CaptureFixture, *arguments: str) -> tuple[int, str]:
    code = main(["review", "--site", site.url, "--state-dir", str(site.state_dir), *arguments])
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())


def raw(path: Path, payload: bytes) -> bytes:
    """Send ``payload`` as is and read the answer line (a refused send still reads the answer)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(30)
        connection.connect(str(path))
        try:
            connection.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the site answered and closed before reading it all
        answer = b""
        while not answer.endswith(b"\n"):
            try:
                chunk = connection.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
        return answer


def test_the_socket_is_private_and_another_uid_is_refused(site: RunningSite) -> None:
    path = socket_path(site.state_dir)
    info, folder = os.lstat(path), os.lstat(path.parent)
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert stat.S_IMODE(folder.st_mode) == 0o700 and info.st_uid == folder.st_uid == os.geteuid()
    connect_as_nobody = (
        "import os, socket, sys\n"
        f"os.setgid({NOBODY}); os.setuid({NOBODY})\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    print('EACCES'); sys.exit(0)\n"
        "try:\n    s.sendall(b'{}\\n')\nexcept BrokenPipeError:\n    pass  # refused before it read\n"
        "print(s.recv(4096).decode())\n"
    )
    if os.geteuid() != 0:
        pytest.skip("switching to another uid needs root")
    done = subprocess.run(
        [sys.executable, "-c", connect_as_nobody, str(path)], capture_output=True, text=True
    )
    assert done.stdout.strip() == "EACCES", done.stdout + done.stderr  # the modes keep it out
    # with the modes loosened by mistake, the site itself still refuses the other uid (SO_PEERCRED)
    public = Path(tempfile.mkdtemp())  # in /tmp, reachable by every uid
    public.chmod(0o755)
    os.link(path, public / "linked.sock")
    path.chmod(0o666)
    try:
        done = subprocess.run(
            [sys.executable, "-c", connect_as_nobody, str(public / "linked.sock")],
            capture_output=True,
            text=True,
        )
    finally:
        path.chmod(0o600)
        (public / "linked.sock").unlink()
        public.rmdir()
    assert '"ok": false' in done.stdout and f"serves uid {os.geteuid()} only" in done.stdout, done.stderr
    assert owner_channel.ask(site.state_dir, {"action": "ping"})["ok"] is True


def test_malformed_and_oversized_requests_get_an_error_and_the_site_keeps_serving(site: RunningSite) -> None:
    path = socket_path(site.state_dir)
    assert b"not UTF-8 JSON" in raw(path, b"this is not json\n")
    assert b"a JSON object is expected" in raw(path, b"[1, 2, 3]\n")
    assert b"unknown action 'reboot'" in raw(path, b'{"action": "reboot"}\n')
    assert b"force must be true or false" in raw(
        path, b'{"action": "review", "review": "list", "force": "yes"}\n'
    )
    oversized = raw(path, b'{"action": "ping", "pad": "' + b"x" * (4 * MAX_REQUEST_BYTES) + b'"}\n')
    assert f"larger than {MAX_REQUEST_BYTES} bytes".encode() in oversized
    assert b"nested too deeply" in raw(path, b"[" * 30_000 + b"]" * 30_000 + b"\n")  # was a RecursionError
    assert b"pickle" not in raw(path, b"\x80\x04\x95\n")  # a pickle is just bytes that are not JSON
    assert owner_channel.ask(site.state_dir, {"action": "ping"})["ok"] is True
    assert site_admin.is_answering(site.url)  # and its HTTP side too


def test_a_named_owner_reviews_over_the_channel_and_the_audit_names_them(
    site: RunningSite, tmp_path: Path, capsys: pytest.CaptureFixture, no_http_login: None
) -> None:
    approved, denied = submit(site, "channel_approve"), submit(site, "channel_deny")
    owner = ["--owner", OWNER, "--password-file", str(password_file(tmp_path, OWNER_PASSWORD))]
    code, listed = review(site, capsys, *owner, "list")
    assert code == 0 and approved in listed and denied in listed and "all checks pass" in listed
    code, shown = review(site, capsys, *owner, "show", approved)
    assert code == 0 and "template" in shown and "---- code ----" in shown and "def " in shown
    assert [r["request_id"] for r in records(site, "review")][-1] == approved
    assert review(site, capsys, *owner, "approve", approved) == (0, f"{approved}: approved by {OWNER}")
    code, said = review(site, capsys, *owner, "deny", denied, "--reason", "one job per quarter")
    assert code == 0 and "denied by" in said
    decided = {r["request_id"]: r for r in records(site, "decision")}
    for request_id, verdict in ((approved, "approved"), (denied, "denied")):
        record = decided[request_id]
        assert (record["decision"], record["by"], record["by_name"]) == (verdict, OWNER, OWNER_NAME)
        assert record["shared_admin"] is False
    assert decided[approved]["via"] == "fedimg review" and decided[approved]["forced"] is False
    assert decided[denied]["reason"] == "one job per quarter"
    assert verify_audit_log(site.state_dir / AUDIT_FILE) == []


def test_a_wrong_password_is_refused_and_audited(
    site: RunningSite, tmp_path: Path, capsys: pytest.CaptureFixture, no_http_login: None
) -> None:
    pending = submit(site, "channel_wrong_password")
    before = len(records(site, "decision"))
    wrong = ["--owner", OWNER, "--password-file", str(password_file(tmp_path, "not-the-password!"))]
    code, said = review(site, capsys, *wrong, "approve", pending)
    assert code == 2 and f"cannot log in as owner {OWNER}" in said
    code, said = review(
        site, capsys, "--owner", EMAIL, "--password-file", str(password_file(tmp_path, PASSWORD)), "list"
    )
    assert code == 2 and "not an owner account" in said  # a researcher's right password is no owner's
    refused = [r for r in records(site, "owner") if r.get("action") == "login refused"]
    assert [r["email"] for r in refused[-2:]] == [OWNER, EMAIL]
    assert refused[-1]["peer_uid"] == os.geteuid() and refused[-1]["peer_pid"] == os.getpid()
    assert len(records(site, "decision")) == before  # nothing was decided


def test_the_shared_admin_and_the_checks_over_the_channel(
    site: RunningSite, capsys: pytest.CaptureFixture, no_http_login: None
) -> None:
    template = submit(site, "channel_admin")
    assert review(site, capsys, "approve", template) == (
        0,
        f"{template}: approved by the shared admin account",
    )
    (record,) = [r for r in records(site, "decision") if r["request_id"] == template]
    assert record["shared_admin"] is True and record["by"] == site.admin.email
    code, said = review(site, capsys, "approve", "ffffffff")
    assert code == 2 and "0 requests match 'ffffffff'" in said
    code, said = review(site, capsys, "deny", template)
    assert code == 2 and "deny needs --reason" in said


def test_status_answers_over_the_channel(
    site: RunningSite, capsys: pytest.CaptureFixture, no_http_login: None
) -> None:
    config = site.state_dir.parent / "federation.toml"
    config.write_text(
        f'[federation]\ndata = "{site.data.parent.parent}"\nstate_root = "{site.state_dir.parent}"\n\n'
        f'[[site]]\nname = "{site.name}"\nport = {site.port}\nstate_dir = "{site.state_dir}"\n'
    )
    assert main(["status", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "running" in printed and "fedimg-client_0-" in printed and " on " in printed


def test_the_channel_path_does_not_import_pysyft(site: RunningSite) -> None:
    probe = (
        "import sys\n"
        "from datasite_setup.cli import main\n"
        f"code = main(['review', '--site', {site.url!r}, '--state-dir', {str(site.state_dir)!r}, 'list'])\n"
        "heavy = sorted({name.split('.')[0] for name in sys.modules} & {'syft', 'torch', 'policies'})\n"
        "print('exit', code, 'heavy', heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip().splitlines()[-1] == "exit 0 heavy []", done.stdout + done.stderr


def test_without_the_site_the_cli_falls_back_and_a_stale_socket_is_replaced(
    site: RunningSite, capsys: pytest.CaptureFixture
) -> None:
    path = socket_path(site.state_dir)
    site.kill()  # SIGKILL: the socket stays behind, nobody listens on it
    assert path.exists() and owner_channel.ask(site.state_dir, {"action": "ping"}) is None
    code, said = review(site, capsys, "list")
    assert code == 2 and "cannot log in as admin" in said  # the HTTP path was taken, and found no site
    site.start()
    assert (
        owner_channel.ask(site.state_dir, {"action": "ping"})["ok"] is True
    )  # the stale socket was replaced
    site.stop()  # a normal stop removes the socket
    assert not os.path.lexists(path)
    assert owner_channel.review(site.state_dir, site.name, "list") is None


def test_a_state_dir_too_deep_for_a_socket_address_still_gets_its_channel(tmp_path: Path) -> None:
    # CI's temp dirs made <state>/owner-channel/owner.sock longer than a socket address holds: the channel
    # was off, `fedimg review` fell back to a 20 s login per call and the owner notebook missed its window.
    state = tmp_path / ("deep-" * 20) / "state" / "client_0"
    state.mkdir(parents=True)
    assert len(str(socket_path(state))) > SUN_PATH_BYTES
    channel = OwnerChannel(state, lambda request, peer: {"ok": True, "uid": peer.uid})
    channel.start()
    try:
        assert owner_channel.ask(state, {"action": "ping"}) == {"ok": True, "uid": os.geteuid()}
        assert stat.S_IMODE(socket_path(state).stat().st_mode) == 0o600
    finally:
        channel.close()
    assert not socket_path(state).exists()
    channel = OwnerChannel(state, lambda request, peer: {"ok": True})
    channel.start()  # the same deep path again (no stale socket left in the way)
    channel.close()
