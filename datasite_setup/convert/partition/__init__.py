"""Group-aware partitioners: how the accepted samples are split into one partition per client.

As in Flower Datasets, one concept per module: ``partition_input`` (what a
partitioner reads), ``base`` (the small abstract ``Partitioner``), ``skew`` (the
base of the Dirichlet-driven schemes), ``assignment`` and ``validation`` (shared
helpers), then one module per scheme and ``split`` (the per-client train/val
split). ``build_partitioner`` maps the CLI's ``--scheme`` and flags to one of
them and rejects flags the scheme does not take.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datasite_setup.convert.partition.base import Partitioner
from datasite_setup.convert.partition.dirichlet import DirichletPartitioner
from datasite_setup.convert.partition.iid import IidPartitioner
from datasite_setup.convert.partition.natural import NaturalPartitioner
from datasite_setup.convert.partition.partition_input import PartitionInput
from datasite_setup.convert.partition.quantity import QuantityPartitioner
from datasite_setup.convert.partition.shards import ShardPartitioner
from datasite_setup.convert.partition.split import split_train_val
from datasite_setup.convert.partition.stratified import StratifiedPartitioner
from datasite_setup.errors import PartitionError

SCHEMES: dict[str, type[Partitioner]] = {
    "iid": IidPartitioner,
    "stratified": StratifiedPartitioner,
    "dirichlet": DirichletPartitioner,
    "quantity": QuantityPartitioner,
    "natural": NaturalPartitioner,
    "shards": ShardPartitioner,
}

# Which CLI flags each scheme takes (keyword -> flag).
_FLAGS = {
    "alpha": "--alpha",
    "min_partition_size": "--min-partition-size",
    "self_balancing": "--self-balancing",
    "shards_per_client": "--shards-per-client",
}
_TAKES = {
    "iid": (),
    "stratified": (),
    "dirichlet": ("alpha", "min_partition_size", "self_balancing"),
    "quantity": ("alpha", "min_partition_size"),
    "natural": (),
    "shards": ("shards_per_client",),
}

__all__ = [
    "SCHEMES",
    "DirichletPartitioner",
    "IidPartitioner",
    "NaturalPartitioner",
    "PartitionInput",
    "Partitioner",
    "QuantityPartitioner",
    "ShardPartitioner",
    "StratifiedPartitioner",
    "build_partitioner",
    "split_train_val",
]


def build_partitioner(
    scheme: str,
    num_clients: int,
    *,
    seed: int = 0,
    alpha: float | None = None,
    min_partition_size: int | None = None,
    shards_per_client: int | None = None,
    self_balancing: bool = False,
    client_values: Sequence[str] | None = None,
) -> Partitioner:
    """The partitioner for ``--scheme``; flags it does not take are an error, not silently ignored.

    A flag left at None (or ``self_balancing`` at False) takes the scheme's default.

    Parameters
    ----------
    scheme : str
        One of ``SCHEMES``: iid, stratified, dirichlet, quantity, natural, shards.
    num_clients : int
        How many partitions to make.
    seed : int, default 0
        Seed of every random choice.
    alpha : float, optional
        ``--alpha`` (dirichlet, quantity).
    min_partition_size : int, optional
        ``--min-partition-size`` (dirichlet, quantity).
    shards_per_client : int, optional
        ``--shards-per-client`` (shards).
    self_balancing : bool, default False
        ``--self-balancing`` (dirichlet).
    client_values : sequence of str, optional
        The client column's values, in client order (natural; required there).

    Returns
    -------
    Partitioner
        The scheme's partitioner, its parameters validated.

    Raises
    ------
    PartitionError
        For an unknown scheme, a flag the scheme does not take, or a parameter out of range.

    Examples
    --------
    >>> build_partitioner("dirichlet", 3, alpha=0.1).params()["alpha"]
    0.1
    >>> try:
    ...     build_partitioner("iid", 3, alpha=0.1)
    ... except PartitionError as error:
    ...     print(error)
    --scheme iid does not take --alpha (it applies to: dirichlet, quantity)
    """
    if scheme not in SCHEMES:
        raise PartitionError(f"unknown --scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    flag_values = {
        "alpha": alpha,
        "min_partition_size": min_partition_size,
        "shards_per_client": shards_per_client,
        "self_balancing": self_balancing or None,
    }
    given: dict[str, Any] = {name: value for name, value in flag_values.items() if value is not None}
    for name in given:
        if name not in _TAKES[scheme]:
            takers = ", ".join(other for other, names in _TAKES.items() if name in names)
            raise PartitionError(f"--scheme {scheme} does not take {_FLAGS[name]} (it applies to: {takers})")
    if scheme == "natural":
        given["client_values"] = client_values
    return SCHEMES[scheme](num_clients, seed=seed, **given)
