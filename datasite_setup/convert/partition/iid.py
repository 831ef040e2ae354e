"""IID: every client gets a uniformly random, equally sized share of the groups."""

from __future__ import annotations

import numpy as np

from datasite_setup.convert.partition.assignment import balanced_assignment
from datasite_setup.convert.partition.base import Partitioner
from datasite_setup.convert.partition.partition_input import PartitionInput


class IidPartitioner(Partitioner):
    """Shuffle the groups and deal them out so that client sizes stay within one group of each other.

    Parameters
    ----------
    num_clients : int
        How many partitions to make.
    seed : int, default 0
        Seed of the shuffle.

    Examples
    --------
    >>> import numpy as np
    >>> from datasite_setup.convert.partition import IidPartitioner, PartitionInput
    >>> data = PartitionInput(labels=np.arange(10) % 2, groups=np.arange(10))
    >>> [len(part) for part in IidPartitioner(3, seed=1).partition(data)]
    [4, 3, 3]
    """

    def assign_groups(self, data: PartitionInput, rng: np.random.Generator) -> np.ndarray:
        """Deal the shuffled groups, largest first, to the smallest client so far."""
        return balanced_assignment(data.group_sizes, rng.permutation(data.num_groups), self.num_clients)
