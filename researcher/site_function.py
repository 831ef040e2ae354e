"""The researcher's side of the job template: render it with a model, write it to a file, import it.

The site function is fedimg's job template (``policies.template``, owned by the
sites) rendered with the model's class source and the job's configuration. It is
written to a module file (so PySyft can read its source) and imported, so the very
same function object runs locally on mocks (the dry run) and at the sites. A model
given as source text is loaded here too (``load_model_class``).
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import inspect
import shutil
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
    """The generated function, its source (what the owners review) and the hash of that source.

    Parameters
    ----------
    name : str
        The function's name (a site's code request is named after it).
    source : str
        The job template rendered with the model and the job's settings.
    function : callable
        The function imported from ``source``: what the dry run calls and PySyft submits.

    Examples
    --------
    >>> site = SiteFunction("f", "def f():\\n    return {}\\n", lambda: {})
    >>> site.sha256[:12]
    '6857f42fd237'
    """

    name: str
    source: str
    function: Callable[..., dict]

    @property
    def sha256(self) -> str:
        """sha256 of ``source``: the owner's review shows the same hash for the submitted code."""
        return hashlib.sha256(self.source.encode()).hexdigest()


def model_source(model_class: type) -> str:
    """The class source shipped to the sites; it may use only torch, nn, F, numpy as np and its own kwargs.

    Parameters
    ----------
    model_class : type
        An ``nn.Module`` subclass defined in a file or a notebook cell.

    Returns
    -------
    str
        Its source, dedented.

    Raises
    ------
    ValueError
        When Python cannot find the class's source (e.g. it was built by ``exec``).

    Examples
    --------
    >>> from researcher.models import SmallCNN
    >>> model_source(SmallCNN).splitlines()[0]
    'class SmallCNN(nn.Module):'
    """
    try:
        return textwrap.dedent(inspect.getsource(model_class))
    except (OSError, TypeError) as exc:
        raise ValueError(
            f"cannot read the source of {model_class!r}: define the model class in a file or notebook cell"
        ) from exc


def build_site_function(
    function_name: str, model_class: type, config: dict, *, folder: Path | None = None
) -> SiteFunction:
    """Render the job template with the model, write it to ``folder`` and import the site function.

    Parameters
    ----------
    function_name : str
        The generated function's name.
    model_class : type
        The model; a class loaded from source text (``FedAvgJob(model_source=...)``) carries its
        source as ``__fedimg_source__``.
    config : dict
        The job's settings (plain data), as ``FedAvgJob`` gives them.
    folder : Path, optional
        Where the module file is written (a new temp dir when None).

    Returns
    -------
    SiteFunction
        The function, its source and the source's hash.

    Examples
    --------
    >>> from pathlib import Path
    >>> from researcher.models import SmallCNN
    >>> site = build_site_function("fedimg_demo", SmallCNN, {"rounds": 1}, folder=Path("job"))
    >>> site.name, site.function.__name__, sorted(p.suffix for p in Path("job").iterdir())
    ('fedimg_demo', 'fedimg_demo', ['.py'])
    """
    # source-text models carry their source: inspect cannot find it
    class_source = getattr(model_class, "__fedimg_source__", None) or model_source(model_class)
    source = render_site_source(function_name, class_source, model_class.__name__, config)
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="fedimg-job-"))
        # read by inspect while this process lives (PySyft takes the function's source): gone with it
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    module_name = f"fedimg_site_{hashlib.sha256(source.encode()).hexdigest()[:16]}"
    path = folder / f"{module_name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:  # a .py path always has a spec and a loader
        raise ImportError(f"cannot import the site function written to {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # inspect.getsource finds the file through the module
    spec.loader.exec_module(module)
    return SiteFunction(function_name, source, getattr(module, function_name))


def state_dict_to_numpy(state_dict: dict) -> dict[str, Any]:
    """A model's ``state_dict`` as NumPy arrays (on the CPU, detached): what the sites receive.

    Examples
    --------
    >>> weights = state_dict_to_numpy(nn.Linear(3, 2).state_dict())
    >>> {name: value.shape for name, value in weights.items()}
    {'weight': (2, 3), 'bias': (2,)}
    """
    return {name: value.detach().cpu().numpy() for name, value in state_dict.items()}


def load_model_class(source: str, name: str) -> type:
    """Execute model source in a namespace with torch, nn, F and np, and return the class ``name``.

    Parameters
    ----------
    source : str
        Python source defining the model class (it may use ``torch``, ``nn``, ``F`` and ``np``).
    name : str
        The class to return.

    Returns
    -------
    type
        The class.

    Raises
    ------
    ValueError
        When ``source`` defines no ``name``.

    Examples
    --------
    >>> Net = load_model_class("class Net(nn.Module):\\n    pass\\n", "Net")
    >>> Net.__name__, issubclass(Net, nn.Module)
    ('Net', True)
    """
    namespace: dict[str, Any] = {"torch": torch, "nn": nn, "F": F, "np": np}
    exec(compile(source, f"<fedimg model {name}>", "exec"), namespace)
    if name not in namespace:
        raise ValueError(f"model_source defines no class {name!r}")
    return namespace[name]
