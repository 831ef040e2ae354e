"""Contained execution at a site: how one approved call reaches its sandbox worker, and what comes back.

``ContainedCalls`` is the site's side of issue 10's design, free of PySyft (the
PySyft glue in ``syft_patches`` resolves a call's inputs and hands them here):

- the site's ``WorkerPool`` (``sandbox.runner``) with the limits of the site's
  ``[sandbox]`` policy; at start-up ``probe`` confines a worker and runs a trivial
  call, so a site whose kernel or container cannot confine says so before it
  serves (fail closed: it then refuses every call);
- a job's asset inputs are the read-only ``.npy`` maps written at ingest
  (``asset_maps``), opened by the site and handed to the worker as descriptors;
  the researcher's own inputs (weights, round, cohort) and the site's (``privacy``,
  ``device``) cross in ``wire``'s format;
- at a DP-SGD site the noise, clipping and optimizer step stay here
  (``policies.SiteDescent``): the worker only answers for per-sample gradients,
  and what is released is the site's own iterate;
- a call past its limits (time, memory, CPU) or a worker that dies becomes a
  refusal the researcher reads and the audit log records; code that raises is a
  failed run (its traceback goes to the owner's log only).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasite_setup.site.asset_maps import AssetMap, load_asset_index, open_map
from datasite_setup.site.sandbox.runner import (
    CallAborted,
    CodeFailed,
    SandboxUnavailable,
    WorkerPool,
    WorkerSettings,
)
from datasite_setup.site.sandbox.worker import read_paths
from policies import ReleaseRefused, Runner, RunOutput, SandboxSettings, SiteDescent

__all__ = ["ContainedCalls", "Probe", "default_threads", "device_for", "unconfined_refusal"]

log = logging.getLogger("fedimg.sandbox")
_PROBE_SOURCE = "def fedimg_probe(x):\n    return {'x': x + 1}\n"
_DESCENT_SETTINGS = ("lr", "optimizer", "momentum", "mu")


def default_threads() -> int:
    """Cores this process may use (its CPU affinity), the default of ``[sandbox] threads = 0``.

    Examples
    --------
    >>> default_threads() >= 1
    True
    """
    return max(1, len(os.sched_getaffinity(0)))


@dataclass(frozen=True)
class Probe:
    """What the start-up probe established: the Landlock ABI and how many system calls seccomp refuses."""

    landlock_abi: int
    denied_syscalls: int

    def describe(self) -> str:
        """One line for the site's log and ``fedimg status``."""
        return f"Landlock ABI {self.landlock_abi}, seccomp refusing {self.denied_syscalls} system calls"


class ContainedCalls:
    """The sandbox workers of one site, and the glue from an approved call to a worker's answer.

    Parameters
    ----------
    state_dir : Path
        The site's state dir: no worker may read it (the pool refuses to start if a
        path workers keep readable contains it).
    sandbox : SandboxSettings
        The site's ``[sandbox]`` policy (``mode`` must be ``"on"``).
    threads : int
        torch threads per worker when the policy says 0 (``fedimg up`` divides the cores).
    max_result_mb : float
        The largest answer a worker may send (the site's ``[release] max_output_mb``).

    Raises
    ------
    SandboxUnavailable
        When the state dir lies beneath a path workers may read.
    """

    def __init__(
        self, state_dir: Path, sandbox: SandboxSettings, *, threads: int, max_result_mb: float
    ) -> None:
        if not sandbox.confined:
            raise ValueError("ContainedCalls needs [sandbox] mode = 'on'")
        self.state_dir = Path(state_dir)
        self.sandbox = sandbox
        self.threads = sandbox.threads or threads
        self.device, devices = device_for(sandbox.device)
        self.pool = WorkerPool(
            WorkerSettings(
                seconds_per_call=float(sandbox.seconds_per_call),
                memory_mb=sandbox.memory_mb,
                threads=self.threads,
                max_result_mb=max_result_mb,
                devices=devices,
            ),
            forbidden=[self.state_dir],
            python=sys.executable,
        )
        self.pool.check_readable_paths(read_paths())
        self.index: dict[str, AssetMap] = {}
        self.unavailable = ""  # why the site runs no code, once the probe failed
        self._announced: set[str] = set()
        self.reload_index()

    def refuse_all(self, reason: str) -> None:
        """Refuse every call from now on (the probe failed): fail closed, with the reason."""
        self.unavailable = reason

    def reload_index(self) -> None:
        """Read the asset maps' index (after an ingest has written it)."""
        self.index = load_asset_index(self.state_dir)

    def asset(self, action_id: str) -> AssetMap | None:
        """The read-only maps of the dataset asset with this action id, or None for anything else."""
        return self.index.get(action_id)

    def open_map(self, entry: AssetMap) -> np.ndarray:
        """The private data of ``entry``, memory-mapped read-only in this process (for its length)."""
        return open_map(entry)

    def probe(self) -> Probe:
        """Confine a worker and run a trivial call in it: the site's proof that it can run code safely.

        Returns
        -------
        Probe
            The confinement in force.

        Raises
        ------
        SandboxUnavailable
            When a worker cannot be started or confined, or the trivial call fails.
        """
        key = "fedimg-probe"
        try:
            worker = self.pool.worker_for(key, source=_PROBE_SOURCE, function="fedimg_probe", assets={})
            answer = worker.call({"x": 1})
        except (CallAborted, CodeFailed) as exc:
            raise SandboxUnavailable(f"the sandbox probe failed: {exc}") from exc
        finally:
            self.pool.end_job(key)
        if answer != {"x": 2}:
            raise SandboxUnavailable(f"the sandbox probe answered {answer!r}")
        confinement = worker.confinement
        self.pool.prewarm()
        return Probe(int(confinement["landlock_abi"]), len(confinement["denied"]))

    def start(self, key: str, *, source: str, function: str, assets: dict[str, AssetMap]) -> None:
        """Make sure job ``key`` has a confined worker (before its run is counted or charged).

        Raises
        ------
        SandboxUnavailable
            No worker could be confined: the call must be refused without running.
        CodeFailed
            The approved code does not compile or define ``function``.
        """
        if self.unavailable:
            raise SandboxUnavailable(self.unavailable)
        worker = self.pool.worker_for(key, source=source, function=function, assets=_files(assets))
        if key not in self._announced:  # one line per job's worker: what the sandbox cost it
            self._announced.add(key)
            timings = worker.timings
            log.info(
                "sandbox: job %s has its worker (waited %.3f s for the warm spare, spawned in %.2f s off "
                "the critical path; mapped its inputs, confined itself and compiled the code in %.3f s)",
                key.split(":")[0],
                timings.get("wait_seconds", 0.0),
                timings.get("spawn_seconds", 0.0),
                timings.get("setup_seconds", 0.0),
            )

    def runner(
        self, key: str, *, source: str, function: str, assets: dict[str, AssetMap], config: dict | None
    ) -> Runner:
        """The callable the enforcement chain's run step calls: one call of job ``key`` in its worker.

        Parameters
        ----------
        key : str
            The job (the approved code and its asset inputs).
        source, function : str
            The approved code and the function each call runs.
        assets : dict of str to AssetMap
            Input name → the asset's read-only maps.
        config : dict or None
            The job template's ``CONFIG`` (None for other code): the optimizer settings a DP-SGD
            site's own descent uses.

        Returns
        -------
        Runner
            Takes the call's arguments (as the earlier steps left them) and returns a ``RunOutput``;
            raises ``ReleaseRefused`` when the call was stopped or no worker could be confined.
        """

        def run(arguments: dict[str, Any]) -> RunOutput:
            inputs = {name: value for name, value in arguments.items() if name not in assets}
            if self.device != "cpu" and inputs.get("privacy") is None:  # the site's DP-SGD half is CPU-only
                inputs["device"] = self.device
            descent = _descent(inputs, config, arguments)
            try:
                worker = self.pool.worker_for(key, source=source, function=function, assets=_files(assets))
                result = worker.call(inputs, on_request=descent.answer if descent else None)
            except CodeFailed as failure:
                return RunOutput(None, True, failure.details.get("traceback", str(failure)))
            except CallAborted as stopped:
                raise ReleaseRefused(f"the call was stopped: {stopped}") from None
            except SandboxUnavailable as unavailable:
                raise ReleaseRefused(unconfined_refusal(unavailable)) from None
            if descent is not None:
                result = descent.release(result)
            return RunOutput(result)

        return run

    def end_job(self, key: str) -> None:
        """Stop job ``key``'s worker: its approved runs are used up."""
        self.pool.end_job(key)

    def close(self) -> None:
        """Stop every worker."""
        self.pool.close()


def device_for(setting: str) -> tuple[str, tuple[str, ...]]:
    """The device the job template trains on, and the device files its workers may open.

    ``"cuda"`` with the GPU's device files (``/dev/nvidia*``) only when the policy says
    ``device = "auto"`` and torch sees a GPU here; otherwise ``"cpu"`` and no device file.

    Examples
    --------
    >>> device_for("cpu")
    ('cpu', ())
    """
    if setting != "auto" or not torch.cuda.is_available():
        return "cpu", ()
    return "cuda", tuple(sorted(str(path) for path in Path("/dev").glob("nvidia*")))


def unconfined_refusal(reason: BaseException | str) -> str:
    """What the researcher reads when a site cannot confine code (it runs none).

    Examples
    --------
    >>> unconfined_refusal("Landlock is not available")
    'this site runs no code: its sandbox could not be established (Landlock is not available)'
    """
    return f"this site runs no code: its sandbox could not be established ({reason})"


def _files(assets: dict[str, AssetMap]) -> dict[str, Path]:
    return {name: entry.private for name, entry in assets.items()}


def _descent(inputs: dict[str, Any], config: dict | None, arguments: dict[str, Any]) -> SiteDescent | None:
    """At a DP-SGD site (the chain added ``privacy``): the site's half of the private descent."""
    privacy = inputs.get("privacy")
    if privacy is None:
        return None
    if config is None:  # the chain adds privacy to template calls only; anything else is refused
        raise ReleaseRefused("DP-SGD runs only the job template")
    settings = {name: config[name] for name in _DESCENT_SETTINGS}
    return SiteDescent.for_call(privacy, inputs["weights"], settings, len(arguments["train_labels"]))
