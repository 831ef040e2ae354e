"""Errors that the CLI turns into exit codes and one-line messages."""


class FedimgError(Exception):
    """A usage or configuration error: nothing was written; the message says what to fix.

    The CLI prints the message and exits with code 2.

    Examples
    --------
    >>> from datasite_setup.errors import FedimgError
    >>> str(FedimgError("fed/: already exists; choose another output or pass --overwrite"))
    'fed/: already exists; choose another output or pass --overwrite'
    """


class PartitionError(FedimgError):
    """The requested partition cannot be built from these samples (e.g. more clients than groups).

    Examples
    --------
    >>> from datasite_setup.errors import FedimgError, PartitionError
    >>> issubclass(PartitionError, FedimgError)  # so the CLI reports it like any usage error
    True
    """
