"""Benchmark: the owner's CLI over the site's owner channel against the old path (PySyft import + HTTP login).

Issue 11, finding 9: ``fedimg status`` took 26 s and ``fedimg review list/show/approve/deny``
19-24 s each on a 2-site federation. The target is ≤ 3 s each on a running 3-site federation.

**Setup**: the digits sample converted into 3 hospitals (16 px grayscale), a
``federation.toml`` on free loopback ports with one researcher, ``fedimg up`` (3 real
``fedimg datasite serve`` processes, SQLite, sandbox on); the researcher submits two
small FedAvg jobs (``SmallCNN`` width 8), so every site holds two pending requests.

**Timed**: each command as the owner runs it, a fresh ``python -m datasite_setup.cli``
process (wall time of the whole process: interpreter, imports, the work, the output),
once over the owner channel (the default) and once with ``--http`` (the old path),
alternating, in the same run: ``status`` (all 3 sites), ``review list`` and ``review show
ID`` at one site (``--repeats`` each), then at each site ``approve`` the first job's
request and ``deny`` the second's, sites 0 and 2 over the channel, site 1 over HTTP.

Usage (from the repository root)::

    python -m benchmarks.bench_owner_cli [--repeats 3] [--workdir DIR] [--json PATH]

Prints a table (median seconds per command and path, the ratio) and, with ``--json``,
writes every sample.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from datasite_setup.site.federation_config import load_federation_config
from tests.researcher.http_sites import make_job
from tests.support.datasites import REPO, convert_sample, free_port

SITES = ("client_0", "client_1", "client_2")
RESEARCHER = "bench.owner-cli@university.example"
TARGET_S = 3.0


def fedimg(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    """Run one ``fedimg`` command as a new process; (wall seconds, its result)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("FEDIMG_ADMIN_")}
    env["COLUMNS"] = "200"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "datasite_setup.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return time.perf_counter() - started, done


def checked(*args: str) -> float:
    seconds, done = fedimg(*args)
    if done.returncode != 0:
        raise SystemExit(f"fedimg {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return seconds


def write_config(root: Path) -> Path:
    convert_sample(root / "federated", clients=len(SITES), size=16)
    lines = ["[federation]", 'data = "federated"', 'state_root = "state"', ""]
    for name in SITES:
        lines += ["[[site]]", f'name = "{name}"', f"port = {free_port()}", ""]
    lines += ["[[researcher]]", f'email = "{RESEARCHER}"', 'name = "Bench Researcher"']
    path = root / "federation.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def submit_jobs(config_path: Path) -> dict[str, list[str]]:
    """Two small jobs submitted by the researcher at every site: site -> [request ids]."""
    from researcher import Federation

    config = load_federation_config(config_path)
    document = json.loads((config.secrets_dir / "researchers" / f"{RESEARCHER}.json").read_text())
    urls = {site.name: site.url for site in config.sites}
    passwords = {name: document["sites"][name]["password"] for name in urls}
    federation = Federation.from_urls(urls, RESEARCHER, passwords)
    requests: dict[str, list[str]] = {name: [] for name in urls}
    for job_name in ("bench_owner_cli_a", "bench_owner_cli_b"):
        submitted = make_job(federation, job_name, min_sites=len(urls)).submit(federation)
        for name, request_id in submitted.items():
            requests[name].append(str(request_id))
    return requests


def measure(config: Path, requests: dict[str, list[str]], repeats: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per command and path ("channel", "http"), in the same run, alternating."""
    samples: dict[str, dict[str, list[float]]] = {}

    def timed(command: str, path: str, *args: str) -> None:
        extra = ["--http"] if path == "http" else []
        samples.setdefault(command, {"channel": [], "http": []})[path].append(checked(*args, *extra))

    site = SITES[0]
    review = ["review", "--site", site, "--config", str(config)]
    for _ in range(repeats):
        for path in ("channel", "http"):
            timed("status", path, "status", str(config))
            timed("review list", path, *review, "list")
            timed("review show", path, *review, "show", requests[site][0])
    for index, name in enumerate(SITES):
        path = "http" if index == 1 else "channel"
        at = ["review", "--site", name, "--config", str(config)]
        timed("review approve", path, *at, "approve", requests[name][0])
        timed("review deny", path, *at, "deny", requests[name][1], "--reason", "benchmark")
    return samples


def report(samples: dict[str, dict[str, list[float]]]) -> str:
    lines = [
        f"{'command':<16} {'channel s':>10} {'old path s':>11} {'ratio':>7}  n (channel/old)",
    ]
    for command, paths in samples.items():
        channel, http = statistics.median(paths["channel"]), statistics.median(paths["http"])
        lines.append(
            f"{command:<16} {channel:>10.2f} {http:>11.2f} {http / channel:>6.1f}x  "
            f"{len(paths['channel'])}/{len(paths['http'])}"
            + ("" if max(paths["channel"]) <= TARGET_S else f"  (max {max(paths['channel']):.2f} s > target)")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="samples of status, list and show per path")
    parser.add_argument("--workdir", type=Path, help="keep the federation here (default: a temporary dir)")
    parser.add_argument("--json", type=Path, help="write every sample here")
    args = parser.parse_args(argv)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-owner-cli-"))
    root.mkdir(parents=True, exist_ok=True)
    config = write_config(root)
    try:
        up_s = checked("up", str(config))
        requests = submit_jobs(config)
        samples = measure(config, requests, args.repeats)
    finally:
        fedimg("down", str(config))
    table = report(samples)
    print(
        f"fedimg owner CLI, 3-site federation (up in {up_s:.0f} s), {platform.python_version()}, "
        f"{os.cpu_count()} cores, median wall seconds of a fresh CLI process:\n{table}"
    )
    if args.json:
        args.json.write_text(json.dumps({"up_s": up_s, "samples": samples}, indent=2) + "\n")
    if args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
