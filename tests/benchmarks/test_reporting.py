"""The benchmarks' shared report writing (harness.reporting): the report and its JSON twin, RESULTS.md sections, the output options."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from benchmarks import bench_convert, bench_fedavg, bench_ingest
from benchmarks.harness import reporting
from benchmarks.harness.reporting import ResultsSection

SECTION = ResultsSection(
    heading="## Widgets",
    intro="Widgets per second (`python -m benchmarks.bench_widgets --record`).",
    marker="<!-- widgets: newest first -->",
)
OTHER = ResultsSection(heading="## Gadgets", intro="Gadgets.", marker="<!-- gadgets: newest first -->")


@dataclass
class Settings:
    workdir: Path
    record: bool = False


@dataclass
class Results(reporting.ReportHeader):
    figures: dict = field(default_factory=dict)


def render(results: Results, *, heading: str = "##") -> str:
    return f"{heading} widgets — {results.started}\n\n- {results.figures.get('rate', 0)} widgets/s\n"


def test_write_report_writes_the_markdown_under_its_title_and_the_json_twin(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "widgets-report.md"
    data = {"settings": {"workdir": "/w"}, "load_start": (0.1, 0.2, 0.3), "when": Path("/x")}

    assert reporting.write_report(path, title="widgets", markdown="## widgets\n", data=data) == path

    assert path.read_text() == "# Benchmark report: widgets\n\n## widgets\n"
    twin = path.with_suffix(".json")
    assert twin.read_text().endswith("}\n")
    assert json.loads(twin.read_text()) == {
        "settings": {"workdir": "/w"},
        "load_start": [0.1, 0.2, 0.3],
        "when": "/x",
    }


def test_record_report_creates_the_file_and_the_section(tmp_path: Path) -> None:
    results_file = tmp_path / "RESULTS.md"

    reporting.record_report("### first\n", SECTION, results_file)

    assert (
        results_file.read_text()
        == f"# Benchmark results\n\n{SECTION.heading}\n\n{SECTION.intro}\n\n{SECTION.marker}\n\n### first\n"
    )


def test_record_report_puts_the_newest_entry_first_and_keeps_everything_else(tmp_path: Path) -> None:
    results_file = tmp_path / "RESULTS.md"
    original = f"# Benchmark results\n\nintro\n\n{OTHER.text()}\n\n### a gadget entry\n\n- 3 gadgets/s\n"
    results_file.write_text(original)

    reporting.record_report("### older\n", SECTION, results_file)
    first = results_file.read_text()
    assert first.startswith(
        original.rstrip("\n") + f"\n\n{SECTION.text()}\n\n### older\n"
    )  # appended after the other section
    reporting.record_report("### newer\n", SECTION, results_file)
    reporting.record_report("### another gadget\n", OTHER, results_file)

    text = results_file.read_text()
    assert (
        text.count(SECTION.heading) == 1 and text.count(SECTION.marker) == 1 and text.count(OTHER.marker) == 1
    )
    assert (
        text.index(OTHER.marker)
        < text.index("### another gadget")
        < text.index("### a gadget entry")
        < text.index(SECTION.heading)
    )
    assert text.index(SECTION.marker) < text.index("### newer") < text.index("### older")
    assert "- 3 gadgets/s" in text and text.startswith("# Benchmark results\n\nintro\n\n")
    # Entries are separated by one blank line and the file ends with one newline.
    assert f"{SECTION.marker}\n\n### newer\n\n### older\n" in text and text.endswith("### older\n")


def test_record_report_into_the_real_results_file_layout_keeps_its_entries(tmp_path: Path) -> None:
    # A copy of benchmarks/RESULTS.md: a new entry lands at the top of its section; every byte around it is kept.
    results_file = tmp_path / "RESULTS.md"
    original = reporting.RESULTS_FILE.read_text()
    results_file.write_text(original)
    section = bench_ingest.SECTION

    reporting.record_report("### new ingest entry\n", section, results_file)

    head, tail = original.split(section.marker, 1)
    assert (
        results_file.read_text()
        == f"{head}{section.marker}\n\n### new ingest entry\n\n{tail.lstrip(chr(10))}"
    )


@pytest.mark.parametrize("bench", [bench_convert, bench_ingest, bench_fedavg], ids=lambda m: m.__name__)
def test_each_benchmarks_section_is_the_one_already_in_results_md(bench) -> None:
    # Otherwise --record would append a second section instead of adding to the existing one.
    assert bench.SECTION.text() in reporting.RESULTS_FILE.read_text()


def test_publish_writes_prints_and_records_only_when_asked(tmp_path: Path, capsys) -> None:
    results = Results.begin(Settings(workdir=tmp_path / "work"), {"cpu_model": "test"})
    results.figures = {"rate": 7}
    results_file = tmp_path / "RESULTS.md"
    path = tmp_path / "widgets-report.md"

    reporting.publish(
        results, render, title="widgets", path=path, section=SECTION, record=False, results_file=results_file
    )
    assert not results_file.exists()
    assert path.read_text() == "# Benchmark report: widgets\n\n" + render(results)
    data = json.loads(path.with_suffix(".json").read_text())
    assert list(data) == [
        "settings",
        "machine",
        "load_start",
        "load_end",
        "started",
        "figures",
    ]  # the header first
    assert data["settings"] == {"workdir": str(tmp_path / "work"), "record": False} and data["figures"] == {
        "rate": 7
    }
    printed = capsys.readouterr().out
    assert printed == f"\n{render(results)}\nreport: {path} (+ widgets-report.json)\n"

    reporting.publish(
        results, render, title="widgets", path=path, section=SECTION, record=True, results_file=results_file
    )
    assert results_file.read_text().endswith(f"{SECTION.marker}\n\n{render(results, heading='###')}")
    assert capsys.readouterr().out.endswith(f"recorded in {results_file}\n")


def test_report_header_begins_with_settings_and_machine_and_no_loads_yet() -> None:
    results = Results.begin(Settings(workdir=Path("/tmp/w"), record=True), {"cpu_model": "x"})
    assert results.settings == {"workdir": "/tmp/w", "record": True}
    assert results.machine == {"cpu_model": "x"} and results.load_start == () and results.load_end == ()
    assert results.started.endswith(" UTC") and len(results.started) == len("2026-01-01 12:00 UTC")


def test_report_options_parse_to_absolute_paths(tmp_path: Path, monkeypatch) -> None:
    parser = argparse.ArgumentParser()
    reporting.add_report_options(
        parser, workdir_use="scratch", report_name="widgets-report.md", record_help="also record it"
    )
    help_text = " ".join(parser.format_help().split())
    assert (
        "scratch (default benchmarks/_work)" in help_text
        and "default WORKDIR/widgets-report.md; a .json twin" in help_text
    )

    args = parser.parse_args([])
    assert (
        reporting.output_paths(args)
        == (reporting.DEFAULT_WORKDIR, reporting.DEFAULT_WORKDIR / "widgets-report.md")
        and not args.record
    )
    monkeypatch.chdir(tmp_path)
    args = parser.parse_args(["--workdir", "w", "--record"])
    assert (
        reporting.output_paths(args) == (tmp_path / "w", tmp_path / "w" / "widgets-report.md") and args.record
    )
    args = parser.parse_args(["--workdir", "w", "--report", "out/r.md"])
    assert reporting.output_paths(args) == (tmp_path / "w", tmp_path / "out" / "r.md")
