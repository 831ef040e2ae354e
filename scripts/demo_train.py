"""The demo's training part: a researcher trains a CNN across the running demo sites.

Run by scripts/demo.sh after 'fedimg up'. The approval step is the demo's stand-in
for each hospital's data owner, who would normally review the code first
(notebooks/data_owner.ipynb, and 'fedimg review' with the policies).
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from datasite_setup.site.code_requests import approve, requests
from datasite_setup.site.credentials import admin_credentials
from datasite_setup.site.federation_config import load_federation_config
from datasite_setup.site.site_admin import login
from researcher import FedAvgJob, Federation
from researcher.models import SmallCNN

console = Console()


def main(config_path: str, rounds: int = 3) -> int:
    config = load_federation_config(Path(config_path))
    (researcher,) = config.researchers
    credentials = config.secrets_dir / "researchers" / f"{researcher.email}.json"

    console.rule("researcher: connect and explore the mocks")
    federation = Federation.from_credentials(credentials)
    console.print(federation.summary()[["site", "split", "samples"]].to_string(index=False))
    spec = federation.image_spec
    job = FedAvgJob(
        SmallCNN,
        name="demo",
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
    console.print(f"dry run on the mocks: {job.dry_run(federation)}")
    console.rule("researcher: submit one request per site")
    console.print(job.submit(federation))

    console.rule(
        "[bold yellow]DEMO STAND-IN for each hospital's data owner: approving without a human review"
    )
    for site in config.sites:
        admin = login(site.url, admin_credentials(site.state_dir, site.name))
        for pending in requests(admin):
            limit = pending.output_policy_kwargs.get("limit")
            who = f"{pending.function_name} from {pending.requester}"
            console.print(f"{site.name}: approving {who} (limit {limit} runs)")
            approve(admin, pending.id)

    console.rule("researcher: wait for approval, then train")
    job.wait_for_approval(federation, timeout=120)
    out = config.path.parent / "results"
    result = job.run(federation, out / "checkpoint")
    console.print(result.table().to_string(index=False))
    paths = result.save(out)
    console.print(
        f"final val accuracy {result.final_accuracy:.3f}; wrote {', '.join(str(p) for p in paths.values())}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2], *(int(a) for a in sys.argv[2:3])))
