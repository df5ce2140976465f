"""Run memory-bound NumPy passes on every core by splitting them into independent slices.

NumPy releases the GIL inside ufunc loops, reductions and copies, so threads that work on disjoint
slices of large arrays run at the same time. Ops use this for passes that BLAS does not parallelise
(im2col/col2im copies, batch norm, pooling, activations); matmuls stay outside, already threaded by BLAS.
Every slice computes exactly what the whole-array code would for its elements, so results do not depend
on the thread count (reductions are split only along axes they do not reduce over).

Threads: CNNSPEC_NUM_THREADS, else OMP_NUM_THREADS, else the CPUs this process may run on.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")

# Below this many elements per slice, handing work to a thread costs more than it saves.
MIN_ELEMENTS_PER_SLICE = 1 << 15

_pool: ThreadPoolExecutor | None = None


def num_threads() -> int:
    for var in ("CNNSPEC_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def slices(n: int, elements: int) -> list[slice]:
    """Split range(n) into at most num_threads() contiguous slices, fewer when `elements` (the total
    work) is small."""
    k = max(1, min(num_threads(), n, elements // MIN_ELEMENTS_PER_SLICE))
    bounds = [n * i // k for i in range(k + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def run(fn: Callable[[slice], T], n: int, elements: int) -> list[T]:
    """fn(s) for slices s covering range(n), in parallel; results in slice order."""
    parts = slices(n, elements)
    if len(parts) == 1:
        return [fn(parts[0])]
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=num_threads() - 1, thread_name_prefix="cnnspec")
    futures = [_pool.submit(fn, s) for s in parts[1:]]
    first = fn(parts[0])  # the calling thread takes a share too
    return [first] + [f.result() for f in futures]
