"""The sandbox worker: a clean interpreter that runs one job's approved code, confined, and nothing else.

Started by the site (``python -I -m datasite_setup.site.sandbox.worker FD``) with an
empty environment, a private empty working directory and one socket (``FD``). It
imports what approved code may use while it waits (so a job does not wait for
torch), then takes one job:

1. the job message: the site function's source and name, the settings, and the
   file descriptors of the job's read-only ``.npy`` inputs, which it maps;
2. confinement (``confine``): limits, Landlock, seccomp — before any researcher
   code is compiled;
3. calls, each answered with a result or an error, until the site says stop or
   closes the socket. During a call the worker may ask the site and wait for its
   answer (``ask_site``): DP-SGD's ``train_private`` does, once per step, so the
   sampling, clipping, noise and step stay in the site process.

Only ``wire`` messages cross; the release rules still run in the site process.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.func
import torch.nn
import torch.nn.functional

import datasite_setup
import policies
from datasite_setup.site.sandbox.confine import Limits, confine
from datasite_setup.site.sandbox.wire import receive, send
from policies import use_remote_descent

__all__ = ["ask_site", "first_use_of_common_ops", "main", "read_paths"]

MAX_ERROR_CHARS = 4000
_SYSTEM_LIBRARIES = ("/usr/lib", "/lib", "/lib64", "/usr/lib64", "/usr/local/lib")
_DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom")


def read_paths() -> list[Path]:
    """What a worker keeps readable: its interpreter, installed packages, fedimg's packages, system libraries.

    Returns
    -------
    list of Path
        Existing paths only; nothing of a site's state dir, home folders, ``/etc``,
        ``/proc`` or other processes.
    """
    candidates = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix)}
    candidates |= {Path(module.__file__ or "").resolve().parent for module in (datasite_setup, policies)}
    candidates |= {Path(path) for path in _SYSTEM_LIBRARIES + _DEVICES}
    return sorted(path for path in candidates if path.exists())


def _map_npy(descriptor: int) -> np.ndarray:
    """A read-only memory map of the ``.npy`` file open at ``descriptor`` (no copy, no pickle)."""
    with os.fdopen(descriptor, "rb") as handle:
        handle.seek(0)  # a duplicate shares the file offset with the descriptor it was made from
        shape, fortran_order, dtype = _npy_header(handle)
        if dtype.hasobject:
            raise ValueError("an input array of objects")
        array = np.memmap(
            handle,
            dtype=dtype,
            mode="r",
            shape=shape,
            order="F" if fortran_order else "C",
            offset=handle.tell(),
        )
    return array


def _npy_header(handle: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    major, _ = np.lib.format.read_magic(handle)
    if major == 1:
        return np.lib.format.read_array_header_1_0(handle)
    return np.lib.format.read_array_header_2_0(handle)


def _load_function(source: str, name: str) -> Any:
    namespace: dict[str, Any] = {"__name__": "fedimg_site_function"}
    exec(compile(source, "<approved site function>", "exec"), namespace)  # the reason this process exists
    return namespace[name]


def _warm_up() -> None:
    # torch reads /proc/cpuinfo and starts its thread pool on the first operation: do it while that is allowed
    torch.ones(4, 4) @ torch.ones(4, 4)
    math.sqrt(1.0)
    # Nothing is writable once confined. tempfile checks (by writing) that a temp folder is usable the first
    # time it is asked and caches the answer; torch asks when it lazily imports torch._dynamo (under
    # torch.func's vmap/grad: DP-SGD) to build cache paths it never writes here. Ask, and import it, now.
    tempfile.gettempdir()
    per_sample = torch.func.vmap(torch.func.grad(lambda w, x: (w * x).sum()), in_dims=(None, 0))
    per_sample(torch.ones(2), torch.ones(3, 2))
    first_use_of_common_ops()


def first_use_of_common_ops() -> None:
    """Run a tiny model once through the ops a job's model commonly uses: forward, backward, a step.

    A process pays once for the first use of each op: torch loads its kernels' code pages
    (file-backed, ~16 MiB for a small CNN's convolutions, pooling, losses and optimizers) and
    builds its first-use structures (oneDNN's, the autograd engine's). A spare worker does it
    while it waits, so that cost is part of every site's idle memory, not of the next job. The
    tensors are tiny (a batch of 2 images of 8 px): nothing of their size is kept for the job.
    torch's random state is left as a fresh interpreter's, so unseeded code behaves the same.

    Examples
    --------
    >>> before = torch.random.get_rng_state()
    >>> first_use_of_common_ops()
    >>> bool(torch.equal(before, torch.random.get_rng_state()))
    True
    """
    nn, F = torch.nn, torch.nn.functional
    with torch.random.fork_rng(devices=[]):  # layer initialisation draws from the global generator
        model = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.1),
            nn.Linear(4 * 2 * 2, 3),
        )
        images = np.zeros((2, 3, 8, 8), dtype=np.uint8)  # as a job reads its maps: uint8, then float
        inputs = torch.as_tensor(np.array(images)).to("cpu", torch.float32) / 255.0
        targets = torch.as_tensor(np.array([0, 1]), dtype=torch.int64)
        sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for optimizer in (sgd, torch.optim.Adam(model.parameters())):
            optimizer.zero_grad()
            F.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            logits = model(inputs)
            F.nll_loss(F.log_softmax(logits, 1), targets, reduction="sum")
            confusion = np.zeros((3, 3), dtype=np.int64)
            np.add.at(confusion, (targets.numpy(), logits.argmax(1).numpy()), 1)


def _error(exc: BaseException) -> dict[str, str]:
    text = "".join(traceback.format_exception(exc))
    return {
        "type": type(exc).__name__,
        "message": str(exc)[:MAX_ERROR_CHARS],
        "traceback": text[-MAX_ERROR_CHARS:],
    }


def ask_site(sock: socket.socket, tree: Any, *, max_bytes: int) -> Any:
    """Ask the site mid-call and wait for its answer (DP-SGD: the site's ``SiteDescent`` answers).

    Parameters
    ----------
    sock : socket.socket
        The worker's socket to the site.
    tree : object
        The request: JSON values and numeric arrays (at most ``max_bytes`` on the site's side).
    max_bytes : int
        The largest answer accepted.

    Returns
    -------
    object
        The site's answer.

    Raises
    ------
    RuntimeError
        The site answered something other than an ``"answer"``.

    Examples
    --------
    >>> import socket
    >>> from datasite_setup.site.sandbox.wire import receive, send
    >>> site, worker = socket.socketpair()
    >>> send(site, "answer", {"step": 0})  # queued: the site answers what it will be asked
    >>> ask_site(worker, {"op": "begin"}, max_bytes=2**16)
    {'step': 0}
    >>> receive(site, max_bytes=2**16)[:2]
    ('ask', {'op': 'begin'})
    """
    send(sock, "ask", tree)
    kind, answer, fds = receive(sock, max_bytes=max_bytes)
    for descriptor in fds:
        os.close(descriptor)
    if kind != "answer":
        raise RuntimeError(f"the site answered {kind!r} to a request")
    return answer


def serve_job(sock: socket.socket) -> int:
    """Take one job from ``sock`` and answer its calls; the worker's whole life after warming up.

    Parameters
    ----------
    sock : socket.socket
        The socket the site handed over.

    Returns
    -------
    int
        The process exit code (0: stopped by the site; 3: the job could not be set up).
    """
    kind, job, fds = receive(sock, max_bytes=2**24)
    if kind != "job":
        return 3
    try:
        # the descriptors stay open: each call maps them afresh and unmaps them after (below)
        descriptors = dict(zip(job["assets"], fds, strict=True))
        for descriptor in descriptors.values():
            _map_npy(os.dup(descriptor))  # each input is a valid array before any researcher code runs
        torch.set_num_threads(int(job["threads"]))
        limits = Limits(**job["limits"])
        confinement = confine(
            read_paths(),
            # nothing is writable, not even its own folder (a worker could fill the disk file by file);
            # only a GPU's device files when the site allows one
            [Path(device) for device in job.get("devices", [])],
            limits,
            require_abi=int(job["require_landlock_abi"]),
        )
    except Exception as exc:  # any failure here means no confinement: refuse the job
        send(sock, "refused", _error(exc))
        return 3
    try:
        function = _load_function(job["source"], job["function"])
    except Exception as exc:  # researcher code that does not compile or define the function
        send(sock, "error", _error(exc))
        return 0
    send(
        sock, "ready", {"landlock_abi": confinement.landlock_abi, "denied": list(confinement.denied_syscalls)}
    )
    max_call_bytes = int(job["max_call_bytes"])
    while True:
        try:
            kind, call, _ = receive(sock, max_bytes=max_call_bytes)
        except EOFError:
            return 0
        if kind != "call":
            return 0
        # DP-SGD's descent stays at the site: train_private sends each step's request over this socket
        use_remote_descent(
            lambda tree: ask_site(sock, tree, max_bytes=max_call_bytes), max_ask_bytes=max_call_bytes
        )
        # Mapped per call and unmapped after it: the pages one call touched (a training call reads the whole
        # train split) do not stay in this worker's memory through the next call.
        assets = {name: _map_npy(os.dup(descriptor)) for name, descriptor in descriptors.items()}
        try:
            result = function(**assets, **call)
        except BaseException as exc:  # researcher code: all it raises is its own failure
            send(sock, "error", _error(exc))
            continue
        finally:
            del assets
        try:
            send(sock, "result", result)
        except ValueError as exc:  # not JSON values and numeric arrays: not releasable
            send(sock, "error", _error(exc))
        del result


def main(argv: list[str] | None = None) -> int:
    """The worker's entry point: ``python -I -m datasite_setup.site.sandbox.worker FD``."""
    args = sys.argv[1:] if argv is None else argv
    sock = socket.socket(fileno=int(args[0]))
    _warm_up()
    send(sock, "warm", {"pid": os.getpid()})
    return serve_job(sock)


if __name__ == "__main__":
    sys.exit(main())
