"""Shards: the pathological non-IID split of McMahan et al. — each client sees only a few labels."""

from __future__ import annotations

import numpy as np

from datasite_setup.convert.partition.base import Partitioner, PartitionInput, cut_by_proportions
from datasite_setup.errors import PartitionError


class ShardPartitioner(Partitioner):
    """Sort groups by label, cut them into ``num_clients * shards_per_client`` equal shards, deal shards at random.

    Each client gets ``shards_per_client`` shards, so it sees about that many
    labels. Unlike Flower's ``ShardPartitioner`` no sample is dropped: shard
    boundaries fall between groups, so shards are equal up to one group.

    Args:
        num_clients: how many partitions to make.
        shards_per_client: shards (≈ labels) per client, >= 1.
        seed: seed of the shuffles.

    Example:
        >>> import numpy as np
        >>> from datasite_setup.convert.partition import PartitionInput, ShardPartitioner
        >>> data = PartitionInput(labels=np.repeat(np.arange(4), 10), groups=np.arange(40))
        >>> parts = ShardPartitioner(2, shards_per_client=2, seed=0).partition(data)
        >>> [len(np.unique(data.labels[p])) for p in parts], sum(len(p) for p in parts)
        ([2, 2], 40)
    """

    def __init__(self, num_clients: int, *, shards_per_client: int = 2, seed: int = 0) -> None:
        super().__init__(num_clients, seed=seed)
        if (
            isinstance(shards_per_client, bool)
            or not isinstance(shards_per_client, int)
            or shards_per_client < 1
        ):
            raise PartitionError(f"--shards-per-client must be an integer >= 1 (got {shards_per_client!r})")
        self.shards_per_client = shards_per_client

    def params(self) -> dict:
        return {"shards_per_client": self.shards_per_client}

    def assign_groups(self, data: PartitionInput, rng: np.random.Generator) -> np.ndarray:
        num_shards = self.num_clients * self.shards_per_client
        if data.num_groups < num_shards:
            raise PartitionError(
                f"shards: {self.num_clients} clients x {self.shards_per_client} shards need at least {num_shards} groups "
                f"(patients), found {data.num_groups}; lower --shards-per-client or use fewer clients"
            )
        order = np.lexsort((rng.random(data.num_groups), data.group_labels))
        shard_of_group = np.empty(data.num_groups, dtype=np.int64)
        shard_of_group[order] = cut_by_proportions(
            data.group_sizes[order], np.full(num_shards, 1 / num_shards)
        )
        client_of_shard = rng.permutation(num_shards) // self.shards_per_client
        return client_of_shard[shard_of_group]
