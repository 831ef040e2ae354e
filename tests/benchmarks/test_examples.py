"""Every ``Examples`` section in ``benchmarks/`` runs, as ``tests/test_docstring_examples.py`` does for the product."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def modules_with_examples() -> list[str]:
    found = []
    for path in sorted((ROOT / "benchmarks").rglob("*.py")):
        if ">>>" in path.read_text():
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found.append(".".join(parts))
    return found


def test_the_harness_has_examples() -> None:
    assert {"benchmarks.harness.machine", "benchmarks.harness.figures"} <= set(modules_with_examples())


@pytest.mark.parametrize("name", modules_with_examples())
def test_examples_run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.attempted > 0, f"{name}: '>>>' in the source but no example was collected"
    assert result.failed == 0, (
        f"{name}: {result.failed} of {result.attempted} example lines failed (run doctest -v)"
    )
