"""The admin's and data owner's side of fedimg: the converter and the running site.

``datasite_setup`` holds two products and the contracts they share:

- ``datasite_setup.convert``: scan, validate, standardise, pseudonymise, partition,
  write, verify and report the federated format (``fedimg convert/verify/report``);
- ``datasite_setup.site``: a hospital's running PySyft datasite (build, serve,
  ingest with mocks, credentials, ``federation.toml``, up/status/down, the owner's
  review); ``datasite_setup.cli`` is the ``fedimg`` command over both.

This module is the shared layer below everything else in fedimg: the names in
``__all__`` (errors, owner-only files, the dataset naming/description contract, the
release minimum convert warns about and sites enforce by default)
are what ``policies`` and ``researcher`` may use. It imports only the standard
library, so importing it is cheap on either side.
"""

from datasite_setup.dataset_contract import (
    DATASET_PREFIX,
    DESCRIPTION_MARKER,
    describe_dataset,
    parse_dataset_info,
)
from datasite_setup.errors import FedimgError
from datasite_setup.private_file import read_private_file, write_private_file
from datasite_setup.release_minimum import RELEASE_MIN_SAMPLES

__version__ = "0.1.0"

__all__ = [
    "DATASET_PREFIX",
    "DESCRIPTION_MARKER",
    "FedimgError",
    "RELEASE_MIN_SAMPLES",
    "__version__",
    "describe_dataset",
    "parse_dataset_info",
    "read_private_file",
    "write_private_file",
]
