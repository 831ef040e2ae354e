"""The code a hospital runs for a FedAvg job: generated, self-contained, readable by its data owner.

The site function is plain Python source: the model's class source, the job's
configuration as a literal, and a fixed training/evaluation body. It is written
to a module file (so PySyft can read its source) and imported, so the very same
function object runs locally on mocks (the dry run) and at the sites.

Each call evaluates the incoming global weights on the site's val split
(aggregates only: loss, accuracy, summed confusion matrix) and, for rounds
``0 … rounds-1``, trains them for ``local_epochs`` and returns the new weights
with the number of samples they were trained on. Call ``rounds`` only evaluates
(the final model). Nothing per-sample leaves the function.

At a differentially private site (``[privacy] mechanism = "dp-sgd"``), the
site's release hook passes ``privacy`` (noise multiplier, clipping norm, sample
rate, steps) and the training part is the site's own DP-SGD loop,
``policies.dp_sgd.train_private``, instead of the plain loop below; the
researcher cannot pass ``privacy`` (it is not an input of the request).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

SITE_FUNCTION_TEMPLATE = '''\
def {function_name}(train_images, train_labels, val_images, val_labels, weights, rnd, cohort=None, privacy=None):
    """fedimg FedAvg site function (template {template_version}): evaluate the global model, then train it locally.

    cohort: the sites of this round and their public keys, read by the site's release policy for secure
    aggregation (the function itself does not use it).
    privacy: set by a differentially private site's release policy, never by the researcher: then training is
    the site's own DP-SGD loop (policies.dp_sgd.train_private) with the site's noise, clipping and sampling.
    """
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    CONFIG = {config}

{model_source}
    torch.manual_seed(CONFIG["seed"] * 100003 + rnd)
    model = {model_name}(**CONFIG["model_kwargs"])
    model.load_state_dict({{name: torch.as_tensor(np.asarray(value)) for name, value in weights.items()}})
    num_classes = CONFIG["num_classes"]
    loss_function = {{"cross_entropy": F.cross_entropy, "nll": F.nll_loss}}[CONFIG["loss"]]

    def as_inputs(images):
        return torch.as_tensor(np.asarray(images), dtype=torch.float32) / 255.0

    def evaluate(images, labels):
        model.eval()
        confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        total_loss = 0.0
        with torch.no_grad():
            for start in range(0, len(labels), 512):
                targets = torch.as_tensor(np.asarray(labels[start:start + 512]), dtype=torch.int64)
                logits = model(as_inputs(images[start:start + 512]))
                total_loss += float(loss_function(logits, targets, reduction="sum"))
                np.add.at(confusion, (targets.numpy(), logits.argmax(1).numpy()), 1)
        count = int(confusion.sum())
        return {{"loss": total_loss / max(count, 1), "accuracy": float(np.trace(confusion)) / max(count, 1), "num_samples": count, "confusion": confusion}}

    images, labels = as_inputs(train_images), torch.as_tensor(np.asarray(train_labels), dtype=torch.int64)
    if privacy is not None and rnd < CONFIG["rounds"]:
        # DP-SGD from `weights`, before the model has seen a val image (it could carry one into its gradients);
        # it releases the trained parameters and the global buffers; then the global model is evaluated
        from policies.dp_sgd import train_private

        settings = {{key: CONFIG[key] for key in ("lr", "optimizer", "momentum", "mu")}}
        trained, train = train_private(model, weights, images, labels, loss_function=loss_function, **settings, **privacy)
        model.load_state_dict({{name: torch.as_tensor(np.asarray(value)) for name, value in weights.items()}})
        return {{"round": int(rnd), "val": evaluate(val_images, val_labels), "weights": trained, "num_samples": int(len(labels)), "train": train}}
    result = {{"round": int(rnd), "val": evaluate(val_images, val_labels)}}
    if rnd >= CONFIG["rounds"]:
        return result
    result["num_samples"] = int(len(labels))
    global_params = [parameter.detach().clone() for parameter in model.parameters()]
    optimizers = {{"sgd": lambda p: torch.optim.SGD(p, lr=CONFIG["lr"], momentum=CONFIG["momentum"]), "adam": lambda p: torch.optim.Adam(p, lr=CONFIG["lr"])}}
    optimizer = optimizers[CONFIG["optimizer"]](model.parameters())
    generator = torch.Generator().manual_seed(CONFIG["seed"] * 100003 + rnd)
    model.train()
    seen, loss_sum, correct = 0, 0.0, 0
    for _ in range(CONFIG["local_epochs"]):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), CONFIG["batch_size"]):
            batch = order[start:start + CONFIG["batch_size"]]
            optimizer.zero_grad()
            logits = model(images[batch])
            loss = loss_function(logits, labels[batch])
            if CONFIG["mu"] > 0:  # FedProx proximal term
                loss = loss + CONFIG["mu"] / 2 * sum(((p - g) ** 2).sum() for p, g in zip(model.parameters(), global_params))
            loss.backward()
            optimizer.step()
            seen += len(batch)
            loss_sum += float(loss.detach()) * len(batch)
            correct += int((logits.argmax(1) == labels[batch]).sum())
    result["weights"] = {{name: value.detach().cpu().numpy() for name, value in model.state_dict().items()}}
    result["train"] = {{"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1)}}
    return result
'''
TEMPLATE_VERSION = "fedavg-3"


@dataclass(frozen=True)
class SiteFunction:
    """The generated function, its source (what the owners review) and the hash of that source."""

    name: str
    source: str
    function: Callable[..., dict]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()


def model_source(model_class: type) -> str:
    """The class source shipped to the sites; it may use only torch, nn, F, numpy as np and its own kwargs."""
    try:
        return textwrap.dedent(inspect.getsource(model_class))
    except (OSError, TypeError) as exc:
        raise ValueError(f"cannot read the source of {model_class!r}: define the model class in a file or notebook cell") from exc


def render_site_source(function_name: str, model_class_source: str, model_name: str, config: dict) -> str:
    """The site function's source text (deterministic for equal inputs)."""
    return SITE_FUNCTION_TEMPLATE.format(
        function_name=function_name,
        template_version=TEMPLATE_VERSION,
        config=python_literal(config),
        model_source=textwrap.indent(model_class_source, "    "),
        model_name=model_name,
    )


def python_literal(value: Any) -> str:
    """A deterministic Python literal (dict keys sorted) for JSON-like ``value``: what ``ast.literal_eval`` reads back."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{python_literal(str(k))}: {python_literal(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(python_literal(v) for v in value) + "]"
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    raise TypeError(f"job settings must be plain data (got {type(value).__name__})")


def build_site_function(function_name: str, model_class: type, config: dict, *, folder: Path | None = None) -> SiteFunction:
    """Render, write to ``folder`` (a temp dir by default) and import the site function."""
    class_source = getattr(model_class, "__fedimg_source__", None) or model_source(model_class)  # source-text models carry it
    source = render_site_source(function_name, class_source, model_class.__name__, config)
    folder = Path(folder or tempfile.mkdtemp(prefix="fedimg-job-"))
    folder.mkdir(parents=True, exist_ok=True)
    module_name = f"fedimg_site_{hashlib.sha256(source.encode()).hexdigest()[:16]}"
    path = folder / f"{module_name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # inspect.getsource finds the file through the module
    spec.loader.exec_module(module)
    return SiteFunction(function_name, source, getattr(module, function_name))


def state_dict_to_numpy(state_dict: dict) -> dict[str, Any]:
    return {name: value.detach().cpu().numpy() for name, value in state_dict.items()}
