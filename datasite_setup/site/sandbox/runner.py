"""The site's side of the sandbox: one confined worker per job, a warm one waiting for the next job.

``WorkerPool`` spawns workers from a clean interpreter (``python -I``; never a fork
of the threaded server), each with an empty environment, its own empty folder (it
may not write even there), its own process group and one end of a socket pair as
its only descriptor. A spare worker is kept warm (interpreter started, torch
imported) so a new job does not wait for it; the next spare starts when a job ends.
A job's worker serves that job's calls and nothing else; it is stopped (SIGSTOP)
between its calls, and killed — its whole process group — when the job has used its
approved runs, when a call runs past the wall-clock limit, or when it has been idle
too long. Nothing survives from one job to the next: the next job gets a new process.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasite_setup.site.sandbox.wire import WireError, receive, send

__all__ = ["CallAborted", "CodeFailed", "JobWorker", "SandboxUnavailable", "WorkerPool", "WorkerSettings"]

log = logging.getLogger("fedimg.sandbox")
WARM_TIMEOUT = 180.0  # seconds for a worker to start and import torch on a busy machine
SETUP_TIMEOUT = 60.0  # seconds for a worker to map its inputs and confine itself


class SandboxUnavailable(RuntimeError):
    """The sandbox could not be established: the site runs no code (fail closed)."""


class CallAborted(RuntimeError):
    """A call did not finish: past its time limit, killed by a limit, or its worker died."""


class CodeFailed(RuntimeError):
    """The approved code raised; ``details`` has its type, message and traceback (for the owner's log)."""

    def __init__(self, details: dict[str, str]) -> None:
        super().__init__(f"{details.get('type', 'Error')}: {details.get('message', '')}")
        self.details = details


@dataclass(frozen=True)
class WorkerSettings:
    """Limits for every worker of a site (``[sandbox]`` in the site's policy).

    Parameters
    ----------
    seconds_per_call : float
        Wall-clock limit of one call; the worker's process group is killed past it.
    memory_mb : int
        Address-space limit of a worker.
    threads : int
        torch threads in a worker.
    max_result_mb : float
        The largest answer a worker may send.
    cpu_seconds : int
        CPU-time limit of a worker's whole job.
    idle_seconds : float
        A job's worker idle this long is stopped (the next call starts a new one).
    require_landlock_abi : int
        The lowest Landlock ABI a worker accepts (4 and later also refuse TCP).
    devices : tuple of str
        Device files a worker may open for reading and writing (a GPU's, when the site's
        policy says ``device = "auto"`` and one is visible); none by default.
    """

    seconds_per_call: float = 900.0
    memory_mb: int = 8192
    threads: int = 1
    max_result_mb: float = 64.0
    cpu_seconds: int = 24 * 3600
    idle_seconds: float = 900.0
    require_landlock_abi: int = 1
    devices: tuple[str, ...] = ()


@dataclass
class _Process:
    popen: subprocess.Popen[bytes]
    sock: socket.socket
    folder: Path
    spawn_seconds: float = 0.0  # interpreter start + torch import (off a job's critical path when warm)

    def pause(self, stopped: bool) -> None:
        """Stop (SIGSTOP) or continue (SIGCONT) the worker's process group.

        A job's worker is stopped whenever it is not serving a call, so a thread the
        code left running gets no CPU between calls (the wall-clock limit covers calls).
        """
        try:
            os.killpg(self.popen.pid, signal.SIGSTOP if stopped else signal.SIGCONT)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)  # its process group: nothing it started survives
        except ProcessLookupError:
            pass
        self.popen.wait()
        self.sock.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class JobWorker:
    """A confined worker serving one job's calls."""

    key: str
    process: _Process
    settings: WorkerSettings
    confinement: dict[str, Any]
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)
    closed: bool = False
    # how this job's worker came to be: its spawn (interpreter + torch), the job's wait for it, and the
    # job's own setup (inputs mapped, Landlock, seccomp, code compiled)
    timings: dict[str, float] = field(default_factory=dict)

    def call(self, inputs: dict[str, Any], on_request: Callable[[Any], Any] | None = None) -> Any:
        """Run the job's function once on the worker's inputs and ``inputs``; return its result tree.

        While the call runs, the worker may ask the site mid-call (an ``"ask"`` message, e.g. DP-SGD's
        per-step request to the site's ``SiteDescent``): each ask is handed to ``on_request`` and its
        return value sent back as the ``"answer"``. Each ask is capped like a result
        (``max_result_mb``); the wall-clock limit covers the whole call, asks and answers included.

        Parameters
        ----------
        inputs : dict
            The researcher-owned inputs (JSON values and numeric arrays).
        on_request : callable, optional
            ``on_request(ask_tree) -> answer_tree`` (JSON values and numeric arrays). Without it, an
            ask is a protocol error: the call is aborted.

        Returns
        -------
        object
            What the function returned, as JSON values and NumPy arrays.

        Raises
        ------
        CodeFailed
            The function raised.
        CallAborted
            The call ran past ``seconds_per_call``, the worker died or broke the protocol (an ask with
            no ``on_request``), or ``on_request`` failed; the worker is gone.
        """
        with self.lock:
            if self.closed:
                raise CallAborted("this job's worker was stopped")
            sock = self.process.sock
            deadline = time.monotonic() + self.settings.seconds_per_call
            self.process.pause(False)
            try:
                send(sock, "call", inputs)
                while True:
                    kind, tree = self._receive(sock, deadline)
                    if kind != "ask":
                        break
                    if on_request is None:
                        self._close()
                        raise CallAborted(
                            "the worker asked the site mid-call, which this call does not allow"
                        )
                    send(sock, "answer", self._answer(on_request, tree))
            except TimeoutError:
                self._close()
                raise CallAborted(
                    f"the call ran past this site's limit of {self.settings.seconds_per_call:g} s"
                ) from None
            except (OSError, EOFError, WireError) as exc:
                code = self.process.popen.poll()
                self._close()
                raise CallAborted(_death(code, exc)) from None
            finally:
                self.last_used = time.monotonic()
                self.process.pause(True)  # between calls nothing of the job runs: no thread left behind
            if kind == "error":
                raise CodeFailed(tree if isinstance(tree, dict) else {"message": str(tree)})
            if kind != "result":
                self._close()
                raise CallAborted(f"the worker answered {kind!r} instead of a result")
            return tree

    def _receive(self, sock: socket.socket, deadline: float) -> tuple[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        kind, tree, fds = receive(sock, max_bytes=int(self.settings.max_result_mb * 2**20))
        for descriptor in fds:  # a worker hands the site no descriptor: never keep one open here
            os.close(descriptor)
        return kind, tree

    def _answer(self, on_request: Callable[[Any], Any], tree: Any) -> Any:
        try:
            return on_request(tree)
        except Exception as exc:  # the site could not answer: the worker would wait for ever
            self._close()
            raise CallAborted(f"the site could not answer the worker's request ({exc})") from exc

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.process.kill()

    def close(self) -> None:
        """Stop the worker (its whole process group) and remove its folder."""
        with self.lock:
            self._close()


def _death(code: int | None, exc: BaseException) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        reason = {"SIGXCPU": "its CPU-time limit", "SIGKILL": "a limit", "SIGSEGV": "a crash"}.get(name, name)
        return f"the worker was stopped by {reason} ({name})"
    if code is not None:
        return f"the worker exited with code {code}"
    return f"the worker broke the protocol ({exc})"


class WorkerPool:
    """Confined workers for one site: a warm spare, and one worker per running job.

    Parameters
    ----------
    settings : WorkerSettings
        Limits for every worker.
    forbidden : list of Path
        Folders a worker must not be able to read (the site's state dir): the pool
        refuses to start if any lies beneath a path workers keep readable.
    python : str
        The interpreter (the site's own by default).
    """

    def __init__(
        self, settings: WorkerSettings, *, forbidden: list[Path], python: str = sys.executable
    ) -> None:
        self.settings = settings
        self.python = python
        self.forbidden = [Path(path).resolve() for path in forbidden]
        self._jobs: dict[str, JobWorker] = {}
        self._lock = threading.Lock()
        self._spare: _Process | None = None
        self._spare_ready = threading.Event()
        self._spare_error: BaseException | None = None
        self._closed = False
        self._warming_thread: threading.Thread | None = None

    # -- spawning -------------------------------------------------------------------------------

    def _spawn(self) -> _Process:
        started = time.perf_counter()
        site_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        folder = Path(tempfile.mkdtemp(prefix="fedimg-worker-"))
        try:
            popen = subprocess.Popen(
                [self.python, "-I", "-m", "datasite_setup.site.sandbox.worker", str(worker_end.fileno())],
                env={},  # nothing of the site's environment: no secret, no database URL
                cwd=folder,
                pass_fds=(worker_end.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, killed as a whole
            )
        except OSError as exc:
            site_end.close()
            shutil.rmtree(folder, ignore_errors=True)
            raise SandboxUnavailable(f"cannot start a worker: {exc}") from exc
        finally:
            worker_end.close()
        process = _Process(popen, site_end, folder)
        try:
            site_end.settimeout(WARM_TIMEOUT)
            kind, _, _ = receive(site_end, max_bytes=2**16)
        except (OSError, EOFError, WireError) as exc:
            process.kill()
            raise SandboxUnavailable(f"a worker did not start ({_death(popen.poll(), exc)})") from exc
        if kind != "warm":
            process.kill()
            raise SandboxUnavailable(f"a worker answered {kind!r} instead of starting")
        process.spawn_seconds = time.perf_counter() - started
        return process

    def _warm_spare(self) -> None:
        try:
            spare = self._spawn()
        except BaseException as exc:  # the next job reports it: the site refuses to run code
            self._spare_error = exc
        else:
            with self._lock:
                if self._closed:
                    spare.kill()
                    return
                self._spare = spare
        finally:
            self._spare_ready.set()

    def prewarm(self) -> None:
        """Start the warm spare in the background (idempotent)."""
        with self._lock:
            if self._closed or self._spare is not None or self._warming():
                return
            self._spare_ready.clear()
            self._spare_error = None
            self._warming_thread = threading.Thread(
                target=self._warm_spare, name="fedimg-worker-warm", daemon=True
            )
            self._warming_thread.start()

    def _warming(self) -> bool:
        return self._warming_thread is not None and self._warming_thread.is_alive()

    def _take_spare(self) -> _Process:
        self.prewarm()
        if not self._spare_ready.wait(WARM_TIMEOUT):
            raise SandboxUnavailable(f"no worker started within {WARM_TIMEOUT:g} s")
        with self._lock:
            spare, self._spare = self._spare, None
            error = self._spare_error
        if spare is None:
            raise SandboxUnavailable(str(error) if error else "no worker could be started")
        # The next spare starts when this job ends (end_job, idle reaping), not now: a site holds one idle
        # interpreter with torch (~350 MB), not two, while a job runs. Jobs one after another still find a
        # warm worker; a job that starts while another runs waits for its spawn.
        return spare

    # -- jobs ----------------------------------------------------------------------------------

    def check_readable_paths(self, readable: list[Path]) -> None:
        """Refuse when a forbidden folder (the state dir) lies beneath a path workers keep readable."""
        for secret in self.forbidden:
            for path in readable:
                if secret == path.resolve() or path.resolve() in secret.parents:
                    raise SandboxUnavailable(
                        f"{secret} lies beneath {path}, which workers may read: move the state dir"
                    )

    def worker_for(self, key: str, *, source: str, function: str, assets: dict[str, Path]) -> JobWorker:
        """The worker of job ``key``, started (and confined) on its first call.

        Parameters
        ----------
        key : str
            The job (the approved code's id).
        source : str
            The approved code.
        function : str
            The function in it that each call runs.
        assets : dict of str to Path
            Input name → read-only ``.npy`` file; opened here and handed over as descriptors.

        Returns
        -------
        JobWorker
            A confined worker ready for calls.

        Raises
        ------
        SandboxUnavailable
            No worker could be started or confined: run no code.
        CodeFailed
            The code does not compile or does not define ``function``.
        """
        self._reap_idle()
        with self._lock:
            existing = self._jobs.get(key)
            if existing is not None and not existing.closed:
                return existing
        asked = time.perf_counter()
        process = self._take_spare()
        waited = time.perf_counter() - asked
        try:
            confinement = self._start_job(process, source, function, assets)
        except BaseException:
            process.kill()
            raise
        process.pause(True)  # the code's definitions have run (a default argument may start a thread)
        worker = JobWorker(key, process, self.settings, confinement)
        worker.timings = {
            "spawn_seconds": process.spawn_seconds,
            "wait_seconds": waited,
            "setup_seconds": time.perf_counter() - asked - waited,
        }
        with self._lock:
            self._jobs[key] = worker
        return worker

    def _start_job(
        self, process: _Process, source: str, function: str, assets: dict[str, Path]
    ) -> dict[str, Any]:
        descriptors = [os.open(path, os.O_RDONLY | os.O_CLOEXEC) for path in assets.values()]
        job = {
            "source": source,
            "function": function,
            "assets": list(assets),
            "threads": self.settings.threads,
            "limits": {"memory_mb": self.settings.memory_mb, "cpu_seconds": self.settings.cpu_seconds},
            "require_landlock_abi": self.settings.require_landlock_abi,
            "devices": list(self.settings.devices),
            "max_call_bytes": int(self.settings.max_result_mb * 2**20),
        }
        try:
            send(process.sock, "job", job, descriptors)
        finally:
            for descriptor in descriptors:
                os.close(descriptor)
        try:
            process.sock.settimeout(SETUP_TIMEOUT)
            kind, tree, _ = receive(process.sock, max_bytes=2**20)
        except (OSError, EOFError, WireError) as exc:
            raise SandboxUnavailable(
                f"a worker failed while confining itself ({_death(process.popen.poll(), exc)})"
            ) from exc
        if kind == "refused":
            raise SandboxUnavailable(f"the sandbox could not be established: {tree.get('message', tree)}")
        if kind == "error":
            raise CodeFailed(tree)
        if kind != "ready":
            raise SandboxUnavailable(f"a worker answered {kind!r} instead of 'ready'")
        return dict(tree)

    def end_job(self, key: str) -> None:
        """Stop job ``key``'s worker (its approved runs are used up)."""
        with self._lock:
            worker = self._jobs.pop(key, None)
        if worker is not None:
            worker.close()
            self.prewarm()  # the next job's worker, off its critical path

    def _reap_idle(self) -> None:
        now = time.monotonic()
        with self._lock:
            idle = [
                k for k, w in self._jobs.items() if w.closed or now - w.last_used > self.settings.idle_seconds
            ]
            stale = [self._jobs.pop(key) for key in idle]
        for worker in stale:
            worker.close()
        if stale:
            self.prewarm()

    def close(self) -> None:
        """Stop every worker and the spare."""
        with self._lock:
            self._closed = True
            workers, self._jobs = list(self._jobs.values()), {}
            spare, self._spare = self._spare, None
        for worker in workers:
            worker.close()
        if spare is not None:
            spare.kill()
