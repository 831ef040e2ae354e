"""The researcher's side of the job template: render it with a model, write it to a file, import it.

The site function is fedimg's job template (``policies.template``, owned by the
sites) rendered with the model's class source and the job's configuration. It is
written to a module file (so PySyft can read its source) and imported, so the very
same function object runs locally on mocks (the dry run) and at the sites. A model
given as source text is loaded here too (``load_model_class``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from policies import render_site_source


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
        raise ValueError(
            f"cannot read the source of {model_class!r}: define the model class in a file or notebook cell"
        ) from exc


def build_site_function(
    function_name: str, model_class: type, config: dict, *, folder: Path | None = None
) -> SiteFunction:
    """Render, write to ``folder`` (a temp dir by default) and import the site function."""
    class_source = getattr(model_class, "__fedimg_source__", None) or model_source(
        model_class
    )  # source-text models carry it
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


def load_model_class(source: str, name: str) -> type:
    """Execute model source in a namespace with torch, nn, F and np, and return the class ``name``."""
    namespace: dict[str, Any] = {"torch": torch, "nn": nn, "F": F, "np": np}
    exec(compile(source, f"<fedimg model {name}>", "exec"), namespace)
    if name not in namespace:
        raise ValueError(f"model_source defines no class {name!r}")
    return namespace[name]
