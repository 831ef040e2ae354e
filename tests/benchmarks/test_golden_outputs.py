"""The benchmarks' outputs are the same as before the shared harness, byte for byte.

``golden/`` holds what the benchmarks wrote before they moved onto ``benchmarks.harness``:
for fixed results (``<case>.json``: the JSON twins of real quick runs, and variants derived
from them with the benchmarks' own summarising code, covering the report's optional parts),
the report file (``<case>.md``), the JSON twin (the same ``<case>.json``) and, for one case a
benchmark, the RESULTS.md entry (``<case>.entry.md``); and each command line's ``--help``,
the settings it parses from fixed argument lists, and its usage errors (``cli.json``).
Cases added since are real runs of the code that wrote them: ``fedavg-sandbox`` is bench_fedavg's
overhead part with the sandbox on and off (issue 10); its ``--help`` changed with it, deliberately.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks import bench_convert, bench_fedavg, bench_ingest, bench_privacy
from benchmarks.convert.contenders import Run
from benchmarks.fedavg import accuracy, overhead
from benchmarks.fedavg.sites import parse_sandbox_log
from benchmarks.harness.reporting import publish, settings_dict
from benchmarks.ingest import ways
from benchmarks.privacy import runs as privacy_runs

GOLDEN = Path(__file__).parent / "golden"
BENCHMARKS = {
    "convert": bench_convert,
    "ingest": bench_ingest,
    "fedavg": bench_fedavg,
    "privacy": bench_privacy,
}
CASES = sorted(path.stem for path in GOLDEN.glob("*.json") if path.name not in ("cli.json", "sections.json"))
WORKDIR = ["--workdir", "/golden/work"]


@pytest.mark.parametrize("case", CASES)
def test_the_report_its_json_twin_and_its_results_entry_are_unchanged(
    case: str, tmp_path: Path, capsys
) -> None:
    module = BENCHMARKS[case.split("-")[0]]
    twin = (GOLDEN / f"{case}.json").read_text()
    data = json.loads(twin)
    results = module.Results(**{k: tuple(v) if k.startswith("load") else v for k, v in data.items()})
    report, results_file = tmp_path / "report.md", tmp_path / "RESULTS.md"

    publish(
        results,
        module.render_report,
        title=module.BENCHMARK.title,
        path=report,
        section=module.SECTION,
        record=True,
        results_file=results_file,
    )

    assert report.read_text() == (GOLDEN / f"{case}.md").read_text()
    assert report.with_suffix(".json").read_text() == twin
    assert capsys.readouterr().out.startswith("\n" + (GOLDEN / f"{case}.md").read_text().split("\n\n", 1)[1])
    entry = GOLDEN / f"{case}.entry.md"
    if entry.is_file():
        assert (
            results_file.read_text()
            == f"# Benchmark results\n\n{module.SECTION.text()}\n\n{entry.read_text()}"
        )


def test_every_benchmark_has_a_golden_results_entry() -> None:
    assert {path.name.split("-")[0] for path in GOLDEN.glob("*.entry.md")} == set(BENCHMARKS)


@pytest.mark.parametrize("name", ["bench_convert", "bench_ingest", "bench_fedavg", "bench_privacy"])
def test_the_command_line_is_unchanged(name: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps its help to the terminal's width
    module = BENCHMARKS[name.removeprefix("bench_")]
    golden = json.loads((GOLDEN / "cli.json").read_text())[name]

    with pytest.raises(SystemExit):
        module.parse_args(["--help"])
    assert capsys.readouterr().out == golden["help"]

    for case in golden["settings"]:
        parsed = settings_dict(module.parse_args(case["argv"] + WORKDIR))
        assert json.dumps(parsed) == json.dumps(case["settings"]), case["argv"]  # the same values, in order

    for case in golden["errors"]:
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as stopped:
            module.parse_args(case["argv"] + WORKDIR)
        assert f"exit {stopped.value.code}: {stderr.getvalue().splitlines()[-1]}" == case["error"]


def test_each_benchmarks_results_section_is_unchanged() -> None:
    # Otherwise --record would start a new section of RESULTS.md instead of adding to its own.
    golden = json.loads((GOLDEN / "sections.json").read_text())
    for name, section in golden.items():
        assert asdict(BENCHMARKS[name.removeprefix("bench_")].SECTION) == section, name


def _summaries(case: str, data: dict) -> dict:
    """What the benchmark derives from its measured figures, derived again from the golden's."""
    module, s = BENCHMARKS[case.split("-")[0]], SimpleNamespace(**data["settings"])
    if module is bench_convert:
        runs = {label: [Run(**_fields(Run, r)) for r in group] for label, group in data["runs"].items()}
        summary, targets = bench_convert._summarise(runs, s)
        return {"summary": summary, "targets": targets}
    if module is bench_ingest:
        runs = {key: [ways.Run(**_fields(ways.Run, r)) for r in group] for key, group in data["runs"].items()}
        summary, targets = bench_ingest._summarise(runs, s)
        return {"summary": summary, "targets": targets}
    if module is bench_privacy:
        return {"summary": privacy_runs.summarise(SimpleNamespace(runs=data["runs"]), s)}
    derived: dict = {}
    if data["accuracy"]:
        derived["accuracy"] = data["accuracy"] | {
            "summary": accuracy.summarise_accuracy(data["accuracy"]["runs"], s)
        }
    if data["overhead"]:
        derived["overhead"] = data["overhead"] | {"summary": overhead.summarise_overhead(data["overhead"])}
    derived["targets"] = bench_fedavg.targets(SimpleNamespace(**data), s)
    return derived


def _fields(cls: type, row: dict) -> dict:
    return {f.name: row[f.name] for f in fields(cls)}


@pytest.mark.parametrize("case", CASES)
def test_the_summaries_are_derived_from_the_measured_figures_as_before(case: str, monkeypatch) -> None:
    data = json.loads((GOLDEN / f"{case}.json").read_text())
    # ratios per core and core notes use the machine's core count: the golden's machine
    monkeypatch.setattr(os, "cpu_count", lambda: data["machine"]["logical_cpus"])

    derived = _summaries(case, data)

    for key, value in derived.items():
        assert json.loads(json.dumps(value)) == data[key], key


# What a site printed and logged in the run behind ``fedavg-sandbox`` (datasite_setup.site.serve and
# contained), verbatim: the benchmark reads the sandbox's costs from these lines.
SANDBOX_ON_LOG = (
    "datasite client_0 sandbox on (Landlock ABI 7, seccomp refusing 40 system calls; 1 torch thread(s) per "
    "worker, 900 s and 4096 MB per call)\n"
    "2026-12-02 00:53:52,477 fedimg.sandbox INFO sandbox: job f1f800583b6e4605a4be2af3f8ca97a7 has its worker "
    "(waited 0.002 s for the warm spare, spawned in 16.02 s off the critical path; mapped its inputs, confined "
    "itself and compiled the code in 0.070 s)\n"
)
SANDBOX_OFF_LOG = (
    'datasite client_0 sandbox OFF: approved code runs UNCONFINED in the site process ([sandbox] mode = "off" '
    "in the site policy): it can read the state dir, open sockets and start programs\n"
)


def test_the_fedavg_sandbox_costs_are_read_from_the_sites_logs() -> None:
    on, off = parse_sandbox_log(SANDBOX_ON_LOG), parse_sandbox_log(SANDBOX_OFF_LOG)

    assert (on["mode"], on["worker_threads"]) == ("on", 1)
    assert on["workers"] == [
        {
            "job": "f1f800583b6e4605a4be2af3f8ca97a7",
            "wait_seconds": 0.002,
            "spawn_seconds": 16.02,
            "setup_seconds": 0.07,
        }
    ]
    assert (off["mode"], off["worker_threads"], off["workers"]) == ("off", None, [])
    assert parse_sandbox_log("datasite client_0 serving http://127.0.0.1:1\n")["mode"] is None


def test_the_fedavg_sandbox_case_reports_both_modes_and_the_sandbox_costs() -> None:
    data = json.loads((GOLDEN / "fedavg-sandbox.json").read_text())
    overhead_figures, summary = data["overhead"], data["overhead"]["summary"]
    report = (GOLDEN / "fedavg-sandbox.md").read_text()

    assert overhead_figures["sandbox"]["mode"] == "on" and "unconfined" in overhead_figures
    costs = summary["sandbox"]
    assert costs["per_call_seconds"] == pytest.approx(
        summary["http_round_seconds"] - summary["unconfined"]["http_round_seconds"]
    )
    for key in ("spawn_seconds", "wait_seconds", "setup_seconds"):
        per_site = sorted(site[key] for site in costs["sites"].values())
        assert costs[key] == per_site[len(per_site) // 2]  # the median of the three sites
    assert "Ratio, sandbox off" in report and "What the sandbox costs" in report
    overhead_targets = [row["target"] for row in data["targets"] if "HTTP datasites" in row["target"]]
    assert ["sandbox on" in t and "≤ 1.15×" in t for t in overhead_targets] == [True, False]
    assert "sandbox off" in overhead_targets[1] and "≤ 1.3×" in overhead_targets[1]
