"""The product packages import one way: shared contracts → converter → policies → site → researcher.

The graph is built from the source with ``ast`` (imports inside functions and under
``TYPE_CHECKING`` included), so a loop cannot hide behind a function-level import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("datasite_setup", "policies", "researcher")

# Lowest first. A module belongs to the layer of its longest matching prefix.
LAYERS: dict[str, tuple[str, ...]] = {
    "shared": (
        "datasite_setup",
        "datasite_setup.errors",
        "datasite_setup.private_file",
        "datasite_setup.dataset_contract",
        "datasite_setup.progress",
        "datasite_setup.terminal",
    ),
    "converter": ("datasite_setup.convert",),
    "policies": ("policies",),
    "site": ("datasite_setup.site", "datasite_setup.cli"),
    "researcher": ("researcher",),
}
ORDER = list(LAYERS)
# What each layer may import, besides itself: a subset of the layers below it.
MAY_IMPORT: dict[str, set[str]] = {
    "shared": set(),
    "converter": {"shared"},
    "policies": {"shared"},
    "site": {"shared", "converter", "policies"},
    "researcher": {"shared", "policies"},
}
# Another top-level package is reached only through its public face.
PUBLIC_FACES = {"datasite_setup", "policies", "researcher"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def product_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def layer_of(module: str) -> str:
    best, best_len = None, -1
    for layer, prefixes in LAYERS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = layer, len(prefix)
    assert best is not None, f"{module} is in no declared layer: add it to LAYERS"
    return best


def imports_of(module: str, path: Path, known: set[str]) -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, imported module, names) for every import of a product module in ``path``."""
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = tuple(alias.name for alias in node.names)
            submodules = [f"{base}.{name}" for name in names if f"{base}.{name}" in known]
            if submodules:
                found += [(node.lineno, sub, ()) for sub in submodules]
            if len(submodules) < len(names):
                found.append((node.lineno, base, tuple(n for n in names if f"{base}.{n}" not in known)))
    return [(line, target, names) for line, target, names in found if target.split(".")[0] in PACKAGES]


def graph() -> dict[str, list[tuple[int, str, tuple[str, ...]]]]:
    modules = product_modules()
    known = set(modules)
    return {module: imports_of(module, path, known) for module, path in modules.items()}


def test_every_product_module_is_in_a_layer() -> None:
    for module in product_modules():
        layer_of(module)


def test_the_declared_dependencies_follow_the_layer_order() -> None:
    for layer, allowed in MAY_IMPORT.items():
        assert all(ORDER.index(other) < ORDER.index(layer) for other in allowed), layer


def test_no_import_runs_against_the_layer_order() -> None:
    wrong = []
    for module, imports in graph().items():
        layer = layer_of(module)
        for line, target, _ in imports:
            target_layer = layer_of(target)
            if target_layer != layer and target_layer not in MAY_IMPORT[layer]:
                wrong.append(f"{module}:{line} ({layer}) imports {target} ({target_layer})")
    assert wrong == [], "\n".join(wrong)


def test_other_packages_are_reached_only_through_their_public_face() -> None:
    modules = product_modules()
    wrong = []
    for module, imports in graph().items():
        for line, target, names in imports:
            top = target.split(".")[0]
            if top == module.split(".")[0]:
                continue
            if target not in PUBLIC_FACES:
                wrong.append(f"{module}:{line} imports {target}: use `from {top} import ...`")
                continue
            exported = _all_of(modules[target])
            hidden = [name for name in names if name not in exported]
            if hidden:
                wrong.append(
                    f"{module}:{line} imports {hidden} from {target}, which does not export them (__all__)"
                )
    assert wrong == [], "\n".join(wrong)


def _all_of(path: Path) -> set[str]:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


def test_public_faces_export_only_names_they_define() -> None:
    for face in PUBLIC_FACES:
        namespace: dict = {}
        path = product_modules()[face]
        exported = _all_of(path)
        assert exported, f"{face}/__init__.py has no __all__"
        module = __import__(face)
        namespace = vars(module)
        missing = sorted(name for name in exported if name not in namespace)
        assert missing == [], f"{face}.__all__ names {missing}, which it does not define"


def test_the_import_graph_has_no_cycle() -> None:
    edges = {module: sorted({target for _, target, _ in imports}) for module, imports in graph().items()}
    cycle = _find_cycle(edges)
    assert cycle is None, " -> ".join(cycle or [])


def _find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in edges.get(node, []):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


# --- the checker itself must be able to fail ---------------------------------------------------


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    source = "def later():\n    from researcher.job import FedAvgJob\n"
    (tmp_path / "m.py").write_text(source)
    imports = imports_of("researcher.results", tmp_path / "m.py", {"researcher.job"})
    assert [target for _, target, _ in imports] == ["researcher.job"]
    edges = {"researcher.results": ["researcher.job"], "researcher.job": ["researcher.results"]}
    cycle = _find_cycle(edges)
    assert (
        cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"researcher.results", "researcher.job"}
    )
    assert _find_cycle({"researcher.results": ["researcher.job"], "researcher.job": []}) is None


@pytest.mark.parametrize(
    ("module", "target", "allowed"),
    [
        ("policies.request_review", "researcher", False),
        ("researcher.federation", "datasite_setup.site.ingest", False),
        ("policies.secure_aggregation", "datasite_setup", True),
        ("datasite_setup.convert.pipeline", "policies", False),
        ("datasite_setup.site.serve", "policies", True),
    ],
)
def test_the_layer_rule_tells_allowed_from_refused(module: str, target: str, allowed: bool) -> None:
    layer, target_layer = layer_of(module), layer_of(target)
    assert (target_layer == layer or target_layer in MAY_IMPORT[layer]) is allowed
