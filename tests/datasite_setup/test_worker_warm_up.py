"""A spare worker's warm-up: the first use of common torch ops is paid while it waits, not by the next job.

The figures behind it are bench_scale's (``benchmarks/RESULTS.md``, Scale): the
warm-up moves ~16 MiB of torch's code pages out of a job's memory growth and into
the site's idle memory. This checks the mechanism: the code pages a small CNN's
training step needs are already resident. (That the warm-up leaves torch's random
state as it found it is ``first_use_of_common_ops``' doctest.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A training step of a small CNN at shapes the warm-up never used; prints how many MiB of mapped files
# (torch's code pages) became resident for it, after the worker's warm-up with or without the common ops.
FIRST_STEP = """
import json, sys
import torch, torch.nn as nn, torch.nn.functional as F
from datasite_setup.site.sandbox import worker

def file_mib():
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024

worker._warm_up() if sys.argv[1] == "full" else worker.torch.ones(4, 4) @ worker.torch.ones(4, 4)
torch.set_num_threads(1)
before = file_mib()
model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                      nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 8 * 8, 4))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
loss = F.cross_entropy(model(torch.rand(16, 3, 32, 32)), torch.randint(0, 4, (16,)))
loss.backward()
optimizer.step()
with torch.no_grad():
    model.eval()(torch.rand(16, 3, 32, 32)).argmax(1)
print(json.dumps({"grew_mib": file_mib() - before}))
"""


def _first_step_growth(mode: str) -> float:
    done = subprocess.run(
        [sys.executable, "-I", "-c", FIRST_STEP, mode],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return float(json.loads(done.stdout.splitlines()[-1])["grew_mib"])


def test_a_jobs_first_training_step_finds_torchs_code_already_resident() -> None:
    cold = _first_step_growth("imports only")
    warm = _first_step_growth("full")
    # without the common ops, the step faults in torch's kernels (~16 MiB here); after them, next to nothing
    assert cold > 6 and warm < 3, (cold, warm)
