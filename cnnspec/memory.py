"""Keep freed memory in the process (glibc only), so large temporaries do not page-fault every step.

A training step allocates and frees the same large arrays (im2col columns, gradients) every step.
glibc's default returns freed memory above a threshold to the OS (trim, or munmap of mmap'ed chunks),
so the next step's arrays are fresh pages and every 4 KiB costs a page fault plus zeroing: measured
~20% of a float64 training step of a small CNN. Raising the trim threshold and fixing the mmap
threshold at its maximum keeps those pages in the process for reuse.

This changes process-wide allocator settings, so it is opt-in: call it once where cnnspec owns the
process (CLI, benchmarks), not on import.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit


def keep_freed_memory(trim_threshold: int = 1 << 30) -> bool:
    """Tune glibc malloc for repeated large allocations; True if applied, False where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1 and ok
    return ok
