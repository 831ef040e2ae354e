"""The input every partitioner reads and the small abstract base they share.

Partitioners work on *groups* (patients), never on single images: a group's
images always land on the same client. A sample without a group id is its own
group, so on ungrouped data every scheme behaves like its per-sample original.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from datasite_setup.errors import PartitionError


@dataclass(frozen=True)
class PartitionInput:
    """What a partitioner may look at: labels, groups and (for ``natural``) each sample's client key.

    Args:
        labels: integer label per sample.
        groups: integer group (patient) id per sample.
        natural_keys: the client each sample comes from (``natural`` scheme only).
    """

    labels: np.ndarray
    groups: np.ndarray
    natural_keys: np.ndarray | None = None

    def __post_init__(self) -> None:
        lengths = {len(self.labels), len(self.groups)} | (
            {len(self.natural_keys)} if self.natural_keys is not None else set()
        )
        if len(lengths) != 1:
            raise ValueError(
                f"labels, groups and natural_keys must have one entry per sample (got lengths {sorted(lengths)})"
            )

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    @cached_property
    def _group_inverse(self) -> tuple[np.ndarray, np.ndarray]:
        _, inverse, sizes = np.unique(self.groups, return_inverse=True, return_counts=True)
        return inverse, sizes

    @property
    def group_of_sample(self) -> np.ndarray:
        """Dense group index (0..G-1) of every sample."""
        return self._group_inverse[0]

    @property
    def group_sizes(self) -> np.ndarray:
        """Number of samples in each dense group."""
        return self._group_inverse[1]

    @property
    def num_groups(self) -> int:
        return len(self.group_sizes)

    @cached_property
    def group_members(self) -> list[np.ndarray]:
        """Sample indices of each dense group, ascending."""
        order = np.argsort(self.group_of_sample, kind="stable")
        return np.split(order, np.cumsum(self.group_sizes)[:-1])

    @cached_property
    def group_labels(self) -> np.ndarray:
        """Majority label of each group (ties go to the smallest label)."""
        num_labels = int(self.labels.max()) + 1 if self.num_samples else 0
        counts = np.zeros((self.num_groups, num_labels), dtype=np.int64)
        np.add.at(counts, (self.group_of_sample, self.labels), 1)
        return counts.argmax(axis=1)


class Partitioner(ABC):
    """Assigns every sample to exactly one of ``num_clients`` clients.

    Args:
        num_clients: how many partitions to make (at least 1).
        seed: seed of the random generator; the same seed gives the same partition.
    """

    def __init__(self, num_clients: int, *, seed: int = 0) -> None:
        if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
            raise PartitionError(f"num_clients must be an integer >= 1 (got {num_clients!r})")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise PartitionError(f"--seed must be a non-negative integer (got {seed!r})")
        self.num_clients = num_clients
        self.seed = seed

    def partition(self, data: PartitionInput) -> list[np.ndarray]:
        """Return one ascending array of sample indices per client; every sample appears exactly once."""
        if data.num_groups < self.num_clients:
            raise PartitionError(
                f"cannot split {data.num_groups} groups (patients) into {self.num_clients} clients: "
                f"a group never spans two clients; use at most {data.num_groups} clients"
            )
        client_of_group = self.assign_groups(data, np.random.default_rng(self.seed))
        parts = expand_groups(data, client_of_group, self.num_clients)
        empty = [i for i, part in enumerate(parts) if len(part) == 0]
        if empty:
            raise PartitionError(
                f"{type(self).__name__} left client(s) {empty} without samples; use fewer clients or another scheme"
            )
        return parts

    @abstractmethod
    def assign_groups(self, data: PartitionInput, rng: np.random.Generator) -> np.ndarray:
        """Return the client index of every dense group."""

    def params(self) -> dict:
        """The scheme's parameters, as recorded in ``federation.json``."""
        return {}


def expand_groups(data: PartitionInput, client_of_group: np.ndarray, num_clients: int) -> list[np.ndarray]:
    """Turn a client index per group into sorted sample indices per client."""
    client_of_sample = np.asarray(client_of_group)[data.group_of_sample]
    return [np.flatnonzero(client_of_sample == client) for client in range(num_clients)]


def balanced_assignment(
    sizes: np.ndarray, order: np.ndarray, num_clients: int, load: np.ndarray | None = None
) -> np.ndarray:
    """Deal groups in ``order`` (largest first) to the client with the fewest samples so far.

    Returns the client of every group in ``sizes``. With single-sample groups this
    is a round robin; with patients of different sizes it keeps client sizes
    within one group of each other.
    """
    load = np.zeros(num_clients, dtype=np.int64) if load is None else load
    client_of_group = np.empty(len(sizes), dtype=np.int64)
    # Stable sort: among equally sized groups the shuffled order decides.
    for group in order[np.argsort(-sizes[order], kind="stable")]:
        client = int(np.argmin(load))
        client_of_group[group] = client
        load[client] += sizes[group]
    return client_of_group


def cut_by_proportions(sizes: np.ndarray, proportions: np.ndarray) -> np.ndarray:
    """Client index for each group (in the given order) so that cumulative sizes follow ``proportions``.

    A group goes to the client whose share of the cumulative total contains the
    group's midpoint, so a patient is never cut in two.
    """
    total = sizes.sum()
    if total == 0:
        return np.zeros(len(sizes), dtype=np.int64)
    midpoints = np.cumsum(sizes) - sizes / 2
    bounds = np.cumsum(proportions)[:-1] * total
    return np.searchsorted(bounds, midpoints, side="right").astype(np.int64)


def check_min_partition_size(value: int, num_clients: int, data: PartitionInput, scheme: str) -> None:
    """Fail early when ``num_clients * value`` exceeds the number of samples."""
    if data.num_samples < num_clients * value:
        raise PartitionError(
            f"{scheme}: {num_clients} clients x min_partition_size {value} needs at least {num_clients * value} samples, "
            f"only {data.num_samples} were accepted; lower --min-partition-size or use fewer clients"
        )


def validate_min_partition_size(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PartitionError(f"--min-partition-size must be an integer >= 1 (got {value!r})")
    return value


def validate_alpha(alpha: float | list[float], num_clients: int, flag: str = "--alpha") -> np.ndarray:
    """Concentration parameter(s) of a Dirichlet over clients: a positive float or one per client."""
    values = (
        np.atleast_1d(np.asarray(alpha, dtype=float)) if not isinstance(alpha, bool) else np.array([np.nan])
    )
    if values.ndim != 1 or len(values) not in (1, num_clients):
        raise PartitionError(
            f"{flag} must be one positive number or one per client ({num_clients}), got {alpha!r}"
        )
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise PartitionError(
            f"{flag} must be > 0 (got {alpha!r}): small values (0.1) give strong skew, large (100) nearly none"
        )
    return np.broadcast_to(values, (num_clients,)).copy()


class SkewPartitioner(Partitioner):
    """Base of the Dirichlet-driven schemes: redraw until every client has ``min_partition_size`` samples.

    Args:
        num_clients: how many partitions to make.
        alpha: Dirichlet concentration, > 0; one number, or one per client.
        min_partition_size: smallest acceptable client, in samples (>= 1).
        max_attempts: draws to try before giving up with a ``PartitionError``.
        seed: seed of the draws.
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
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise PartitionError(f"max_attempts must be an integer >= 1 (got {max_attempts!r})")
        self.max_attempts = max_attempts

    def params(self) -> dict:
        alpha = float(self.alpha[0]) if np.all(self.alpha == self.alpha[0]) else self.alpha.tolist()
        return {
            "alpha": alpha,
            "min_partition_size": self.min_partition_size,
            "max_attempts": self.max_attempts,
        }

    def assign_groups(self, data: PartitionInput, rng: np.random.Generator) -> np.ndarray:
        check_min_partition_size(self.min_partition_size, self.num_clients, data, self.scheme)
        smallest = 0
        for _ in range(self.max_attempts):
            client_of_group = self.draw(data, rng)
            smallest = int(
                np.bincount(client_of_group, weights=data.group_sizes, minlength=self.num_clients).min()
            )
            if smallest >= self.min_partition_size:
                return client_of_group
        raise PartitionError(
            f"{self.scheme}: in {self.max_attempts} draws with alpha={self.params()['alpha']} some client always had fewer "
            f"than {self.min_partition_size} samples (last draw's smallest: {smallest}); {self.advice}"
        )

    @abstractmethod
    def draw(self, data: PartitionInput, rng: np.random.Generator) -> np.ndarray:
        """One random assignment of groups to clients."""
