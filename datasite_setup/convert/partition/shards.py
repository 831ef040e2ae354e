"""Shards: the pathological non-IID split of McMahan et al. — each client sees only a few labels."""

from __future__ import annotations

from typing import Any

import numpy as np

from datasite_setup.convert.partition.assignment import cut_by_proportions
from datasite_setup.convert.partition.base import Partitioner
from datasite_setup.convert.partition.partition_input import PartitionInput
from datasite_setup.convert.partition.validation import is_int_at_least
from datasite_setup.errors import PartitionError


class ShardPartitioner(Partitioner):
    """Sort groups by label, cut them into equal shards and deal ``shards_per_client`` to each client.

    There are ``num_clients * shards_per_client`` shards, dealt at random, so a
    client sees about ``shards_per_client`` labels. Unlike Flower's
    ``ShardPartitioner`` no sample is dropped: shard boundaries fall between
    groups, so shards are equal up to one group.

    Parameters
    ----------
    num_clients : int
        How many partitions to make.
    shards_per_client : int, default 2
        Shards (≈ labels) per client, >= 1.
    seed : int, default 0
        Seed of the shuffles.

    Raises
    ------
    PartitionError
        When ``shards_per_client`` is not an integer >= 1.

    Examples
    --------
    >>> import numpy as np
    >>> from datasite_setup.convert.partition import PartitionInput, ShardPartitioner
    >>> data = PartitionInput(labels=np.repeat(np.arange(4), 10), groups=np.arange(40))
    >>> parts = ShardPartitioner(2, shards_per_client=2, seed=0).partition(data)
    >>> [len(np.unique(data.labels[p])) for p in parts], sum(len(p) for p in parts)
    ([2, 2], 40)
    """

    def __init__(self, num_clients: int, *, shards_per_client: int = 2, seed: int = 0) -> None:
        super().__init__(num_clients, seed=seed)
        if not is_int_at_least(shards_per_client, 1):
            raise PartitionError(f"--shards-per-client must be an integer >= 1 (got {shards_per_client!r})")
        self.shards_per_client = shards_per_client

    def params(self) -> dict[str, Any]:
        """The number of shards per client."""
        return {"shards_per_client": self.shards_per_client}

    def assign_groups(self, data: PartitionInput, rng: np.random.Generator) -> np.ndarray:
        """Cut the label-sorted groups into equal shards and deal the shards to clients at random."""
        num_shards = self.num_clients * self.shards_per_client
        if data.num_groups < num_shards:
            raise PartitionError(
                f"shards: {self.num_clients} clients x {self.shards_per_client} shards "
                f"need at least {num_shards} groups (patients), found {data.num_groups}; "
                "lower --shards-per-client or use fewer clients"
            )
        # Sorted by label, and randomly within a label (lexsort's last key is the primary one).
        order = np.lexsort((rng.random(data.num_groups), data.group_labels))
        equal_shares = np.full(num_shards, 1 / num_shards)
        shard_of_group = np.empty(data.num_groups, dtype=np.int64)
        shard_of_group[order] = cut_by_proportions(data.group_sizes[order], equal_shares)
        client_of_shard = rng.permutation(num_shards) // self.shards_per_client
        return client_of_shard[shard_of_group]
