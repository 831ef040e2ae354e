"""The site log (``site_log``) rotates by size, holds the process's prints, and demotes PySyft's start-up noise;
``fedimg up`` waits for a site as long as it makes progress (``start_progress``, ``wait_until_answering``)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from datasite_setup.site.federation_config import SiteConfig
from datasite_setup.site.federation_runner import start_site, wait_until_answering
from datasite_setup.site.site_log import site_log
from datasite_setup.site.start_progress import StartReporter, read_start_progress
from tests.support.datasites import free_port


def test_the_log_rotates_at_its_size_limit_and_keeps_its_backups(tmp_path: Path) -> None:
    log_file = tmp_path / "datasite.log"
    stdout, stderr = sys.stdout, sys.stderr
    with site_log(log_file, max_bytes=2000, backups=3) as log:
        for i in range(200):
            log.info("record %03d %s", i, "x" * 40)
        print("printed on stdout")
        print("printed on stderr", file=sys.stderr)
    assert (sys.stdout, sys.stderr) == (stdout, stderr)
    files = sorted(tmp_path.glob("datasite.log*"))
    assert [path.name for path in files] == [
        "datasite.log",
        "datasite.log.1",
        "datasite.log.2",
        "datasite.log.3",
    ]
    assert all(path.stat().st_size <= 2000 for path in files)
    assert oct(log_file.stat().st_mode & 0o777) == "0o600"
    current = log_file.read_text()
    assert "fedimg.site INFO printed on stdout" in current
    assert "fedimg.site WARNING printed on stderr" in current
    assert "record 199" in current
    assert "record 000" not in "".join(path.read_text() for path in files)  # older than the backups


def test_syfts_signing_key_message_is_not_critical(tmp_path: Path) -> None:
    log_file = tmp_path / "datasite.log"
    syft_server = logging.getLogger("syft.server.server")
    with site_log(log_file):
        syft_server.critical("Hash of the signing key 'ab12c...'")
        syft_server.critical("a real emergency")
    log = log_file.read_text()
    assert "Hash of the signing key" not in log
    assert "syft.server.server CRITICAL a real emergency" in log


def test_a_site_without_progress_is_given_up_with_a_clear_message(
    tmp_path: Path, sample_federation: Path
) -> None:
    data = tmp_path / "federated"
    shutil.copytree(sample_federation, data)
    site = SiteConfig("client_0", free_port(), "127.0.0.1", data / "clients" / "client_0", tmp_path / "state")
    pid = start_site(site)
    try:
        os.kill(pid, signal.SIGSTOP)  # a site hung on its database or disk: no I/O, no CPU, no new phase
        lines: list[str] = []
        started = time.monotonic()
        problems = wait_until_answering({site.name: (site, pid)}, stall_timeout=3, report=lines.append)
        assert time.monotonic() - started < 30
    finally:
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert problems[site.name].startswith("no progress for 3 s while starting"), problems
    assert str(site.state_dir / "datasite.log") in problems[site.name]
    assert lines[0] == "client_0: starting, 0 s" and lines[-1].startswith("client_0: failed, ")


def test_start_progress_counts_and_ignores_another_processs_file(tmp_path: Path) -> None:
    reporter = StartReporter(tmp_path)
    reporter.phase("ingesting")
    seen = []
    for _ in reporter.bar(range(5), total=5, description="Reading client_0 train", enabled=False):
        seen.append(read_start_progress(tmp_path, os.getpid()))
    final = read_start_progress(tmp_path, os.getpid())
    assert final is not None and final.describe() == "ingesting 5/5 (reading client_0 train)"
    assert seen[0] is not None and seen[0].phase == "ingesting" and seen[0].total == 5
    assert read_start_progress(tmp_path, os.getpid() + 1) is None  # a file left by an earlier run
    reporter.clear()
    assert read_start_progress(tmp_path, os.getpid()) is None
