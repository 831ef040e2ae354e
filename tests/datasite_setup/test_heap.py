"""The datasite's heap settings: after an upload, repeated large allocations reuse memory instead of faulting it in."""

from __future__ import annotations

import subprocess
import sys

import pytest

from datasite_setup.site.heap import glibc
from tests.support.datasites import REPO

# An upload (large copies under heap_for_large_copies), then 40 allocations of 8 MB each, freed at once:
# with glibc's 128 KiB default threshold set back after the upload, each one is a fresh mmap (~2,000 faults).
PROBE = """
import resource
import numpy as np
from datasite_setup.site.heap import heap_for_large_copies

with heap_for_large_copies():
    upload = np.ones(25_000_000)
    del upload
block = np.ones(1_000_000)
del block
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    block = np.ones(1_000_000)
    del block
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES_PER_BLOCK = 8_000_000 // 4096


@pytest.mark.skipif(glibc() is None, reason="the heap settings are glibc's")
def test_after_an_upload_training_sized_blocks_are_reused_not_faulted_in_again() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    faults = int(done.stdout.strip())
    assert faults < PAGES_PER_BLOCK, f"{faults} page faults for 40 reallocations of one 8 MB block"


@pytest.mark.skipif(glibc() is None, reason="the heap settings are glibc's")
def test_the_upload_memory_goes_back_to_the_kernel() -> None:
    probe = """
import numpy as np, resource
from datasite_setup.site.heap import heap_for_large_copies

def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

start = rss_mb()
with heap_for_large_copies():
    upload = np.ones(50_000_000)
    upload[:] = 2
    del upload
print(rss_mb() - start)
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    assert float(done.stdout.strip()) < 100, f"{done.stdout.strip()} MB of a 400 MB upload still resident"
