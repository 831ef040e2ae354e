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

from benchmarks.harness.machine import REPO_ROOT

RESULTS_FILE = REPO_ROOT / "benchmarks" / "RESULTS.md"
DEFAULT_WORKDIR = REPO_ROOT / "benchmarks" / "_work"
RESULTS_PREAMBLE = "# Benchmark results\n"  # what a new RESULTS.md starts with
ENTRY_HEADING = "###"  # a report's heading in RESULTS.md: one level below its section's "##"


@dataclass(frozen=True)
class ResultsSection:
    """A benchmark's section of RESULTS.md.

    Parameters
    ----------
    heading : str
        The section's ``## heading`` line.
    intro : str
        The line under it.
    marker : str
        The HTML comment the entries go below, newest first.

    Examples
    --------
    >>> ResultsSection("## Widgets", "Widgets per second.", "<!-- widgets -->").text()
    '## Widgets\\n\\nWidgets per second.\\n\\n<!-- widgets -->'
    """

    heading: str
    intro: str
    marker: str

    def text(self) -> str:
        """The section as it is appended when RESULTS.md does not have it yet."""
        return f"{self.heading}\n\n{self.intro}\n\n{self.marker}"


@dataclass
class ReportHeader:
    """What every report states before its figures: settings, machine, load at start and end, when it ran.

    Each benchmark's results dataclass extends it with its own fields (after these,
    so the JSON twin keeps this order).

    Parameters
    ----------
    settings : dict
        The benchmark's settings, as ``settings_dict`` stores them.
    machine : dict
        ``machine_info()`` and the software versions the benchmark reports.
    load_start, load_end : tuple
        The load average when the measured part started and ended (``()``: not yet).
    started : str
        When the run started (``started_at()``).
    """

    settings: dict
    machine: dict
    load_start: tuple
    load_end: tuple
    started: str

    @classmethod
    def begin(cls, settings: Any, machine: dict) -> Self:
        """Results of a run starting now; the loads are taken later (``benchmark.measuring``).

        Parameters
        ----------
        settings : dataclass
            The benchmark's settings.
        machine : dict
            The machine and software facts.

        Returns
        -------
        ReportHeader
            An instance of the benchmark's results class, its own fields at their defaults.
        """
        return cls(
            settings=settings_dict(settings),
            machine=machine,
            load_start=(),
            load_end=(),
            started=started_at(),
        )


def started_at() -> str:
    """Now, in UTC to the minute: the time a report is headed with.

    Examples
    --------
    >>> started_at().endswith(" UTC")
    True
    """
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def settings_dict(settings: Any) -> dict:
    """A settings dataclass as the JSON twin stores it (paths as strings).

    Parameters
    ----------
    settings : dataclass
        A benchmark's settings.

    Returns
    -------
    dict
        Its fields in order, every ``Path`` as a string.

    Examples
    --------
    >>> from dataclasses import make_dataclass
    >>> settings_dict(make_dataclass("S", ["workdir", "seed"])(Path("/w"), 0))
    {'workdir': '/w', 'seed': 0}
    """
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()}


def write_report(path: Path, *, title: str, markdown: str, data: dict) -> Path:
    """Write the report and its ``.json`` twin.

    Parameters
    ----------
    path : Path
        The markdown file; the twin is ``path`` with ``.json``.
    title : str
        The report's ``# Benchmark report: {title}`` line.
    markdown : str
        The report's text below that line.
    data : dict
        Every figure, for the twin.

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> path = write_report(Path("w.md"), title="widgets", markdown="## 7 widgets/s\\n", data={"rate": 7})
    >>> path.read_text()
    '# Benchmark report: widgets\\n\\n## 7 widgets/s\\n'
    >>> path.with_suffix(".json").read_text()
    '{\\n  "rate": 7\\n}\\n'
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# Benchmark report: {title}\n\n" + markdown)
    path.with_suffix(".json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def record_report(entry: str, section: ResultsSection, results_file: Path = RESULTS_FILE) -> None:
    """Insert ``entry`` right below ``section``'s marker in ``results_file``, so the newest entry comes first.

    The section is appended to the file (created if missing) when its marker is not
    there yet; everything else in the file, other benchmarks' sections and older
    entries included, is kept as it is.

    Parameters
    ----------
    entry : str
        The report as RESULTS.md holds it (headed ``ENTRY_HEADING``).
    section : ResultsSection
        The benchmark's section.
    results_file : Path
        ``benchmarks/RESULTS.md`` unless told otherwise.

    Examples
    --------
    >>> section = ResultsSection("## Widgets", "Widgets per second.", "<!-- widgets -->")
    >>> record_report("### older\\n", section, Path("RESULTS.md"))
    >>> record_report("### newer\\n", section, Path("RESULTS.md"))
    >>> print(Path("RESULTS.md").read_text(), end="")
    # Benchmark results
    <BLANKLINE>
    ## Widgets
    <BLANKLINE>
    Widgets per second.
    <BLANKLINE>
    <!-- widgets -->
    <BLANKLINE>
    ### newer
    <BLANKLINE>
    ### older
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
    """What a benchmark does with its results: write the report and its twin, print it, and maybe record it.

    Parameters
    ----------
    results : dataclass
        The benchmark's results (a ``ReportHeader``); the twin is ``asdict(results)``.
    render : Callable[..., str]
        ``render(results, heading=…)``: the markdown, headed ``##`` in the report
        file and ``ENTRY_HEADING`` in RESULTS.md.
    title : str
        The report file's title.
    path : Path
        The report file.
    section : ResultsSection
        The benchmark's section of RESULTS.md.
    record : bool
        Also insert the report into ``results_file``.
    results_file : Path
        ``benchmarks/RESULTS.md`` unless told otherwise.

    Returns
    -------
    Path
        ``path``.
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
    """Add ``--workdir``, ``--report`` and ``--record`` to a benchmark's command line.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The benchmark's parser.
    workdir_use : str
        What the work folder holds (its help).
    report_name : str
        The report's file name in the work folder, the default of ``--report``;
        kept in the parsed arguments for ``output_paths``.
    record_help : str
        ``--record``'s help.

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_report_options(parser, workdir_use="scratch", report_name="w.md", record_help="record it")
    >>> output_paths(parser.parse_args(["--workdir", "/w"]))
    (PosixPath('/w'), PosixPath('/w/w.md'))
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
    """The absolute work folder and report path from ``--workdir`` and ``--report``.

    Parameters
    ----------
    args : argparse.Namespace
        Arguments parsed with ``add_report_options``' options.

    Returns
    -------
    tuple[Path, Path]
        The work folder and the report (default ``WORKDIR/report_name``).

    Examples
    --------
    >>> output_paths(argparse.Namespace(workdir=Path("/w"), report=Path("/r.md"), report_name="x.md"))
    (PosixPath('/w'), PosixPath('/r.md'))
    """
    workdir = args.workdir.absolute()
    return workdir, (args.report or workdir / args.report_name).absolute()
