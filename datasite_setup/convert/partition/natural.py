"""Natural: a column of the labels CSV (site, ward, scanner) decides each sample's client."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from datasite_setup.convert.partition.base import Partitioner
from datasite_setup.convert.partition.partition_input import PartitionInput
from datasite_setup.errors import PartitionError


class NaturalPartitioner(Partitioner):
    """Keep the federation the data already has: each sample goes to the client named in its row.

    A patient seen at two sites would span two clients; such a group moves whole
    to the client holding most of its images (ties: the first in
    ``client_values``). The moves are counted in ``reassigned_groups`` and
    ``reassigned_samples``, per pair of clients in ``reassignments()``, recorded
    in ``federation.json`` and printed by ``fedimg convert``.

    Parameters
    ----------
    num_clients : int
        How many partitions (must equal ``len(client_values)``).
    client_values : sequence of str
        The column's values, in client order; distinct.
    seed : int, default 0
        Unused (the partition is not random); accepted for a uniform API.

    Raises
    ------
    PartitionError
        When ``client_values`` are not ``num_clients`` distinct values.

    Examples
    --------
    >>> import numpy as np
    >>> from datasite_setup.convert.partition import NaturalPartitioner, PartitionInput
    >>> data = PartitionInput(labels=np.zeros(4, dtype=int), groups=np.array([0, 0, 0, 1]),
    ...                       natural_keys=np.array(["a", "a", "b", "b"], dtype=object))
    >>> partitioner = NaturalPartitioner(2, client_values=["a", "b"])
    >>> [p.tolist() for p in partitioner.partition(data)], partitioner.reassigned_samples
    ([[0, 1, 2], [3]], 1)
    >>> partitioner.reassignments()
    [{'from': 'b', 'to': 'a', 'groups': 1, 'samples': 1}]
    """

    def __init__(self, num_clients: int, *, client_values: Sequence[str], seed: int = 0) -> None:
        super().__init__(num_clients, seed=seed)
        values = list(client_values or ())
        if len(values) != num_clients or len(set(values)) != len(values):
            raise PartitionError(
                f"natural: client_values must be {num_clients} distinct values (got {values!r})"
            )
        self.client_values = values
        self.reassigned_groups = 0
        self.reassigned_samples = 0
        # (from client, to client) -> groups / samples moved
        self._moved_groups: Counter[tuple[int, int]] = Counter()
        self._moved_samples: Counter[tuple[int, int]] = Counter()

    def params(self) -> dict[str, Any]:
        """The client values, in client order."""
        return {"client_values": list(self.client_values)}

    def assign_groups(self, data: PartitionInput, rng: np.random.Generator) -> np.ndarray:
        """Each group goes to the client most of its samples name (ties: the first in ``client_values``)."""
        if data.natural_keys is None:
            raise PartitionError("natural: every sample needs a client key (--client-column)")
        index = {value: i for i, value in enumerate(self.client_values)}
        unknown = sorted({str(key) for key in data.natural_keys} - set(index))
        if unknown:
            raise PartitionError(
                f"natural: client values {unknown} are not among the clients {self.client_values}"
            )
        client_of_group = np.empty(data.num_groups, dtype=np.int64)
        self.reassigned_groups = self.reassigned_samples = 0
        self._moved_groups.clear()
        self._moved_samples.clear()
        for group, members in enumerate(data.group_members):
            votes = Counter(index[key] for key in data.natural_keys[members])
            client = _most_voted(votes)
            client_of_group[group] = client
            if len(votes) > 1:
                self.reassigned_groups += 1
                self.reassigned_samples += len(members) - votes[client]
                for origin, count in votes.items():
                    if origin != client:
                        self._moved_groups[(origin, client)] += 1
                        self._moved_samples[(origin, client)] += count
        return client_of_group

    def reassignments(self) -> list[dict[str, Any]]:
        """The last partition's moves per pair of clients, most samples first.

        Returns
        -------
        list of dict
            ``from`` (the client the rows named), ``to`` (where the patient's images went), ``groups``
            (patients with images moved this way) and ``samples`` (images moved).
        """
        pairs = sorted(self._moved_samples, key=lambda pair: (-self._moved_samples[pair], pair))
        return [
            {
                "from": self.client_values[origin],
                "to": self.client_values[target],
                "groups": self._moved_groups[(origin, target)],
                "samples": self._moved_samples[(origin, target)],
            }
            for origin, target in pairs
        ]


def _most_voted(votes: Counter[int]) -> int:
    """The client with the most votes; on a tie, the smallest client index."""
    return min(votes, key=lambda client: (-votes[client], client))
