"""The researcher's notebook-side client.

Connect to the hospitals' datasites (``Federation``), explore their mocks, and train a
PyTorch model across them with federated averaging (``FedAvgJob``).
"""

from researcher.aggregation import ServerMomentum, fedavg
from researcher.federation import Federation, FederationError, Site
from researcher.job import FedAvgConfig, FedAvgJob, JobError
from researcher.results import TrainingResult

__all__ = [
    "FedAvgConfig",
    "FedAvgJob",
    "Federation",
    "FederationError",
    "JobError",
    "ServerMomentum",
    "Site",
    "TrainingResult",
    "fedavg",
]
