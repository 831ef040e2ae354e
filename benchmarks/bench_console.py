"""Benchmark: how fast the owner console answers each page on a running 3-site federation (target ≤ 1 s).

Issue 12: the console (``fedimg console federation.toml``) must answer every page in
at most a second on a running 3-site federation. It is a separate process that asks
every site over its owner channel (a Unix socket) and renders server-side HTML.

**Setup**: the digits sample converted into 3 hospitals (16 px grayscale), one real
``fedimg datasite serve`` per hospital (SQLite, sandbox on), each with a named owner
and the researcher's account, the ``federation.toml`` naming them, and ``fedimg console
federation.toml`` as a subprocess on a free loopback port; the researcher submits
``--requests`` small FedAvg jobs (``SmallCNN`` width 8) to every site, so each site holds
that many pending requests.

**Timed**: an HTTP client (urllib, no browser: the page's server time and transfer, not
a browser's rendering) signs in through ``/login`` with the session cookie and the form's
CSRF token (timed once), then ``--repeats`` rounds of: one **baseline**, a bare
owner-channel ``ping`` to every site in turn (what any console answer costs at least),
followed by a GET of every page (Requests, one request's page, Jobs, Researchers,
Dataset, Audit, Health), in a rotating order. Every answer must be the signed-in page
(200, the owner named on it), else the run fails. Each page's median and maximum wall
seconds are reported, and the median's ratio to the ping round's median.

Usage (from the repository root)::

    python -m benchmarks.bench_console [--quick] [--record] [--sites 3] [--requests 3] [--repeats 10]
                                       [--workdir benchmarks/_work] [--report PATH] [--wait-load 2]

The report (markdown, plus a ``.json`` twin) goes to ``--report`` (default
``WORKDIR/console-report.md``); ``--record`` also adds it to the "Owner console"
section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from benchmarks import harness
from tests.researcher.http_sites import make_job
from tests.support.console_federation import (
    OWNER,
    ConsoleFederation,
    ConsoleSession,
    start_console_federation,
)

ABOUT = (  # what its section of RESULTS.md holds
    "Wall seconds of every page of the owner console (`fedimg console`) on a running 3-site federation, "
    "against a bare owner-channel ping to the sites"
)
TARGET_S = 1.0
BUSY_NOTE = "the machine was busy (shared): the timings are upper bounds"
BENCHMARK = harness.Benchmark(
    module="bench_console",
    title="owner console",
    heading="Owner console",
    about=ABOUT,
    marker_label="console results",
    report_name="console-report.md",
    workdir_use="the federation: partition, state dirs, logs",
    record_help="also add the report to the Owner console section of benchmarks/RESULTS.md",
    quick_help="smoke run: 1 site, 1 request, 2 samples a page",
    wait_when="first",
    record_wait_load=2.0,
    load=harness.LoadLimits(max_start=2.0, max_end=2.0, busy_note=BUSY_NOTE),
)
SECTION = BENCHMARK.section  # where --record puts the report in benchmarks/RESULTS.md
PAGE_NAMES = {  # the page's path (a request's page filled in at run time) -> its name in the report
    "/requests": "Requests",
    "/requests/{site}/{id}": "one request",
    "/jobs": "Jobs",
    "/researchers": "Researchers",
    "/dataset": "Dataset",
    "/audit": "Audit",
    "/health": "Health",
}
# what each page must hold (the console's HTML contract) for its time to count: its table or summary
MARKERS = {
    "Requests": 'id="requests"',
    "one request": 'id="summary"',
    "Jobs": 'id="jobs"',
    "Researchers": 'id="researchers"',
    "Dataset": 'data-site="{site}"',
    "Audit": 'id="audit"',
    "Health": 'data-site="{site}"',
}
SITE_ERROR = 'class="site-error"'  # a site that did not answer: the page is quick but says nothing
PING = "owner-channel ping (all sites)"


@dataclass
class Scale:
    """The federation and the samples: sites, pending requests per site, samples per page."""

    sites: int
    requests: int
    repeats: int


@dataclass
class Settings(harness.WaitOptions, harness.RunOptions, Scale):
    """bench_console's settings: ``Scale``'s, then the harness's (the order of the JSON twin)."""


@dataclass
class Results(harness.ReportHeader):
    """A run's figures, after the report header: setup, sign-in, every page's samples, the baseline's."""

    waited: dict = field(default_factory=dict)
    setup_s: float = 0.0
    sign_in_s: float = 0.0
    pages: dict = field(default_factory=dict)  # page name -> wall seconds of every GET
    ping: list = field(default_factory=list)  # wall seconds of every ping round (all sites)
    page_bytes: dict = field(default_factory=dict)  # page name -> size of its last answer
    summary: dict = field(default_factory=dict)


def ping_sites(running: ConsoleFederation) -> float:
    """Wall seconds of one bare owner-channel ``ping`` to every site in turn (the baseline)."""
    from datasite_setup.site.owner_channel import client

    started = time.perf_counter()
    for site in running.sites:
        answer = client.ask(site.state_dir, {"action": "ping"})
        if not answer or not answer.get("ok"):
            raise harness.BenchmarkError(f"site {site.name} did not answer its owner channel: {answer}")
    return time.perf_counter() - started


def timed_page(session: ConsoleSession, path: str, marker: str) -> tuple[float, int]:
    """Wall seconds and size of one GET of a signed-in page; a wrong or partial answer fails the run."""
    answer = session.request(path)
    signed_in = urllib.parse.urlsplit(answer.url).path == path and OWNER in answer.body
    if answer.status != 200 or not signed_in or marker not in answer.body or SITE_ERROR in answer.body:
        raise harness.BenchmarkError(
            f"GET {path}: {answer.status} at {answer.url}, not the whole signed-in page "
            f"(no {marker!r}, or a site did not answer):\n{answer.body[:1500]}"
        )
    return answer.seconds, len(answer.body.encode())


def submit_requests(running: ConsoleFederation, count: int) -> dict[str, list[str]]:
    """``count`` small FedAvg jobs submitted by the researcher to every site: site -> [request ids]."""
    federation = running.researcher_federation()
    submitted: dict[str, list[str]] = {site.name: [] for site in running.sites}
    for index in range(count):
        job = make_job(federation, f"bench_console_{index}", rounds=2, min_sites=len(running.sites))
        for name, request_id in job.submit(federation).items():
            submitted[name].append(str(request_id))
    return submitted


def measure(running: ConsoleFederation, first: tuple[str, str], settings: Settings, results: Results) -> None:
    """Sign in, then ``repeats`` rounds of the ping baseline and every page, in a rotating order."""
    session = ConsoleSession(running.url)
    started = time.perf_counter()
    signed_in = session.sign_in()
    results.sign_in_s = time.perf_counter() - started
    if urllib.parse.urlsplit(signed_in.url).path != "/requests" or OWNER not in signed_in.body:
        raise harness.BenchmarkError(
            f"sign-in failed: {signed_in.status} at {signed_in.url}\n{signed_in.body[:1000]}"
        )
    paths = {name: path.format(site=first[0], id=first[1]) for path, name in PAGE_NAMES.items()}
    names = list(paths)
    results.pages = {name: [] for name in names}
    for repeat in range(settings.repeats):
        results.ping.append(ping_sites(running))
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:  # no page is always the first after the ping
            site = running.sites[repeat % len(running.sites)].name  # per-site pages: every site in turn
            seconds, size = timed_page(session, paths[name], MARKERS[name].format(site=site))
            results.pages[name].append(seconds)
            results.page_bytes[name] = size


def summarise(results: Results) -> dict:
    """Per page: median and max seconds, the median's ratio to the ping's, and whether it meets the target."""
    ping = statistics.median(results.ping)
    pages = {
        name: {
            "median_s": statistics.median(samples),
            "max_s": max(samples),
            "ratio_to_ping": statistics.median(samples) / ping if ping > 0 else None,
            "meets_target": statistics.median(samples) <= TARGET_S,
        }
        for name, samples in results.pages.items()
    }
    return {"ping_median_s": ping, "ping_max_s": max(results.ping), "pages": pages}


def run_benchmark(settings: Settings, *, echo: Callable[..., None] = print) -> Results:
    """Start the federation and the console, submit the requests, time every page; stop everything."""
    root = settings.workdir / "console-federation"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    results = Results.begin(settings, harness.machine_info())
    names = tuple(f"client_{index}" for index in range(settings.sites))
    echo(f"console: starting {len(names)} site(s) and the console in {root}…")
    started = time.perf_counter()
    running = start_console_federation(root, names)
    try:
        submitted = submit_requests(running, settings.requests)
        results.setup_s = time.perf_counter() - started
        echo(f"console: {settings.requests} request(s) per site; timing {settings.repeats} round(s)…")
        with harness.measuring(results, settings, echo):
            measure(running, (names[0], submitted[names[0]][0]), settings, results)
    finally:
        running.stop()
    results.summary = summarise(results)
    return results


def render_report(results: Results, *, heading: str = "##") -> str:
    """The report on the console's page times, as markdown.

    ``heading`` is ``##`` in the report file, ``###`` in RESULTS.md.
    """
    m, s, summary = results.machine, results.settings, results.summary
    lines = BENCHMARK.opening(
        results,
        heading=heading,
        subject=f"Owner console: page times on a running {s['sites']}-site federation",
        software=(
            f"- **Software**: Python {m['python']}, fedimg {m['fedimg_version']} "
            f"at commit {m['fedimg_commit']}"
        ),
        load_note=f"; setup (sites, accounts, console, requests) took {results.setup_s:.0f} s",
        quick_note="- **Quick mode**: a smoke run (1 site); its figures mean nothing",
    )
    lines += [
        f"- **Federation**: {s['sites']} real sites (digits sample, 16 px), {s['requests']} pending FedAvg "
        f"request(s) per site, `fedimg console` over their owner channels",
        f"- **Samples**: {s['repeats']} GETs of every page (urllib, signed in; sign-in took "
        f"{results.sign_in_s:.2f} s), each round after a ping of every site's owner channel (the baseline)",
        "",
    ]
    rows = [
        (
            name,
            f"{page['median_s']:.3f}",
            f"{page['max_s']:.3f}",
            "n/a" if page["ratio_to_ping"] is None else f"{page['ratio_to_ping']:.1f}×",
            f"{results.page_bytes.get(name, 0) / 1024:.0f}",
        )
        for name, page in summary["pages"].items()
    ]
    rows.append((PING, f"{summary['ping_median_s']:.3f}", f"{summary['ping_max_s']:.3f}", "1.0×", ""))
    lines += harness.table(("page", "median s", "max s", "median / ping", "KiB"), "lrrrr", rows)
    targets = [
        {
            "target": f"{name} ≤ {TARGET_S:g} s (median)",
            "measured": f"{page['median_s']:.3f} s (max {page['max_s']:.3f} s)",
            "result": "PASS" if page["meets_target"] else "MISS",
        }
        for name, page in summary["pages"].items()
    ]
    return harness.markdown(lines + harness.targets_table(targets))


def parse_args(argv: Sequence[str] | None) -> Settings:
    """The settings ``argv`` asks for (None: ``sys.argv[1:]``), defaults filled in; see ``--help``."""
    parser = BENCHMARK.parser(__doc__)
    parser.add_argument("--sites", type=int, help="sites in the federation (default 3; 1 with --quick)")
    parser.add_argument("--requests", type=int, help="pending requests per site (default 3; 1 with --quick)")
    parser.add_argument("--repeats", type=int, help="GETs of every page (default 10; 2 with --quick)")
    BENCHMARK.add_run_options(parser)
    args = parser.parse_args(argv)
    quick = args.quick
    settings = Settings(
        sites=harness.chosen(args.sites, quick, full=3, quick=1),
        requests=harness.chosen(args.requests, quick, full=3, quick=1),
        repeats=harness.chosen(args.repeats, quick, full=10, quick=2),
        **BENCHMARK.run_options(args),
    )
    if settings.sites < 1 or settings.requests < 1 or settings.repeats < 1:
        parser.error("--sites, --requests and --repeats must be at least 1")
    if settings.requests > 8:
        parser.error(
            "--requests: a site keeps at most 8 pending requests per researcher (policy max_pending_requests)"
        )
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.bench_console``: the harness's flow (``Benchmark.main``)."""
    return BENCHMARK.main(argv, parse_args, run_benchmark, render_report)


if __name__ == "__main__":
    sys.exit(main())
