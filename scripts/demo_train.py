"""The demo's training part: a researcher trains a CNN across the running demo sites.

Run by scripts/demo.sh after 'fedimg up'. The approval step is the demo's stand-in
for each hospital's data owner, who would normally review the code first
(notebooks/data_owner.ipynb, and 'fedimg review' with the policies).

Usage: demo_train.py FEDERATION_TOML [ROUNDS [JOB_NAME [RESULTS_DIR]]]. Each job name
is a new code request at every site (a site runs a request only as often as it was
approved), so a re-run needs a new name; the results folder must not exist yet.
Exits 1 when the job fails or any site failed a round.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from datasite_setup.site.code_requests import approve_reviewed, failing_checks, reviews
from datasite_setup.site.credentials import admin_credentials
from datasite_setup.site.federation_config import load_federation_config
from datasite_setup.site.review_command import load_review_policy
from datasite_setup.site.site_admin import login
from researcher import FedAvgJob, Federation
from researcher.models import SmallCNN
from researcher.progress import history_table, rounded

console = Console()


def main(config_path: str, rounds: int = 3, job_name: str = "demo", results: str | None = None) -> int:
    config = load_federation_config(Path(config_path))
    out = Path(results) if results else config.path.parent / "results" / job_name
    if out.exists():
        console.print(f"[red]{out} already exists: give the job a new name (earlier results are kept)[/]")
        return 2
    (researcher,) = config.researchers
    credentials = config.secrets_dir / "researchers" / f"{researcher.email}.json"

    console.rule("researcher: connect and explore the mocks")
    federation = Federation.from_credentials(credentials)
    console.print(federation.summary()[["site", "split", "samples"]].to_string(index=False))
    spec = federation.image_spec
    job = FedAvgJob(
        SmallCNN,
        name=job_name,
        model_kwargs=dict(
            channels=spec["channels"], image_size=spec["size"], num_classes=len(federation.label_map)
        ),
        rounds=rounds,
        local_epochs=2,
        batch_size=32,
        lr=0.05,
        momentum=0.9,
        min_sites=2,
    )
    for site, figures in rounded(job.dry_run(federation)).items():
        console.print(f"dry run on {site}'s mocks: {figures}")
    console.rule("researcher: submit one request per site")
    console.print(job.submit(federation))

    console.rule(
        "[bold yellow]DEMO STAND-IN for each hospital's data owner: approving without a human review"
    )
    for site in config.sites:
        admin = login(site.url, admin_credentials(site.state_dir, site.name))
        # the owner's own checks (fedimg review's): a request that fails one is not approved
        for review in reviews(admin, load_review_policy(site.state_dir, None)):
            pending = review.request
            limit = pending.output_policy_kwargs.get("limit")
            who = f"{pending.function_name} from {pending.requester}"
            if failing := failing_checks(review):
                console.print(f"{site.name}: NOT approving {who}: {'; '.join(failing)}")
                continue
            console.print(f"{site.name}: approving {who} (limit {limit} runs; every check passes)")
            approve_reviewed(admin, review, via="demo stand-in")

    console.rule(f"researcher: wait for approval, then train job {job_name}")
    job.wait_for_approval(federation, timeout=120)
    result = job.run(federation, out / "checkpoint")
    console.print(history_table(result.history, rounds), highlight=False)
    paths = result.save(out)
    console.print(
        f"final val accuracy {result.final_accuracy:.3f}; wrote {', '.join(str(p) for p in paths.values())}"
    )
    failed = {
        f"round {record.round}: {name}": entry.get("error", "")
        for record in result.history
        for name, entry in record.sites.items()
        if entry.get("status") != "ok"
    }
    for where, error in failed.items():
        console.print(f"[red]{where} failed: {error}[/]")
    return 1 if failed else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    rounds = int(args[1]) if len(args) > 1 else 3
    sys.exit(main(args[0], rounds, *args[2:4]))
