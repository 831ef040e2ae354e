"""Server-side (researcher-side) aggregation of site updates: FedAvg and FedAvgM."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def fedavg(updates: Sequence[tuple[Mapping[str, np.ndarray], int]]) -> dict[str, np.ndarray]:
    """Sample-weighted average of site weights (McMahan et al. 2017).

    Parameters
    ----------
    updates : sequence of (Mapping of str to ndarray, int)
        One ``(weights, num_samples)`` per site; every site's weights have the same names, in the
        same order.

    Returns
    -------
    dict of str to ndarray
        The average of each float tensor, weighted by ``num_samples``, in its dtype; for integer
        buffers (e.g. BatchNorm's ``num_batches_tracked``) the largest value.

    Raises
    ------
    ValueError
        When there is no update, no sample, or the sites' weights have different names.

    Examples
    --------
    >>> import numpy as np
    >>> fedavg([({"w": np.array([1.0, 1.0])}, 1), ({"w": np.array([4.0, 7.0])}, 2)])["w"].tolist()
    [3.0, 5.0]
    """
    if not updates:
        raise ValueError("fedavg needs at least one update")
    total = sum(count for _, count in updates)
    if total <= 0:
        raise ValueError("fedavg: the updates carry no samples")
    names = list(updates[0][0])
    for weights, _ in updates:
        if list(weights) != names:
            raise ValueError(
                f"fedavg: updates have different parameters ({sorted(weights)} vs {sorted(names)})"
            )
    averaged = {}
    for name in names:
        first = np.asarray(updates[0][0][name])
        if not np.issubdtype(first.dtype, np.floating):
            # integer buffers (e.g. BatchNorm's num_batches_tracked) are not averaged: take the largest
            averaged[name] = np.max([np.asarray(w[name]) for w, _ in updates], axis=0)
            continue
        weighted = (np.asarray(w[name], dtype=np.float64) * count for w, count in updates)
        # summed from a 0-d zero: the same arithmetic as sum()'s integer 0, typed as an array
        weighted_sum = sum(weighted, np.zeros(()))
        averaged[name] = (weighted_sum / total).astype(first.dtype)
    return averaged


class ServerMomentum:
    """FedAvgM (Hsu et al. 2019): the server applies momentum to the averaged update.

    ``new = old - lr * v`` with ``v = beta * v + (old - fedavg)``; with ``beta = 0``
    and ``lr = 1`` it is plain FedAvg.

    Parameters
    ----------
    beta : float, default 0.9
        The momentum, in ``[0, 1)``.
    lr : float, default 1.0
        The server's learning rate.

    Raises
    ------
    ValueError
        When ``beta`` is outside ``[0, 1)``.

    Examples
    --------
    >>> import numpy as np
    >>> server = ServerMomentum(beta=0.5, lr=1.0)
    >>> current = {"w": np.array([1.0])}
    >>> current = server.step(current, {"w": np.array([0.0])})  # v = 1
    >>> server.step(current, {"w": np.array([0.0])})["w"].tolist()  # v = 0.5 * 1 + 0
    [-0.5]
    """

    def __init__(self, beta: float = 0.9, lr: float = 1.0) -> None:
        if not 0 <= beta < 1:
            raise ValueError(f"server momentum beta must be in [0, 1) (got {beta})")
        self.beta, self.lr = beta, lr
        self.velocity: dict[str, np.ndarray] = {}

    def step(
        self, current: Mapping[str, np.ndarray], averaged: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The next global weights from the current ones and this round's FedAvg.

        Parameters
        ----------
        current : Mapping of str to ndarray
            The global weights the round started from.
        averaged : Mapping of str to ndarray
            ``fedavg`` of the sites' updates.

        Returns
        -------
        dict of str to ndarray
            Float tensors moved with momentum (in their dtype); integer buffers as averaged.
        """
        result = {}
        for name, value in current.items():
            value = np.asarray(value)
            if not np.issubdtype(value.dtype, np.floating):
                result[name] = np.asarray(averaged[name])
                continue
            delta = value - np.asarray(averaged[name])
            self.velocity[name] = self.beta * self.velocity.get(name, np.zeros_like(delta)) + delta
            result[name] = (value - self.lr * self.velocity[name]).astype(value.dtype)
        return result
