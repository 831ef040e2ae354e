"""The per-client train/val split: stratified by label, never cutting a group."""

from __future__ import annotations

import numpy as np

from datasite_setup.convert.partition.partition_input import PartitionInput
from datasite_setup.errors import PartitionError


def split_train_val(
    data: PartitionInput, indices: np.ndarray, val_fraction: float, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split one client's samples into ascending ``(train, val)`` index arrays.

    Groups are ordered by majority label (randomly within a label); walking
    that order, a group joins val when that brings the running val count closer
    to ``val_fraction`` of the samples seen so far. So every label contributes
    its share to val, the total is within half a group of ``val_fraction *
    len(indices)``, and a group is never cut. (Picking groups with probability
    proportional to their size would over-sample large patients.)

    Parameters
    ----------
    data : PartitionInput
        The whole federation's partition input.
    indices : np.ndarray
        This client's sample indices.
    val_fraction : float
        Share of samples for validation, in ``[0, 1)``.
    seed : int, default 0
        Seed of the order within labels.

    Returns
    -------
    tuple of np.ndarray
        ``(train, val)``: ascending sample indices; together exactly ``indices``.

    Raises
    ------
    PartitionError
        When ``val_fraction`` is outside ``[0, 1)``.

    Examples
    --------
    >>> import numpy as np
    >>> from datasite_setup.convert.partition import PartitionInput, split_train_val
    >>> data = PartitionInput(labels=np.arange(20) % 2, groups=np.arange(20))
    >>> train, val = split_train_val(data, np.arange(20), 0.2, seed=0)
    >>> len(train), len(val), np.bincount(data.labels[val]).tolist()
    (16, 4, [2, 2])
    """
    if not 0 <= val_fraction < 1:
        raise PartitionError(f"val_fraction must be in [0, 1) (got {val_fraction})")
    indices = np.sort(np.asarray(indices, dtype=np.int64))
    if val_fraction == 0 or len(indices) == 0:
        return indices, indices[:0]
    rng = np.random.default_rng(seed)
    groups, sizes = np.unique(data.group_of_sample[indices], return_counts=True)
    # By majority label, randomly within a label (lexsort's last key is the primary one).
    order = np.lexsort((rng.random(len(groups)), data.group_labels[groups]))
    in_val_group = np.zeros(len(groups), dtype=bool)
    taken, seen = 0, 0
    for position in order:
        seen += sizes[position]
        target = seen * val_fraction
        if abs(taken + sizes[position] - target) < abs(taken - target):
            in_val_group[position] = True
            taken += sizes[position]
    in_val = np.isin(data.group_of_sample[indices], groups[in_val_group])
    return indices[~in_val], indices[in_val]
