"""The base of the Dirichlet-driven schemes: draw, and redraw until every client is large enough."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from datasite_setup.convert.partition.base import Partitioner
from datasite_setup.convert.partition.partition_input import PartitionInput
from datasite_setup.convert.partition.validation import (
    check_min_partition_size,
    is_int_at_least,
    validate_alpha,
    validate_min_partition_size,
)
from datasite_setup.errors import PartitionError


class SkewPartitioner(Partitioner):
    """Base of the Dirichlet-driven schemes: redraw until every client has ``min_partition_size`` samples.

    A subclass sets ``scheme`` (its name in messages) and implements ``draw``; it may
    override ``advice``, the flags a failure message suggests changing.

    Parameters
    ----------
    num_clients : int
        How many partitions to make.
    alpha : float or list of float
        Dirichlet concentration, > 0; one number, or one per client.
    min_partition_size : int, default 10
        Smallest acceptable client, in samples (>= 1).
    max_attempts : int, default 10
        Draws to try before giving up with a ``PartitionError`` (>= 1).
    seed : int, default 0
        Seed of the draws.

    Raises
    ------
    PartitionError
        When a parameter is outside what is allowed; the message says what is.
    """

    scheme = ""
    advice = "raise --alpha, lower --min-partition-size, or use fewer clients"

    def __init__(
        self,
        num_clients: int,
        *,
        alpha: float | list[float],
        min_partition_size: int = 10,
        max_attempts: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__(num_clients, seed=seed)
        self.alpha = validate_alpha(alpha, num_clients)
        self.min_partition_size = validate_min_partition_size(min_partition_size)
        if not is_int_at_least(max_attempts, 1):
            raise PartitionError(f"max_attempts must be an integer >= 1 (got {max_attempts!r})")
        self.max_attempts = max_attempts

    def params(self) -> dict[str, Any]:
        """The scheme's parameters; ``alpha`` is one number when it is the same for every client."""
        same_for_all = np.all(self.alpha == self.alpha[0])
        alpha = float(self.alpha[0]) if same_for_all else self.alpha.tolist()
        return {
            "alpha": alpha,
            "min_partition_size": self.min_partition_size,
            "max_attempts": self.max_attempts,
        }

    def assign_groups(self, data: PartitionInput, rng: np.random.Generator) -> np.ndarray:
        """Draw until every client has ``min_partition_size`` samples, at most ``max_attempts`` times."""
        check_min_partition_size(self.min_partition_size, self.num_clients, data, self.scheme)
        smallest = 0
        for _ in range(self.max_attempts):
            client_of_group = self.draw(data, rng)
            client_sizes = np.bincount(client_of_group, weights=data.group_sizes, minlength=self.num_clients)
            smallest = int(client_sizes.min())
            if smallest >= self.min_partition_size:
                return client_of_group
        raise PartitionError(
            f"{self.scheme}: in {self.max_attempts} draws with alpha={self.params()['alpha']} "
            f"some client always had fewer than {self.min_partition_size} samples "
            f"(last draw's smallest: {smallest}); {self.advice}"
        )

    @abstractmethod
    def draw(self, data: PartitionInput, rng: np.random.Generator) -> np.ndarray:
        """One random assignment of groups to clients: what a skew scheme implements.

        Parameters
        ----------
        data : PartitionInput
            The samples and their groups.
        rng : np.random.Generator
            The source of randomness; successive draws continue its stream.

        Returns
        -------
        np.ndarray
            The client index of every dense group.
        """
