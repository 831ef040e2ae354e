"""What a job leaves behind: the global model, a per-round / per-site history, and plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from researcher.site_function import load_model_class


@dataclass
class RoundRecord:
    """One round of a job: the global model it started from, evaluated at every site, and its training.

    ``round == rounds`` is the final evaluation only.

    Parameters
    ----------
    round : int
        The round number (0-based).
    sites : dict of str to dict
        Per site: ``status`` (``"ok"`` or ``"error"``), its val figures, its training figures, the
        seconds it took, or the error.
    evaluation : dict
        The federation-wide val figures (``aggregate_evaluations``).
    train : dict
        The sample-weighted train loss (None when no site measured one) and the samples trained on.

    Examples
    --------
    >>> record = RoundRecord(0, evaluation={"accuracy": 0.5})
    >>> RoundRecord.from_json(record.to_json()) == record
    True
    """

    round: int
    sites: dict[str, dict] = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The record as a JSON-ready dict (``history.json``, the checkpoint)."""
        return asdict(self)

    @classmethod
    def from_json(cls, document: dict) -> RoundRecord:
        """The record ``to_json`` wrote."""
        return cls(**document)


def aggregate_evaluations(evaluations: Sequence[dict]) -> dict:
    """Federation-wide val figures from per-site aggregates: summed confusion matrix, sample-weighted loss.

    Parameters
    ----------
    evaluations : sequence of dict
        Each site's ``val`` output: ``loss``, ``accuracy``, ``num_samples`` and ``confusion``.

    Returns
    -------
    dict
        ``loss``, ``accuracy``, ``num_samples`` and ``confusion`` (a list of lists) over all sites;
        empty when there is no evaluation.

    Examples
    --------
    >>> a = {"loss": 1.0, "num_samples": 3, "confusion": [[2, 1], [0, 0]]}
    >>> b = {"loss": 0.5, "num_samples": 1, "confusion": [[0, 0], [0, 1]]}
    >>> aggregate_evaluations([a, b])
    {'loss': 0.875, 'accuracy': 0.75, 'num_samples': 4, 'confusion': [[2, 1], [0, 1]]}
    """
    if not evaluations:
        return {}
    matrices = (np.asarray(e["confusion"], dtype=np.int64) for e in evaluations)
    # summed from a 0-d zero: the same arithmetic as sum()'s integer 0, typed as an array
    confusion = sum(matrices, np.zeros((), dtype=np.int64))
    count = int(confusion.sum())
    loss = sum(e["loss"] * e["num_samples"] for e in evaluations) / max(count, 1)
    return {
        "loss": float(loss),
        "accuracy": float(np.trace(confusion)) / max(count, 1),
        "num_samples": count,
        "confusion": confusion.tolist(),
    }


@dataclass
class TrainingResult:
    """The global model (weights + model source) and the job's history.

    Parameters
    ----------
    weights : dict of str to ndarray
        The final global weights (the model's state dict).
    model_source : str
        The model class's source.
    model_name : str
        The class's name.
    config : dict
        The job's settings (``FedAvgConfig`` as a dict).
    history : list of RoundRecord
        One record per round, the final evaluation last.

    Examples
    --------
    >>> import numpy as np
    >>> source = "class Net(nn.Module):\\n    def __init__(self):\\n        super().__init__()\\n" \\
    ...     "        self.fc = nn.Linear(2, 1)\\n"
    >>> weights = {"fc.weight": np.ones((1, 2), np.float32), "fc.bias": np.zeros(1, np.float32)}
    >>> history = [RoundRecord(0, evaluation={"accuracy": 0.5}), RoundRecord(1, evaluation={"accuracy": 0.8})]
    >>> result = TrainingResult(weights, source, "Net", {"rounds": 1}, history)
    >>> result.final_accuracy, result.model().fc.weight.tolist()
    (0.8, [[1.0, 1.0]])
    >>> result.table()["val_accuracy"].tolist()
    [0.5, 0.8]
    >>> sorted(path.name for path in result.save("results").values())
    ['accuracy.png', 'history.json', 'loss.png', 'model.pt']
    """

    weights: dict[str, np.ndarray]
    model_source: str
    model_name: str
    config: dict
    history: list[RoundRecord]

    @property
    def final_accuracy(self) -> float:
        """The final global model's val accuracy over all sites (NaN when it was not evaluated)."""
        return self.history[-1].evaluation.get("accuracy", float("nan"))

    def model(self) -> Any:
        """The trained model, rebuilt from its source and weights."""
        import torch

        model = load_model_class(self.model_source, self.model_name)(**self.config.get("model_kwargs", {}))
        model.load_state_dict({name: torch.as_tensor(value) for name, value in self.weights.items()})
        return model

    def table(self) -> Any:
        """One row per round (pandas): sites answering, train loss, the global model's val loss and accuracy.

        Returns
        -------
        pandas.DataFrame
            Columns ``round``, ``sites`` (answering/asked), ``train_loss``, ``val_loss``, ``val_accuracy``.
        """
        import pandas as pd

        rows = []
        for record in self.history:
            ok = [name for name, entry in record.sites.items() if entry.get("status") == "ok"]
            rows.append(
                {
                    "round": record.round,
                    "sites": f"{len(ok)}/{len(record.sites)}",
                    "train_loss": record.train.get("loss"),
                    "val_loss": record.evaluation.get("loss"),
                    "val_accuracy": record.evaluation.get("accuracy"),
                }
            )
        return pd.DataFrame(rows)

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write ``model.pt`` (state_dict + source), ``history.json``, ``loss.png`` and ``accuracy.png``.

        Parameters
        ----------
        folder : str or Path
            Created if missing.

        Returns
        -------
        dict of str to Path
            ``model``, ``history``, ``loss`` and ``accuracy`` → the files written.
        """
        import torch

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {
            "model": folder / "model.pt",
            "history": folder / "history.json",
            "loss": folder / "loss.png",
            "accuracy": folder / "accuracy.png",
        }
        state = {name: torch.as_tensor(value) for name, value in self.weights.items()}
        torch.save(
            {
                "state_dict": state,
                "model_source": self.model_source,
                "model_name": self.model_name,
                "config": self.config,
            },
            paths["model"],
        )
        paths["history"].write_text(
            json.dumps({"config": self.config, "rounds": [r.to_json() for r in self.history]}, indent=1)
        )
        for metric in ("loss", "accuracy"):
            self.plot(metric).savefig(paths[metric], dpi=100)
        return paths

    def plot(self, metric: str = "accuracy") -> Any:
        """Val ``metric`` of the global model per round: overall and per site.

        Parameters
        ----------
        metric : {"accuracy", "loss"}, default "accuracy"
            Which val figure.

        Returns
        -------
        matplotlib.figure.Figure
            One line for all sites, one dashed line per site.
        """
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        figure = Figure(figsize=(6, 4))
        axes = figure.add_subplot()
        rounds = [r.round for r in self.history]
        axes.plot(
            rounds,
            [r.evaluation.get(metric, np.nan) for r in self.history],
            marker="o",
            linewidth=2.5,
            color="black",
            label="all sites",
        )
        sites = sorted({name for record in self.history for name in record.sites})
        for name in sites:
            values = [r.sites.get(name, {}).get("val", {}).get(metric, np.nan) for r in self.history]
            axes.plot(rounds, values, marker=".", linestyle="--", label=name)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("round (global model at the start of the round; last = final)")
        axes.set_ylabel(f"val {metric}")
        axes.set_title(f"global model: val {metric} per round")
        axes.legend(fontsize="small")
        axes.grid(alpha=0.3)
        figure.tight_layout()
        return figure
