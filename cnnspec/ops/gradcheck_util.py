"""Central-difference gradients and the error measure used to compare them with analytic ones."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np


def numeric_grad(f: Callable[[], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d f() / d x by central differences, (f(x + eps) - f(x - eps)) / (2 eps) per element.

    `f` takes no arguments and reads `x`, which is perturbed in place one element at a time and
    restored afterwards. Use float64: in float32 the rounding error swamps eps.
    """
    grad = np.zeros(x.shape, dtype=np.float64)
    flat_x = x.reshape(-1)  # a view: writing it perturbs x
    assert np.shares_memory(flat_x, x), "numeric_grad needs a contiguous array to perturb in place"
    flat_g = grad.reshape(-1)
    for i in range(flat_x.size):
        f_plus, f_minus = evaluate_around(f, flat_x, i, eps)
        flat_g[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def evaluate_around(f: Callable[[], float], flat_x: np.ndarray, i: int, eps: float) -> tuple[float, float]:
    """(f() with flat_x[i] + eps, f() with flat_x[i] - eps); flat_x[i] is restored afterwards."""
    old = flat_x[i]
    try:
        flat_x[i] = old + eps
        f_plus = f()
        flat_x[i] = old - eps
        f_minus = f()
    finally:
        flat_x[i] = old
    return f_plus, f_minus


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to the largest magnitude in either array (0.0 when both are all zero).

    Scaled by the whole array rather than per element, so entries that are nearly zero (where central
    differences are pure rounding noise) cannot dominate, while a wrong factor or a wrong index anywhere
    still shows up at its full size.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0))
    if scale == 0.0:
        return 0.0
    return float(np.abs(a - b).max() / scale)
