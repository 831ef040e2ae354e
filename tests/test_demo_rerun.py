"""``bash scripts/demo.sh`` run twice in the same folder, as a new user would (issue 11, finding 10).

Before: the second run reused the first job's name, so its request's approved runs
were spent and training failed; the script still exited 0 and had deleted the first
run's results. Now each run trains a job of its own name, writes its own results
folder, and a failure in training makes the demo exit non-zero.

Real sites, real training (one round): about 3 minutes per run on a quiet machine,
~16 minutes for the file on a loaded 2-core machine: more than the suite can spend, so
it runs only with ``FEDIMG_DEMO_TESTS=1`` (``FEDIMG_DEMO_TESTS=1 bash scripts/test.sh
tests/test_demo_rerun.py``; the README's test section says when to run it).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.datasite_setup.test_convert import fedimg_command

REPO = Path(__file__).resolve().parents[1]
# A float printed with 7 or more decimals: the raw dicts the demo used to print.
RAW_FLOAT = re.compile(r"\d\.\d{7,}")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("FEDIMG_DEMO_TESTS") != "1", reason="runs the whole demo twice; FEDIMG_DEMO_TESTS=1"
    ),
]


def _three_free_ports() -> int:
    """A base port with base, base+1 and base+2 free on loopback (the demo's three sites)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base > 65000:
            continue
        sockets = []
        try:
            for port in range(base, base + 3):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no three consecutive free ports on loopback")


def _run(argv: list[str], env: dict[str, str], timeout: int = 1200) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_demo_runs_twice_keeps_both_results_and_fails_loudly(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    env = {key: value for key, value in os.environ.items() if not key.startswith("FEDIMG_")}
    env.update(
        FEDIMG_DEMO_DIR=str(work),
        FEDIMG_DEMO_PORT=str(_three_free_ports()),
        FEDIMG_DEMO_ROUNDS="1",
        COLUMNS="200",
    )
    config = work / "federation.toml"
    try:
        first = _run(["bash", "scripts/demo.sh"], env)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        (first_results,) = (work / "results").iterdir()
        first_model = _digest(first_results / "model.pt")

        # The second run: a job of its own name, the sites kept up for the replay below.
        second = _run(["bash", "scripts/demo.sh"], {**env, "FEDIMG_DEMO_KEEP": "1"})
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        results = sorted((work / "results").iterdir())
        assert len(results) == 2, results
        for folder in results:
            assert {"model.pt", "history.json", "loss.png", "accuracy.png"} <= {
                p.name for p in folder.iterdir()
            }
        assert _digest(first_results / "model.pt") == first_model  # the first run's results untouched

        for run in (first, second):
            # Progress is rounded: a table of rounds, no 16-digit floats.
            assert "round  sites  seconds  train_loss  val_loss  val_accuracy" in run.stdout
            assert RAW_FLOAT.findall(run.stdout) == [], RAW_FLOAT.findall(run.stdout)[:5]

        # The old failure, replayed: training the first run's job again finds its runs spent.
        replay = _run(
            [
                sys.executable,
                "scripts/demo_train.py",
                str(config),
                "1",
                first_results.name,
                str(tmp_path / "r"),
            ],
            env,
        )
        assert replay.returncode != 0, replay.stdout[-3000:]
        # And the demo itself refuses to reuse a job name whose results exist, before doing anything.
        reused = _run(
            ["bash", "scripts/demo.sh"], {**env, "FEDIMG_DEMO_JOB": first_results.name}, timeout=300
        )
        assert reused.returncode == 2 and "already exists" in reused.stderr
        assert _digest(first_results / "model.pt") == first_model
    finally:
        if config.exists():
            _run([*fedimg_command(), "down", str(config)], env, timeout=300)
