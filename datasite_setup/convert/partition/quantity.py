"""Quantity skew: clients differ in size, not in label mix."""

from __future__ import annotations

import numpy as np

from datasite_setup.convert.partition.base import PartitionInput, SkewPartitioner, cut_by_proportions


class QuantityPartitioner(SkewPartitioner):
    """Client sizes follow ``q ~ Dir(alpha)`` over clients (Li et al. 2022, "quantity skew").

    Groups are shuffled, then cut into consecutive runs whose sizes follow
    ``q``; the label mix of each client stays close to the global one. Small
    ``alpha`` gives a few large and many small hospitals. Draws repeat (up to
    ``max_attempts``) until every client has ``min_partition_size`` samples.

    Args:
        num_clients: how many partitions to make.
        alpha: concentration of the size proportions, > 0.
        min_partition_size: smallest acceptable client, in samples (>= 1).
        max_attempts: draws to try before giving up.
        seed: seed of the draws.

    Example:
        >>> import numpy as np
        >>> from datasite_setup.convert.partition import PartitionInput, QuantityPartitioner
        >>> data = PartitionInput(labels=np.arange(200) % 2, groups=np.arange(200))
        >>> sizes = [len(p) for p in QuantityPartitioner(4, alpha=1.0, min_partition_size=5, seed=3).partition(data)]
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
        order = rng.permutation(data.num_groups)
        client_of_group = np.empty(data.num_groups, dtype=np.int64)
        client_of_group[order] = cut_by_proportions(data.group_sizes[order], rng.dirichlet(self.alpha))
        return client_of_group
