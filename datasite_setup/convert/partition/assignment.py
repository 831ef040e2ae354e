"""The ways of dealing groups to clients that several schemes share, and turning that into sample indices.

Every function here assigns whole groups: a patient is never cut in two.
"""

from __future__ import annotations

import numpy as np

from datasite_setup.convert.partition.partition_input import PartitionInput


def expand_groups(data: PartitionInput, client_of_group: np.ndarray, num_clients: int) -> list[np.ndarray]:
    """Turn a client index per group into sorted sample indices per client.

    Parameters
    ----------
    data : PartitionInput
        The samples and their groups.
    client_of_group : np.ndarray
        The client of every dense group.
    num_clients : int
        How many clients there are (a client may get no group).

    Returns
    -------
    list of np.ndarray
        One ascending array of sample indices per client.

    Examples
    --------
    >>> import numpy as np
    >>> data = PartitionInput(labels=np.zeros(4, dtype=int), groups=np.array([5, 9, 5, 9]))
    >>> [part.tolist() for part in expand_groups(data, np.array([1, 0]), 2)]
    [[1, 3], [0, 2]]
    """
    client_of_sample = np.asarray(client_of_group)[data.group_of_sample]
    return [np.flatnonzero(client_of_sample == client) for client in range(num_clients)]


def balanced_assignment(
    sizes: np.ndarray, order: np.ndarray, num_clients: int, load: np.ndarray | None = None
) -> np.ndarray:
    """Deal groups in ``order`` (largest first) to the client with the fewest samples so far.

    With single-sample groups this is a round robin; with patients of different
    sizes it keeps client sizes within one group of each other.

    Parameters
    ----------
    sizes : np.ndarray
        Number of samples in each group.
    order : np.ndarray
        The groups' (shuffled) order, which decides among equally sized groups.
    num_clients : int
        How many clients to deal to.
    load : np.ndarray, optional
        Samples each client already holds (updated in place); zeros when omitted.

    Returns
    -------
    np.ndarray
        The client of every group in ``sizes``.

    Examples
    --------
    >>> import numpy as np
    >>> balanced_assignment(np.array([1, 3, 1, 1, 2]), np.arange(5), 2).tolist()
    [1, 0, 0, 1, 1]
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
    """Cut a row of groups into consecutive runs whose sizes follow ``proportions``.

    A group goes to the client whose share of the cumulative total contains the
    group's midpoint, so a patient is never cut in two.

    Parameters
    ----------
    sizes : np.ndarray
        Number of samples in each group, in the order to cut them.
    proportions : np.ndarray
        Each client's share of the samples; sums to 1.

    Returns
    -------
    np.ndarray
        The client index of each group, in the given order (non-decreasing).

    Examples
    --------
    >>> import numpy as np
    >>> cut_by_proportions(np.array([2, 2, 2, 2, 2]), np.array([0.2, 0.8])).tolist()
    [0, 1, 1, 1, 1]
    """
    total = sizes.sum()
    if total == 0:
        return np.zeros(len(sizes), dtype=np.int64)
    midpoints = np.cumsum(sizes) - sizes / 2
    bounds = np.cumsum(proportions)[:-1] * total
    return np.searchsorted(bounds, midpoints, side="right").astype(np.int64)
