"""fedimg's job template: the only training code a site runs, owned by the sites.

The site function a researcher submits is this template rendered with the
researcher's model class source and the job's configuration (a Python literal):
plain Python that the data owner reads, the review re-renders and compares line
by line (``match_template``), and the release hook recognises before it hands a
DP-SGD call the site's own training loop. The researcher's package renders it
from here (``researcher.site_function``); the site decides what it says.

Each call evaluates the incoming global weights on the site's val split
(aggregates only: loss, accuracy, summed confusion matrix) and, for rounds
``0 … rounds-1``, trains them for ``local_epochs`` and returns the new weights
with the number of samples they were trained on. Call ``rounds`` only evaluates
(the final model) and reads no training image. Nothing per-sample leaves the
function.

The images arrive as uint8 arrays ``(N, C, H, W)`` — at a site, read-only
memory maps of its partition, which may be larger than memory — and the labels
as integers. The template reads them one batch at a time (evaluation in chunks
of the job's batch size, training one shuffled batch at a time, its rows read in
file order) and
converts only that batch to float, so a call's memory does not grow with the
split. The site passes ``device`` (``"cuda"`` when its policy allows a GPU,
else None for the CPU); the result says which device ran (``"device"``).

At a differentially private site (``[privacy] mechanism = "dp-sgd"``), the
site's release hook passes ``privacy`` (noise multiplier, clipping norm, sample
rate, steps) and the training part is the site's own DP-SGD loop,
``policies.dp_sgd.train_private``, instead of the plain loop, given the raw
arrays (or maps) and the template's ``as_inputs`` to convert each batch; the
researcher can pass neither ``privacy`` nor ``device`` (they are not inputs of
the request).
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import textwrap
from dataclasses import dataclass, field
from typing import Any, TypeGuard

__all__ = [
    "TEMPLATE_VERSION",
    "SITE_FUNCTION_TEMPLATE",
    "TemplateMatch",
    "match_template",
    "python_literal",
    "render_site_source",
    "template_id",
]

SITE_FUNCTION_TEMPLATE = '''\
def {function_name}(train_images, train_labels, val_images, val_labels, weights, rnd, cohort=None, privacy=None, device=None):
    """fedimg FedAvg site function (template {template_version}): evaluate the global model, then train it locally.

    The images are uint8 arrays (N, C, H, W), at a site read-only memory maps of its partition: they are read and
    converted to float one batch at a time, never as a whole split; an evaluation-only call reads no train image.
    cohort: the sites of this round and their public keys, read by the site's release policy for secure
    aggregation (the function itself does not use it).
    privacy: set by a differentially private site's release policy, never by the researcher: then training is
    the site's own DP-SGD loop (policies.dp_sgd.train_private) with the site's noise, clipping and sampling.
    device: set by the site, never by the researcher: "cuda" when its policy allows a GPU, else None (the CPU).
    """
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    CONFIG = {config}

{model_source}
    torch.manual_seed(CONFIG["seed"] * 100003 + rnd)
    device = torch.device(device or "cpu")
    model = {model_name}(**CONFIG["model_kwargs"])
    model.load_state_dict({{name: torch.as_tensor(np.asarray(value)) for name, value in weights.items()}})
    model.to(device)
    num_classes = CONFIG["num_classes"]
    loss_function = {{"cross_entropy": F.cross_entropy, "nll": F.nll_loss}}[CONFIG["loss"]]

    def as_inputs(images):
        # a copy of this batch only (the maps are read-only), moved as uint8, then scaled to [0, 1] on the device
        return torch.as_tensor(np.array(images)).to(device, torch.float32) / 255.0

    def evaluate(images, labels):
        model.eval()
        confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        total_loss = 0.0
        with torch.no_grad():
            for start in range(0, len(labels), CONFIG["batch_size"]):  # the training batch's memory, no more
                end = start + CONFIG["batch_size"]
                targets = torch.as_tensor(np.array(labels[start:end]), dtype=torch.int64)
                logits = model(as_inputs(images[start:end]))
                total_loss += float(loss_function(logits, targets.to(device), reduction="sum"))
                np.add.at(confusion, (targets.numpy(), logits.argmax(1).cpu().numpy()), 1)
        count = int(confusion.sum())
        return {{"loss": total_loss / max(count, 1), "accuracy": float(np.trace(confusion)) / max(count, 1), "num_samples": count, "confusion": confusion}}

    if privacy is not None and rnd < CONFIG["rounds"]:
        # DP-SGD from `weights`, before the model has seen a val image (it could carry one into its gradients);
        # it releases the trained parameters and the global buffers; then the global model is evaluated
        from policies.dp_sgd import train_private

        settings = {{key: CONFIG[key] for key in ("lr", "optimizer", "momentum", "mu")}}
        trained, train = train_private(model, weights, train_images, train_labels, loss_function=loss_function, to_inputs=as_inputs, **settings, **privacy)
        model.load_state_dict({{name: torch.as_tensor(np.asarray(value)) for name, value in weights.items()}})
        return {{"round": int(rnd), "val": evaluate(val_images, val_labels), "weights": trained, "num_samples": int(len(train_labels)), "train": train, "device": str(device)}}
    result = {{"round": int(rnd), "val": evaluate(val_images, val_labels)}}
    result["device"] = str(device)  # the researcher's job history says where each call ran
    if rnd >= CONFIG["rounds"]:
        return result
    labels = torch.as_tensor(np.array(train_labels), dtype=torch.int64)  # small: one integer per image
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
            # the seed's next batch, read in file order (sequential reads of the map): only it becomes float
            batch = np.sort(order[start:start + CONFIG["batch_size"]].numpy())
            inputs, targets = as_inputs(train_images[batch]), labels[batch].to(device)
            optimizer.zero_grad()
            logits = model(inputs)
            loss = loss_function(logits, targets)
            if CONFIG["mu"] > 0:  # FedProx proximal term
                loss = loss + CONFIG["mu"] / 2 * sum(((p - g) ** 2).sum() for p, g in zip(model.parameters(), global_params))
            loss.backward()
            optimizer.step()
            seen += len(batch)
            loss_sum += float(loss.detach()) * len(batch)
            correct += int((logits.argmax(1) == targets).sum())
    result["weights"] = {{name: value.detach().cpu().numpy() for name, value in model.state_dict().items()}}
    result["train"] = {{"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1)}}
    return result
'''
TEMPLATE_VERSION = "fedavg-4"


def render_site_source(function_name: str, model_class_source: str, model_name: str, config: dict) -> str:
    """The site function's source text: the job template filled in (deterministic for equal inputs).

    Parameters
    ----------
    function_name : str
        The name of the generated function (a site's code request is named after it).
    model_class_source : str
        The model class's source, at module level (it is indented into the function).
    model_name : str
        The class to instantiate, defined by ``model_class_source``.
    config : dict
        The job's settings (plain data), written into the function as its ``CONFIG`` literal.

    Returns
    -------
    str
        Python source of one function, ``def {function_name}(train_images, ...)``.

    Examples
    --------
    >>> model = "class Net(nn.Module):\\n    pass\\n"
    >>> source = render_site_source("fedimg_demo", model, "Net", {"rounds": 2, "seed": 0})
    >>> source.splitlines()[0]
    'def fedimg_demo(train_images, train_labels, val_images, val_labels, weights, rnd, cohort=None, ...):'
    >>> [line.strip() for line in source.splitlines() if "CONFIG = " in line]
    ["CONFIG = {'rounds': 2, 'seed': 0}"]
    """
    return SITE_FUNCTION_TEMPLATE.format(
        function_name=function_name,
        template_version=TEMPLATE_VERSION,
        config=python_literal(config),
        model_source=textwrap.indent(model_class_source, "    "),
        model_name=model_name,
    )


def python_literal(value: Any) -> str:
    """A deterministic Python literal for JSON-like ``value``: what ``ast.literal_eval`` reads back.

    Parameters
    ----------
    value : Any
        Nested dicts (their keys become strings and are sorted), lists, tuples (written as lists),
        None, bools, ints, floats and strings.

    Returns
    -------
    str
        The literal's text.

    Raises
    ------
    TypeError
        When ``value`` holds anything else.

    Examples
    --------
    >>> python_literal({"b": [1, 2.5], "a": None})
    "{'a': None, 'b': [1, 2.5]}"
    >>> python_literal({"when": object()})
    Traceback (most recent call last):
    ...
    TypeError: job settings must be plain data (got object)
    """
    if isinstance(value, dict):
        items = [f"{python_literal(str(k))}: {python_literal(v)}" for k, v in sorted(value.items())]
        return "{" + ", ".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(python_literal(v) for v in value) + "]"
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    raise TypeError(f"job settings must be plain data (got {type(value).__name__})")


@dataclass(frozen=True)
class TemplateMatch:
    """Whether submitted code is the job template, filled in with its own model and settings.

    Parameters
    ----------
    template_id : str
        The template's id (``template_id()``), e.g. ``"fedavg-4:db0b63b64ac8"``: what a site policy's
        ``auto_approve_templates`` lists.
    matches : bool
        True when the code is exactly the template rendered from its own model class and ``CONFIG``.
    diff : str
        Unified diff, template → submitted (``""`` when they match), or why the template could not be
        re-rendered from the code.
    config : dict
        The code's ``CONFIG`` literal (empty when it could not be read).
    """

    template_id: str  # e.g. "fedavg-1:3f2a…": allowed in a site policy's auto_approve_templates
    matches: bool
    diff: str  # unified diff, template → submitted ('' when they match)
    config: dict = field(default_factory=dict)


def template_id() -> str:
    """The job template's id: its version and the first 12 hex digits of its text's sha256.

    Returns
    -------
    str
        ``"<TEMPLATE_VERSION>:<sha256 prefix>"``; any change to the template text gives a new id.

    Examples
    --------
    >>> template_id()
    'fedavg-4:db0b63b64ac8'
    """
    digest = hashlib.sha256(SITE_FUNCTION_TEMPLATE.encode()).hexdigest()
    return f"{TEMPLATE_VERSION}:{digest[:12]}"


def match_template(code: str) -> TemplateMatch:
    """Re-render the job template from the code's own model class and ``CONFIG``; compare line by line.

    Parameters
    ----------
    code : str
        The source of a submitted site function.

    Returns
    -------
    TemplateMatch
        ``matches`` is True only when the re-rendered template equals ``code`` exactly.

    Examples
    --------
    >>> code = render_site_source("f", "class Net(nn.Module):\\n    pass\\n", "Net", {"rounds": 1})
    >>> match_template(code).matches, match_template(code).config
    (True, {'rounds': 1})
    >>> tampered = match_template(code.replace("return result", "return result, images"))
    >>> tampered.matches, "+        return result, images" in tampered.diff
    (False, True)
    >>> match_template("x = 1").diff
    'not built from the job template (StopIteration: )'
    """
    identity = template_id()
    try:
        rendered, config = _rerender(code)
    except (StopIteration, SyntaxError, ValueError, TypeError, KeyError) as exc:
        return TemplateMatch(
            identity, False, f"not built from the job template ({type(exc).__name__}: {exc})"
        )
    if rendered == code:
        return TemplateMatch(identity, True, "", config)
    diff_lines = difflib.unified_diff(
        rendered.splitlines(True), code.splitlines(True), "job template", "submitted"
    )
    return TemplateMatch(identity, False, "".join(diff_lines), config)


def _rerender(code: str) -> tuple[str, dict]:
    """The template rendered from ``code``'s first function: its name, model class and ``CONFIG``.

    Raises ``StopIteration`` when one of them is missing.
    """
    function = next(node for node in ast.parse(code).body if isinstance(node, ast.FunctionDef))
    config_node = next(node for node in function.body if _assigns_config(node))
    config = ast.literal_eval(config_node.value)
    model = next(node for node in function.body if isinstance(node, ast.ClassDef))
    model_segment = ast.get_source_segment(code, model, padded=True)
    if model_segment is None:  # parsed from ``code``, the class has positions: this does not happen
        raise ValueError(f"no source for class {model.name}")
    model_source = textwrap.dedent(model_segment) + "\n"
    return render_site_source(function.name, model_source, model.name, config), config


def _assigns_config(node: ast.stmt) -> TypeGuard[ast.Assign]:
    return isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "CONFIG"
