"""How the datasite process's glibc heap reuses memory, and when it hands it back to the kernel.

A datasite allocates and frees the same large buffers over and over: syft's
copies of an uploaded array, the activations of every training batch. glibc
serves an allocation above its *mmap threshold* with fresh pages from the
kernel and returns them on free, so the next one faults every 4 KiB page in
again. By default glibc raises that threshold by itself as it sees large
blocks freed (up to 32 MiB on 64-bit) — but only until a program sets it,
which ingest has to do. Setting it back to glibc's 128 KiB default left a
site paying ~35 M page faults per training round, more CPU than the training
(``benchmarks/RESULTS.md``); so after ingest the thresholds go where glibc's
own adjustment would have taken them. Everything here is a no-op without glibc.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Iterator
from typing import Any

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
UPLOAD_THRESHOLD = 1 << 30
# glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: blocks below it are reused from the heap
SERVING_MMAP_THRESHOLD = 32 * 2**20
# what glibc pairs with it: free memory above this at the top of the heap goes back to the kernel
SERVING_TRIM_THRESHOLD = 2 * SERVING_MMAP_THRESHOLD


def glibc() -> Any:
    """The C library, if it is glibc (has ``mallopt`` and ``malloc_trim``).

    Returns
    -------
    ctypes.CDLL or None
        The loaded C library, or None on another libc (musl, macOS).

    Examples
    --------
    >>> libc = glibc()
    >>> libc is None or hasattr(libc, "malloc_trim")
    True
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def use_serving_thresholds() -> bool:
    """Reuse freed blocks below 32 MiB from the heap; return free memory above 64 MiB to the kernel.

    What glibc's dynamic thresholds settle on for a process that frees large
    blocks, set explicitly (they stop adjusting once set). ``fedimg datasite
    serve`` calls it before it serves.

    Returns
    -------
    bool
        Whether the settings took effect (False without glibc).

    Examples
    --------
    >>> use_serving_thresholds() == (glibc() is not None)
    True
    """
    libc = glibc()
    if libc is None:
        return False
    return (
        libc.mallopt(M_MMAP_THRESHOLD, SERVING_MMAP_THRESHOLD) == 1
        and libc.mallopt(M_TRIM_THRESHOLD, SERVING_TRIM_THRESHOLD) == 1
    )


@contextlib.contextmanager
def heap_for_large_copies() -> Iterator[None]:
    """Serve large temporary copies from the heap instead of fresh mmaps, for the duration of the block.

    Each of syft's copies of a large array would otherwise pay a page fault per
    page (over a million for a 128 px partition). Afterwards the serving
    thresholds apply and the heap is trimmed, so the process keeps no more than
    64 MiB of free memory. Without glibc the block runs unchanged.

    Yields
    ------
    None

    Examples
    --------
    >>> with heap_for_large_copies():
    ...     upload = bytearray(64 * 2**20)
    ...     del upload
    """
    libc = glibc()
    if libc is None:
        yield
        return
    libc.mallopt(M_MMAP_THRESHOLD, UPLOAD_THRESHOLD)
    libc.mallopt(M_TRIM_THRESHOLD, UPLOAD_THRESHOLD)
    try:
        yield
    finally:
        use_serving_thresholds()
        libc.malloc_trim(0)
