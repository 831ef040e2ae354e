"""FedAvg with secure aggregation over real HTTP datasites: same model as without, single updates hidden."""

from __future__ import annotations

import numpy as np

from policies.secure_aggregation import decode
from tests.researcher.http_sites import decide, make_job


def test_secure_aggregation_matches_plain_fedavg_and_hides_single_updates(two_sites, tmp_path) -> None:
    sites, federation = two_sites
    assert all(len(site.info["secure_aggregation_public_key"]) == 64 for site in federation.sites.values())
    plain = make_job(federation, "plain", rounds=2)
    masked = make_job(federation, "masked", rounds=2, secure_aggregation=True, max_restarts=1)
    assert masked.max_calls == 4
    for job in (plain, masked):
        job.submit(federation)
    decide(sites, {})
    for job in (plain, masked):
        job.wait_for_approval(federation, timeout=60, show=False)
    plain_result = plain.run(federation, tmp_path / "plain")
    masked_result = masked.run(federation, tmp_path / "masked")
    for name, value in plain_result.weights.items():
        assert np.allclose(value, masked_result.weights[name], atol=1e-4), name
    assert abs(plain_result.final_accuracy - masked_result.final_accuracy) <= 0.02

    # what one site releases under secure aggregation: masked integers, not its weights
    probe = make_job(federation, "probe", rounds=1, secure_aggregation=True)
    probe.submit(federation)
    decide(sites, {})
    probe.wait_for_approval(federation, timeout=60, show=False)
    function = probe.site_function(federation).name
    cohort = {name: site.info["secure_aggregation_public_key"] for name, site in federation.sites.items()}
    outputs = probe._call_sites(
        federation, function, list(federation.sites), probe.initial_weights(), 0, cohort
    )
    single = outputs["client_0"]["weights"]
    assert all(value.dtype == np.uint64 for value in single.values())
    unmasked_guess = {
        name: decode(value) / outputs["client_0"]["num_samples"] for name, value in single.items()
    }
    initial = probe.initial_weights()
    assert all(
        np.abs(unmasked_guess[name] - initial[name]).max() > 1e3 for name in single
    )  # noise, not weights
