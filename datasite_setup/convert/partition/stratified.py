"""Stratified: every client gets (nearly) the global label mix and an equal share of samples."""

from __future__ import annotations

import numpy as np

from datasite_setup.convert.partition.base import Partitioner
from datasite_setup.convert.partition.partition_input import PartitionInput


class StratifiedPartitioner(Partitioner):
    """Deal each label's groups out in turn, to the client with the fewest samples of that label.

    A group counts under its majority label. Ties go to the client with the
    fewest samples overall, so sizes stay balanced as well as the label mix.

    Parameters
    ----------
    num_clients : int
        How many partitions to make.
    seed : int, default 0
        Seed of the shuffle within each label.

    Examples
    --------
    >>> import numpy as np
    >>> from datasite_setup.convert.partition import PartitionInput, StratifiedPartitioner
    >>> data = PartitionInput(labels=np.repeat([0, 1], [6, 3]), groups=np.arange(9))
    >>> parts = StratifiedPartitioner(3, seed=0).partition(data)
    >>> [np.bincount(data.labels[part], minlength=2).tolist() for part in parts]
    [[2, 1], [2, 1], [2, 1]]
    """

    def assign_groups(self, data: PartitionInput, rng: np.random.Generator) -> np.ndarray:
        """Per label, deal its shuffled groups (largest first) by label load, then total load, then index."""
        sizes = data.group_sizes
        client_of_group = np.empty(data.num_groups, dtype=np.int64)
        load = np.zeros(self.num_clients, dtype=np.int64)
        clients = np.arange(self.num_clients)
        for label in np.unique(data.group_labels):
            groups = rng.permutation(np.flatnonzero(data.group_labels == label))
            label_load = np.zeros(self.num_clients, dtype=np.int64)
            for group in groups[np.argsort(-sizes[groups], kind="stable")]:
                # lexsort's last key is the primary one.
                client = int(np.lexsort((clients, load, label_load))[0])
                client_of_group[group] = client
                label_load[client] += sizes[group]
                load[client] += sizes[group]
        return client_of_group
