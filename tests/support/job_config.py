"""The complete configuration ``FedAvgJob.site_function`` renders into the template, for tests that build it directly."""

from __future__ import annotations

from typing import Any


def job_config(*, num_classes: int, image_size: int, **overrides: Any) -> dict[str, Any]:
    """Every ``FedAvgConfig`` field plus ``num_classes``, with a one-channel ``SmallCNN``; ``overrides`` replace defaults."""
    config: dict[str, Any] = dict(
        rounds=1,
        local_epochs=1,
        batch_size=16,
        lr=0.1,
        optimizer="sgd",
        momentum=0.0,
        loss="cross_entropy",
        min_sites=1,
        seed=0,
        mu=0.0,
        server_momentum=0.0,
        server_lr=1.0,
        model_kwargs={"channels": 1, "image_size": image_size, "num_classes": num_classes},
        num_classes=num_classes,
    )
    return config | overrides
