"""notebooks/researcher.ipynb and notebooks/data_owner.ipynb, executed top to bottom (nbclient)
against real datasites started here with ``fedimg up`` (always stopped with ``fedimg down``).

The researcher notebook runs in a background thread: it blocks at ``wait_for_approval``
until the data-owner notebook, running meanwhile, finds and approves its requests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.support.datasites import REPO, convert_sample, free_port

NOTEBOOKS = REPO / "notebooks"
ROUNDS = 2
CELL_TIMEOUT_S = 300  # per cell; the researcher's approval wait is the longest
WAIT_TIMEOUT_S = 240  # the notebooks' own waits (approval, pending request), below the cell timeout
JOIN_TIMEOUT_S = 600


def fedimg(*args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FEDIMG_ADMIN_")}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "datasite_setup.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def federation_toml(tmp_path: Path):
    """Two hospitals (16 px digits) on free loopback ports with one researcher, running."""
    convert_sample(tmp_path / "federated", clients=2, size=16)
    lines = ["[federation]", 'data = "federated"', 'state_root = "state"', ""]
    for name in ("client_0", "client_1"):
        lines += ["[[site]]", f'name = "{name}"', f"port = {free_port()}", ""]
    lines += ["[[researcher]]", 'email = "ada@university.example"', 'name = "Ada Lovelace"']
    path = tmp_path / "federation.toml"
    path.write_text("\n".join(lines) + "\n")
    try:
        started = fedimg("up", str(path))
        assert started.returncode == 0, started.stdout + started.stderr
        yield path
    finally:
        fedimg("down", str(path))


def kernel_env(**settings: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("FEDIMG_ADMIN_", "FEDIMG_NOTEBOOK_"))
    }
    return {**env, **settings}


def execute(name: str, env: dict[str, str]) -> nbformat.NotebookNode:
    """Run a notebook top to bottom in a fresh python3 kernel (this interpreter), cwd notebooks/."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute(env=env)
    return notebook


def texts(notebook: nbformat.NotebookNode, marker: str) -> str:
    """The plain-text outputs of the code cells whose source contains ``marker``."""
    found = []
    for cell in notebook.cells:
        if cell.cell_type == "code" and marker in cell.source:
            for output in cell.outputs:
                found.append(output.get("text", "") or output.get("data", {}).get("text/plain", ""))
    return "\n".join(found)


def test_data_owner_approves_and_researcher_trains(federation_toml: Path, tmp_path: Path) -> None:
    for name in ("researcher.ipynb", "data_owner.ipynb"):  # committed clean
        stored = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(stored)
        assert stored.metadata.kernelspec.name == "python3"
        assert all(
            not cell.get("outputs") and cell.get("execution_count") is None
            for cell in stored.cells
            if cell.cell_type == "code"
        ), name

    out = tmp_path / "run"
    researcher_env = kernel_env(
        FEDIMG_NOTEBOOK_CREDENTIALS=str(
            tmp_path / "state" / "secrets" / "researchers" / "ada@university.example.json"
        ),
        FEDIMG_NOTEBOOK_ROUNDS=str(ROUNDS),
        FEDIMG_NOTEBOOK_OUT=str(out),
        FEDIMG_NOTEBOOK_CHECKPOINT=str(tmp_path / "checkpoint"),
        FEDIMG_NOTEBOOK_APPROVAL_TIMEOUT=str(WAIT_TIMEOUT_S),
    )
    owner_env = kernel_env(
        FEDIMG_NOTEBOOK_CONFIG=str(federation_toml),
        FEDIMG_NOTEBOOK_REVIEW_TIMEOUT=str(WAIT_TIMEOUT_S),
        FEDIMG_NOTEBOOK_APPROVE="passing",  # the notebook approves nothing by itself: this stands in for a person
    )

    outcome: dict = {}

    def run_researcher() -> None:
        try:
            outcome["notebook"] = execute("researcher.ipynb", researcher_env)
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    started = time.monotonic()
    researcher = threading.Thread(target=run_researcher, name="researcher-notebook", daemon=True)
    researcher.start()
    owner = execute("data_owner.ipynb", owner_env)
    researcher.join(JOIN_TIMEOUT_S)
    assert not researcher.is_alive(), (
        f"researcher.ipynb still running after {time.monotonic() - started:.0f} s"
    )
    if "error" in outcome:
        raise outcome["error"]
    notebook = outcome["notebook"]

    review = texts(owner, '"show"')
    assert review.count("[ok] execution limit 3 = declared rounds 2 + 1") == 2  # rounds + 1, at both sites
    assert review.count("[ok] private inputs are this site's four assets") == 2
    assert (
        "def fedimg_digits_cnn_" in review
        and ": matches" in review
        and "static review: no findings" in review
    )
    decisions = texts(owner, '"approve"')
    assert decisions.count(": approved by the shared admin account") == 2, decisions
    assert decisions.count("approved") >= 4, decisions  # and the sites' own decision records

    table = texts(notebook, "job.run(")
    assert "val_accuracy" in table and "2/2" in table
    for round_number in range(ROUNDS + 1):
        assert f"\n{round_number} " in table

    for name in ("model.pt", "history.json", "accuracy.png", "loss.png"):
        assert (out / name).stat().st_size > 0, name
    history = json.loads((out / "history.json").read_text())
    accuracies = [record["evaluation"]["accuracy"] for record in history["rounds"]]
    assert [record["round"] for record in history["rounds"]] == list(range(ROUNDS + 1))
    assert accuracies[-1] > accuracies[0] + 0.2, accuracies
