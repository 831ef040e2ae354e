"""The small abstract base every partitioner shares.

A partitioner validates its parameters when it is built (so a wrong flag fails
before any image is read) and, given a ``PartitionInput``, assigns every group
(patient) to one client. The base turns that assignment into sample indices and
refuses partitions that would leave a client empty.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from datasite_setup.convert.partition.assignment import expand_groups
from datasite_setup.convert.partition.partition_input import PartitionInput
from datasite_setup.convert.partition.validation import is_int_at_least
from datasite_setup.errors import PartitionError


class Partitioner(ABC):
    """Assigns every sample to exactly one of ``num_clients`` clients, whole groups at a time.

    A subclass implements ``assign_groups`` (and ``params`` when it takes any).

    Parameters
    ----------
    num_clients : int
        How many partitions to make (at least 1).
    seed : int, default 0
        Seed of the random generator (>= 0); the same seed gives the same partition.

    Raises
    ------
    PartitionError
        When ``num_clients`` or ``seed`` is not an allowed integer.

    Examples
    --------
    >>> import numpy as np
    >>> from datasite_setup.convert.partition import Partitioner, PartitionInput
    >>> class EveryOtherGroup(Partitioner):
    ...     def assign_groups(self, data, rng):
    ...         return np.arange(data.num_groups) % self.num_clients
    >>> data = PartitionInput(labels=np.zeros(5, dtype=int), groups=np.array([0, 0, 1, 2, 2]))
    >>> [part.tolist() for part in EveryOtherGroup(2).partition(data)]
    [[0, 1, 3, 4], [2]]
    """

    def __init__(self, num_clients: int, *, seed: int = 0) -> None:
        if not is_int_at_least(num_clients, 1):
            raise PartitionError(f"num_clients must be an integer >= 1 (got {num_clients!r})")
        if not is_int_at_least(seed, 0):
            raise PartitionError(f"--seed must be a non-negative integer (got {seed!r})")
        self.num_clients = num_clients
        self.seed = seed

    def partition(self, data: PartitionInput) -> list[np.ndarray]:
        """Split ``data`` into one partition per client.

        Parameters
        ----------
        data : PartitionInput
            The samples, their labels and groups.

        Returns
        -------
        list of np.ndarray
            One ascending array of sample indices per client; every sample appears exactly once.

        Raises
        ------
        PartitionError
            When there are fewer groups than clients, or the scheme left a client empty.
        """
        if data.num_groups < self.num_clients:
            raise PartitionError(
                f"cannot split {data.num_groups} groups (patients) into {self.num_clients} clients: "
                f"a group never spans two clients; use at most {data.num_groups} clients"
            )
        client_of_group = self.assign_groups(data, np.random.default_rng(self.seed))
        parts = expand_groups(data, client_of_group, self.num_clients)
        empty = [client for client, part in enumerate(parts) if len(part) == 0]
        if empty:
            raise PartitionError(
                f"{type(self).__name__} left client(s) {empty} without samples; "
                "use fewer clients or another scheme"
            )
        return parts

    @abstractmethod
    def assign_groups(self, data: PartitionInput, rng: np.random.Generator) -> np.ndarray:
        """Assign every group to a client: what a scheme implements.

        Parameters
        ----------
        data : PartitionInput
            The samples; groups are its dense groups ``0..num_groups-1``.
        rng : np.random.Generator
            The only source of randomness (seeded with ``seed``).

        Returns
        -------
        np.ndarray
            The client index (``0..num_clients-1``) of every dense group.
        """

    def params(self) -> dict[str, Any]:
        """The scheme's parameters, as recorded in ``federation.json``."""
        return {}
