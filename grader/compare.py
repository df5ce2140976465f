"""Typed comparison contracts: shapes and counts exactly, class labels exactly, floats within tolerance.

Float answers pass when |answer - expected| <= atol + rtol * |expected| for every element (numpy.isclose's
rule). The defaults (rtol 1e-3, atol 1e-6) accept hand-rounded answers with 4 significant figures
(6.864 for 6.8644, as the lecture writes it) and refuse 2-3 significant figures on most values.

An answer whose shape differs from the expected one only by size-1 axes (a batch of one written without
its batch axis, a scalar written as [x]) is reshaped, with a note. Anything else with the wrong shape is
wrong, and the message says which shape was expected.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float

    def text(self) -> str:
        return f"rtol {self.rtol:g}, atol {self.atol:g}"


@dataclass
class Comparison:
    ok: bool
    fraction: float                        # share of elements within tolerance (0 when the shape is wrong)
    shape_ok: bool
    message: str                           # one line: what was expected vs given
    details: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    value: Optional[np.ndarray] = None     # the answer reshaped to the expected shape (when shape_ok)


def fmt(x: float) -> str:
    """A number as people write it: 6.8644, -3.144, 1.2e-05."""
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if np.isnan(x):
        return "NaN"
    if np.isinf(x):
        return "Inf" if x > 0 else "-Inf"
    if x == int(x) and abs(x) < 1e15:
        return str(int(x)) if abs(x) >= 1 or x == 0 else f"{x:g}"
    return f"{x:.6g}"


def fmt_shape(shape) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def fmt_index(idx) -> str:
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def fmt_array(a: np.ndarray, limit: int = 12) -> str:
    """Small arrays in full (nested lists), big ones as a shape and a few values."""
    a = np.asarray(a)
    if a.size == 1:
        return fmt(a.reshape(()).item())
    if a.size <= limit:
        def rec(x):
            return "[" + ", ".join(rec(v) for v in x) + "]" if isinstance(x, np.ndarray) and x.ndim else fmt(x.item() if hasattr(x, "item") else x)
        return rec(a)
    flat = a.reshape(-1)
    head = ", ".join(fmt(v) for v in flat[:4])
    return f"array of shape {fmt_shape(a.shape)} ({head}, ...)"


def conform(answer: np.ndarray, shape: tuple) -> Optional[np.ndarray]:
    """answer reshaped to `shape` when they differ only by size-1 axes; None when they really differ."""
    answer = np.asarray(answer)
    if answer.shape == tuple(shape):
        return answer
    if answer.size == int(np.prod(shape)) and tuple(d for d in answer.shape if d != 1) == \
            tuple(d for d in shape if d != 1):
        return answer.reshape(shape)
    return None


def _integral(a: np.ndarray) -> Optional[np.ndarray]:
    """An array of whole numbers as int64, or None if any value is not whole (or not finite)."""
    if a.dtype.kind in "iu":
        return a.astype(np.int64)
    if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
        return None
    return a.astype(np.int64)


def _beyond_int64(a: np.ndarray) -> bool:
    """Whole numbers too large for int64 (1e30): reported as given, never cast (a cast would wrap around)."""
    with np.errstate(invalid="ignore"):
        return a.dtype.kind == "f" and bool(np.any(np.isfinite(a) & (np.abs(a) >= 2.0**62)))


def compare_shape(answer: np.ndarray, expected: list[int]) -> Comparison:
    """A shape: a list of whole numbers, equal element by element and in order."""
    a = np.asarray(answer)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        return Comparison(False, 0.0, False, f"a shape is a flat list of sizes like {fmt_shape(expected)}, got "
                          f"nested lists of shape {fmt_shape(a.shape)}")
    if _beyond_int64(a):
        return Comparison(False, 0.0, False, f"expected {fmt_shape(expected)}, got {fmt_array(a)}")
    ints = _integral(a)
    if ints is None:
        return Comparison(False, 0.0, False, f"sizes are whole numbers; got {fmt_array(a)} (sizes use floor "
                          "division: round down)")
    ok = list(ints) == list(expected)
    msg = "correct" if ok else f"expected {fmt_shape(expected)}, got {fmt_shape(ints)}"
    return Comparison(ok, 1.0 if ok else 0.0, len(ints) == len(expected), msg, value=ints)


def compare_count(answer: np.ndarray, expected: int) -> Comparison:
    a = np.asarray(answer)
    if a.size != 1:
        return Comparison(False, 0.0, False, f"expected one number, got {fmt_array(a)}")
    if _beyond_int64(a):
        return Comparison(False, 0.0, False, f"expected {expected:,}, got {fmt(a.reshape(()).item())}")
    ints = _integral(a.reshape(()))
    if ints is None:
        return Comparison(False, 0.0, False, f"a count is a whole number, got {fmt(a.reshape(()).item())}")
    value = int(ints)
    ok = value == expected
    msg = "correct" if ok else f"expected {expected:,}, got {value:,}"
    return Comparison(ok, 1.0 if ok else 0.0, True, msg, value=np.array(value))


def compare_labels(answer: np.ndarray, expected: np.ndarray) -> Comparison:
    """Class indices: whole numbers, exactly equal; fraction = share of equal labels."""
    a = conform(answer, expected.shape)
    if a is None:
        return Comparison(False, 0.0, False, f"expected {expected.size} class indices (shape "
                          f"{fmt_shape(expected.shape)}), got shape {fmt_shape(np.shape(answer))}")
    ints = None if _beyond_int64(a) else _integral(a)
    if ints is None:
        return Comparison(False, 0.0, True, f"class indices are whole numbers (the argmax), got {fmt_array(a)}",
                          value=a)
    equal = ints == expected
    frac = float(equal.mean()) if equal.size else 1.0
    ok = bool(equal.all())
    if ok:
        return Comparison(True, 1.0, True, "correct", value=ints)
    wrong = np.argwhere(~equal)
    first = tuple(wrong[0])
    return Comparison(False, frac, True, f"{int(equal.sum())} of {equal.size} predictions right; first wrong at "
                      f"{fmt_index(first)}: expected {int(expected[first])}, got {int(ints[first])}", value=ints)


def isclose(a: np.ndarray, e: np.ndarray, rtol: float, atol: float) -> np.ndarray:
    """numpy.isclose(a, e, rtol, atol) for float64 arrays, the same formula without its argument handling
    (which costs more than the comparison on the few numbers of an answer; a grading calls this dozens of
    times): |a - e| <= atol + rtol*|e| where e is finite, or a == e (equal infinities)."""
    with np.errstate(invalid="ignore", over="ignore"):   # an overflowing bound is inf: close, as it should be
        return (np.abs(a - e) <= atol + rtol * np.abs(e)) & np.isfinite(e) | (a == e)


def compare_float(answer: np.ndarray, expected, tol: Tolerance, nonfinite: str = "reject") -> Comparison:
    """Element-wise |a - e| <= atol + rtol*|e|; says how far off, where, and how many elements are close."""
    e = np.asarray(expected, dtype=np.float64)
    raw = np.asarray(answer)
    notes = []
    a = conform(raw, e.shape)
    if a is None:
        return Comparison(False, 0.0, False, f"expected shape {fmt_shape(e.shape)} "
                          f"({'one number' if e.ndim == 0 else f'{e.size} values'}), got shape "
                          f"{fmt_shape(raw.shape)}")
    if raw.ndim > e.ndim:
        notes.append(f"read the answer of shape {fmt_shape(raw.shape)} as shape {fmt_shape(e.shape)}")
    a = a.astype(np.float64)
    finite_a = np.isfinite(a)
    if nonfinite == "match":
        same_nonfinite = (np.isnan(a) & np.isnan(e)) | (np.isinf(a) & np.isinf(e) & (np.sign(a) == np.sign(e)))
        close = isclose(a, e, tol.rtol, tol.atol) | same_nonfinite
    else:
        close = isclose(a, e, tol.rtol, tol.atol) & finite_a
    n = close.size
    k = int(close.sum())
    frac = k / n if n else 1.0
    ok = k == n
    if ok:
        return Comparison(True, 1.0, True, "correct", notes=notes, value=a)
    details = []
    if nonfinite != "match" and not finite_a.all():
        bad = np.argwhere(~finite_a)
        where = fmt_index(bad[0]) if a.size > 1 else ""
        msg = (f"the answer contains {fmt(a[tuple(bad[0])])}" + (f" at {where}" if where else "")
               + (f" ({len(bad)} values are not finite)" if len(bad) > 1 else "")
               + "; answers must be finite numbers")
        if a.size > 1:
            details.append(f"{k} of {n} elements within tolerance ({tol.text()})")
        return Comparison(False, frac, True, msg, details, notes, value=a)
    with np.errstate(invalid="ignore"):
        err = np.abs(a - e)
        err = np.where(np.isnan(err), np.inf, err)
    if a.size == 1:
        e0, a0 = float(e.reshape(())), float(a.reshape(()))
        rel = f", {abs(a0 - e0) / abs(e0):.2%} relative" if e0 != 0 and np.isfinite(a0) and np.isfinite(e0) else ""
        msg = f"expected {fmt(e0)}, got {fmt(a0)} (off by {fmt(abs(a0 - e0))}{rel}; tolerance {tol.text()})"
        return Comparison(False, 0.0, True, msg, details, notes, value=a)
    excess = err - (tol.atol + tol.rtol * np.abs(e))
    worst = np.unravel_index(int(np.argmax(excess)), a.shape)
    msg = (f"{k} of {n} elements within tolerance ({tol.text()}); largest error {fmt(err[worst])} at "
           f"{fmt_index(worst)} (expected {fmt(e[worst])}, got {fmt(a[worst])})")
    return Comparison(False, frac, True, msg, details, notes, value=a)


def matches(answer: np.ndarray, candidate: Any, tol: Optional[Tolerance]) -> bool:
    """Does the answer equal `candidate` (same shape up to size-1 axes)? Exact when tol is None."""
    if candidate is None:
        return False
    c = np.asarray(candidate)
    a = conform(np.asarray(answer), c.shape)
    if a is None or a.size == 0:
        return False
    if tol is None:
        return bool(np.array_equal(a, c))
    a = a.astype(np.float64)
    return bool((isclose(a, c.astype(np.float64), tol.rtol, tol.atol) & np.isfinite(a)).all())
