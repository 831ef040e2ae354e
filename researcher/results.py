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
    """Round ``round``: the global model it started from, evaluated on every site's val split, and its training.

    ``round == rounds`` is the final evaluation only.
    """

    round: int
    sites: dict[str, dict] = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, document: dict) -> RoundRecord:
        return cls(**document)


def aggregate_evaluations(evaluations: Sequence[dict]) -> dict:
    """Federation-wide val figures from per-site aggregates: summed confusion matrix, sample-weighted loss."""
    if not evaluations:
        return {}
    confusion = sum(np.asarray(e["confusion"], dtype=np.int64) for e in evaluations)
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
    """The global model (weights + model source) and the job's history."""

    weights: dict[str, np.ndarray]
    model_source: str
    model_name: str
    config: dict
    history: list[RoundRecord]

    @property
    def final_accuracy(self) -> float:
        return self.history[-1].evaluation.get("accuracy", float("nan"))

    def model(self) -> Any:
        """The trained model, rebuilt from its source and weights."""
        import torch

        model = load_model_class(self.model_source, self.model_name)(**self.config.get("model_kwargs", {}))
        model.load_state_dict({name: torch.as_tensor(value) for name, value in self.weights.items()})
        return model

    def table(self) -> Any:
        """One row per round (pandas): sites answering, train loss, val loss and accuracy of the global model."""
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
        """Write ``model.pt`` (state_dict + source), ``history.json``, ``loss.png`` and ``accuracy.png``."""
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
        """Val ``metric`` of the global model per round: overall and per site."""
        from matplotlib.figure import Figure

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
        from matplotlib.ticker import MaxNLocator

        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("round (global model at the start of the round; last = final)")
        axes.set_ylabel(f"val {metric}")
        axes.set_title(f"global model: val {metric} per round")
        axes.legend(fontsize="small")
        axes.grid(alpha=0.3)
        figure.tight_layout()
        return figure
