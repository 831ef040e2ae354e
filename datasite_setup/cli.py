"""The ``fedimg`` command line.

Exit codes: 0 success; 1 completed, but inputs were rejected (or ``verify``
found problems); 2 usage or configuration error, with a message naming the file
or setting at fault.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from datasite_setup import __version__
from datasite_setup.convert.partition import SCHEMES
from datasite_setup.errors import FedimgError

# Only for annotations: the commands import their modules when they run, so that
# 'fedimg --help' or 'fedimg convert' never pays for PySyft.
if TYPE_CHECKING:
    from datasite_setup.convert.pipeline import ConvertResult
    from datasite_setup.site.federation_config import FederationConfig
    from datasite_setup.site.owner_channel.site_status import SiteStatus

EXIT_OK, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2

console = Console()
error_console = Console(stderr=True)

_Handler = Callable[[argparse.Namespace], int]
_Commands = argparse._SubParsersAction  # what add_subparsers returns (argparse names it privately)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fedimg`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after ``fedimg``; None reads ``sys.argv``.

    Returns
    -------
    int
        The exit code: 0 success; 1 completed, but inputs were rejected (or a check
        found problems); 2 a usage or configuration error, printed as one line on
        stderr; 130 interrupted (Ctrl-C or SIGTERM).

    Examples
    --------
    >>> main(["verify", "no_such_output"])  # the error line goes to stderr
    2
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.handler(args)
    except FedimgError as exc:
        error_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return EXIT_USAGE
    except KeyboardInterrupt:
        error_console.print("interrupted" + (": nothing was written" if args.command == "convert" else ""))
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Unwinds like Ctrl-C, so a half-written output is removed before exiting.
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    """The ``fedimg`` argument parser; each command's ``handler`` is set as a default.

    Returns
    -------
    argparse.ArgumentParser
        The parser of every command: convert, verify, report, sample, datasite,
        up, status, down, owner, review, audit and console.

    Examples
    --------
    >>> args = build_parser().parse_args(["convert", "src", "fed", "--clients", "3", "--scheme", "iid"])
    >>> args.command, args.num_clients, args.scheme, args.size, args.val_fraction
    ('convert', 3, 'iid', 128, 0.2)
    """
    parser = argparse.ArgumentParser(
        prog="fedimg", description="Federated image datasets on PySyft datasites."
    )
    parser.add_argument("--version", action="version", version=f"fedimg {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_convert(commands)
    _add_simple(
        commands,
        "verify",
        "check every file, checksum, count and the schema of a converted output",
        _run_verify,
    )
    _add_simple(
        commands, "report", "print the per-client table and write label_distribution.png", _run_report
    )
    _add_sample(commands)
    _add_datasite(commands)
    _add_federation(commands)
    _add_owner(commands)
    _add_review(commands)
    _add_audit(commands)
    _add_console(commands)
    return parser


def _add_simple(commands: _Commands, name: str, help_text: str, handler: _Handler) -> None:
    command = commands.add_parser(name, help=help_text, description=help_text)
    command.add_argument("out", type=Path, metavar="OUT", help="the output folder of 'fedimg convert'")
    command.add_argument("--quiet", action="store_true", help="no progress bar")
    command.set_defaults(handler=handler)


def _add_convert(commands: _Commands) -> None:
    convert = commands.add_parser(
        "convert",
        help="turn an image collection into the federated format",
        description="Validate, standardise, pseudonymise and partition SRC into OUT (federated format v2).",
    )
    convert.add_argument(
        "source",
        type=Path,
        metavar="SRC",
        help="class sub-folders, or any folder with --labels / --label-pattern",
    )
    convert.add_argument(
        "out", type=Path, metavar="OUT", help="output folder (must not exist unless --overwrite)"
    )
    labels = convert.add_argument_group("labels (default: the first folder under SRC is the label)")
    labels.add_argument("--labels", type=Path, dest="labels_csv", help="CSV with one row per image")
    labels.add_argument(
        "--path-column", default="path", help="CSV column with the image path relative to SRC (default: path)"
    )
    labels.add_argument("--label-column", default="label", help="CSV column with the label (default: label)")
    labels.add_argument(
        "--group-column", help="CSV column with the patient (group) id: a group never spans clients or splits"
    )
    labels.add_argument(
        "--client-column", help="CSV column (site, ward…) that decides the client for --scheme natural"
    )
    labels.add_argument(
        "--label-pattern", help="regex on the file name; group 'label' or group 1 is the label"
    )
    part = convert.add_argument_group("partition")
    part.add_argument("--clients", type=int, dest="num_clients", help="number of clients (named client_0…)")
    part.add_argument(
        "--client-names", type=_comma_list, help="comma-separated client names, e.g. st_marys,royal_free"
    )
    part.add_argument(
        "--scheme", required=True, choices=SCHEMES, help="how samples are split between clients"
    )
    part.add_argument(
        "--alpha",
        type=float,
        help="Dirichlet concentration for dirichlet (default 0.5) and quantity (default 1.0)",
    )
    part.add_argument(
        "--min-partition-size",
        type=int,
        help="dirichlet, quantity: smallest allowed client in samples (default 10)",
    )
    part.add_argument(
        "--shards-per-client", type=int, help="shards: number of label-sorted shards per client (default 2)"
    )
    part.add_argument(
        "--self-balancing",
        action="store_true",
        help="dirichlet: stop giving samples to clients above the average",
    )
    part.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="per-client validation share, stratified and group-aware (default 0.2)",
    )
    part.add_argument("--seed", type=int, default=0, help="seed for every random choice (default 0)")
    image = convert.add_argument_group("images")
    image.add_argument(
        "--size", type=int, default=128, help="output width and height in pixels (default 128)"
    )
    image.add_argument("--mode", default="RGB", choices=("L", "RGB"), help="output colour mode (default RGB)")
    image.add_argument(
        "--resize",
        default="letterbox",
        choices=("letterbox", "crop", "stretch"),
        help="aspect-ratio policy (default letterbox: pad with black)",
    )
    image.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="reject inputs with more pixels as decompression bombs (default 89,478,485)",
    )
    run = convert.add_argument_group("run")
    run.add_argument("--workers", type=int, default=0, help="decoding processes (default: all cores)")
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT if it exists (atomically, once the new one is complete)",
    )
    run.add_argument(
        "--secret-file",
        type=Path,
        help="federation secret file "
        "(default: $FEDIMG_SECRET, $FEDIMG_SECRET_FILE, or ~/.config/fedimg/secret)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar or table")
    convert.set_defaults(handler=_run_convert)


def _add_sample(commands: _Commands) -> None:
    sample = commands.add_parser(
        "sample", help="write the bundled sample collection (scikit-learn digits) as image files"
    )
    sample.add_argument("name", choices=("digits",), help="which sample")
    sample.add_argument("out", type=Path, metavar="OUT")
    sample.add_argument(
        "--layout",
        default="folders",
        choices=("folders", "csv"),
        help="class sub-folders, or flat images + labels.csv with patient_id and site",
    )
    sample.add_argument("--format", dest="image_format", default="png", choices=("png", "jpg", "bmp", "tif"))
    sample.set_defaults(handler=_run_sample)


def _add_datasite(commands: _Commands) -> None:
    datasite = commands.add_parser("datasite", help="run one hospital's PySyft datasite")
    actions = datasite.add_subparsers(dest="action", required=True, metavar="ACTION")
    serve = actions.add_parser(
        "serve",
        help="ingest a client's partition and serve its datasite over HTTP",
        description="Open (or create) the datasite whose state lives in --state-dir, ingest --data, "
        "and serve it until stopped. Admin login: $FEDIMG_ADMIN_EMAIL/$FEDIMG_ADMIN_PASSWORD, "
        "else generated into STATE_DIR/admin-credentials.json (0600).",
    )
    serve.add_argument("--name", required=True, help="the datasite's name (the client's name)")
    serve.add_argument(
        "--data",
        required=True,
        type=Path,
        metavar="CLIENT_DIR",
        help="OUT/clients/<name> of 'fedimg convert'",
    )
    serve.add_argument("--port", required=True, type=int)
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    serve.add_argument(
        "--state-dir",
        type=Path,
        help="signing key, credentials, database and blobs (default ~/.local/state/fedimg/<name>)",
    )
    serve.add_argument(
        "--db-url",
        help="PostgreSQL URL (default: $FEDIMG_DB_URL, else SQLite in the state dir); prefer the variable, "
        "a URL on the command line shows its password to 'ps'",
    )
    serve.add_argument(
        "--policy",
        type=Path,
        help="the site's policy file (default STATE_DIR/policy.toml, else built-in defaults)",
    )
    serve.add_argument(
        "--threads",
        type=int,
        help="torch threads per sandbox worker when the policy's [sandbox] threads is 0 "
        "(default: all cores; 'fedimg up' divides the cores among its sites)",
    )
    serve.add_argument("--quiet", action="store_true", help="no progress bar")
    serve.set_defaults(handler=_run_serve)


def _add_federation(commands: _Commands) -> None:
    for name, help_text, handler in (
        ("up", "start every site of federation.toml, ingest, add researchers, print the sites", _run_up),
        ("status", "show which sites of federation.toml are running, with their datasets", _run_status),
        ("down", "stop every site of federation.toml", _run_down),
    ):
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument("config", type=Path, metavar="federation.toml")
        if name == "status":
            _add_http_flag(command)
        command.set_defaults(handler=handler)


def _add_http_flag(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--http",
        action="store_true",
        help="log in over HTTP even when a site answers on its owner channel (slower: imports PySyft)",
    )


def _add_review(commands: _Commands) -> None:
    review = commands.add_parser(
        "review",
        help="list, read, approve or deny a site's code requests, with the checks' report",
        description="Data owner's review of code requests. Decisions go to the site's audit log. "
        "On the site's own machine the command asks the running site over its owner channel "
        "(STATE_DIR/owner-channel/owner.sock, this user only); otherwise it logs in over HTTP.",
    )
    review.add_argument("--site", required=True, help="site name (from --config) or URL (with --state-dir)")
    review.add_argument("--config", type=Path, help="federation.toml (default ./federation.toml)")
    review.add_argument(
        "--state-dir", type=Path, help="the site's state dir (admin credentials, policy, audit log)"
    )
    review.add_argument("--policy", type=Path, help="the site's policy file (default STATE_DIR/policy.toml)")
    review.add_argument(
        "action", nargs="?", default="list", choices=("list", "show", "approve", "deny", "auto")
    )
    review.add_argument("request", nargs="?", help="request id (or a unique prefix) for show/approve/deny")
    review.add_argument("--reason", help="deny: the reason the researcher sees")
    review.add_argument("--force", action="store_true", help="approve even though checks fail")
    review.add_argument(
        "--owner",
        metavar="EMAIL",
        help="decide as this named owner ('fedimg owner add'); default: the site's shared admin account",
    )
    review.add_argument(
        "--password-file", type=Path, help="--owner's password (a 0600 file); default: asked for"
    )
    _add_http_flag(review)
    review.set_defaults(handler=_run_review)


def _add_owner(commands: _Commands) -> None:
    owner = commands.add_parser("owner", help="named owner accounts that review a site's requests")
    actions = owner.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add",
        help="create a data owner account for a person at a running site",
        description="Create a DATA_OWNER account at a running site (as its admin). The password is typed "
        "twice, or read from --password-file; never give it on the command line.",
    )
    add.add_argument("config", type=Path, metavar="federation.toml")
    add.add_argument("--site", required=True, help="the site's name in federation.toml")
    add.add_argument("--email", required=True, help="the owner's login")
    add.add_argument("--name", required=True, help="the owner's full name (every decision names it)")
    add.add_argument("--password-file", type=Path, help="a 0600 file holding the password")
    add.set_defaults(handler=_run_owner_add)


def _add_audit(commands: _Commands) -> None:
    audit = commands.add_parser("audit", help="check or read a site's audit log")
    actions = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    verify = actions.add_parser("verify", help="detect edited, removed or reordered lines")
    verify.add_argument("log", type=Path, metavar="AUDIT_LOG", help="e.g. STATE_DIR/audit.jsonl")
    verify.set_defaults(handler=_run_audit_verify)
    show = actions.add_parser("show", help="print audit records, in local time, filtered")
    show.add_argument(
        "source",
        type=Path,
        metavar="STATE_DIR_OR_FEDERATION",
        help="a site's state dir (or its audit.jsonl), or federation.toml (every site's log)",
    )
    show.add_argument("--site", help="with federation.toml: only this site")
    show.add_argument("--researcher", help="a researcher's e-mail or verify key (or its start)")
    show.add_argument("--request", help="a request or code id (or its start)")
    show.add_argument(
        "--kind", help="an event: request, review, decision, account, owner, started, release, ..."
    )
    show.add_argument("--since", help="30m, 2h, 7d (ago) or a local date/time like 2026-12-01T14:30")
    show.set_defaults(handler=_run_audit_show)


def _add_console(commands: _Commands) -> None:
    console_command = commands.add_parser(
        "console",
        help="serve the owners' web console for the sites of federation.toml (loopback by default)",
        description="A web console where a site's data owners read, approve and deny code requests, and see "
        "jobs, researchers, the dataset, the audit log and the site's health. It reaches each running site "
        "over its owner channel (this user only); owners sign in with their owner accounts "
        "('fedimg owner add'). Stop it with Ctrl-C.",
    )
    console_command.add_argument("config", type=Path, metavar="federation.toml")
    console_command.add_argument("--site", help="serve only this site (default: every site of the file)")
    console_command.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)"
    )
    console_command.add_argument(
        "--port", type=int, default=8090, help="the port (default 8090; 0: a free one)"
    )
    console_command.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (the console speaks plain HTTP: put a TLS proxy in front)",
    )
    console_command.set_defaults(handler=_run_console)


def _comma_list(value: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected comma-separated names, e.g. a,b,c")
    return items


def _run_convert(args: argparse.Namespace) -> int:
    from datasite_setup.convert.imaging import DEFAULT_MAX_PIXELS, ImageSpec
    from datasite_setup.convert.pipeline import ConvertOptions, convert
    from datasite_setup.convert.sources import CsvColumns

    options = ConvertOptions(
        source=args.source,
        out=args.out,
        scheme=args.scheme,
        num_clients=args.num_clients,
        client_names=args.client_names,
        labels_csv=args.labels_csv,
        columns=CsvColumns(args.path_column, args.label_column, args.group_column, args.client_column),
        label_pattern=args.label_pattern,
        spec=ImageSpec(
            size=args.size,
            mode=args.mode,
            resize=args.resize,
            max_pixels=DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels,
        ),
        alpha=args.alpha,
        min_partition_size=args.min_partition_size,
        shards_per_client=args.shards_per_client,
        self_balancing=args.self_balancing,
        val_fraction=args.val_fraction,
        seed=args.seed,
        workers=args.workers,
        overwrite=args.overwrite,
        secret_file=args.secret_file,
        show_progress=not args.quiet,
    )
    result = convert(options)
    for warning in result.warnings:
        error_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    if not args.quiet:
        _print_summary(result)
    return EXIT_REJECTED if result.quarantined else EXIT_OK


def _print_summary(result: ConvertResult) -> None:
    from datasite_setup.convert.federation_report import print_client_table

    print_client_table(console, result.federation)
    inputs = result.federation["inputs"]
    accepted = f"{inputs['accepted']} images accepted from {inputs['files_seen']} files"
    console.print(f"{accepted}; wrote {escape(str(result.out))}", highlight=False)
    if result.quarantined:
        rejected = f"[yellow]{len(result.quarantined)} inputs rejected[/]"
        report = escape(str(result.out / "quarantine.jsonl"))
        error_console.print(
            f"{rejected} ({_reason_counts(inputs['quarantined'])}): see {report}", highlight=False
        )


def _reason_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in counts.items())


def _run_verify(args: argparse.Namespace) -> int:
    from datasite_setup.convert.federated_format import load_federation
    from datasite_setup.convert.release_warnings import small_client_warnings
    from datasite_setup.convert.verify import verify_federation

    problems = verify_federation(args.out, show_progress=not args.quiet)
    for problem in problems:
        error_console.print(
            f"[red]{problem.kind}[/] {escape(problem.path)}: {escape(problem.message)}", highlight=False
        )
    if problems:
        error_console.print(f"{len(problems)} problem(s) in {escape(str(args.out))}", highlight=False)
        return EXIT_REJECTED
    for warning in small_client_warnings(load_federation(args.out)):  # a warning, not a problem: still OK
        error_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    console.print(
        f"{escape(str(args.out))}: OK (every file, checksum, count and the schema verified)", highlight=False
    )
    return EXIT_OK


def _run_report(args: argparse.Namespace) -> int:
    from datasite_setup.convert.federated_format import PLOT_FILE, load_federation
    from datasite_setup.convert.federation_report import plot_label_distribution, print_client_table

    federation = load_federation(args.out)
    print_client_table(console, federation)
    plot_label_distribution(federation, args.out / PLOT_FILE)
    console.print(f"wrote {escape(str(args.out / PLOT_FILE))}", highlight=False)
    return EXIT_OK


def _run_sample(args: argparse.Namespace) -> int:
    from datasite_setup.convert.sample_data import write_digits

    path = write_digits(args.out, layout=args.layout, image_format=args.image_format)
    console.print(f"wrote the digits sample ({args.layout}) to {escape(str(path))}", highlight=False)
    return EXIT_OK


def _run_serve(args: argparse.Namespace) -> int:
    from datasite_setup.site.serve import serve_site

    return serve_site(
        name=args.name,
        data=args.data,
        port=args.port,
        host=args.host,
        state_dir=args.state_dir,
        db_url=args.db_url,
        show_progress=not args.quiet,
        policy_file=args.policy,
        threads=args.threads,
    )


def _run_up(args: argparse.Namespace) -> int:
    from datasite_setup.site.federation_config import load_federation_config
    from datasite_setup.site.federation_runner import up

    config = load_federation_config(args.config)
    statuses, already_running = up(config)
    if already_running:
        console.print(
            f"every site of {escape(str(args.config))} is already running: nothing started", highlight=False
        )
    _print_sites(statuses, config, show_created=True)
    return EXIT_REJECTED if any(s.state != "running" for s in statuses) else EXIT_OK


def _run_status(args: argparse.Namespace) -> int:
    from datasite_setup.site.federation_config import load_federation_config
    from datasite_setup.site.owner_channel import client as owner_channel

    config = load_federation_config(args.config)
    # each running site answers on its owner channel: no PySyft import, no login (issue 11)
    answered = {
        site.name: None if args.http else owner_channel.status(site.name, site.url, site.state_dir)
        for site in config.sites
    }
    statuses = [found for found in answered.values() if found is not None]
    if len(statuses) < len(config.sites):
        from datasite_setup.site.federation_runner import http_status

        statuses = [answered[site.name] or http_status(config, site) for site in config.sites]
    _print_sites(statuses, config)
    return EXIT_OK if all(s.state == "running" for s in statuses) else EXIT_REJECTED


def _run_down(args: argparse.Namespace) -> int:
    from datasite_setup.site.federation_config import load_federation_config
    from datasite_setup.site.federation_runner import down

    config = load_federation_config(args.config)
    for site in down(config):
        console.print(f"{escape(site.name)}: stopped", highlight=False)
    return EXIT_OK


def _run_review(args: argparse.Namespace) -> int:
    from datasite_setup.site.owner_channel import client as owner_channel
    from datasite_setup.site.owner_channel.site_access import resolve_site
    from datasite_setup.site.owners import owner_login

    if args.action in ("approve", "deny") and not args.request:
        raise FedimgError(
            f"review {args.action} needs a request id (see 'fedimg review --site {args.site} list')"
        )
    if args.action == "deny" and not args.reason:
        raise FedimgError("deny needs --reason: the researcher sees it")
    access = resolve_site(args.site, args.config, args.state_dir)

    def echo(text: str) -> None:
        console.print(escape(text), highlight=False)

    owner = owner_login(args.owner, args.password_file) if args.owner else None
    # the site's owner channel when it runs here (seconds: no PySyft import, no login), else HTTP
    answered = (
        None
        if args.http
        else owner_channel.review(
            access.state_dir,
            access.name,
            args.action,
            request_id=args.request,
            reason=args.reason,
            force=args.force,
            policy_file=args.policy,
            owner=owner.email if owner else None,
            password=owner.password if owner else None,
            echo=echo,
        )
    )
    if answered is not None:
        return answered
    from datasite_setup.site.review_command import run_review

    return run_review(
        access, args.action, args.request, args.reason, args.force, args.policy, echo, owner=owner
    )


def _run_owner_add(args: argparse.Namespace) -> int:
    from datasite_setup.site.credentials import admin_credentials
    from datasite_setup.site.federation_config import load_federation_config
    from datasite_setup.site.owners import add_owner, read_password
    from datasite_setup.site.site_admin import login

    site = load_federation_config(args.config).site(args.site)
    password = read_password(args.password_file, confirm=True)
    admin_login = admin_credentials(site.state_dir, site.name)
    try:
        admin = login(site.url, admin_login)
    except Exception as exc:
        raise FedimgError(f"site {site.name} ({site.url}): cannot log in as admin ({exc})") from exc
    if not add_owner(admin, email=args.email, name=args.name, password=password):
        console.print(f"{escape(args.email)}: already an owner at {escape(site.name)}", highlight=False)
        return EXIT_OK
    # no audit record here: the site records the new account itself, as it does any account change
    console.print(
        f"{escape(args.email)} ({escape(args.name)}): owner at {escape(site.name)}; "
        f"decide with 'fedimg review --site {escape(site.name)} --owner {escape(args.email)}'",
        highlight=False,
    )
    return EXIT_OK


def _run_console(args: argparse.Namespace) -> int:
    from datasite_setup.site.console import ConsoleSite, check_host, serve
    from datasite_setup.site.federation_config import load_federation_config

    check_host(args.host, args.allow_remote)  # before reading anything: the refusal says why
    config = load_federation_config(args.config)
    chosen = [config.site(args.site)] if args.site else list(config.sites)
    sites = [ConsoleSite(site.name, site.state_dir) for site in chosen]
    serve(sites, args.host, args.port, allow_remote=args.allow_remote, echo=_print_flushed)
    console.print("fedimg console: stopped", highlight=False)
    return EXIT_OK


def _print_flushed(text: str) -> None:
    # a test or a supervisor reads the URL line from a pipe: it must not wait in a buffer
    print(text, flush=True)


def _run_audit_verify(args: argparse.Namespace) -> int:
    from policies import AuditLog, describe_record, open_runs, verify_audit_log

    if not args.log.is_file():
        raise FedimgError(f"{args.log}: audit log not found")
    problems = verify_audit_log(args.log)
    for problem in problems:
        error_console.print(f"[red]line {problem.line}[/]: {escape(problem.message)}", highlight=False)
    if problems:
        return EXIT_REJECTED
    entries = len(args.log.read_text().splitlines())
    unfinished = open_runs(AuditLog(args.log).records())
    if not unfinished:
        console.print(
            f"{escape(str(args.log))}: intact ({entries} entries, hash chain verified)", highlight=False
        )
        return EXIT_OK
    console.print(
        f"{escape(str(args.log))}: hash chain intact ({entries} entries), but {len(unfinished)} run(s) "
        "started without an end: still running, or the site stopped during them and has not started "
        "again (it then marks them aborted and refunds them)",
        highlight=False,
    )
    for record in unfinished:
        console.print(f"  line {record['seq'] + 1}: {escape(describe_record(record))}", highlight=False)
    return EXIT_REJECTED


def _run_audit_show(args: argparse.Namespace) -> int:
    from policies import AUDIT_FILE, AuditLog, describe_record, parse_since, select_records

    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        raise FedimgError(str(exc)) from None
    shown = 0
    for site, log in _audit_logs(args.source, args.site, AUDIT_FILE):
        records = select_records(
            AuditLog(log).records(),
            researcher=args.researcher,
            request=args.request,
            kind=args.kind,
            since=since,
        )
        for record in records:
            console.print(
                f"{escape(site)}  {escape(describe_record(record))}", highlight=False, soft_wrap=True
            )
        shown += len(records)
    if not shown:
        console.print("no audit records match", highlight=False)
    return EXIT_OK


def _audit_logs(source: Path, only: str | None, audit_file: str) -> list[tuple[str, Path]]:
    """(site name, audit log) for a state dir, an audit log, or every site of a federation.toml."""
    if source.suffix == ".toml":
        from datasite_setup.site.federation_config import load_federation_config

        config = load_federation_config(source)
        sites = [config.site(only)] if only else config.sites
        logs = [(site.name, site.state_dir / audit_file) for site in sites]
    elif source.is_dir():
        logs = [(source.name, source / audit_file)]
    else:
        logs = [(source.parent.name, source)]
    missing = [str(log) for _, log in logs if not log.is_file()]
    if len(missing) == len(logs):
        raise FedimgError(
            f"{', '.join(missing)}: audit log not found (give a site's state dir or federation.toml)"
        )
    return [(name, log) for name, log in logs if log.is_file()]


def _print_sites(
    statuses: Sequence[SiteStatus], config: FederationConfig, *, show_created: bool = False
) -> None:
    from rich.table import Table

    from datasite_setup.terminal import print_table

    table = Table(title="fedimg sites")
    columns = ["site", "url", "state", "dataset", "train", "val", "sandbox"]
    reported = {site.name: site.sandbox for site in statuses if site.sandbox}  # the running sites said
    sandboxes = {site.name: reported.get(site.name) or _sandbox_mode(site.state_dir) for site in config.sites}
    if show_created:
        columns.append("researchers added")
    for column in columns:
        table.add_column(column, no_wrap=True)
    for site in statuses:
        counts = site.split_counts
        row = [
            site.name,
            site.url,
            site.state,
            site.dataset,
            str(counts.get("train", "")),
            str(counts.get("val", "")),
            sandboxes.get(site.name, ""),
        ]
        if show_created:
            row.append(str(site.researchers_created))
        table.add_row(*row)
    print_table(console, table)
    for site in statuses:
        if site.problem:
            error_console.print(f"[red]{escape(site.name)}[/]: {escape(site.problem)}", highlight=False)
        if sandboxes.get(site.name, "").startswith("OFF"):  # in every answer, as the policy's owner chose
            warning = site.warning or _unconfined_warning()
            error_console.print(f"[red]{escape(site.name)}[/]: {escape(warning)}", highlight=False)
    if config.researchers:
        console.print(
            f"researcher credentials (0600): {escape(str(config.secrets_dir / 'researchers'))}",
            highlight=False,
        )


def _unconfined_warning() -> str:
    from policies import UNCONFINED_WARNING

    return UNCONFINED_WARNING


def _sandbox_mode(state_dir: Path) -> str:
    """What a site's policy (``<state_dir>/policy.toml``) says of its sandbox, for the status table."""
    from policies import POLICY_FILE, PolicyError, load_site_policy

    try:
        policy = load_site_policy(state_dir / POLICY_FILE)
    except PolicyError:
        return "policy error"
    return "on" if policy.sandbox.confined else "OFF (unconfined)"


if __name__ == "__main__":
    sys.exit(main())
