"""Errors that the CLI turns into exit codes and one-line messages."""


class FedimgError(Exception):
    """A usage or configuration error: nothing was written; the message says what to fix.

    The CLI prints the message and exits with code 2.
    """


class PartitionError(FedimgError):
    """The requested partition cannot be built from these samples (e.g. more clients than groups)."""
