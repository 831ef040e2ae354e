"""Group-aware partitioners: how the accepted samples are split into one partition per client.

One module per scheme, all on the ``Partitioner`` base of ``base.py``;
``build_partitioner`` maps the CLI's ``--scheme`` and flags to one of them and
rejects flags the scheme does not take.
"""

from __future__ import annotations

from collections.abc import Sequence

from datasite_setup.convert.partition.base import Partitioner, PartitionInput
from datasite_setup.convert.partition.dirichlet import DirichletPartitioner
from datasite_setup.convert.partition.iid import IidPartitioner
from datasite_setup.convert.partition.natural import NaturalPartitioner
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

    Example:
        >>> build_partitioner("dirichlet", 3, alpha=0.1).params()["alpha"]
        0.1
        >>> build_partitioner("iid", 3, alpha=0.1)
        Traceback (most recent call last):
        ...
        datasite_setup.errors.PartitionError: --scheme iid does not take --alpha (it applies to: dirichlet, quantity)
    """
    if scheme not in SCHEMES:
        raise PartitionError(f"unknown --scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    given = {
        "alpha": alpha,
        "min_partition_size": min_partition_size,
        "shards_per_client": shards_per_client,
        "self_balancing": self_balancing or None,
    }
    given = {name: value for name, value in given.items() if value is not None}
    for name in given:
        if name not in _TAKES[scheme]:
            takers = ", ".join(s for s, names in _TAKES.items() if name in names)
            raise PartitionError(f"--scheme {scheme} does not take {_FLAGS[name]} (it applies to: {takers})")
    if scheme == "natural":
        given["client_values"] = client_values
    return SCHEMES[scheme](num_clients, seed=seed, **given)
