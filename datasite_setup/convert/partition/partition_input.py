"""The input every partitioner reads: each sample's label, group (patient) and, for ``natural``, client key.

Partitioners work on *groups* (patients), never on single images: a group's
images always land on the same client. A sample without a group id is its own
group, so on ungrouped data every scheme behaves like its per-sample original.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class PartitionInput:
    """What a partitioner may look at: labels, groups and (for ``natural``) each sample's client key.

    Groups are also seen through a dense index ``0..G-1`` (in ascending order of the
    group ids): ``group_of_sample``, ``group_sizes``, ``group_members`` and
    ``group_labels`` are all indexed by it.

    Parameters
    ----------
    labels : np.ndarray
        Integer label of each sample.
    groups : np.ndarray
        Integer group (patient) id of each sample.
    natural_keys : np.ndarray, optional
        The client each sample comes from (``natural`` scheme only).

    Raises
    ------
    ValueError
        When the arrays do not have one entry per sample each.

    Examples
    --------
    >>> import numpy as np
    >>> from datasite_setup.convert.partition import PartitionInput
    >>> data = PartitionInput(labels=np.array([1, 1, 0, 2]), groups=np.array([7, 7, 7, 3]))
    >>> data.num_samples, data.num_groups, data.group_sizes.tolist(), data.group_labels.tolist()
    (4, 2, [1, 3], [2, 1])
    """

    labels: np.ndarray
    groups: np.ndarray
    natural_keys: np.ndarray | None = None

    def __post_init__(self) -> None:
        lengths = {len(self.labels), len(self.groups)}
        if self.natural_keys is not None:
            lengths.add(len(self.natural_keys))
        if len(lengths) != 1:
            raise ValueError(
                "labels, groups and natural_keys must have one entry per sample "
                f"(got lengths {sorted(lengths)})"
            )

    @property
    def num_samples(self) -> int:
        """Number of samples."""
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
        """Number of groups (patients)."""
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
