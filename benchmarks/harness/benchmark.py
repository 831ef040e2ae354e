"""One benchmark as the harness runs it: its shared options and settings, its flow, its report's opening.

Every benchmark has the same shape: parse its command line (its own options, then
``--workdir``, ``--report``, ``--record``, ``--quick`` and, where it applies,
``--seed`` and ``--wait-load``/``--wait-timeout``); run, waiting for a quiet
machine and noting the load around the measured part; render its report
(machine, software and load first, targets last); write it and maybe record it
in RESULTS.md. A ``Benchmark`` holds what differs between them, so each
``bench_*.py`` holds only what it measures.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.harness.machine import (
    BUSY_NOTE,
    add_wait_options,
    contention_line,
    load_line,
    machine_line,
    wait_for_quiet_machine,
    wait_load,
    waited_line,
)
from benchmarks.harness.reporting import ResultsSection, add_report_options, output_paths, publish

T = TypeVar("T")


class BenchmarkError(RuntimeError):
    """A run produced something wrong or incomplete: its figures would mean nothing."""


# --- the settings every benchmark shares ---------------------------------------------------------
# A benchmark's Settings dataclass lists these classes as bases, after its own groups of fields.
# Dataclass fields follow the bases from the last to the first, so the benchmark's own fields come
# first and these after them: the order its JSON twin has always had.


@dataclass
class RunOptions:
    """Where a benchmark's files go, whether it records its report, and whether it is a smoke run.

    Parameters
    ----------
    workdir : Path
        Caches and scratch files (``--workdir``).
    report : Path
        The markdown report (``--report``).
    record : bool
        Also add the report to RESULTS.md (``--record``).
    quick : bool
        A smoke run (``--quick``).
    """

    workdir: Path
    report: Path
    record: bool
    quick: bool


@dataclass
class SeedOption:
    """The seed of a benchmark's generated inputs (``--seed``)."""

    seed: int = 0


@dataclass
class WaitOptions:
    """Waiting for a quiet machine before the measured part (``--wait-load``, ``--wait-timeout``)."""

    wait_load: float | None = None
    wait_timeout: float = 600.0


def chosen(value: T | None, quick_mode: bool, *, full: T, quick: T) -> T:
    """An option's value: as given, else its default for a full run or for ``--quick``.

    Parameters
    ----------
    value : object or None
        The parsed option (None: not given).
    quick_mode : bool
        Whether ``--quick`` was given.
    full, quick : object
        The defaults of a full run and of a quick one.

    Returns
    -------
    object
        The value to use.

    Examples
    --------
    >>> chosen(None, True, full=2000, quick=200), chosen(500, True, full=2000, quick=200)
    (200, 500)
    """
    if value is not None:
        return value
    return quick if quick_mode else full


# --- the flow ---------------------------------------------------------------------------------


@contextlib.contextmanager
def measuring(results: Any, settings: Any, echo: Callable[..., object] = print) -> Iterator[None]:
    """Bracket a benchmark's measured part: wait for a quiet machine if asked, note the load before and after.

    Parameters
    ----------
    results : ReportHeader
        The run's results; ``waited`` (when the settings wait), ``load_start``
        and ``load_end`` are set.
    settings : dataclass
        The benchmark's settings; with ``WaitOptions``, a ``wait_load`` that is
        not None waits first.
    echo : Callable
        Where the "waiting for …" line goes.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> results = SimpleNamespace(load_start=(), load_end=())
    >>> with measuring(results, SimpleNamespace(wait_load=None)):
    ...     pass
    >>> len(results.load_start), len(results.load_end)
    (3, 3)
    """
    max_load = getattr(settings, "wait_load", None)
    if max_load is not None:
        results.waited = wait_for_quiet_machine(max_load, settings.wait_timeout, echo)
    results.load_start = os.getloadavg()
    yield
    results.load_end = os.getloadavg()


@dataclass(frozen=True)
class LoadLimits:
    """When a report flags its load average as busy, and what it says then.

    Parameters
    ----------
    max_start, max_end : float
        The 1-minute load above which the start (or end) of the measured part counts as busy.
    busy_note : str
        What the "Load average" line adds when it was busy.
    """

    max_start: float
    max_end: float
    busy_note: str = BUSY_NOTE


@dataclass(frozen=True)
class Benchmark:
    """What the harness needs to know of one benchmark: its names, its shared options, its section.

    Parameters
    ----------
    module : str
        The module under ``benchmarks`` (``python -m benchmarks.<module>``).
    title : str
        The report file's ``# Benchmark report: <title>``.
    heading : str
        The heading of its section of RESULTS.md (``## <heading>``).
    about : str
        What the section holds: its intro, before the command that records it.
    marker_label : str
        What the section's marker calls its entries (``<!-- <marker_label>: newest first; …``).
    report_name : str
        The report's default file name in the work folder.
    workdir_use : str
        What the work folder holds (``--workdir``'s help).
    record_help : str
        ``--record``'s help.
    quick_help : str
        ``--quick``'s help: what a smoke run does.
    seeded : bool
        The benchmark generates inputs from ``--seed`` (``SeedOption``).
    wait_when : str or None
        How ``--wait-load``'s help starts; None: no ``--wait-load`` (no ``WaitOptions``).
    record_wait_load : float or None
        The ``--wait-load`` that ``--record`` implies (None: recording does not wait).
    load : LoadLimits
        When the report flags its load average.

    Examples
    --------
    >>> widgets = Benchmark("bench_widgets", "widgets", "Widgets", "Widgets per second", "widget results",
    ...                     report_name="widgets.md", workdir_use="scratch", record_help="record it",
    ...                     quick_help="smoke run", wait_when="first")
    >>> widgets.section.marker
    '<!-- widget results: newest first; `python -m benchmarks.bench_widgets --record` inserts below -->'
    >>> parser = widgets.parser("Benchmark: widgets per second.\\n\\nMore text.")
    >>> widgets.add_run_options(parser)
    >>> options = widgets.run_options(parser.parse_args(["--workdir", "/w", "--quick", "--wait-load", "2"]))
    >>> options["report"], options["quick"], options["wait_load"]
    (PosixPath('/w/widgets.md'), True, 2.0)
    """

    module: str
    title: str
    heading: str
    about: str
    marker_label: str
    report_name: str
    workdir_use: str
    record_help: str
    quick_help: str
    seeded: bool = False
    wait_when: str | None = None
    record_wait_load: float | None = None
    load: LoadLimits = field(default_factory=lambda: LoadLimits(0.5, 0.5))

    @property
    def section(self) -> ResultsSection:
        """Its section of RESULTS.md: the heading, what it holds and how to record into it, the marker."""
        command = f"python -m benchmarks.{self.module} --record"
        return ResultsSection(
            heading=f"## {self.heading}",
            intro=f"{self.about} (`.venv/bin/{command}`; how to read it: [README.md](README.md)).",
            marker=f"<!-- {self.marker_label}: newest first; `{command}` inserts below -->",
        )

    def parser(self, doc: str) -> argparse.ArgumentParser:
        """The benchmark's parser: its ``python -m`` name, described by ``doc``'s first paragraph."""
        return argparse.ArgumentParser(
            prog=f"python -m benchmarks.{self.module}", description=doc.split("\n\n")[0]
        )

    def add_run_options(self, parser: argparse.ArgumentParser) -> None:
        """Add the shared options, after the benchmark's own: report, ``--quick``, ``--seed``, waiting.

        ``--seed`` only when the benchmark is ``seeded``, the waiting options only with ``wait_when``.
        """
        add_report_options(
            parser, workdir_use=self.workdir_use, report_name=self.report_name, record_help=self.record_help
        )
        parser.add_argument("--quick", action="store_true", help=self.quick_help)
        if self.seeded:
            parser.add_argument(
                "--seed", type=int, default=0, help="seed of the generated images (default 0)"
            )
        if self.wait_when is not None:
            add_wait_options(parser, when=self.wait_when, record_default=self.record_wait_load)

    def run_options(self, args: argparse.Namespace) -> dict:
        """The shared settings from the parsed command line, as keyword arguments of the Settings."""
        workdir, report = output_paths(args)
        options: dict = {"workdir": workdir, "report": report, "record": args.record, "quick": args.quick}
        if self.seeded:
            options["seed"] = args.seed
        if self.wait_when is not None:
            options["wait_load"] = wait_load(args, self.record_wait_load)
            options["wait_timeout"] = args.wait_timeout
        return options

    def opening(
        self,
        results: Any,
        *,
        heading: str,
        subject: str,
        software: str,
        load_note: str = "",
        quick_note: str | None = None,
    ) -> list[str]:
        """The lines every report opens with: its heading, the machine, the software, the load.

        Parameters
        ----------
        results : ReportHeader
            The run's results; its ``waited`` and ``contention`` lines follow the load
            when it has those fields.
        heading : str
            ``##`` in the report file, ``###`` in RESULTS.md.
        subject : str
            The heading's text before `` — <when it started>``.
        software : str
            The "Software" bullet.
        load_note : str
            Text appended to the "Load average" bullet.
        quick_note : str or None
            A bullet for quick (smoke) runs.

        Returns
        -------
        list[str]
            The heading, a blank line and the bullets.
        """
        limits = self.load
        lines = [
            f"{heading} {subject} — {results.started}",
            "",
            machine_line(results.machine),
            software,
            load_line(
                results.load_start,
                results.load_end,
                max_start=limits.max_start,
                max_end=limits.max_end,
                busy_note=limits.busy_note,
            )
            + load_note,
        ]
        if getattr(results, "waited", None):
            lines.append(waited_line(results.waited))
        if hasattr(results, "contention"):
            lines.append(contention_line(results.contention))
        if quick_note and results.settings["quick"]:
            lines.append(quick_note)
        return lines

    def main(
        self,
        argv: Sequence[str] | None,
        parse_args: Callable[[Sequence[str] | None], Any],
        run: Callable[[Any], Any],
        render: Callable[..., str],
    ) -> int:
        """The common flow: parse the command line, run, render, write the report and maybe record it.

        Parameters
        ----------
        argv : Sequence[str] or None
            The command line (None: ``sys.argv[1:]``).
        parse_args : Callable
            The benchmark's parser, returning its Settings.
        run : Callable
            Runs the benchmark on its Settings, returning its results.
        render : Callable
            ``render(results, heading=…)``: the report's markdown.

        Returns
        -------
        int
            The exit code, 0.
        """
        settings = parse_args(argv)
        publish(
            run(settings),
            render,
            title=self.title,
            path=settings.report,
            section=self.section,
            record=settings.record,
        )
        return 0
