"""A benchmark's report: the markdown file and its ``.json`` twin, and its entry in ``benchmarks/RESULTS.md``.

Every benchmark writes its report the same way and records it in its own
section of RESULTS.md (newest first, under an HTML-comment marker), so these
functions do it once; the benchmark supplies the text.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_FILE = REPO_ROOT / "benchmarks" / "RESULTS.md"
DEFAULT_WORKDIR = REPO_ROOT / "benchmarks" / "_work"
RESULTS_PREAMBLE = "# Benchmark results\n"  # what a new RESULTS.md starts with
ENTRY_HEADING = "###"  # a report's heading in RESULTS.md: one level below its section's "##"


@dataclass(frozen=True)
class ResultsSection:
    """A benchmark's section of RESULTS.md: its ``## heading``, the line under it, and the marker its entries go below."""

    heading: str
    intro: str
    marker: str

    def text(self) -> str:
        """The section as it is appended when RESULTS.md does not have it yet."""
        return f"{self.heading}\n\n{self.intro}\n\n{self.marker}"


@dataclass
class ReportHeader:
    """What every report states before its figures: the settings, the machine, its load at start and end, and when it ran.

    Each benchmark's results dataclass extends it with its own fields (after these, so the JSON twin keeps this order).
    """

    settings: dict
    machine: dict
    load_start: tuple
    load_end: tuple
    started: str

    @classmethod
    def begin(cls, settings: Any, machine: dict) -> Self:
        """Results of a run starting now, with ``settings`` (a dataclass) as the JSON twin stores it; the loads are taken later."""
        return cls(
            settings=settings_dict(settings),
            machine=machine,
            load_start=(),
            load_end=(),
            started=started_at(),
        )


def started_at() -> str:
    """Now, in UTC to the minute: the time a report is headed with."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def settings_dict(settings: Any) -> dict:
    """A settings dataclass as the JSON twin stores it (paths as strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()}


def write_report(path: Path, *, title: str, markdown: str, data: dict) -> Path:
    """Write ``markdown`` under ``# Benchmark report: {title}`` to ``path`` and ``data`` (every figure) to ``path`` with ``.json``; return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# Benchmark report: {title}\n\n" + markdown)
    path.with_suffix(".json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def record_report(entry: str, section: ResultsSection, results_file: Path = RESULTS_FILE) -> None:
    """Insert ``entry`` right below ``section``'s marker in ``results_file``, so the newest entry comes first.

    The section is appended to the file (created if missing) when its marker is not
    there yet; everything else in the file, other benchmarks' sections and older
    entries included, is kept as it is.
    """
    text = results_file.read_text() if results_file.is_file() else RESULTS_PREAMBLE
    if section.marker not in text:
        text = text.rstrip("\n") + f"\n\n{section.text()}\n"
    head, tail = text.split(section.marker, 1)
    tail = tail.strip("\n")
    results_file.write_text(f"{head}{section.marker}\n\n{entry}" + (f"\n{tail}\n" if tail else ""))


def publish(
    results: Any,
    render: Callable[..., str],
    *,
    title: str,
    path: Path,
    section: ResultsSection,
    record: bool,
    results_file: Path = RESULTS_FILE,
) -> Path:
    """What a benchmark does with its results: write the report and its twin, print it, and with ``record`` add it to RESULTS.md.

    ``results`` is the benchmark's results dataclass; ``render(results, heading=…)``
    its markdown (``##`` in the report file, ``ENTRY_HEADING`` in RESULTS.md).
    """
    markdown = render(results)
    write_report(path, title=title, markdown=markdown, data=asdict(results))
    print()
    print(markdown)
    print(f"report: {path} (+ {path.with_suffix('.json').name})")
    if record:
        record_report(render(results, heading=ENTRY_HEADING), section, results_file)
        print(f"recorded in {results_file}")
    return path


def add_report_options(
    parser: argparse.ArgumentParser, *, workdir_use: str, report_name: str, record_help: str
) -> None:
    """Add ``--workdir`` (``workdir_use``: what it holds), ``--report`` (default ``WORKDIR/report_name``) and ``--record``.

    ``report_name`` is kept in the parsed arguments for ``output_paths``.
    """
    parser.add_argument(
        "--workdir", type=Path, default=DEFAULT_WORKDIR, help=f"{workdir_use} (default benchmarks/_work)"
    )
    parser.add_argument(
        "--report",
        type=Path,
        help=f"markdown report path (default WORKDIR/{report_name}; a .json twin is written beside it)",
    )
    parser.add_argument("--record", action="store_true", help=record_help)
    parser.set_defaults(report_name=report_name)


def output_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """The absolute work folder and report path from ``--workdir`` and ``--report`` (default ``WORKDIR/report_name``)."""
    workdir = args.workdir.absolute()
    return workdir, (args.report or workdir / args.report_name).absolute()
