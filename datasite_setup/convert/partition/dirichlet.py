"""Dirichlet label skew: each label's groups are spread over clients by a Dirichlet draw."""

from __future__ import annotations

import numpy as np

from datasite_setup.convert.partition.base import PartitionInput, SkewPartitioner, cut_by_proportions


class DirichletPartitioner(SkewPartitioner):
    """Non-IID label skew (Hsu et al. 2019; Flower Datasets' ``DirichletPartitioner``).

    For every label, proportions ``p ~ Dir(alpha)`` over the clients decide how
    that label's groups are cut between them. Small ``alpha`` (0.1) gives each
    client a few dominant labels; large ``alpha`` (100) approaches IID. The draw
    is repeated (up to ``max_attempts``) until every client has at least
    ``min_partition_size`` samples, else a ``PartitionError`` says what to change.

    Args:
        num_clients: how many partitions to make.
        alpha: concentration, > 0; one number, or one per client.
        min_partition_size: smallest acceptable client, in samples (>= 1).
        self_balancing: stop giving a label to clients already above the average
            size (keeps sizes closer together at the same label skew).
        max_attempts: draws to try before giving up.
        seed: seed of the draws.

    Example:
        >>> import numpy as np
        >>> from datasite_setup.convert.partition import DirichletPartitioner, PartitionInput
        >>> data = PartitionInput(labels=np.arange(300) % 3, groups=np.arange(300))
        >>> parts = DirichletPartitioner(3, alpha=0.3, min_partition_size=10, seed=0).partition(data)
        >>> sum(len(p) for p in parts), min(len(p) for p in parts) >= 10
        (300, True)
    """

    scheme = "dirichlet"
    advice = "raise --alpha, lower --min-partition-size, add --self-balancing, or use fewer clients"

    def __init__(
        self,
        num_clients: int,
        *,
        alpha: float | list[float] = 0.5,
        min_partition_size: int = 10,
        self_balancing: bool = False,
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
        self.self_balancing = bool(self_balancing)

    def params(self) -> dict:
        return {**super().params(), "self_balancing": self.self_balancing}

    def draw(self, data: PartitionInput, rng: np.random.Generator) -> np.ndarray:
        sizes = data.group_sizes
        client_of_group = np.empty(data.num_groups, dtype=np.int64)
        load = np.zeros(self.num_clients)
        average = data.num_samples / self.num_clients
        for label in np.unique(data.group_labels):
            groups = rng.permutation(np.flatnonzero(data.group_labels == label))
            proportions = rng.dirichlet(self.alpha)
            if self.self_balancing:
                # As in Flower: clients already above the average size get none of this label.
                proportions = np.where(load < average, proportions, 0.0)
                proportions = (
                    proportions / proportions.sum()
                    if proportions.sum() > 0
                    else np.full(self.num_clients, 1 / self.num_clients)
                )
            assigned = cut_by_proportions(sizes[groups], proportions)
            client_of_group[groups] = assigned
            load += np.bincount(assigned, weights=sizes[groups], minlength=self.num_clients)
        return client_of_group
