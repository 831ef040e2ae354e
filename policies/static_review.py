"""Static review of the code a researcher asks a site to run (AST, no execution).

``review_code(source)`` returns a ``ReviewReport``: findings with severity, rule,
line and column. Errors make a request unfit for automatic approval and are
shown to the data owner, who still decides. The defaults allow what fedimg's job
templates need (torch, numpy, math) and forbid what reads files, opens sockets,
runs code from strings, unpickles, or reaches the interpreter's or the server's
internals.

Example:
    >>> report = review_code("def f(x):\\n    import os\\n    return open('/etc/passwd').read()\\n")
    >>> [(f.line, f.rule) for f in report.findings]
    [(2, 'import-not-allowed'), (3, 'forbidden-name')]
    >>> report.passed
    False
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

# typing and dataclasses are left out on purpose: ForwardRef._evaluate and dataclasses._create_fn run code from strings.
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
# Attributes that read or write files, unpickle, load native code, or leave the sandbox, whatever object they hang on.
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
# Modules hang off the allowed ones as plain attributes (torch.os, torch.sys, torch.builtins, np.compat.pickle,
# torch.export.zipfile, torch.cuda.tunable.shutil...), and a few helpers read files or look attributes up by string:
# these names are refused as attributes too (found by walking every attribute of torch and numpy, red-team suite).
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
# The one import of fedimg's own code a request may make: the site's DP-SGD loop, which the job template (fedavg-3)
# calls when the site's release hook hands it privacy settings. Nothing else of policies or datasite_setup.
SITE_IMPORT = ("policies.dp_sgd", ("train_private",))


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" or "warning"
    rule: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.severity} line {self.line}:{self.column} [{self.rule}] {self.message}"


@dataclass(frozen=True)
class ReviewPolicy:
    """What a site allows; ``allowed_imports`` are top-level module names."""

    allowed_imports: frozenset[str] = DEFAULT_ALLOWED_IMPORTS
    forbidden_names: frozenset[str] = FORBIDDEN_NAMES
    forbidden_attributes: frozenset[str] = FORBIDDEN_ATTRIBUTES


@dataclass
class ReviewReport:
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def passed(self) -> bool:
        return not self.errors

    def render(self) -> str:
        if not self.findings:
            return "static review: no findings"
        return "\n".join(str(f) for f in sorted(self.findings, key=lambda f: (f.line, f.column)))


class _Reviewer(ast.NodeVisitor):
    def __init__(self, policy: ReviewPolicy, module_names: frozenset[str] = frozenset()) -> None:
        self.policy = policy
        self.module_names = module_names  # the names the code's imports bind
        self.findings: list[Finding] = []

    def add(self, node: ast.AST, rule: str, message: str, severity: str = "error") -> None:
        self.findings.append(
            Finding(severity, rule, getattr(node, "lineno", 0), getattr(node, "col_offset", 0), message)
        )

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._check_module(node, alias.name)
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if not node.level and (node.module, tuple((a.name, a.asname) for a in node.names)) == (
            SITE_IMPORT[0],
            tuple((n, None) for n in SITE_IMPORT[1]),
        ):
            return  # exactly `from policies.dp_sgd import train_private`
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
            self.add(
                node,
                "import-not-allowed",
                f"import of {module!r}: allowed modules are {', '.join(sorted(self.policy.allowed_imports))}",
            )
        for part in module.split(".")[1:]:
            self._check_part(node, module, part)

    def _check_part(self, node: ast.AST, module: str, part: str) -> None:
        if part.startswith("_") and part not in ALLOWED_DUNDERS:
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
            # torch.tensor = ..., F.cross_entropy = ...: the change reaches the site's own code in the same process
            self.add(
                node,
                "module-attribute-assignment",
                f"assignment to {ast.unparse(node)} changes a module the site's own code uses",
            )
        if node.attr.startswith("_") and node.attr not in ALLOWED_DUNDERS:
            # private and dunder attributes lead to frames, globals, builtins and the server's objects
            self.add(node, "private-attribute", f"access to {node.attr!r} (private or interpreter internals)")
        elif node.attr in self.policy.forbidden_attributes:
            self.add(
                node,
                "forbidden-attribute",
                f"access to .{node.attr} (files, pickling, native code or frames)",
            )
        elif node.attr in ("format", "format_map") and not (
            isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        ):
            # only a literal format string can be checked for the attributes its fields read
            self.add(
                node,
                "suspicious-string",
                f".{node.attr} of a string built at run time (format fields read attributes by name)",
            )
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if (
            isinstance(node.value, str)
            and "__" in node.value
            and any(
                d in node.value
                for d in ("__class__", "__subclasses__", "__globals__", "__builtins__", "__import__")
            )
        ):
            self.add(node, "suspicious-string", f"string {node.value!r} names interpreter internals")
        elif isinstance(node.value, str) and "{" in node.value:
            # str.format looks attributes up by name: "{0.gi_frame.f_back.f_locals}".format(generator) walks frames
            for part in _format_attributes(node.value):
                if (
                    part.startswith("_") and part not in ALLOWED_DUNDERS
                ) or part in self.policy.forbidden_attributes:
                    self.add(
                        node, "suspicious-string", f"format string {node.value!r} reaches attribute {part!r}"
                    )
                    break
        self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> None:
        if (
            node.arg in self.policy.forbidden_names
        ):  # syft injects a client for some parameter names (e.g. 'datasite')
            self.add(node, "forbidden-parameter", f"parameter named {node.arg!r}")
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> None:
        self.add(node, "global-statement", "global state is not allowed")

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.add(node, "global-statement", "nonlocal is not allowed", severity="warning")

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self.add(node, "async", "async code is not allowed")
        self.generic_visit(node)


def _format_attributes(text: str) -> list[str]:
    """The attribute names a format string's fields read (``{0.a.b[k]}`` -> ``a``, ``b``)."""
    import re
    import string

    names: list[str] = []
    try:
        fields = [field for _, field, spec, _ in string.Formatter().parse(text) if field] + [
            spec for _, _, spec, _ in string.Formatter().parse(text) if spec
        ]
    except ValueError:
        fields = re.findall(r"\{([^{}]*)\}", text)
    for field in fields:
        names += re.findall(r"\.([A-Za-z_][A-Za-z_0-9]*)", field)
    return names


def review_code(source: str, policy: ReviewPolicy | None = None) -> ReviewReport:
    """Review ``source`` (a function or module); a syntax error is itself an error finding."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return ReviewReport(
            [Finding("error", "syntax", exc.lineno or 0, exc.offset or 0, f"does not parse: {exc.msg}")]
        )
    reviewer = _Reviewer(policy or ReviewPolicy(), _imported_names(tree))
    reviewer.visit(tree)
    return ReviewReport(reviewer.findings)


def _imported_names(tree: ast.AST) -> frozenset[str]:
    """The names import statements bind anywhere in ``tree`` (``import torch.nn as nn`` -> ``nn``; ``import a.b`` -> ``a``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
    return frozenset(names)


def _root_name(node: ast.AST) -> str | None:
    """``a`` for ``a.b.c`` (also through subscripts and calls); None when the chain starts elsewhere."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None
