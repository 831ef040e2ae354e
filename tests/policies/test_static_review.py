"""Static review: each forbidden construct is reported with its rule and line; fedimg's own job template passes."""

from __future__ import annotations

import doctest
import inspect
from dataclasses import asdict

import pytest

import policies.static_review
from policies.site_policy import SitePolicy
from policies.static_review import DEFAULT_ALLOWED_IMPORTS, ReviewPolicy, review_code
from policies.template import render_site_source
from researcher.job import FedAvgConfig
from researcher.models import SmallCNN


def findings(source: str, policy: ReviewPolicy | None = None) -> set[tuple[str, int]]:
    return {(f.rule, f.line) for f in review_code(source, policy).findings}


def errors(source: str) -> set[tuple[str, int]]:
    return {(f.rule, f.line) for f in review_code(source).errors}


def in_function(body: str) -> str:
    """``body`` (one statement) as line 3 of a function, after an allowed import."""
    return f"def f(x):\n    import numpy as np\n    {body}\n    return x\n"


@pytest.mark.parametrize(
    "statement, rule",
    [
        ("import os", "import-not-allowed"),
        ("import subprocess", "import-not-allowed"),
        ("import socket", "import-not-allowed"),
        ("import pickle", "import-not-allowed"),
        ("import typing", "import-not-allowed"),
        ("import dataclasses", "import-not-allowed"),
        ("from typing import get_type_hints", "import-not-allowed"),
        ("from dataclasses import make_dataclass", "import-not-allowed"),
        ("import scipy.io", "import-not-allowed"),
        ("from os import path", "import-not-allowed"),
        ("from . import sibling", "relative-import"),
        ("import torch.hub", "forbidden-attribute"),
        ("import torch.utils.data", "forbidden-attribute"),
        ("from torch import load", "forbidden-attribute"),
        ("from torch import hub", "forbidden-attribute"),
        ("from numpy import load as l", "forbidden-attribute"),
        ("from torch import _C", "private-attribute"),
    ],
)
def test_imports(statement: str, rule: str) -> None:
    assert (rule, 3) in errors(in_function(statement))


@pytest.mark.parametrize(
    "expression",
    [
        "os.getcwd()",
        "sys.modules",
        "subprocess.run(['ls'])",
        "socket.socket()",
        "pickle.loads(x)",
        "open('/etc/passwd').read()",
        "eval('1')",
        "exec('x = 1')",
        "compile('1', 'f', 'eval')",
        "__import__('os')",
        "getattr(x, 'y')",
        "globals()",
        "locals()",
        "vars(x)",
        "setattr(x, 'a', 1)",
        "type(x)",
        "breakpoint()",
        "__builtins__",
        "shutil.rmtree('/')",
        "importlib.import_module('os')",
        "syft.client",
        "context.server",
    ],
)
def test_forbidden_names(expression: str) -> None:
    assert ("forbidden-name", 3) in errors(in_function(f"y = {expression}"))


@pytest.mark.parametrize(
    "expression",
    [
        "().__class__",
        "x.__class__.__bases__[0].__subclasses__()",
        "sys._getframe()",
        "x._getframe(0)",
        "x.__dict__",
        "x.__globals__",
        "model._modules",
        "torch._C",
    ],
)
def test_private_attributes(expression: str) -> None:
    assert ("private-attribute", 3) in errors(in_function(f"y = {expression}"))


def test_allowed_dunder_init() -> None:
    source = "class Net:\n    def __init__(self):\n        super().__init__()\n"
    assert review_code(source).findings == []


@pytest.mark.parametrize(
    "expression",
    [
        "x.f_globals",
        "x.f_locals",
        "x.f_back",
        "x.gi_frame",
        "x.tb_frame",
        "np.load('a.npy')",
        "np.save('a.npy', x)",
        "np.fromfile('a')",
        "x.tofile('a')",
        "np.fromregex('a', 'r', int)",
        "np.savez('a', x=x)",
        "np.savez_compressed('a', x=x)",
        "x.dump('a')",
        "np.memmap('a')",
        "np.loadtxt('a')",
        "np.genfromtxt('a')",
        "np.lib.format",
        "np.ctypeslib",
        "np.DataSource()",
        "torch.load('m.pt')",
        "torch.save(x, 'm.pt')",
        "torch.hub.list('a/b')",
        "torch.jit.script(x)",
        "torch.ops",
        "torch.from_file('a')",
        "torch.utils.cpp_extension",
        "torch.serialization",
        "x.untyped_storage()",
        "x.data_ptr()",
        "np.frombuffer(x)",
        "torch.distributed",
        "torch.fx",
        "torch.package",
        "torch.library",
    ],
)
def test_forbidden_attributes(expression: str) -> None:
    assert ("forbidden-attribute", 3) in errors(in_function(f"y = {expression}"))


@pytest.mark.parametrize("parameter", ["datasite", "context", "server", "client", "sy"])
def test_forbidden_parameter_names(parameter: str) -> None:
    source = f"def f(train_images,\n      weights,\n      {parameter}=None):\n    return 1\n"
    assert ("forbidden-parameter", 3) in errors(source)


def test_forbidden_parameter_in_lambda_and_star_args() -> None:
    assert ("forbidden-parameter", 1) in errors("g = lambda datasite: 1\n")
    assert ("forbidden-parameter", 1) in errors("def f(*context, **server):\n    return 1\n")


def test_suspicious_string() -> None:
    assert ("suspicious-string", 3) in errors(in_function("y = '__subclasses__'"))


def test_global_statement() -> None:
    assert ("global-statement", 3) in errors(in_function("global counter"))


def test_nonlocal_is_a_warning() -> None:
    source = "def f():\n    n = 0\n    def g():\n        nonlocal n\n        n += 1\n    return g\n"
    report = review_code(source)
    assert [(f.rule, f.line, f.severity) for f in report.findings] == [("global-statement", 4, "warning")]
    assert report.passed


def test_async() -> None:
    source = "import torch\n\nasync def f(x):\n    return x\n"
    assert errors(source) == {("async", 3)}


def test_syntax_error() -> None:
    report = review_code("def f(x):\n    return (x\n\ndef g(:\n")
    assert not report.passed
    assert [f.rule for f in report.findings] == ["syntax"]
    assert report.findings[0].line > 0
    assert "does not parse" in report.render()


def test_findings_carry_line_and_column_and_render_sorted() -> None:
    source = "def f(x):\n    y = open('a')\n    import os\n    return x\n"
    report = review_code(source)
    assert [(f.line, f.column, f.rule) for f in report.findings] == [
        (2, 8, "forbidden-name"),
        (3, 4, "import-not-allowed"),
    ]
    rendered = report.render().splitlines()
    assert rendered[0].startswith("error line 2:8 [forbidden-name]") and "'open'" in rendered[0]
    assert rendered[1].startswith("error line 3:4 [import-not-allowed]") and "'os'" in rendered[1]


def test_clean_code_passes() -> None:
    source = "import math\nimport numpy as np\nimport torch\n\ndef f(x):\n    return torch.as_tensor(np.asarray(x)).sum() * math.pi\n"
    report = review_code(source)
    assert report.findings == [] and report.passed
    assert report.render() == "static review: no findings"


def template_source(**overrides) -> str:
    config = {
        **asdict(
            FedAvgConfig(
                rounds=3, model_kwargs={"channels": 1, "image_size": 16, "num_classes": 4}, **overrides
            )
        ),
        "num_classes": 4,
    }
    return render_site_source("fedimg_review_test", inspect.getsource(SmallCNN), "SmallCNN", config)


def test_job_template_with_small_cnn_has_no_findings() -> None:
    report = review_code(template_source())
    assert report.findings == [], report.render()
    report = review_code(template_source(optimizer="adam", mu=0.1, loss="nll"))
    assert report.findings == [], report.render()


def test_extra_allowed_imports_through_the_site_policy() -> None:
    source = "import scipy.ndimage\nimport math\n"
    assert ("import-not-allowed", 1) in findings(source)
    policy = SitePolicy(extra_allowed_imports=("scipy",)).review_policy
    assert policy.allowed_imports == DEFAULT_ALLOWED_IMPORTS | {"scipy"}
    assert findings(source, policy) == set()
    assert ("import-not-allowed", 1) in findings("import os\n", policy)  # only what the owner added


def test_module_doctest() -> None:
    result = doctest.testmod(policies.static_review)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("statement", ["from torch import *", "from numpy import *"])
def test_star_import(statement: str) -> None:
    assert ("star-import", 3) in errors(in_function(statement))


def test_private_module_import() -> None:
    assert ("private-attribute", 3) in errors(in_function("import torch._dynamo"))
    assert ("private-attribute", 3) in errors(in_function("from torch._dynamo import config"))


def test_the_sites_dp_sgd_loop_is_the_one_import_of_fedimg_code() -> None:
    assert review_code("from policies.dp_sgd import train_private\n").passed
    for statement in (
        "from policies.dp_sgd import train_private as tp",
        "from policies.dp_sgd import train_private, schedule",
        "from policies.dp_sgd import schedule",
        "from policies import dp_sgd",
        "import policies.dp_sgd",
        "from policies.enforcement import install",
        "from datasite_setup.site.code_requests import approve",
        "from .policies.dp_sgd import train_private",
    ):
        assert not review_code(statement + "\n").passed, statement


@pytest.mark.parametrize(
    "statement",
    [
        "F.cross_entropy = lambda *a, **k: 0",
        "torch.nn.Linear.forward = None",
        "np.random.seed = print",
        "del torch.tensor",
        "torch.manual_seed.x += 1",
    ],
)
def test_assigning_to_a_module_attribute_is_an_error(statement: str) -> None:
    source = f"def f(x):\n    import torch\n    import torch.nn.functional as F\n    import numpy as np\n    {statement}\n    return x\n"
    report = review_code(source)
    assert [(f.rule, f.line) for f in report.errors] == [("module-attribute-assignment", 5)], report.render()


def test_assigning_to_attributes_of_own_objects_is_fine() -> None:
    source = "def f(x):\n    import torch\n    class M:\n        def __init__(self):\n            self.w = torch.zeros(2)\n    m = M()\n    m.w = torch.ones(2)\n    return m\n"
    assert review_code(source).passed, review_code(source).render()
