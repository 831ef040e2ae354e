"""Fixtures of the researcher's HTTP tests."""

from __future__ import annotations

import pytest

from datasite_setup.convert.federated_format import CLIENTS_DIR
from datasite_setup.site.site_admin import ensure_researcher, login
from tests.researcher.http_sites import EMAIL, PASSWORD, connect


@pytest.fixture
def two_sites(site_factory, sample_federation):
    """Two running datasites of the sample federation, each with the researcher's account; their federation."""
    sites = [site_factory(name, sample_federation / CLIENTS_DIR / name) for name in ("client_0", "client_1")]
    for site in sites:
        ensure_researcher(login(site.url, site.admin), email=EMAIL, name="Ada", password=PASSWORD)
    return sites, connect(sites)
