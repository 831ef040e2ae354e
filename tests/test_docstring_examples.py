"""Every ``Examples`` section in the product packages runs, and says what it shows.

A docstring example that no one runs goes stale; this runs them all with ``doctest``.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("datasite_setup", "policies", "researcher")


def modules_with_examples() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if ">>>" in path.read_text():
                parts = list(path.relative_to(ROOT).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts.pop()
                found.append(".".join(parts))
    return found


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


def test_the_runner_sees_a_failing_example() -> None:
    broken = '''
def add(a, b):
    """
    >>> add(1, 1)
    3
    """
    return a + b
'''
    namespace: dict = {}
    exec(compile(broken, "<broken>", "exec"), namespace)
    runner = doctest.DocTestRunner(verbose=False)
    for test in doctest.DocTestFinder().find(namespace["add"], "add", globs=namespace):
        runner.run(test, out=lambda _: None)
    assert runner.failures == 1
