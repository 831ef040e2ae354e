"""Behaviour of each partitioner and of build_partitioner on hand-made inputs."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import datasite_setup.convert.partition as partition
from datasite_setup.convert.partition import (
    SCHEMES,
    DirichletPartitioner,
    IidPartitioner,
    NaturalPartitioner,
    PartitionInput,
    QuantityPartitioner,
    ShardPartitioner,
    StratifiedPartitioner,
    build_partitioner,
    dirichlet,
    iid,
    natural,
    quantity,
    shards,
    split,
    split_train_val,
    stratified,
)
from datasite_setup.errors import PartitionError


def ungrouped(labels) -> PartitionInput:
    labels = np.asarray(labels)
    return PartitionInput(labels=labels, groups=np.arange(len(labels)))


def label_counts(data: PartitionInput, part: np.ndarray, num_labels: int) -> list[int]:
    return np.bincount(data.labels[part], minlength=num_labels).tolist()


@pytest.mark.parametrize(
    "module",
    [partition, iid, stratified, dirichlet, quantity, natural, shards, split],
    ids=lambda m: m.__name__,
)
def test_docstring_examples_run(module) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_every_partitioner_has_a_runnable_example() -> None:
    for cls in SCHEMES.values():
        assert ">>>" in (cls.__doc__ or ""), cls.__name__


def test_group_table() -> None:
    data = PartitionInput(labels=np.array([1, 1, 0, 2, 2, 0]), groups=np.array([7, 7, 7, 3, 3, 9]))
    assert data.num_groups == 3
    assert data.group_sizes.tolist() == [2, 3, 1]  # groups 3, 7, 9
    assert data.group_labels.tolist() == [2, 1, 0]
    assert [m.tolist() for m in data.group_members] == [[3, 4], [0, 1, 2], [5]]


def test_input_lengths_must_agree() -> None:
    with pytest.raises(ValueError, match="one entry per sample"):
        PartitionInput(labels=np.zeros(3, dtype=int), groups=np.arange(4))


def test_iid_balances_sizes_and_depends_on_seed() -> None:
    data = ungrouped(np.arange(100) % 4)
    parts = IidPartitioner(3, seed=1).partition(data)
    assert sorted(len(p) for p in parts) == [33, 33, 34]
    again = IidPartitioner(3, seed=1).partition(data)
    other = IidPartitioner(3, seed=2).partition(data)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_iid_with_unequal_groups_stays_within_one_group() -> None:
    groups = np.repeat(np.arange(30), np.arange(30) % 4 + 1)  # sizes 1..4
    data = PartitionInput(labels=np.zeros(len(groups), dtype=int), groups=groups)
    sizes = [len(p) for p in IidPartitioner(4, seed=0).partition(data)]
    assert max(sizes) - min(sizes) <= 4


def test_stratified_gives_every_client_the_global_mix() -> None:
    data = ungrouped(np.repeat([0, 1, 2], [60, 30, 12]))
    parts = StratifiedPartitioner(3, seed=5).partition(data)
    assert [label_counts(data, p, 3) for p in parts] == [[20, 10, 4]] * 3


def test_dirichlet_small_alpha_skews_labels_large_alpha_does_not() -> None:
    data = ungrouped(np.arange(2000) % 10)

    def mean_distance_from_global(alpha: float) -> float:
        parts = DirichletPartitioner(5, alpha=alpha, min_partition_size=10, seed=0).partition(data)
        shares = [np.bincount(data.labels[p], minlength=10) / len(p) for p in parts]
        return float(np.mean([np.abs(s - 0.1).sum() for s in shares]))

    assert mean_distance_from_global(0.1) > 0.8
    assert mean_distance_from_global(1000.0) < 0.1


def test_dirichlet_infeasible_minimum_is_a_clear_error() -> None:
    data = ungrouped(np.arange(40) % 4)
    with pytest.raises(PartitionError, match="needs at least 50 samples"):
        DirichletPartitioner(5, min_partition_size=10).partition(data)
    with pytest.raises(PartitionError, match=r"in 3 draws with alpha=0\.01 .*fewer than 7 samples.*--alpha"):
        DirichletPartitioner(5, alpha=0.01, min_partition_size=7, max_attempts=3).partition(data)


def test_dirichlet_self_balancing_narrows_sizes() -> None:
    data = ungrouped(np.arange(3000) % 10)

    def spread(balanced: bool) -> float:
        spreads = []
        for seed in range(5):
            parts = DirichletPartitioner(
                6, alpha=0.3, min_partition_size=1, self_balancing=balanced, seed=seed
            ).partition(data)
            sizes = [len(p) for p in parts]
            spreads.append(max(sizes) - min(sizes))
        return float(np.mean(spreads))

    assert spread(True) < spread(False)


def test_dirichlet_per_client_alpha_and_params() -> None:
    partitioner = DirichletPartitioner(3, alpha=[0.5, 1.0, 2.0], min_partition_size=2)
    assert partitioner.params() == {
        "alpha": [0.5, 1.0, 2.0],
        "min_partition_size": 2,
        "max_attempts": 10,
        "self_balancing": False,
    }
    with pytest.raises(PartitionError, match="one per client"):
        DirichletPartitioner(3, alpha=[0.5, 1.0])


@pytest.mark.parametrize("alpha", [0, -1, float("nan"), float("inf")])
def test_alpha_must_be_positive(alpha: float) -> None:
    with pytest.raises(PartitionError, match="--alpha must be > 0"):
        DirichletPartitioner(3, alpha=alpha)
    with pytest.raises(PartitionError, match="--alpha must be > 0"):
        QuantityPartitioner(3, alpha=alpha)


def test_quantity_skews_sizes_not_labels() -> None:
    data = ungrouped(np.arange(5000) % 5)
    parts = QuantityPartitioner(5, alpha=0.5, min_partition_size=50, seed=4).partition(data)
    sizes = sorted(len(p) for p in parts)
    assert sizes[-1] > 3 * sizes[0]
    for part in parts:
        shares = np.bincount(data.labels[part], minlength=5) / len(part)
        assert np.abs(shares - 0.2).max() < 0.1


def test_natural_follows_the_column_and_moves_split_groups_whole() -> None:
    keys = np.array(["north", "north", "south", "south", "south", "east"], dtype=object)
    data = PartitionInput(
        labels=np.zeros(6, dtype=int), groups=np.array([0, 0, 0, 1, 1, 2]), natural_keys=keys
    )
    partitioner = NaturalPartitioner(3, client_values=["east", "north", "south"])
    parts = partitioner.partition(data)
    assert [p.tolist() for p in parts] == [[5], [0, 1, 2], [3, 4]]
    assert (partitioner.reassigned_groups, partitioner.reassigned_samples) == (1, 1)


def test_natural_rejects_unknown_values() -> None:
    data = PartitionInput(
        labels=np.zeros(2, dtype=int), groups=np.arange(2), natural_keys=np.array(["a", "zz"], dtype=object)
    )
    with pytest.raises(PartitionError, match=r"\['zz'\] are not among the clients"):
        NaturalPartitioner(2, client_values=["a", "b"]).partition(data)


def test_shards_give_each_client_about_k_labels() -> None:
    data = ungrouped(np.repeat(np.arange(10), 50))
    parts = ShardPartitioner(5, shards_per_client=2, seed=3).partition(data)
    assert [len(np.unique(data.labels[p])) for p in parts] == [2] * 5
    assert sorted(np.concatenate(parts).tolist()) == list(range(500))


def test_shards_need_enough_groups() -> None:
    with pytest.raises(PartitionError, match="need at least 12 groups"):
        ShardPartitioner(4, shards_per_client=3).partition(ungrouped(np.arange(10) % 2))


def test_more_clients_than_groups_is_an_error_for_every_scheme() -> None:
    data = PartitionInput(labels=np.arange(12) % 2, groups=np.arange(12) // 4)  # 3 groups
    for scheme in ("iid", "stratified", "dirichlet", "quantity", "shards"):
        kwargs = {"min_partition_size": 1} if scheme in ("dirichlet", "quantity") else {}
        with pytest.raises(PartitionError, match="cannot split 3 groups .* into 4 clients"):
            build_partitioner(scheme, 4, **kwargs).partition(data)


def test_build_partitioner_rejects_flags_a_scheme_does_not_take() -> None:
    with pytest.raises(PartitionError, match="--scheme iid does not take --alpha"):
        build_partitioner("iid", 2, alpha=0.5)
    with pytest.raises(PartitionError, match="--scheme dirichlet does not take --shards-per-client"):
        build_partitioner("dirichlet", 2, shards_per_client=2)
    with pytest.raises(PartitionError, match="--scheme quantity does not take --self-balancing"):
        build_partitioner("quantity", 2, self_balancing=True)
    with pytest.raises(PartitionError, match="unknown --scheme 'random'; choose one of iid, stratified"):
        build_partitioner("random", 2)


def test_build_partitioner_uses_scheme_defaults() -> None:
    assert build_partitioner("dirichlet", 2).params()["alpha"] == 0.5
    assert build_partitioner("quantity", 2).params()["alpha"] == 1.0
    assert build_partitioner("shards", 2).params() == {"shards_per_client": 2}
    assert build_partitioner("natural", 2, client_values=["x", "y"]).params() == {"client_values": ["x", "y"]}


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_num_clients_validated(bad) -> None:
    with pytest.raises(PartitionError, match="num_clients must be an integer >= 1"):
        IidPartitioner(bad)


def test_split_is_stratified_and_near_the_fraction() -> None:
    data = ungrouped(np.repeat([0, 1, 2], [50, 30, 20]))
    train, val = split_train_val(data, np.arange(100), 0.2, seed=0)
    assert label_counts(data, val, 3) == [10, 6, 4]
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(100))


def test_split_never_cuts_a_patient_and_does_not_favour_large_ones() -> None:
    groups = np.repeat(np.arange(400), np.arange(400) % 4 + 1)  # 1000 samples, patients of 1-4 images
    data = PartitionInput(labels=np.zeros(len(groups), dtype=int), groups=groups)
    train, val = split_train_val(data, np.arange(len(groups)), 0.2, seed=1)
    assert not set(groups[train]) & set(groups[val])
    assert abs(len(val) - 200) <= 2


def test_split_zero_fraction_and_bad_fraction() -> None:
    data = ungrouped(np.arange(10) % 2)
    train, val = split_train_val(data, np.arange(10), 0.0)
    assert len(train) == 10 and len(val) == 0
    with pytest.raises(PartitionError, match=r"val_fraction must be in \[0, 1\)"):
        split_train_val(data, np.arange(10), 1.0)
