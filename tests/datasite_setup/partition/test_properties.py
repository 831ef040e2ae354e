"""Properties every partitioner must keep, on random labelled and grouped data (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from datasite_setup.convert.partition import PartitionInput, build_partitioner, split_train_val
from datasite_setup.errors import PartitionError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Schemes that may legitimately refuse a small or lumpy input (with a PartitionError).
MAY_REFUSE = {"dirichlet", "quantity", "shards", "natural"}


@st.composite
def datasets(draw, max_samples: int = 200) -> PartitionInput:
    num_samples = draw(st.integers(1, max_samples))
    num_labels = draw(st.integers(1, 6))
    num_groups = draw(st.integers(1, num_samples))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Every group id is used at least once; the rest are spread at random.
    groups = np.concatenate([np.arange(num_groups), rng.integers(0, num_groups, num_samples - num_groups)])
    labels = rng.integers(0, num_labels, num_samples)
    sites = np.array(["site_a", "site_b", "site_c"], dtype=object)[rng.integers(0, 3, num_samples)]
    return PartitionInput(labels=labels, groups=rng.permutation(groups), natural_keys=sites)


def build(scheme: str, num_clients: int, seed: int):
    kwargs = {"dirichlet": {"min_partition_size": 1}, "quantity": {"min_partition_size": 1}}.get(scheme, {})
    if scheme == "natural":
        kwargs = {"client_values": ["site_a", "site_b", "site_c"]}
    return build_partitioner(scheme, num_clients, seed=seed, **kwargs)


def partition_or_refuse(scheme: str, num_clients: int, seed: int, data: PartitionInput) -> list[np.ndarray]:
    try:
        return build(scheme, num_clients, seed).partition(data)
    except PartitionError as error:
        too_few_groups = data.num_groups < num_clients
        assert scheme in MAY_REFUSE or too_few_groups, f"{scheme} refused: {error}"
        assert str(error)
        assume(False)
        raise


schemes = st.sampled_from(["iid", "stratified", "dirichlet", "quantity", "natural", "shards"])


def clients_for(scheme: str) -> st.SearchStrategy[int]:
    return st.just(3) if scheme == "natural" else st.integers(1, 6)


@SETTINGS
@given(
    data=datasets(),
    scheme_and_clients=schemes.flatmap(lambda s: st.tuples(st.just(s), clients_for(s))),
    seed=st.integers(0, 1000),
)
def test_every_sample_in_exactly_one_client_and_groups_never_split(data, scheme_and_clients, seed) -> None:
    scheme, num_clients = scheme_and_clients
    parts = partition_or_refuse(scheme, num_clients, seed, data)
    assert len(parts) == num_clients
    assert all(len(part) > 0 for part in parts)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(data.num_samples))
    client_sets = [set(data.groups[part].tolist()) for part in parts]
    assert sum(len(s) for s in client_sets) == data.num_groups


@SETTINGS
@given(data=datasets(), scheme=schemes, seed=st.integers(0, 1000))
def test_same_seed_same_partition(data, scheme, seed) -> None:
    num_clients = 3 if scheme == "natural" else min(2, data.num_groups)
    first = partition_or_refuse(scheme, num_clients, seed, data)
    second = build(scheme, num_clients, seed).partition(data)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


@SETTINGS
@given(data=datasets(), fraction=st.floats(0.0, 0.9), seed=st.integers(0, 1000))
def test_split_covers_the_client_once_and_keeps_groups_whole(data, fraction, seed) -> None:
    indices = np.flatnonzero(np.arange(data.num_samples) % 2 == 0)
    train, val = split_train_val(data, indices, fraction, seed=seed)
    assert np.array_equal(np.sort(np.concatenate([train, val])), indices)
    assert not set(data.groups[train].tolist()) & set(data.groups[val].tolist())
    largest_group = int(data.group_sizes.max())
    assert abs(len(val) - fraction * len(indices)) <= largest_group / 2 + 1e-9


@SETTINGS
@given(
    label_weights=st.lists(st.integers(1, 10), min_size=2, max_size=6),
    num_clients=st.integers(2, 4),
    seed=st.integers(0, 1000),
)
def test_large_alpha_approaches_the_iid_label_mix(label_weights, num_clients, seed) -> None:
    rng = np.random.default_rng(seed)
    weights = np.array(label_weights) / sum(label_weights)
    labels = rng.choice(len(weights), size=1200, p=weights)
    data = PartitionInput(labels=labels, groups=np.arange(len(labels)))
    parts = build_partitioner("dirichlet", num_clients, alpha=1e6, min_partition_size=1, seed=seed).partition(
        data
    )
    totals = np.bincount(labels, minlength=len(weights))
    for part in parts:
        counts = np.bincount(labels[part], minlength=len(weights))
        assert np.all(np.abs(counts - totals / num_clients) <= 2)
