"""The static review as an allowlist: imports, attribute chains from modules, and module objects kept in place.

The red-team routes of issue 10 each give a finding that names the dotted path; fedimg's job template with
every model of ``researcher/models.py`` and a few realistic models (which really run) passes; aliasing a
module and writing to one fail. The allowlist itself is checked against the installed torch and numpy.
"""

from __future__ import annotations

import importlib
import inspect
import types

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import researcher.models
from policies.review_allowlist import (
    ALLOWED_ATTRIBUTES,
    ALLOWED_MODULES,
    FUNCTIONAL_ATTRIBUTES,
    MATH_ATTRIBUTES,
    NN_ATTRIBUTES,
    NUMPY_ATTRIBUTES,
    TORCH_ATTRIBUTES,
)
from policies.site_policy import SitePolicy
from policies.static_review import (
    DEFAULT_ALLOWED_IMPORTS,
    FORBIDDEN_ATTRIBUTES,
    ReviewPolicy,
    review_code,
)
from policies.template import match_template, render_site_source
from tests.support.job_config import job_config

IMPORTS = (
    "    import math\n"
    "    import numpy as np\n"
    "    import torch\n"
    "    import torch.nn as nn\n"
    "    import torch.nn.functional as F\n"
)
LINE = 7  # the line of `statement` in `in_function(statement)`


def in_function(statement: str) -> str:
    """``statement`` as line 7 of a function that imports math, numpy, torch, nn and F like the template."""
    return f"def f(x):\n{IMPORTS}    {statement}\n    return x\n"


def errors(source: str, policy: ReviewPolicy | None = None) -> list[tuple[str, int, str]]:
    return [(f.rule, f.line, f.message) for f in review_code(source, policy).errors]


def assert_one_error(source: str, rule: str, named: str, line: int = LINE) -> None:
    found = errors(source)
    assert [(r, n) for r, n, _ in found] == [(rule, line)], found
    assert named in found[0][2], found


# --- the routes of issue 10 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement, named",
    [
        # timeit, and through it a shell command
        ("run = np.ma.timer_comparison.timeit", "numpy.ma is not on the review's allowlist"),
        # pathlib.Path into the state dir
        ("path = np.typing.tests.test_isfile.Path", "numpy.typing is not on the review's allowlist"),
        # a process-wide forward hook
        (
            "torch.nn.modules.module.register_module_forward_hook(print)",
            "torch.nn.modules is not on the review's allowlist",
        ),
        ("hook = nn.modules.module.register_module_forward_hook", "torch.nn.modules is not on"),
        # trace export writes files
        ("trace = torch.autograd.profiler_legacy.profile", "torch.autograd is not on the review's allowlist"),
        # ctypes primitives re-exported
        ("memory = torch.xpu.memory", "torch.xpu is not on the review's allowlist"),
        # a process-wide error callback
        ("np.seterrcall(print)", "numpy.seterrcall is not on the review's allowlist"),
        # torch, reached again from the functional module
        ("device = F.torch.xpu", "torch.nn.functional.torch is not on the review's allowlist"),
        ("wrap = np.frompyfunc(print, 1, 1)", "numpy.frompyfunc is not on the review's allowlist"),
    ],
)
def test_a_chain_off_the_allowlist_is_an_error_naming_its_path(statement: str, named: str) -> None:
    assert_one_error(in_function(statement), "not-on-allowlist", named)


def test_the_finding_names_the_whole_chain_too() -> None:
    assert_one_error(
        in_function("run = np.ma.timer_comparison.timeit"),
        "not-on-allowlist",
        "numpy.ma is not on the review's allowlist (in numpy.ma.timer_comparison.timeit)",
    )


def test_the_path_is_named_whatever_alias_the_module_has() -> None:
    source = "def f(x):\n    import torch as t\n    import torch.nn.functional as functional\n"
    source += "    a = t.xpu\n    b = functional.torch\n    return x\n"
    assert [(rule, line) for rule, line, _ in errors(source)] == [
        ("not-on-allowlist", 4),
        ("not-on-allowlist", 5),
    ]
    assert [message.split()[0] for _, _, message in errors(source)] == [
        "torch.xpu",
        "torch.nn.functional.torch",
    ]


def test_a_rendered_finding_keeps_the_reports_format() -> None:
    (finding,) = review_code("import torch\nx = torch.xpu\n").findings
    assert str(finding) == "error line 2:4 [not-on-allowlist] torch.xpu is not on the review's allowlist"


@pytest.mark.parametrize(
    "statement, named",
    [
        ("import numpy.ma", "numpy.ma"),
        ("import numpy.typing.tests.test_isfile", "numpy.typing.tests.test_isfile"),
        ("import torch.nn.modules.module", "torch.nn.modules.module"),
        ("from torch.nn.modules.module import register_module_forward_hook", "torch.nn.modules.module"),
        ("import torch.autograd.profiler_legacy", "torch.autograd.profiler_legacy"),
        ("import torch.xpu", "torch.xpu"),
        ("from torch import xpu", "torch.xpu"),
        ("from torch import xpu as device", "torch.xpu"),
        ("import torch.optim", "torch.optim"),
        ("from torch import optim", "torch.optim"),
        ("from torch.optim import SGD", "torch.optim"),
        ("from numpy import seterrcall", "numpy.seterrcall"),
        ("from torch.nn import modules", "torch.nn.modules"),
        ("import torch.nn.init", "torch.nn.init"),
    ],
)
def test_an_import_below_the_allowed_modules_is_an_error_naming_the_module(
    statement: str, named: str
) -> None:
    assert_one_error(
        in_function(statement), "import-not-allowed", f"{named} is not on the review's allowlist"
    )


@pytest.mark.parametrize(
    "statement",
    [
        "import torch",
        "import torch.nn",
        "import torch.nn.functional",
        "import torch.nn.functional as fn",
        "import numpy",
        "import numpy as numeric",
        "import math as m",
        "from torch import nn",
        "from torch.nn import functional as fn",
        "from torch import zeros, float32",
        "from torch.nn import Conv2d, Module",
        "from math import pi, sqrt",
        "from numpy import asarray as as_array",
    ],
)
def test_the_allowed_modules_and_their_listed_names_import_under_any_alias(statement: str) -> None:
    report = review_code(statement + "\n")
    assert report.findings == [], report.render()


def test_a_namespace_alone_is_not_allowed_but_its_listed_members_are() -> None:
    assert errors(in_function("sgd = torch.optim.SGD")) == []
    assert errors(in_function("gpu = torch.cuda.is_available()")) == []
    assert errors(in_function("nn.init.kaiming_normal_(x)")) == []
    assert_one_error(
        in_function("optim = torch.optim"), "not-on-allowlist", "torch.optim.Adam, torch.optim.SGD"
    )
    assert_one_error(
        in_function("scheduler = torch.optim.lr_scheduler"), "not-on-allowlist", "torch.optim.lr"
    )
    assert_one_error(in_function("cuda = torch.cuda.memory"), "not-on-allowlist", "torch.cuda.memory is not")


def test_what_hangs_off_a_listed_object_is_that_objects_own() -> None:
    """``np.add.at``, ``torch.Generator().manual_seed``, ``nn.Module.__init__``: past a listed function, class
    or dtype the chain is an attribute of an object (the blocklist still applies to it)."""
    for statement in (
        "np.add.at(x, 0, 1)",
        "y = torch.float32.is_floating_point",
        "nn.Module.__init__(x)",
        "y = torch.Tensor.flatten",
    ):
        assert errors(in_function(statement)) == [], statement
    assert [rule for rule, _, _ in errors(in_function("y = torch.Tensor.storage"))] == ["forbidden-attribute"]
    assert [rule for rule, _, _ in errors(in_function("y = torch.zeros.__globals__"))] == [
        "private-attribute"
    ]


# --- module objects stay where the import put them ----------------------------------------------------------


@pytest.mark.parametrize(
    "statement, named",
    [
        ("f = F", "F is the module torch.nn.functional"),
        ("m = torch.nn", "torch.nn is the module torch.nn"),
        ("m = nn", "nn is the module torch.nn"),
        ("y = print(np)", "np is the module numpy"),
        ("y = [torch, x]", "torch is the module torch"),
        ("y = {'f': F}", "F is the module torch.nn.functional"),
        ("y = (lambda: torch.nn.functional)()", "torch.nn.functional is the module"),
        ("y = x or np", "np is the module numpy"),
        ("y = F if x else None", "F is the module torch.nn.functional"),
    ],
)
def test_a_module_used_as_a_value_is_an_error(statement: str, named: str) -> None:
    assert_one_error(in_function(statement), "module-as-value", named)


def test_renaming_a_module_to_write_to_it_is_an_error() -> None:
    """Issue 10: `f = F; f.relu = ...` got past the check on writes to module attributes."""
    source = in_function("f = F").replace("    return x\n", "    f.relu = lambda t: t * 0\n    return x\n")
    assert [(rule, line) for rule, line, _ in errors(source)] == [("module-as-value", LINE)]


def test_a_module_returned_or_passed_as_a_default_is_an_error() -> None:
    source = f"def f(x, activation=None):\n{IMPORTS}    def g(y, functional=F):\n        return y\n    return torch\n"
    assert [(rule, line) for rule, line, _ in errors(source)] == [
        ("module-as-value", 7),
        ("module-as-value", 9),
    ]


@pytest.mark.parametrize(
    "statement",
    [
        "F = 3",
        "del np",
        "for torch in x: pass",
        "y = [1 for nn in x]",
        "def math(): pass",
        "class F: pass",
        "y = lambda np: 1",
        "y = (nn := x)",
    ],
)
def test_reusing_a_modules_name_is_an_error(statement: str) -> None:
    found = errors(in_function(statement))
    assert ("module-rebinding", LINE) in [(rule, line) for rule, line, _ in found], found
    assert {rule for rule, _, _ in found} == {"module-rebinding"}, found


def test_reusing_a_modules_name_in_a_parameter_or_except_clause_is_an_error() -> None:
    source = "import torch.nn as nn\n\ndef f(nn):\n    try:\n        return 1\n    except ValueError as nn:\n        return 2\n"
    assert [(rule, line) for rule, line, _ in errors(source)] == [
        ("module-rebinding", 3),
        ("module-rebinding", 6),
    ]


def test_one_name_for_two_modules_is_an_error() -> None:
    source = "import numpy as np\nimport torch as np\n"
    assert [(rule, line) for rule, line, _ in errors(source)] == [("module-rebinding", 2)]
    assert review_code("import torch\nimport torch.nn\nimport torch as torch\n").passed  # the same module


@pytest.mark.parametrize(
    "statement",
    [
        "F.relu = lambda t: t",
        "torch.nn.functional.relu = abs",
        "nn.Linear.forward = None",
        "np.add.at = None",
        "math.pi = 3",
        "del torch.cat",
    ],
)
def test_writing_to_a_module_is_an_error(statement: str) -> None:
    assert_one_error(in_function(statement), "module-attribute-assignment", "changes a module")


def test_setattr_on_a_module_is_an_error_twice() -> None:
    found = {rule for rule, _, _ in errors(in_function("setattr(F, 'relu', abs)"))}
    assert found == {"forbidden-name", "module-as-value"}


# --- the blocklist stays as a second net ---------------------------------------------------------------------


def test_the_blocklist_refuses_what_a_widened_allowlist_would_let_through() -> None:
    widened = ReviewPolicy(allowed_attributes=ALLOWED_ATTRIBUTES | {"torch.load", "numpy.lib"})
    assert [rule for rule, _, _ in errors(in_function("y = torch.load('m.pt')"), widened)] == [
        "forbidden-attribute"
    ]
    assert [rule for rule, _, _ in errors(in_function("y = np.lib.npyio"), widened)] == [
        "forbidden-attribute"
    ]


def test_one_finding_per_construct() -> None:
    """A chain the blocklist refuses is not reported again by the allowlist (the message says why)."""
    assert [rule for rule, _, _ in errors(in_function("np.save('a.npy', x)"))] == ["forbidden-attribute"]
    assert [rule for rule, _, _ in errors(in_function("y = torch._C"))] == ["private-attribute"]
    assert [rule for rule, _, _ in errors(in_function("import torch.hub"))] == ["forbidden-attribute"]


def test_chains_from_a_module_that_may_not_be_imported_are_reported_at_the_import() -> None:
    source = "import socket\n\ndef f():\n    return socket.create_connection(('h', 1))\n"
    assert {(rule, line) for rule, line, _ in errors(source)} == {
        ("import-not-allowed", 1),
        ("forbidden-name", 4),
    }


# --- a site's extra imports --------------------------------------------------------------------------------------


def test_a_sites_extra_import_is_checked_by_the_blocklist_only() -> None:
    policy = SitePolicy(extra_allowed_imports=("scipy",)).review_policy
    source = "import scipy.ndimage as nd\nfrom scipy import special\n\ndef f(x):\n    return nd.zoom(special.expit(x), 2)\n"
    assert errors(source, policy) == []
    assert [rule for rule, _, _ in errors(source)] == ["import-not-allowed", "import-not-allowed"]
    assert [rule for rule, _, _ in errors("import scipy\ny = scipy.special.loadtxt\n", policy)] == [
        "forbidden-attribute"
    ]


def test_an_extra_can_open_one_namespace_of_torch() -> None:
    policy = ReviewPolicy(allowed_imports=DEFAULT_ALLOWED_IMPORTS | {"torch.optim"})
    source = "import torch.optim\n\ndef f(p):\n    return torch.optim.lr_scheduler.StepLR(torch.optim.AdamW(p), 1)\n"
    assert errors(source, policy) == []
    assert [rule for rule, _, _ in errors("import torch.optim\ny = torch.xpu\n", policy)] == [
        "not-on-allowlist"
    ]


def test_a_policy_without_numpy_refuses_it() -> None:
    policy = ReviewPolicy(allowed_imports=frozenset({"torch", "math"}))
    assert [rule for rule, _, _ in errors("import numpy\n", policy)] == ["import-not-allowed"]
    assert review_code("import torch\ny = torch.zeros(2)\n", policy).passed


# --- the job template and real models pass --------------------------------------------------------------------

RESNET = '''\
class ResNetish(nn.Module):
    """Two residual stages with batch norm, a strided shortcut and global average pooling."""

    def __init__(self, channels=1, image_size=16, num_classes=4, width=8):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        self.blocks = nn.ModuleList([self.block(width, width, 1), self.block(width, 2 * width, 2)])
        self.shortcuts = nn.ModuleList([nn.Identity(), nn.Conv2d(width, 2 * width, 1, stride=2)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2 * width, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def block(self, inputs, outputs, stride):
        return nn.Sequential(
            nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(outputs),
            nn.ReLU(),
            nn.Conv2d(outputs, outputs, 3, padding=1, bias=False),
            nn.GroupNorm(2, outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block, shortcut in zip(self.blocks, self.shortcuts):
            x = F.relu(block(x) + shortcut(x))
        return self.head(torch.flatten(self.pool(x), 1))
'''

MLP = '''\
class MLP(nn.Module):
    """Flatten, two hidden layers with layer norm, GELU and dropout."""

    def __init__(self, channels=1, image_size=16, num_classes=4, hidden=32):
        super().__init__()
        sizes = [channels * image_size * image_size, hidden, hidden]
        self.flatten = nn.Flatten()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.LayerNorm(b), nn.GELU(), nn.Dropout(0.1))
            for a, b in zip(sizes, sizes[1:])
        )
        self.head = nn.Linear(hidden, num_classes)
        self.scale = nn.Parameter(torch.ones(1) * hidden**-0.5)

    def forward(self, x):
        x = self.flatten(x)
        for layer in self.layers:
            x = layer(x)
        return F.log_softmax(self.head(x) * self.scale, dim=1)
'''

UNETISH = '''\
class UNetish(nn.Module):
    """Encoder-decoder: pooling down, interpolation back up, skip connections joined with torch.cat."""

    def __init__(self, channels=1, image_size=16, num_classes=4, width=8):
        super().__init__()
        self.down = nn.Conv2d(channels, width, 3, padding=1)
        self.bottom = nn.Conv2d(width, width, 3, padding=1)
        self.up = nn.Conv2d(2 * width, width, 3, padding=1)
        self.head = nn.Linear(width, num_classes)
        self.register_buffer("offset", torch.zeros(1, width, 1, 1, dtype=torch.float32))

    def forward(self, x):
        skip = F.relu(self.down(x))
        bottom = F.silu(self.bottom(F.max_pool2d(skip, 2)))
        bottom = F.interpolate(bottom, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = F.relu(self.up(torch.cat([skip, bottom], dim=1))) + self.offset
        x = F.adaptive_avg_pool2d(F.dropout(x, 0.1, self.training), 1).flatten(1)
        weights = F.softmax(torch.stack([x, torch.tanh(x)]).mean(0), dim=1)
        return self.head(torch.where(weights > 0, x, torch.zeros_like(x)))
'''

REALISTIC = {"ResNetish": RESNET, "MLP": MLP, "UNetish": UNETISH}


def researcher_models() -> dict[str, str]:
    """Every model class defined in ``researcher/models.py``, by name, with its source."""
    return {
        name: inspect.getsource(value)
        for name, value in vars(researcher.models).items()
        if inspect.isclass(value)
        and issubclass(value, nn.Module)
        and value.__module__ == researcher.models.__name__
    }


def rendered(model_source: str, model_name: str, **overrides) -> str:
    config = job_config(num_classes=4, image_size=16, rounds=2, **overrides)
    return render_site_source("fedimg_allowlist_test", model_source, model_name, config)


def test_researcher_models_are_found() -> None:
    assert "SmallCNN" in researcher_models()


@pytest.mark.parametrize("overrides", [{}, {"optimizer": "adam", "loss": "nll", "mu": 0.1}])
def test_the_job_template_with_every_researcher_model_passes(overrides: dict) -> None:
    policy = SitePolicy().review_policy
    for name, source in researcher_models().items():
        code = rendered(source, name, **overrides)
        assert match_template(code).matches
        report = review_code(code, policy)
        assert report.findings == [], f"{name}:\n{report.render()}"


@pytest.mark.parametrize("name", sorted(REALISTIC))
def test_realistic_models_run_and_pass_inside_the_template(name: str) -> None:
    source = REALISTIC[name]
    namespace = {"nn": nn, "F": F, "torch": torch}
    exec(source, namespace)  # the model is real: it builds, runs and trains a step
    model = namespace[name](channels=1, image_size=16, num_classes=4)
    logits = model(torch.rand(3, 1, 16, 16))
    assert logits.shape == (3, 4)
    F.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    code = rendered(source, name)
    assert match_template(code).matches
    report = review_code(code)
    assert report.findings == [], report.render()


def test_a_model_that_renames_a_module_inside_the_template_fails() -> None:
    source = MLP.replace(
        "        x = self.flatten(x)\n",
        "        f = F\n        f.relu = F.gelu\n        x = self.flatten(x)\n",
    )
    report = review_code(rendered(source, "MLP"))
    assert [f.rule for f in report.errors] == ["module-as-value"], report.render()


# --- the allowlist itself ------------------------------------------------------------------------------------------


def resolve(path: str) -> object:
    """The object ``path`` names: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:end]))
        except ImportError:
            continue
        for name in parts[end:]:
            found = getattr(found, name)
        return found
    raise ImportError(path)


def test_every_allowlisted_module_is_a_module() -> None:
    assert all(isinstance(resolve(module), types.ModuleType) for module in ALLOWED_MODULES)


def test_every_entry_exists_is_no_module_and_leads_to_no_module() -> None:
    """Past a listed object the review lets chains go on (they are that object's attributes): none of them,
    two public attributes deep, may be a module."""
    problems = []
    for path in sorted(ALLOWED_ATTRIBUTES):
        try:
            value = resolve(path)
        except (ImportError, AttributeError):
            problems.append(f"{path}: not in the installed package")
            continue
        if isinstance(value, types.ModuleType):
            problems.append(f"{path}: a module")
        if path.rsplit(".", 1)[1] in FORBIDDEN_ATTRIBUTES:
            problems.append(f"{path}: on the blocklist")
        for name in (n for n in dir(value) if not n.startswith("_")):
            child = getattr(value, name, None)
            if isinstance(child, types.ModuleType):
                problems.append(f"{path}.{name}: a module")
            for deeper in (n for n in dir(child) if not n.startswith("_")):
                if isinstance(getattr(child, deeper, None), types.ModuleType):
                    problems.append(f"{path}.{name}.{deeper}: a module")
    assert problems == []


def test_every_entry_sits_under_an_allowed_module() -> None:
    for path in ALLOWED_ATTRIBUTES:
        assert any(path.startswith(module + ".") for module in ALLOWED_MODULES), path
    assert ALLOWED_ATTRIBUTES == (
        TORCH_ATTRIBUTES | NN_ATTRIBUTES | FUNCTIONAL_ATTRIBUTES | NUMPY_ATTRIBUTES | MATH_ATTRIBUTES
    )


def test_what_the_issue_names_is_left_out() -> None:
    for path in (
        "numpy.ma",
        "numpy.seterrcall",
        "numpy.typing",
        "torch.xpu",
        "torch.autograd",
        "torch.nn.modules",
        "torch.optim",
        "torch.empty",
        "torch.set_num_threads",
        "torch.set_default_dtype",
        "numpy.set_printoptions",
        "numpy.random",
    ):
        assert path not in ALLOWED_ATTRIBUTES and path not in ALLOWED_MODULES, path
