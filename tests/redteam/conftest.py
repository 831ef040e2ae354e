"""The red-team harness: real datasites, a researcher who submits attacks, and the data owner's ``fedimg review``.

Every attempt is a real code request (``sy.syft_function`` + ``request_code_execution``) against a real
``fedimg datasite serve`` process over HTTP. The owner's side is the real review (``review_request``) and the
real ``fedimg review`` command line, which writes the decision to the site's audit log; the site's enforcement
hook writes every refusal there too. One site per test module (module-scoped), stopped at teardown.

The ``fedimg review`` decisions run ``datasite_setup.cli.main`` in the test process (the same argument parsing,
exit codes and audit writes as ``python -m datasite_setup.cli``, without paying a syft import and an admin login
per decision); ``RedTeam.fedimg_review_process`` runs the same command as a separate process, and the suite does
so for one denial and one refused approval to show the two are the same thing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import io
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from datasite_setup.convert.federated_format import CLIENTS_DIR
from policies.audit import AuditLog, verify_audit_log
from policies.enforcement import AUDIT_FILE
from policies.site_policy import POLICY_FILE, load_site_policy
from tests.support.datasites import REPO, RunningSite, free_port

ASSETS = ("train_images", "train_labels", "val_images", "val_labels")
RESEARCHER_INPUTS = {"weights": dict, "rnd": int, "cohort": dict, "port": int}
INJECTED = (
    "datasite",
    "context",
    "privacy",
    "device",
)  # syft (or the site: privacy at a DP site, device for the job template) fills these by name; not inputs


def start_sites(
    tmp_path_factory: pytest.TempPathFactory, federation: Path, specs: list[tuple[str, str, str | None]]
) -> list[RunningSite]:
    """Start ``(label, client, policy.toml text)`` sites in parallel and wait until each answers."""
    sites = []
    try:
        for label, client, policy in specs:
            state_dir = tmp_path_factory.mktemp(f"redteam-{label}") / "state"
            state_dir.mkdir(mode=0o700)
            if policy is not None:
                (state_dir / POLICY_FILE).write_text(policy)
            sites.append(
                RunningSite(client, federation / CLIENTS_DIR / client, state_dir, free_port()).start(
                    wait=False
                )
            )
        for site in sites:
            site.wait_until_answering()
    except BaseException:
        for site in sites:
            site.stop()
        raise
    return sites


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def function_from_source(source: str, name: str, folder: Path) -> Callable:
    """Import ``name`` from ``source`` written to a file (PySyft reads a function's source with ``inspect``)."""
    path = folder / f"redteam_{name}_{secrets.token_hex(4)}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return getattr(module, name)


def tampered_template(site_function: Any, payload: str, folder: Path) -> Callable:
    """The job's real site function with ``payload`` (lines at function-body indent) run just before it returns."""
    marker = "    return result\n"
    head, found, tail = site_function.source.rpartition(marker)
    assert found and not tail.strip(), "the job template no longer ends with 'return result'"
    body = "".join(f"    {line}\n" for line in payload.strip("\n").splitlines())
    return function_from_source(head + body + marker, site_function.name, folder)


class RedTeam:
    """One researcher (the attacker) and the data owner of one running site."""

    def __init__(self, site: RunningSite, email: str = "eve@attacker.example") -> None:
        from datasite_setup.site.site_admin import ensure_researcher, login
        from researcher.federation import Federation

        self.site = site
        self.email = email
        password = secrets.token_urlsafe(16)
        ensure_researcher(
            login(site.url, site.admin), email=email, name=email.split("@")[0], password=password
        )
        self.federation = Federation.from_urls({site.name: site.url}, email, {site.name: password})
        self.researcher = self.federation.sites[site.name]
        self.functions: dict[str, Callable] = {}
        self._admin = None

    # --- the researcher ------------------------------------------------------------------

    def submit(self, function: Callable, *, limit: int = 2, output_policy: Any = None) -> str:
        """Request ``function`` on the site's assets (+ researcher inputs); returns the request id."""
        import syft as sy
        from syft.service.policy.policy import OutputPolicyExecuteCount

        inputs: dict[str, Any] = {}
        for name in inspect.signature(function).parameters:
            if name in ASSETS:
                inputs[name] = self.researcher.asset(name)
            elif name in RESEARCHER_INPUTS:
                inputs[name] = RESEARCHER_INPUTS[name]
            elif name not in INJECTED:
                raise AssertionError(f"{function.__name__}: no input for parameter {name!r}")
        decorator = sy.syft_function(
            input_policy=sy.MixedInputPolicy(**inputs, client=self.researcher.client),
            output_policy=output_policy
            if output_policy is not None
            else OutputPolicyExecuteCount(limit=limit),
        )
        with quiet():
            request = self.researcher.client.code.request_code_execution(
                decorator(function), reason=f"red team: {function.__name__}"
            )
        assert hasattr(request, "id"), f"the site did not accept the request: {request}"
        self.functions[function.__name__] = function
        return str(request.id)

    def run(self, name: str, **inputs: Any) -> Any:
        """Call an approved function with the site's assets and ``inputs`` (those its signature takes)."""
        parameters = inspect.signature(self.functions[name]).parameters
        kwargs = {asset: self.researcher.asset(asset) for asset in ASSETS if asset in parameters}
        kwargs |= {
            key: value for key, value in {"weights": {}, "cohort": {}, **inputs}.items() if key in parameters
        }
        with quiet():
            return getattr(self.researcher.client.code, name)(**kwargs).get()

    def refused(self, name: str, match: str, **inputs: Any) -> dict:
        """Run ``name``; the site must refuse with ``match`` and log a refusal; returns that audit entry."""
        before = len(self.audit_records())
        with pytest.raises(Exception) as refusal:
            output = self.run(name, **inputs)
            raise AssertionError(f"{name}: the site released {str(output)[:300]}")
        message = str(refusal.value)
        assert re.search(match, message) and re.search("release refused by site|Execution denied", message), (
            f"{name}: refused, but not for {match!r}: {message[:800]}"
        )
        entries = [
            r for r in self.audit_records()[before:] if r["event"] == "refusal" and r.get("function") == name
        ]
        assert entries, f"{name}: no refusal in the audit log after: {message[:300]}"
        assert re.search(match, entries[-1]["reason"]), entries[-1]
        return entries[-1]

    def failed(self, name: str, cause: str, **inputs: Any) -> dict:
        """Run ``name``: the code must fail in its sandbox worker with ``cause`` (a regex over the traceback in
        the site's log; the researcher reads only "the approved code failed"); returns the audit's ``execution``
        entry (``errored: true``, naming the researcher)."""
        before = len(self.audit_records())
        with pytest.raises(Exception) as failure:
            output = self.run(name, **inputs)
            raise AssertionError(f"{name}: the site released {str(output)[:300]}")
        message = str(failure.value)
        assert re.search(r"the approved code failed at \S+; its error is in the owner's log", message), (
            f"{name}: not a failed run: {message[:800]}"
        )
        log = self.site.log_path.read_text(errors="replace")
        start = log.rfind(f"code {name} (")
        assert start >= 0, f"{name}: no failure in the site's log"
        traceback = log[start : start + 3000]
        assert re.search(cause, traceback), f"{name}: failed, but not for {cause!r}: {traceback[-1500:]}"
        entries = [
            r
            for r in self.audit_records()[before:]
            if r["event"] == "execution" and r.get("function") == name and r.get("errored") is True
        ]
        assert entries and entries[-1]["researcher"], f"{name}: no failed execution in the audit log"
        return entries[-1]

    # --- the data owner ----------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self.site.state_dir

    def review(self, request_id: str):
        """The owner's review of one request (static checks, template match, policy checks)."""
        from datasite_setup.site.code_requests import requests
        from datasite_setup.site.site_admin import login
        from policies.request_review import review_request

        if self._admin is None:
            with quiet():
                self._admin = login(self.site.url, self.site.admin)
        (pending,) = [r for r in requests(self._admin, status=None) if r.id == request_id]
        return review_request(pending, load_site_policy(self.state_dir / POLICY_FILE))

    def fedimg_review(self, *arguments: str) -> tuple[int, str]:
        """``fedimg review --site URL --state-dir STATE ARGUMENTS``: (exit code, what it printed).

        The command's admin login (2-3 s each on a busy machine) is made once per site and reused.
        """
        import datasite_setup.site.site_admin as site_admin
        from datasite_setup.cli import main

        login = site_admin.login

        def reused_login(url: str, credentials: Any) -> Any:
            if self._admin is None:
                self._admin = login(url, credentials)
            return self._admin

        out, err = io.StringIO(), io.StringIO()
        site_admin.login = reused_login
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(
                    ["review", "--site", self.site.url, "--state-dir", str(self.state_dir), *arguments]
                )
        finally:
            site_admin.login = login
        return code, " ".join((out.getvalue() + err.getvalue()).split())

    def fedimg_review_process(self, *arguments: str) -> tuple[int, str]:
        """The same command as a separate ``python -m datasite_setup.cli`` process."""
        env = {
            k: v for k, v in os.environ.items() if k not in ("FEDIMG_ADMIN_EMAIL", "FEDIMG_ADMIN_PASSWORD")
        }
        command = [
            sys.executable,
            "-m",
            "datasite_setup.cli",
            "review",
            "--site",
            self.site.url,
            "--state-dir",
            str(self.state_dir),
            *arguments,
        ]
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        return done.returncode, " ".join((done.stdout + done.stderr).split())

    def deny(self, request_id: str, reason: str, *, process: bool = False) -> dict:
        """Deny with ``fedimg review deny``; returns the decision's audit entry."""
        code, printed = (self.fedimg_review_process if process else self.fedimg_review)(
            "deny", request_id, "--reason", reason
        )
        assert code == 0, printed
        return self.decision(request_id, "denied")

    def approve(self, request_id: str) -> dict:
        """Approve a request whose checks all pass (no --force)."""
        code, printed = self.fedimg_review("approve", request_id)
        assert code == 0, printed
        entry = self.decision(request_id, "approved")
        assert entry["forced"] is False
        return entry

    def force_approve(
        self, request_id: str, *, first_try: bool = False, process: bool = False, checks_fail: bool = True
    ) -> dict:
        """The careless owner: ``approve --force``. With ``first_try``, a plain ``approve`` is tried first and must
        refuse (exit 2: checks fail) without approving or logging a decision. With ``checks_fail=False`` the
        request may pass every check (the audit then records ``forced: false``)."""
        if first_try or process:
            code, printed = (self.fedimg_review_process if process else self.fedimg_review)(
                "approve", request_id
            )
            assert code == 2 and "--force" in printed, printed
            assert not [
                r for r in self.audit_records() if r["event"] == "decision" and r["request_id"] == request_id
            ]
        code, printed = self.fedimg_review("approve", request_id, "--force")
        assert code == 0, printed
        entry = self.decision(request_id, "approved")
        assert entry["forced"] is True or not checks_fail, entry
        return entry

    def decision(self, request_id: str, decision: str) -> dict:
        entries = [
            r for r in self.audit_records() if r["event"] == "decision" and r["request_id"] == request_id
        ]
        assert entries and entries[-1]["decision"] == decision, entries
        return entries[-1]

    def audit_records(self) -> list[dict]:
        return AuditLog(self.state_dir / AUDIT_FILE).records()

    def verify_audit(self) -> list:
        return verify_audit_log(self.state_dir / AUDIT_FILE)


def failed_checks(review) -> list[str]:
    return [name for name, ok in review.checks.items() if not ok]


def check(review, prefix: str) -> bool:
    """The result of the review check whose description starts with ``prefix``."""
    (ok,) = [ok for name, ok in review.checks.items() if name.startswith(prefix)]
    return ok


def rules(review) -> set[str]:
    return {finding.rule for finding in review.static.errors}


def small_job(federation: Any, name: str, **settings: Any):
    """A legitimate FedAvg job with tiny settings (SmallCNN of width 4)."""
    from researcher.job import FedAvgJob
    from researcher.models import SmallCNN

    spec = federation.image_spec
    model_kwargs = dict(
        channels=spec["channels"], image_size=spec["size"], num_classes=len(federation.label_map), width=4
    )
    config = dict(rounds=1, local_epochs=1, batch_size=64, lr=0.05, min_sites=1, seed=0) | settings
    return FedAvgJob(SmallCNN, name=name, model_kwargs=model_kwargs, **config)


def submit_job(team: RedTeam, job: Any) -> str:
    """Submit a FedAvgJob to the team's site; returns the request id (the function is registered for ``run``)."""
    with quiet():
        (request_id,) = job.submit(team.federation).values()
    function = job.site_function(team.federation)
    team.functions[function.name] = function.function
    return request_id
