"""IID: every client gets a uniformly random, equally sized share of the groups."""

from __future__ import annotations

import numpy as np

from datasite_setup.convert.partition.base import Partitioner, PartitionInput, balanced_assignment


class IidPartitioner(Partitioner):
    """Shuffle the groups and deal them out so that client sizes stay within one group of each other.

    Args:
        num_clients: how many partitions to make.
        seed: seed of the shuffle.

    Example:
        >>> import numpy as np
        >>> from datasite_setup.convert.partition import IidPartitioner, PartitionInput
        >>> data = PartitionInput(labels=np.arange(10) % 2, groups=np.arange(10))
        >>> [len(part) for part in IidPartitioner(3, seed=1).partition(data)]
        [4, 3, 3]
    """

    def assign_groups(self, data: PartitionInput, rng: np.random.Generator) -> np.ndarray:
        return balanced_assignment(data.group_sizes, rng.permutation(data.num_groups), self.num_clients)
