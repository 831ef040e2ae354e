"""Checks of the partitioners' parameters, made up front with an error that says what is allowed."""

from __future__ import annotations

import numpy as np

from datasite_setup.convert.partition.partition_input import PartitionInput
from datasite_setup.errors import PartitionError


def is_int_at_least(value: object, minimum: int) -> bool:
    """Whether ``value`` is an ``int`` (a ``bool`` is not one here) of at least ``minimum``.

    Parameters
    ----------
    value : object
        The parameter as given.
    minimum : int
        The smallest allowed value.

    Returns
    -------
    bool
        True when ``value`` is usable.

    Examples
    --------
    >>> is_int_at_least(3, 1), is_int_at_least(0, 1), is_int_at_least(1.5, 1), is_int_at_least(True, 1)
    (True, False, False, False)
    """
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def validate_min_partition_size(value: int) -> int:
    """Check ``--min-partition-size``: an integer >= 1.

    Parameters
    ----------
    value : int
        The smallest acceptable client, in samples.

    Returns
    -------
    int
        ``value``, unchanged.

    Raises
    ------
    PartitionError
        When ``value`` is not an integer >= 1.

    Examples
    --------
    >>> validate_min_partition_size(10)
    10
    >>> try:
    ...     validate_min_partition_size(0)
    ... except PartitionError as error:
    ...     print(error)
    --min-partition-size must be an integer >= 1 (got 0)
    """
    if not is_int_at_least(value, 1):
        raise PartitionError(f"--min-partition-size must be an integer >= 1 (got {value!r})")
    return value


def validate_alpha(alpha: float | list[float], num_clients: int, flag: str = "--alpha") -> np.ndarray:
    """Check the concentration parameter(s) of a Dirichlet over clients.

    Parameters
    ----------
    alpha : float or list of float
        One positive number, or one per client.
    num_clients : int
        How many clients the Dirichlet is over.
    flag : str, default "--alpha"
        The option named in the error message.

    Returns
    -------
    np.ndarray
        One concentration per client (a single ``alpha`` repeated).

    Raises
    ------
    PartitionError
        When ``alpha`` is not one positive finite number or one per client.

    Examples
    --------
    >>> validate_alpha(0.5, 3).tolist()
    [0.5, 0.5, 0.5]
    >>> try:
    ...     validate_alpha(0, 3)
    ... except PartitionError as error:
    ...     print(error)
    --alpha must be > 0 (got 0): small values (0.1) give strong skew, large (100) nearly none
    """
    # A bool is not a concentration: NaN makes it fail the finiteness check below.
    values = np.array([np.nan]) if isinstance(alpha, bool) else np.atleast_1d(np.asarray(alpha, dtype=float))
    if values.ndim != 1 or len(values) not in (1, num_clients):
        raise PartitionError(
            f"{flag} must be one positive number or one per client ({num_clients}), got {alpha!r}"
        )
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise PartitionError(
            f"{flag} must be > 0 (got {alpha!r}): "
            "small values (0.1) give strong skew, large (100) nearly none"
        )
    return np.broadcast_to(values, (num_clients,)).copy()


def check_min_partition_size(value: int, num_clients: int, data: PartitionInput, scheme: str) -> None:
    """Fail early when ``num_clients * value`` exceeds the number of samples: no draw could succeed.

    Parameters
    ----------
    value : int
        The smallest acceptable client, in samples.
    num_clients : int
        How many clients are made.
    data : PartitionInput
        The samples to partition.
    scheme : str
        The scheme's name, for the error message.

    Raises
    ------
    PartitionError
        When there are too few samples; the message says which flags to change.

    Examples
    --------
    >>> import numpy as np
    >>> data = PartitionInput(labels=np.zeros(20, dtype=int), groups=np.arange(20))
    >>> check_min_partition_size(5, 4, data, "dirichlet")
    >>> try:
    ...     check_min_partition_size(10, 4, data, "dirichlet")
    ... except PartitionError as error:
    ...     print(str(error).split(";")[0])
    dirichlet: 4 clients x min_partition_size 10 needs at least 40 samples, only 20 were accepted
    """
    needed = num_clients * value
    if data.num_samples < needed:
        raise PartitionError(
            f"{scheme}: {num_clients} clients x min_partition_size {value} needs at least {needed} samples, "
            f"only {data.num_samples} were accepted; lower --min-partition-size or use fewer clients"
        )
