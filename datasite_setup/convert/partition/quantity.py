"""Quantity skew: clients differ in size, not in label mix."""

from __future__ import annotations

import numpy as np

from datasite_setup.convert.partition.assignment import cut_by_proportions
from datasite_setup.convert.partition.partition_input import PartitionInput
from datasite_setup.convert.partition.skew import SkewPartitioner


class QuantityPartitioner(SkewPartitioner):
    """Client sizes follow ``q ~ Dir(alpha)`` over clients (Li et al. 2022, "quantity skew").

    Groups are shuffled, then cut into consecutive runs whose sizes follow
    ``q``; the label mix of each client stays close to the global one. Small
    ``alpha`` gives a few large and many small hospitals. Draws repeat (up to
    ``max_attempts``) until every client has ``min_partition_size`` samples.

    Parameters
    ----------
    num_clients : int
        How many partitions to make.
    alpha : float, default 1.0
        Concentration of the size proportions, > 0.
    min_partition_size : int, default 10
        Smallest acceptable client, in samples (>= 1).
    max_attempts : int, default 10
        Draws to try before giving up.
    seed : int, default 0
        Seed of the draws.

    Raises
    ------
    PartitionError
        When a parameter is outside what is allowed; the message says what is.

    Examples
    --------
    >>> import numpy as np
    >>> from datasite_setup.convert.partition import PartitionInput, QuantityPartitioner
    >>> data = PartitionInput(labels=np.arange(200) % 2, groups=np.arange(200))
    >>> partitioner = QuantityPartitioner(4, alpha=1.0, min_partition_size=5, seed=3)
    >>> sizes = [len(p) for p in partitioner.partition(data)]
    >>> sum(sizes), min(sizes) >= 5
    (200, True)
    """

    scheme = "quantity"

    def __init__(
        self,
        num_clients: int,
        *,
        alpha: float = 1.0,
        min_partition_size: int = 10,
        max_attempts: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__(
            num_clients,
            alpha=alpha,
            min_partition_size=min_partition_size,
            max_attempts=max_attempts,
            seed=seed,
        )

    def draw(self, data: PartitionInput, rng: np.random.Generator) -> np.ndarray:
        """Cut the shuffled groups into consecutive runs sized by ``q ~ Dir(alpha)``."""
        order = rng.permutation(data.num_groups)
        client_of_group = np.empty(data.num_groups, dtype=np.int64)
        client_of_group[order] = cut_by_proportions(data.group_sizes[order], rng.dirichlet(self.alpha))
        return client_of_group
