"""Static review of the code a researcher asks a site to run (AST, no execution).

``review_code(source)`` returns a ``ReviewReport``: findings with severity, rule,
line and column. Errors make a request unfit for automatic approval and are
shown to the data owner, who still decides. It is the second line of defence:
approved code runs in a sandbox worker first.

The review is an allowlist (``policies.review_allowlist``): imports name exactly
``torch``, ``torch.nn``, ``torch.nn.functional``, ``numpy`` or ``math`` (any alias;
plus a site's extra imports and the job template's ``from policies.dp_sgd import
train_private``), and every attribute chain that starts at an imported module
must reach a listed function, class, dtype or constant (``not-on-allowlist``
names the first dotted path that is not). Module objects are used only as
``alias.name``: binding one to another name, passing or storing it
(``module-as-value``), reusing its name for anything else (``module-rebinding``)
or assigning to its attributes (``module-attribute-assignment``) are errors.
The blocklist of earlier versions stays as a second net, whatever object a name
or attribute hangs on: builtins and modules that read files, open sockets, run
code from strings or unpickle, private and dunder attributes, frames.

Examples
--------
>>> report = review_code("def f(x):\\n    import os\\n    return open('/etc/passwd').read()\\n")
>>> [(f.line, f.rule) for f in report.findings]
[(2, 'import-not-allowed'), (3, 'forbidden-name')]
>>> report.passed
False
>>> print(review_code("import numpy as np\\ntimer = np.ma.timer_comparison\\n").render())
error line 2:8 [not-on-allowlist] numpy.ma is not on the review's allowlist (in numpy.ma.timer_comparison)
"""

from __future__ import annotations

import ast
import re
import string
from dataclasses import dataclass, field

from policies.review_allowlist import ALLOWED_ATTRIBUTES, ALLOWED_MODULES

# The top-level names of the allowlisted modules: what a site policy's extra imports are added to (a site
# policy reads and shows this set). Within them only ALLOWED_MODULES may be imported. typing and
# dataclasses are left out on purpose: ForwardRef._evaluate and dataclasses._create_fn run code from strings.
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
# (fedavg-4) calls when the site's release hook hands it privacy settings. Nothing else of policies or
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
    """What a site allows: the modules code may import and the module attributes it may use.

    Parameters
    ----------
    allowed_imports : frozenset of str
        Modules the code may import. For torch, numpy and math (the defaults) that means exactly the
        paths of ``allowed_modules`` below them; any other name (a site's extra import, e.g. ``scipy``)
        allows that module and everything under it, checked by the blocklist only.
    forbidden_names : frozenset of str
        Names the code may not use (builtins that reach files or the interpreter, modules, syft).
    forbidden_attributes : frozenset of str
        Attribute names the code may not reach, whatever object they hang on.
    allowed_modules : frozenset of str
        The module paths an import of torch, numpy or math may name (``policies.review_allowlist``).
    allowed_attributes : frozenset of str
        Dotted paths (``torch.nn.Conv2d``) that an attribute chain from an imported module may reach.

    Examples
    --------
    >>> policy = ReviewPolicy(allowed_imports=DEFAULT_ALLOWED_IMPORTS | {"scipy"})
    >>> review_code("import scipy.special\\n", policy).passed
    True
    >>> [f.rule for f in review_code("import torch.optim\\n", policy).errors]
    ['import-not-allowed']
    """

    allowed_imports: frozenset[str] = DEFAULT_ALLOWED_IMPORTS
    forbidden_names: frozenset[str] = FORBIDDEN_NAMES
    forbidden_attributes: frozenset[str] = FORBIDDEN_ATTRIBUTES
    allowed_modules: frozenset[str] = ALLOWED_MODULES
    allowed_attributes: frozenset[str] = ALLOWED_ATTRIBUTES


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


class _Allowlist:
    """What a policy lets code reach through its imports: module paths, attribute paths, the namespaces
    between them (``torch.optim`` leads to ``torch.optim.SGD`` but is not allowed itself) and the extras."""

    def __init__(self, policy: ReviewPolicy) -> None:
        # a site's extra imports are the names beyond torch, numpy and math; they are checked by the
        # blocklist only (the site's owner chose them)
        self.extras = frozenset(policy.allowed_imports - DEFAULT_ALLOWED_IMPORTS)
        allowed_top = policy.allowed_imports
        self.modules = frozenset(m for m in policy.allowed_modules if m.split(".")[0] in allowed_top)
        self.attributes = frozenset(a for a in policy.allowed_attributes if a.split(".")[0] in allowed_top)
        namespaces: dict[str, set[str]] = {}
        for path in self.attributes:
            parts = path.split(".")
            for end in range(1, len(parts)):
                prefix = ".".join(parts[:end])
                if prefix not in self.modules and prefix not in self.attributes:
                    namespaces.setdefault(prefix, set()).add(path)
        self.namespaces = namespaces

    def is_extra(self, path: str) -> bool:
        return any(path == extra or path.startswith(extra + ".") for extra in self.extras)

    def importable(self, module: str) -> bool:
        return module in self.modules or self.is_extra(module)

    def top_allowed(self, module: str) -> bool:
        top = module.split(".")[0]
        return any(allowed.split(".")[0] == top for allowed in self.modules | self.extras)

    def listing(self) -> str:
        return ", ".join(sorted(self.modules | self.extras))

    def problem(self, path: str) -> str | None:
        """Why ``path`` (a chain from an imported module) is refused; None when it is allowed.

        A module on the allowlist gives None too: the caller decides whether it is used as a value.
        """
        parts = path.split(".")
        for end in range(1, len(parts) + 1):
            prefix = ".".join(parts[:end])
            if self.is_extra(prefix) or prefix in self.attributes:
                # what hangs off a listed function, class or dtype is that object's own, as on any object
                # the code holds (the blocklist applies to it)
                return None
            if prefix not in self.modules and prefix not in self.namespaces:
                where = "" if prefix == path else f" (in {path})"
                return f"{prefix} is not on the review's allowlist{where}"
        if path in self.namespaces:
            members = ", ".join(sorted(self.namespaces[path]))
            return f"{path} is not on the review's allowlist (only {members} are)"
        return None


@dataclass
class _Bindings:
    """What the code's import statements bind, anywhere in its tree (the review does not follow scopes)."""

    modules: dict[str, str]  # name -> module path, for names bound to a module (`import torch.nn as nn`)
    imported: frozenset[str]  # every name an import binds (modules, functions, classes)
    conflicts: dict[ast.AST, list[str]]  # import statement -> names it binds to something else than before


def _bindings(tree: ast.AST, allow: _Allowlist) -> _Bindings:
    """The names ``tree``'s imports bind.

    ``import a.b`` binds ``a``; ``import a.b as x`` binds ``x`` to ``a.b``; ``from a import b`` binds ``b``
    to the module ``a.b`` only when that is an allowlisted module (else to a function, class or value).
    """
    bound: dict[str, tuple[str, bool]] = {}  # name -> (what it names, whether that is a module)
    conflicts: dict[ast.AST, list[str]] = {}
    imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    for node in sorted(imports, key=lambda n: (n.lineno, n.col_offset)):
        for alias in node.names:
            if alias.name == "*":
                continue
            if isinstance(node, ast.Import):
                name = alias.asname or alias.name.split(".")[0]
                target = (alias.name if alias.asname else name, True)
            else:
                name = alias.asname or alias.name
                full = f"{'.' * node.level}{node.module or ''}.{alias.name}"
                target = (full, full in allow.modules)
            if bound.setdefault(name, target) != target:
                conflicts.setdefault(node, []).append(name)
    modules = {name: path for name, (path, is_module) in bound.items() if is_module}
    return _Bindings(modules, frozenset(bound), conflicts)


class _StaticReviewVisitor(ast.NodeVisitor):
    """Walks the code's syntax tree and records a ``Finding`` for every construct the policy refuses."""

    def __init__(self, policy: ReviewPolicy, tree: ast.AST) -> None:
        self.policy = policy
        self.allow = _Allowlist(policy)
        self.bindings = _bindings(tree, self.allow)
        self.parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
        self.findings: list[Finding] = []

    def add(self, node: ast.AST, rule: str, message: str, severity: str = "error") -> None:
        line, column = getattr(node, "lineno", 0), getattr(node, "col_offset", 0)
        self.findings.append(Finding(severity, rule, line, column, message))

    # --- imports --------------------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        self._check_conflicts(node)
        for alias in node.names:
            self._check_module(node, alias.name)
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if _is_site_import(node):
            return
        self._check_conflicts(node)
        if node.level:
            self.add(node, "relative-import", "relative imports are not allowed")
        module = node.module or ""
        self._check_module(node, module)
        for alias in node.names:  # `from torch import load` reaches what `torch.load` would
            if alias.name == "*":
                self.add(node, "star-import", f"'from {node.module} import *' hides which names are used")
                continue
            full = f"{module}.{alias.name}"
            blocked = self._check_part(node, full, alias.name)
            checked = not node.level and module in self.allow.modules  # extras: the blocklist only
            if checked and not blocked and full not in self.allow.modules | self.allow.attributes:
                problem = self.allow.problem(full) or f"{full} is not on the review's allowlist"
                self.add(node, "import-not-allowed", f"import of {full!r}: {problem}")
        self.generic_visit(node)

    def _check_conflicts(self, node: ast.Import | ast.ImportFrom) -> None:
        for name in self.bindings.conflicts.get(node, []):
            self.add(
                node,
                "module-rebinding",
                f"{name!r} is bound by another import to something else: one name, one module",
            )

    def _check_module(self, node: ast.AST, module: str) -> None:
        blocked = [self._check_part(node, module, part) for part in module.split(".")[1:]]
        if self.allow.importable(module):
            return
        if not self.allow.top_allowed(module):
            allowed = ", ".join(sorted(self.policy.allowed_imports))
            self.add(node, "import-not-allowed", f"import of {module!r}: allowed modules are {allowed}")
        elif not any(blocked):  # one finding per construct: the blocklist's, when it has one
            self.add(
                node,
                "import-not-allowed",
                f"import of {module!r}: {module} is not on the review's allowlist "
                f"(allowed modules: {self.allow.listing()})",
            )

    def _check_part(self, node: ast.AST, module: str, part: str) -> bool:
        """Report ``part`` of an imported path if the blocklist refuses it; whether it did."""
        if _is_private(part):
            self.add(
                node,
                "private-attribute",
                f"import of {module!r} reaches {part!r} (private or interpreter internals)",
            )
        elif part in self.policy.forbidden_attributes:
            self.add(node, "forbidden-attribute", f"import of {module!r} reaches {part!r}")
        else:
            return False
        return True

    # --- names: the blocklist, and module names used as values or rebound -------------------------

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in self.policy.forbidden_names or (node.id.startswith("__") and node.id.endswith("__")):
            self.add(node, "forbidden-name", f"use of {node.id!r}")
        module = self.bindings.modules.get(node.id)
        if module is not None:
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                self._rebinding(node, node.id)
            elif not self._is_chain_link(node):
                self._module_as_value(node, node.id, module)
        self.generic_visit(node)

    def _is_chain_link(self, node: ast.AST) -> bool:
        """Whether ``node`` is the object of an attribute access (``F`` in ``F.relu``)."""
        parent = self.parents.get(node)
        return isinstance(parent, ast.Attribute) and parent.value is node

    def _module_as_value(self, node: ast.AST, text: str, module: str) -> None:
        # a module bound to another name, passed, returned or stored escapes the chain check (`f = F`
        # then `f.relu = ...`, `setattr(F, ...)`, `[torch][0].xpu`)
        self.add(
            node,
            "module-as-value",
            f"{text} is the module {module}: a module may only be used as {text}.<name> "
            "(not bound to another name, passed, returned or stored)",
        )

    def _rebinding(self, node: ast.AST, name: str) -> None:
        module = self.bindings.modules[name]
        self.add(
            node,
            "module-rebinding",
            f"{name!r} is bound to the module {module} by an import; binding it to anything else is refused",
        )

    def visit_arg(self, node: ast.arg) -> None:
        # syft injects a client for some parameter names (e.g. 'datasite')
        if node.arg in self.policy.forbidden_names:
            self.add(node, "forbidden-parameter", f"parameter named {node.arg!r}")
        if node.arg in self.bindings.modules:
            self._rebinding(node, node.arg)
        self.generic_visit(node)

    def _check_bound_name(self, node: ast.AST, name: str | None) -> None:
        if name is not None and name in self.bindings.modules:
            self._rebinding(node, name)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._check_bound_name(node, node.name)
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._check_bound_name(node, node.name)
        self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        self._check_bound_name(node, node.name)
        self.generic_visit(node)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        self._check_bound_name(node, node.name)
        self.generic_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        self._check_bound_name(node, node.name)
        self.generic_visit(node)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self._check_bound_name(node, node.rest)
        self.generic_visit(node)

    # --- attributes: the blocklist, writes to modules, and chains from modules against the allowlist ---

    def visit_Attribute(self, node: ast.Attribute) -> None:
        writes = isinstance(node.ctx, (ast.Store, ast.Del))
        if writes and _root_name(node) in self.bindings.imported:
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
        if not writes and not self._is_chain_link(node):
            self._check_chain(node)
        self.generic_visit(node)

    def _check_chain(self, node: ast.Attribute) -> None:
        """The whole chain ``node`` ends (``torch.nn.Conv2d``), if it starts at an imported module."""
        names: list[str] = []
        current: ast.expr = node
        while isinstance(current, ast.Attribute):
            names.insert(0, current.attr)
            current = current.value
        if not isinstance(current, ast.Name) or current.id not in self.bindings.modules:
            return
        root = self.bindings.modules[current.id]
        if not self.allow.importable(root):
            return  # its import is the finding (`import socket`, `import numpy.ma as ma`)
        if any(_is_private(name) or name in self.policy.forbidden_attributes for name in names):
            return  # the blocklist has reported it: one finding per construct
        path = ".".join([root, *names])
        problem = self.allow.problem(path)
        if problem is not None:
            self.add(node, "not-on-allowlist", problem)
        elif path in self.allow.modules:
            self._module_as_value(node, ast.unparse(node), path)

    # --- strings and statements ---------------------------------------------------------------------

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
    >>> source = "import torch.nn.functional as F\\nf = F\\nf.relu = abs\\n"
    >>> [(f.line, f.rule) for f in review_code(source).errors]
    [(2, 'module-as-value')]
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        message = f"does not parse: {exc.msg}"
        return ReviewReport([Finding("error", "syntax", exc.lineno or 0, exc.offset or 0, message)])
    reviewer = _StaticReviewVisitor(policy or ReviewPolicy(), tree)
    reviewer.visit(tree)
    return ReviewReport(reviewer.findings)


def _root_name(node: ast.AST) -> str | None:
    """``a`` for ``a.b.c`` (also through subscripts and calls); None when the chain starts elsewhere."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None
