"""Run memory-bound NumPy passes on every core by splitting them into independent slices, and the
memory layout those passes rely on.

NumPy releases the GIL inside ufunc loops, reductions and copies, so threads that work on disjoint
slices of large arrays run at the same time. Ops use this for passes that BLAS does not parallelise
(im2col/col2im copies, batch norm, pooling, activations); matmuls stay outside, already threaded by BLAS.
Every slice computes exactly what the whole-array code would for its elements, so results do not depend
on the thread count (reductions are split only along axes they do not reduce over).

Threads: CNNSPEC_NUM_THREADS, else OMP_NUM_THREADS, else the CPUs this process may run on.

Layout: activations are indexed (N, C, H, W) (or (N, F)) everywhere, but ops store them batch-last in
memory, (C, H, W, N) contiguous, and hand out the (N, C, H, W) view of it (`batch_first`). That is the
order conv's GEMM writes (rows: filters, columns: output pixels x batch), so no op needs a transpose
copy; each channel is one contiguous block for batch norm; and the window slices of conv and pooling
run along contiguous (W, N) rows instead of short W rows. Every op accepts any strides: the layout only
decides speed.
"""
from __future__ import annotations

import functools
import os
import threading
from typing import Callable, TypeVar

import numpy as np

from .. import limits

T = TypeVar("T")

# Below this many elements per slice, handing work to a thread costs more than it saves.
MIN_ELEMENTS_PER_SLICE = 1 << 15


def num_threads() -> int:
    return limits.threads()  # one definition: the memory estimate counts the same threads


def slices(n: int, elements: int) -> list[slice]:
    """Split range(n) into at most num_threads() contiguous slices, fewer when `elements` (the total
    work) is small."""
    k = max(1, min(num_threads(), n, elements // MIN_ELEMENTS_PER_SLICE))
    bounds = [n * i // k for i in range(k + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def batch_last(x: np.ndarray) -> np.ndarray:
    """(N, C, ...) -> the (C, ..., N) view of the same memory (contiguous when x is stored batch-last)."""
    return x.transpose(_last(x.ndim))  # np.moveaxis(x, 0, -1), without its argument checks (~10x the cost)


def batch_first(t: np.ndarray) -> np.ndarray:
    """(C, ..., N) -> its (N, C, ...) view; the inverse of batch_last."""
    return t.transpose(_first(t.ndim))  # np.moveaxis(t, -1, 0)


@functools.cache
def _last(ndim: int) -> tuple[int, ...]:
    return tuple(range(1, ndim)) + (0,)


@functools.cache
def _first(ndim: int) -> tuple[int, ...]:
    return (ndim - 1,) + tuple(range(ndim - 1))


def contiguous(a: np.ndarray) -> np.ndarray:
    """a itself when C-contiguous, else a C-contiguous copy made in parallel."""
    return a if a.flags.c_contiguous else copy(a)


def flat(a: np.ndarray) -> np.ndarray | None:
    """A 1-D view of a's memory when a is contiguous in some axis order (in the order of decreasing
    strides), else None. Two arrays with the same strides get views whose elements correspond."""
    order = sorted(range(a.ndim), key=lambda i: -a.strides[i])
    t = a.transpose(order)
    return t.reshape(-1) if t.flags.c_contiguous else None


def elementwise(fn: Callable[..., object], out: np.ndarray, *inputs: np.ndarray) -> np.ndarray:
    """fn(out_part, *input_parts) over matching parts of equally shaped arrays, in parallel when they
    share one contiguous layout (else one call on the whole arrays); returns out."""
    if all(a.strides == out.strides for a in inputs):
        views = [flat(a) for a in (out, *inputs)]
        if all(v is not None for v in views):
            run(lambda s: fn(*(v[s] for v in views)), out.size, out.size)
            return out
    fn(out, *inputs)
    return out


def copy(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of a, first-axis slices in parallel."""
    out = np.empty(a.shape, a.dtype)
    run(lambda s: np.copyto(out[s], a[s]), a.shape[0], a.size)
    return out


def run(fn: Callable[[slice], T], n: int, elements: int) -> list[T]:
    """fn(s) for slices s covering range(n), in parallel; results in slice order.

    The calling thread runs the first slice and one worker thread each of the others. Another thread that
    calls run while the workers are busy (the service grades in several request threads) runs its slices
    itself, one after the other: the same slices, so the same results."""
    parts = slices(n, elements)
    if len(parts) == 1 or not _busy.acquire(blocking=False):
        return [fn(s) for s in parts]
    try:
        workers = _workers(len(parts) - 1)
        for worker, part in zip(workers, parts[1:]):
            worker.start(fn, part)
        try:
            first = fn(parts[0])  # the calling thread takes a share too
        finally:
            outcomes = [worker.wait() for worker in workers]  # every worker is done before anything returns
        for outcome in outcomes:
            if isinstance(outcome, _Failed):
                raise outcome.error
        return [first, *outcomes]
    finally:
        _busy.release()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Worker:
    """A thread that runs one slice at a time, handed over with two locks used as signals (a round trip
    measured 20 us here, against 44 us through a ThreadPoolExecutor's futures and queue; a training step
    makes some 20 of them)."""

    def __init__(self) -> None:
        self._go, self._done = threading.Lock(), threading.Lock()
        self._go.acquire()
        self._done.acquire()
        self._task: tuple = ()
        self._result: object = None
        threading.Thread(target=self._loop, name="cnnspec-worker", daemon=True).start()

    def _loop(self) -> None:
        while True:
            self._go.acquire()
            fn, part = self._task
            try:
                self._result = fn(part)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread by run()
                self._result = _Failed(exc)
            # nothing of the task outlives it here: fn's closure holds the op's arrays
            self._task, fn, part = (), None, None
            self._done.release()

    def start(self, fn, part) -> None:
        self._task = (fn, part)
        self._go.release()

    def wait(self):
        """fn(part)'s result, or a _Failed holding what it raised."""
        self._done.acquire()
        result, self._result = self._result, None
        return result


_busy = threading.Lock()   # held by the one run() that uses the workers
_pool: list[_Worker] = []


def _workers(count: int) -> list[_Worker]:
    while len(_pool) < count:
        _pool.append(_Worker())
    return _pool[:count]


def _forget_workers() -> None:  # a forked child has none of its parent's threads
    global _busy
    _pool.clear()
    _busy = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers)
