"""Static review of the code a researcher asks a site to run (AST, no execution).

``review_code(source)`` returns a ``ReviewReport``: findings with severity, rule,
line and column. Errors make a request unfit for automatic approval and are
shown to the data owner, who still decides. The defaults allow what fedimg's job
templates need (torch, numpy, math) and forbid what reads files, opens sockets,
runs code from strings, unpickles, or reaches the interpreter's or the server's
internals.

Examples
--------
>>> report = review_code("def f(x):\\n    import os\\n    return open('/etc/passwd').read()\\n")
>>> [(f.line, f.rule) for f in report.findings]
[(2, 'import-not-allowed'), (3, 'forbidden-name')]
>>> report.passed
False
"""

from __future__ import annotations

import ast
import re
import string
from dataclasses import dataclass, field

# typing and dataclasses are left out on purpose: ForwardRef._evaluate and dataclasses._create_fn
# run code from strings.
DEFAULT_ALLOWED_IMPORTS = frozenset({"torch", "numpy", "math"})
FORBIDDEN_NAMES = frozenset(
    {
        "open",
        "eval",
        "exec",
        "compile",
        "__import__",
        "globals",
        "locals",
        "vars",
        "getattr",
        "setattr",
        "delattr",
        "breakpoint",
        "input",
        "help",
        "exit",
        "quit",
        "memoryview",
        "type",
        "object",
        "classmethod",
        "staticmethod",
        "__builtins__",
        "__loader__",
        "__spec__",
        "__file__",
        "os",
        "sys",
        "subprocess",
        "socket",
        "pickle",
        "shutil",
        "pathlib",
        "importlib",
        "ctypes",
        "builtins",
        "marshal",
        "shelve",
        "tempfile",
        "urllib",
        "requests",
        "http",
        "multiprocessing",
        "threading",
        "signal",
        "gc",
        "inspect",
        "syft",
        "sy",
        "context",
        "server",
        "worker",
        "datasite",
        "client",
        "io",
        "codecs",
        "dill",
        "cloudpickle",
        "joblib",
        "operator",
        "ForwardRef",
        "get_type_hints",
        "make_dataclass",
    }
)
# Attributes that read or write files, unpickle, load native code, or leave the sandbox, whatever object
# they hang on.
FORBIDDEN_ATTRIBUTES = frozenset(
    {
        "load",
        "save",
        "hub",
        "fromfile",
        "tofile",
        "memmap",
        "from_file",
        "cpp_extension",
        "ops",
        "classes",
        "_C",
        "system",
        "popen",
        "spawn",
        "loadtxt",
        "savetxt",
        "genfromtxt",
        "DataSource",
        "ctypeslib",
        "lib",
        "jit",
        "compile",
        "storage",
        "untyped_storage",
        "data_ptr",
        "frombuffer",
        "set_printoptions",
        "register_forward_hook",
        "f_globals",
        "f_locals",
        "f_back",
        "gi_frame",
        "tb_frame",
        "fromregex",
        "dump",
        "dumps",
        "savez",
        "savez_compressed",
        "ForwardRef",
        "get_type_hints",
        "make_dataclass",
        "distributed",
        "fx",
        "package",
        "serialization",
        "library",
        "multiprocessing",
        "utils",
        "f2py",
        "distutils",
        "testing",
        "cr_frame",
        "ag_frame",
        "f_builtins",
    }
)
# Modules hang off the allowed ones as plain attributes (torch.os, torch.sys, torch.builtins,
# np.compat.pickle, torch.export.zipfile, torch.cuda.tunable.shutil...), and a few helpers read files or
# look attributes up by string: these names are refused as attributes too (found by walking every
# attribute of torch and numpy, red-team suite).
MODULE_ATTRIBUTES = frozenset(
    {
        "os",
        "sys",
        "builtins",
        "subprocess",
        "socket",
        "pickle",
        "shutil",
        "pathlib",
        "importlib",
        "ctypes",
        "marshal",
        "shelve",
        "tempfile",
        "urllib",
        "requests",
        "http",
        "threading",
        "signal",
        "gc",
        "inspect",
        "io",
        "codecs",
        "dill",
        "cloudpickle",
        "joblib",
        "operator",
        "glob",
        "platform",
        "types",
        "zipfile",
        "tarfile",
        "gzip",
        "bz2",
        "lzma",
        "logging",
        "linecache",
        "tokenize",
        "traceback",
        "runpy",
        "pkgutil",
        "sysconfig",
        "mp",
        "compat",
        "syft",
        "policies",
        "datasite_setup",
        "server",
        "context",
        "environ",
        "open",
        "exec",
        "globals",
        "locals",
        "vars",
        "getattr",
        "setattr",
        "delattr",
        "attrgetter",
        "methodcaller",
        "bltns",
        "loads",
        "recfromtxt",
        "recfromcsv",
        "lookfor",
        "test",
        "testing",
        "onnx",
        "profiler",
        "export",
        "compiler",
        "cpp",
    }
)
FORBIDDEN_ATTRIBUTES = FORBIDDEN_ATTRIBUTES | MODULE_ATTRIBUTES
ALLOWED_DUNDERS = frozenset({"__init__"})
# The one import of fedimg's own code a request may make: the site's DP-SGD loop, which the job template
# (fedavg-3) calls when the site's release hook hands it privacy settings. Nothing else of policies or
# datasite_setup.
SITE_IMPORT = ("policies.dp_sgd", ("train_private",))


# Interpreter internals that a string names when it is meant for a lookup by name.
INTERNALS_IN_STRINGS = ("__class__", "__subclasses__", "__globals__", "__builtins__", "__import__")


@dataclass(frozen=True)
class Finding:
    """One thing the static review found in the submitted code.

    Parameters
    ----------
    severity : str
        ``"error"`` (the request is unfit for automatic approval) or ``"warning"``.
    rule : str
        The rule's name, e.g. ``"import-not-allowed"`` or ``"forbidden-attribute"``.
    line, column : int
        Where in the source (1-based line, 0-based column; 0 when unknown).
    message : str
        What was found, for the data owner.

    Examples
    --------
    >>> print(Finding("error", "forbidden-name", 3, 11, "use of 'open'"))
    error line 3:11 [forbidden-name] use of 'open'
    """

    severity: str  # "error" or "warning"
    rule: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.severity} line {self.line}:{self.column} [{self.rule}] {self.message}"


@dataclass(frozen=True)
class ReviewPolicy:
    """What a site allows; ``allowed_imports`` are top-level module names.

    Parameters
    ----------
    allowed_imports : frozenset of str
        Top-level modules the code may import (default: torch, numpy, math).
    forbidden_names : frozenset of str
        Names the code may not use (builtins that reach files or the interpreter, modules, syft).
    forbidden_attributes : frozenset of str
        Attribute names the code may not reach, whatever object they hang on.

    Examples
    --------
    >>> policy = ReviewPolicy(allowed_imports=DEFAULT_ALLOWED_IMPORTS | {"scipy"})
    >>> review_code("import scipy.special\\n", policy).passed
    True
    """

    allowed_imports: frozenset[str] = DEFAULT_ALLOWED_IMPORTS
    forbidden_names: frozenset[str] = FORBIDDEN_NAMES
    forbidden_attributes: frozenset[str] = FORBIDDEN_ATTRIBUTES


@dataclass
class ReviewReport:
    """The findings of one static review.

    Parameters
    ----------
    findings : list of Finding
        Everything found, errors and warnings, in the order the review met them.

    Examples
    --------
    >>> report = review_code("def f(x):\\n    global y\\n    return x\\n")
    >>> report.passed, [f.rule for f in report.errors]
    (False, ['global-statement'])
    >>> print(report.render())
    error line 2:4 [global-statement] global state is not allowed
    """

    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        """The findings of severity ``"error"``."""
        return [f for f in self.findings if f.severity == "error"]

    @property
    def passed(self) -> bool:
        """True when there is no error (warnings do not fail a review)."""
        return not self.errors

    def render(self) -> str:
        """One finding per line, sorted by position; a single line when there is none."""
        if not self.findings:
            return "static review: no findings"
        by_position = sorted(self.findings, key=lambda f: (f.line, f.column))
        return "\n".join(str(f) for f in by_position)


class _StaticReviewVisitor(ast.NodeVisitor):
    """Walks the code's syntax tree and records a ``Finding`` for every construct the policy refuses."""

    def __init__(self, policy: ReviewPolicy, module_names: frozenset[str] = frozenset()) -> None:
        self.policy = policy
        self.module_names = module_names  # the names the code's imports bind
        self.findings: list[Finding] = []

    def add(self, node: ast.AST, rule: str, message: str, severity: str = "error") -> None:
        line, column = getattr(node, "lineno", 0), getattr(node, "col_offset", 0)
        self.findings.append(Finding(severity, rule, line, column, message))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._check_module(node, alias.name)
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if _is_site_import(node):
            return
        if node.level:
            self.add(node, "relative-import", "relative imports are not allowed")
        self._check_module(node, node.module or "")
        for alias in node.names:  # `from torch import load` reaches what `torch.load` would
            if alias.name == "*":
                self.add(node, "star-import", f"'from {node.module} import *' hides which names are used")
            else:
                self._check_part(node, f"{node.module}.{alias.name}", alias.name)
        self.generic_visit(node)

    def _check_module(self, node: ast.AST, module: str) -> None:
        top = module.split(".")[0]
        if top not in self.policy.allowed_imports:
            allowed = ", ".join(sorted(self.policy.allowed_imports))
            self.add(node, "import-not-allowed", f"import of {module!r}: allowed modules are {allowed}")
        for part in module.split(".")[1:]:
            self._check_part(node, module, part)

    def _check_part(self, node: ast.AST, module: str, part: str) -> None:
        if _is_private(part):
            self.add(
                node,
                "private-attribute",
                f"import of {module!r} reaches {part!r} (private or interpreter internals)",
            )
        elif part in self.policy.forbidden_attributes:
            self.add(node, "forbidden-attribute", f"import of {module!r} reaches {part!r}")

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in self.policy.forbidden_names or (node.id.startswith("__") and node.id.endswith("__")):
            self.add(node, "forbidden-name", f"use of {node.id!r}")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, (ast.Store, ast.Del)) and _root_name(node) in self.module_names:
            # torch.tensor = ..., F.cross_entropy = ...: the change reaches the site's own code in the
            # same process
            self.add(
                node,
                "module-attribute-assignment",
                f"assignment to {ast.unparse(node)} changes a module the site's own code uses",
            )
        if _is_private(node.attr):
            # private and dunder attributes lead to frames, globals, builtins and the server's objects
            self.add(node, "private-attribute", f"access to {node.attr!r} (private or interpreter internals)")
        elif node.attr in self.policy.forbidden_attributes:
            self.add(
                node,
                "forbidden-attribute",
                f"access to .{node.attr} (files, pickling, native code or frames)",
            )
        elif node.attr in ("format", "format_map") and not _is_string_literal(node.value):
            # only a literal format string can be checked for the attributes its fields read
            self.add(
                node,
                "suspicious-string",
                f".{node.attr} of a string built at run time (format fields read attributes by name)",
            )
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        text = node.value
        if isinstance(text, str) and any(name in text for name in INTERNALS_IN_STRINGS):
            self.add(node, "suspicious-string", f"string {text!r} names interpreter internals")
        elif isinstance(text, str) and "{" in text:
            # str.format looks attributes up by name: "{0.gi_frame.f_back.f_locals}".format(generator)
            # walks frames
            reached = self._first_refused_attribute(_format_attributes(text))
            if reached is not None:
                self.add(node, "suspicious-string", f"format string {text!r} reaches attribute {reached!r}")
        self.generic_visit(node)

    def _first_refused_attribute(self, names: list[str]) -> str | None:
        for name in names:
            if _is_private(name) or name in self.policy.forbidden_attributes:
                return name
        return None

    def visit_arg(self, node: ast.arg) -> None:
        # syft injects a client for some parameter names (e.g. 'datasite')
        if node.arg in self.policy.forbidden_names:
            self.add(node, "forbidden-parameter", f"parameter named {node.arg!r}")
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> None:
        self.add(node, "global-statement", "global state is not allowed")

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.add(node, "global-statement", "nonlocal is not allowed", severity="warning")

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self.add(node, "async", "async code is not allowed")
        self.generic_visit(node)


def _is_private(name: str) -> bool:
    """Private and dunder names (``__init__`` aside) lead to the interpreter's and the server's internals."""
    return name.startswith("_") and name not in ALLOWED_DUNDERS


def _is_string_literal(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _is_site_import(node: ast.ImportFrom) -> bool:
    """Exactly ``from policies.dp_sgd import train_private``: absolute, unaliased, nothing else."""
    module, names = SITE_IMPORT
    imported = tuple((alias.name, alias.asname) for alias in node.names)
    expected = tuple((name, None) for name in names)
    return not node.level and node.module == module and imported == expected


def _format_attributes(text: str) -> list[str]:
    """The attribute names a format string's fields read (``{0.a.b[k]}`` -> ``a``, ``b``)."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError:
        fields = re.findall(r"\{([^{}]*)\}", text)
    else:
        field_names = [name for _, name, _, _ in parsed if name]
        format_specs = [spec for _, _, spec, _ in parsed if spec]  # nested fields: "{0:{1.attr}}"
        fields = field_names + format_specs
    names: list[str] = []
    for field_text in fields:
        names += re.findall(r"\.([A-Za-z_][A-Za-z_0-9]*)", field_text)
    return names


def review_code(source: str, policy: ReviewPolicy | None = None) -> ReviewReport:
    """Review ``source`` (a function or module) without running it.

    Parameters
    ----------
    source : str
        The Python source a researcher asks a site to run.
    policy : ReviewPolicy, optional
        What the site allows; the defaults when None.

    Returns
    -------
    ReviewReport
        Every finding; a source that does not parse gives one ``syntax`` error.

    Examples
    --------
    >>> print(review_code("def f(x):\\n    import torch\\n    return torch.load(x)\\n").render())
    error line 3:11 [forbidden-attribute] access to .load (files, pickling, native code or frames)
    >>> review_code("def f(:\\n").errors[0].rule
    'syntax'
    >>> review_code("def f(x):\\n    return x * 2\\n").passed
    True
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        message = f"does not parse: {exc.msg}"
        return ReviewReport([Finding("error", "syntax", exc.lineno or 0, exc.offset or 0, message)])
    reviewer = _StaticReviewVisitor(policy or ReviewPolicy(), _imported_names(tree))
    reviewer.visit(tree)
    return ReviewReport(reviewer.findings)


def _imported_names(tree: ast.AST) -> frozenset[str]:
    """The names import statements bind anywhere in ``tree``.

    ``import torch.nn as nn`` binds ``nn``; ``import a.b`` binds ``a``.
    """
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
    return frozenset(names)


def _root_name(node: ast.AST) -> str | None:
    """``a`` for ``a.b.c`` (also through subscripts and calls); None when the chain starts elsewhere."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None
