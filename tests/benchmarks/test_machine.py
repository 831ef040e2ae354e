"""The benchmarks' shared machine description: its facts, its load, waiting for quiet, CPU contention."""

from __future__ import annotations

import argparse
import os

import pytest

from benchmarks.harness import machine
from benchmarks.harness.machine import CpuSnapshot

MACHINE = {
    "cpu_model": "Test CPU",
    "logical_cpus": 4,
    "usable_cpus": 2,
    "physical_cores": 2,
    "ram_bytes": 8 * 2**30,
    "os": "Linux 6 x86_64",
}


def test_machine_info_states_the_machine_and_the_code() -> None:
    info = machine.machine_info()
    assert info["logical_cpus"] == os.cpu_count() and info["ram_bytes"] > 0 and info["cpu_model"]
    assert info["fedimg_version"] != "unknown" and info["fedimg_commit"] != "unknown" and info["pillow"]
    assert machine.machine_line(info).startswith(
        f"- **Machine**: {info['cpu_model']}, {info['logical_cpus']} logical CPUs"
    )


def test_machine_line() -> None:
    assert (
        machine.machine_line(MACHINE)
        == "- **Machine**: Test CPU, 4 logical CPUs (2 usable, 2 physical cores), 8.0 GiB RAM, Linux 6 x86_64"
    )


def test_package_versions_keeps_the_order_and_marks_missing_packages() -> None:
    versions = machine.package_versions("pytest", "no-such-package-fedimg")
    assert list(versions) == ["pytest", "no-such-package-fedimg"]
    assert versions["pytest"] == pytest.__version__ and versions["no-such-package-fedimg"] == "unknown"


def test_load_line_flags_a_busy_start_or_end() -> None:
    quiet, busy = (0.1, 0.2, 0.3), (0.9, 0.2, 0.3)
    assert machine.format_load(quiet) == "0.10/0.20/0.30" and machine.format_load(()) == "n/a"
    assert (
        machine.load_line(quiet, quiet, max_start=0.5, max_end=0.5)
        == "- **Load average** (1/5/15 min): start 0.10/0.20/0.30, end 0.10/0.20/0.30"
    )
    assert machine.load_line(busy, quiet, max_start=0.5, max_end=1.5).endswith(f"  — {machine.BUSY_NOTE}")
    assert "  — " not in machine.load_line(
        quiet, busy, max_start=0.5, max_end=1.5
    )  # 0.9 at the end is below its own limit
    assert machine.load_line(quiet, (2.0, 0, 0), max_start=0.5, max_end=1.5, busy_note="busy").endswith(
        "  — busy"
    )
    assert (
        machine.load_line((), (), max_start=0.5, max_end=0.5)
        == "- **Load average** (1/5/15 min): start n/a, end n/a"
    )


def test_wait_for_quiet_machine_returns_at_once_below_the_limit_and_gives_up_after_the_timeout(
    monkeypatch,
) -> None:
    echoed: list[str] = []
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    waited = machine.wait_for_quiet_machine(1.0, 60, echoed.append)
    assert waited["quiet"] and waited["load"] == 0.2 and waited["seconds"] < 5 and not echoed
    assert (
        machine.waited_line(waited | {"seconds": 3})
        == "- **Waited** 3 s for the 1-minute load to drop below 1"
    )

    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 2.0, 1.0))
    waited = machine.wait_for_quiet_machine(1.5, 0, echoed.append)
    assert not waited["quiet"] and waited["load"] == 3.0 and waited["timeout"] == 0
    assert (
        machine.waited_line(waited)
        == "- **Waited** 0 s for the 1-minute load to drop below 1.5 (it did not within 0 s: 3.00)"
    )


def test_wait_options_and_the_load_they_ask_for() -> None:
    recording = argparse.ArgumentParser()
    recording.add_argument("--record", action="store_true")
    machine.add_wait_options(recording, record_default=1.5)
    assert "first wait until the 1-minute load average is below this (default 1.5 with --record)" in " ".join(
        recording.format_help().split()
    )
    assert machine.wait_load(recording.parse_args([])) is None
    assert machine.wait_load(recording.parse_args(["--record"]), 1.5) == 1.5
    assert machine.wait_load(recording.parse_args(["--record", "--wait-load", "3"]), 1.5) == 3.0
    assert recording.parse_args([]).wait_timeout == 600.0

    plain = argparse.ArgumentParser()
    machine.add_wait_options(plain, when="before the timed runs,")
    assert (
        "before the timed runs, wait until the 1-minute load average is below this --wait-timeout"
        in " ".join(plain.format_help().split())
    )
    assert (
        machine.wait_load(plain.parse_args([])) is None
        and machine.wait_load(plain.parse_args(["--wait-load", "2"])) == 2.0
    )


def test_contention_is_what_others_used_of_the_machine(monkeypatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    before = CpuSnapshot(machine_busy=100.0, own=10.0, steal=1.0, wall=50.0)
    after = CpuSnapshot(
        machine_busy=120.0, own=12.0, steal=1.5, wall=60.0
    )  # 10 s of 2 cores: 20 CPU-seconds of capacity, all busy

    measured = machine.contention(before, after, children_cpu_seconds=8.0)

    assert measured == {
        "wall_seconds": 10.0,
        "benchmark_cpu_seconds": 10.0,
        "other_cpu_seconds": 10.0,
        "other_share": 0.5,
        "steal_share": 0.025,
    }
    assert (
        machine.contention(before, after)["other_cpu_seconds"] == 18.0
    )  # the benchmark is this process only
    assert (
        machine.contention(before, after, children_cpu_seconds=30.0)["other_cpu_seconds"] == 0.0
    )  # never negative
    assert machine.contention_line(measured) == (
        "- **Other load during the timed runs**: 10.0 CPU-seconds used by other processes in 10 s, 50% of the machine "
        "(the benchmark itself: 10.0 CPU-seconds); hypervisor steal 2%"
    )
    assert machine.contention_line({}) == "- **Other load during the timed runs**: not measured"


def test_cpu_snapshot_counts_this_process() -> None:
    before = machine.cpu_snapshot()
    sum(i * i for i in range(200_000))
    after = machine.cpu_snapshot()
    assert after.own >= before.own and after.machine_busy >= before.machine_busy and after.wall > before.wall
