"""glibc's allocator, set so that a CPU training step stops faulting its memory in afresh.

A step allocates and frees tensors of many sizes up to tens of MB. By default glibc serves large
blocks from fresh mmap'd pages and returns freed memory at the heap's top to the kernel, so the
next step takes a page fault for every 4 KiB it touches again; at batch 512 a GAP CNN step was
about a fifth slower for it (docs/benchmarks.md). Here blocks up to 32 MiB come from the heap, and
up to 1 GiB of free heap is kept, so the pages stay mapped from one step to the next.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for this setting on 64-bit systems
TRIM_THRESHOLD = 1 << 30
# Set by hand, these win: glibc reads them at start-up, and this module leaves them alone.
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


@functools.cache
def keep_pages_mapped() -> bool:
    """Apply the settings once per process; whether they were applied (only glibc has them)."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in USER_SETTINGS):
        return False
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: no such settings
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
