"""Helpers of the researcher's HTTP tests: the researcher account, a small job, the owners' stand-in."""

from __future__ import annotations

from datasite_setup.site.code_requests import approve, deny, requests
from datasite_setup.site.site_admin import login
from researcher import FedAvgJob, Federation
from researcher.models import SmallCNN

EMAIL, PASSWORD = "ada@university.example", "researcher-pass-1234"


def connect(sites) -> Federation:
    """The researcher's federation over running ``sites``."""
    return Federation.from_urls({s.name: s.url for s in sites}, EMAIL, {s.name: PASSWORD for s in sites})


def make_job(federation: Federation, name: str, **config) -> FedAvgJob:
    spec = federation.image_spec
    kwargs = dict(
        channels=spec["channels"], image_size=spec["size"], num_classes=len(federation.label_map), width=8
    )
    settings = (
        dict(rounds=2, local_epochs=1, batch_size=32, lr=0.05, momentum=0.9, min_sites=2, seed=1) | config
    )
    return FedAvgJob(SmallCNN, name=name, model_kwargs=kwargs, **settings)


def decide(sites, decisions: dict[str, str | None]) -> None:
    """The data owners' stand-in: approve (None) or deny (a reason) each site's pending request."""
    for site in sites:
        admin = login(site.url, site.admin)
        for request in requests(admin):
            reason = decisions.get(site.name)
            approve(admin, request.id) if reason is None else deny(admin, request.id, reason)


def submit(site, name: str) -> str:
    """A researcher's job request (one site, ``min_sites=1``) at ``site``; its request id."""
    federation = connect([site])
    return make_job(federation, name, min_sites=1).submit(federation)[site.name]
