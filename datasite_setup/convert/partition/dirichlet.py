"""Dirichlet label skew: each label's groups are spread over clients by a Dirichlet draw."""

from __future__ import annotations

from typing import Any

import numpy as np

from datasite_setup.convert.partition.assignment import cut_by_proportions
from datasite_setup.convert.partition.partition_input import PartitionInput
from datasite_setup.convert.partition.skew import SkewPartitioner


class DirichletPartitioner(SkewPartitioner):
    """Non-IID label skew (Hsu et al. 2019; Flower Datasets' ``DirichletPartitioner``).

    For every label, proportions ``p ~ Dir(alpha)`` over the clients decide how
    that label's groups are cut between them. Small ``alpha`` (0.1) gives each
    client a few dominant labels; large ``alpha`` (100) approaches IID. The draw
    is repeated (up to ``max_attempts``) until every client has at least
    ``min_partition_size`` samples, else a ``PartitionError`` says what to change.

    Parameters
    ----------
    num_clients : int
        How many partitions to make.
    alpha : float or list of float, default 0.5
        Concentration, > 0; one number, or one per client.
    min_partition_size : int, default 10
        Smallest acceptable client, in samples (>= 1).
    self_balancing : bool, default False
        Stop giving a label to clients already above the average size (keeps
        sizes closer together at the same label skew).
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

    def params(self) -> dict[str, Any]:
        """The Dirichlet parameters and ``self_balancing``."""
        return {**super().params(), "self_balancing": self.self_balancing}

    def draw(self, data: PartitionInput, rng: np.random.Generator) -> np.ndarray:
        """Per label, cut its shuffled groups between the clients by ``p ~ Dir(alpha)``."""
        sizes = data.group_sizes
        client_of_group = np.empty(data.num_groups, dtype=np.int64)
        load = np.zeros(self.num_clients)
        average = data.num_samples / self.num_clients
        for label in np.unique(data.group_labels):
            groups = rng.permutation(np.flatnonzero(data.group_labels == label))
            proportions = rng.dirichlet(self.alpha)
            if self.self_balancing:
                proportions = self._balanced(proportions, load, average)
            assigned = cut_by_proportions(sizes[groups], proportions)
            client_of_group[groups] = assigned
            load += np.bincount(assigned, weights=sizes[groups], minlength=self.num_clients)
        return client_of_group

    def _balanced(self, proportions: np.ndarray, load: np.ndarray, average: float) -> np.ndarray:
        # As in Flower: clients already above the average size get none of this label.
        proportions = np.where(load < average, proportions, 0.0)
        if proportions.sum() > 0:
            return proportions / proportions.sum()
        return np.full(self.num_clients, 1 / self.num_clients)
