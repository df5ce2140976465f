"""Loss functions with PyTorch's semantics: each returns (loss, dloss/dpred).

fn(pred, target, reduction) -> (loss: float, dpred: array like pred); reduction is "mean" or "sum".
A mismatch between prediction and target raises ValueError saying what was received and what is valid.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

REDUCTIONS = ("mean", "sum")


def _check_reduction(reduction: str, loss: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{loss}: reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _check_float(name: str, a: np.ndarray, loss: str) -> None:
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{loss}: {name} must be a float array, got dtype {a.dtype}")


def _check_same_shape(pred: np.ndarray, target: np.ndarray, loss: str) -> None:
    _check_float("prediction", pred, loss)
    _check_float("target", target, loss)
    if pred.shape != target.shape:
        raise ValueError(f"{loss}: target shape {target.shape} must equal prediction shape {pred.shape}")


def cross_entropy(pred: np.ndarray, target: np.ndarray, reduction: str = "mean") -> tuple[float, np.ndarray]:
    """pred: (N, K) logits; target: (N,) integer class indices in [0, K) or (N, K) class probabilities.

    loss_n = -sum_k y_nk log_softmax(pred)_nk (for indices, y is one-hot); "mean" divides by N.
    No ignore_index: every index must be a valid class.
    """
    _check_reduction(reduction, "cross_entropy")
    pred, target = np.asarray(pred), np.asarray(target)
    _check_float("prediction", pred, "cross_entropy")
    if pred.ndim != 2:
        raise ValueError(f"cross_entropy: prediction must be (N, K) logits, got shape {pred.shape}")
    N, K = pred.shape
    shifted = pred - pred.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=1, keepdims=True)
    log_probs = shifted - np.log(sum_exp)
    probs = exp / sum_exp

    if target.ndim == 1 and target.shape == (N,) and np.issubdtype(target.dtype, np.integer):
        bad = (target < 0) | (target >= K)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"cross_entropy: class index {int(target[i])} (row {i}) is out of range; "
                             f"valid: 0..{K - 1} for {K} classes")
        rows = np.arange(N)
        losses = -log_probs[rows, target]
        dpred = probs
        dpred[rows, target] -= 1.0
    elif target.shape == (N, K) and np.issubdtype(target.dtype, np.floating):
        losses = -(target * log_probs).sum(axis=1)
        # d/dx of -sum_k y_k log_softmax_k = softmax * sum_k y_k - y (rows need not sum to 1).
        dpred = probs * target.sum(axis=1, keepdims=True) - target
    else:
        hint = ""
        if target.shape == (N,) and np.issubdtype(target.dtype, np.floating):
            hint = "; class indices must be integers: save them with y.astype(int)"
        raise ValueError(f"cross_entropy: target must be ({N},) integer class indices or ({N}, {K}) float "
                         f"class probabilities for prediction shape {pred.shape}; got shape {target.shape}, "
                         f"dtype {target.dtype}{hint}")
    if reduction == "mean":
        dpred /= N
        return float(losses.sum() / N), dpred.astype(pred.dtype, copy=False)
    return float(losses.sum()), dpred.astype(pred.dtype, copy=False)


def mse(pred: np.ndarray, target: np.ndarray, reduction: str = "mean") -> tuple[float, np.ndarray]:
    """pred, target: same shape. sum((pred - target)^2), divided by the number of ELEMENTS for "mean"."""
    _check_reduction(reduction, "mse")
    pred, target = np.asarray(pred), np.asarray(target)
    _check_same_shape(pred, target, "mse")
    diff = pred - target
    loss = float((diff * diff).sum())
    dpred = 2.0 * diff
    if reduction == "mean":
        loss /= diff.size
        dpred /= diff.size
    return loss, dpred.astype(pred.dtype, copy=False)


def bce_with_logits(pred: np.ndarray, target: np.ndarray, reduction: str = "mean") -> tuple[float, np.ndarray]:
    """pred: logits, target: probabilities in [0, 1], same shape. Binary cross-entropy of sigmoid(pred).

    Written as max(x, 0) - x*y + log1p(exp(-|x|)), which never overflows; "mean" is over all elements.
    """
    _check_reduction(reduction, "bce_with_logits")
    pred, target = np.asarray(pred), np.asarray(target)
    _check_same_shape(pred, target, "bce_with_logits")
    e = np.exp(-np.abs(pred))
    losses = np.maximum(pred, 0) - pred * target + np.log1p(e)
    sig = np.where(pred >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    dpred = sig - target
    loss = float(losses.sum())
    if reduction == "mean":
        loss /= pred.size
        dpred /= pred.size
    return loss, dpred.astype(pred.dtype, copy=False)


def multi_margin(pred: np.ndarray, target: np.ndarray, reduction: str = "mean") -> tuple[float, np.ndarray]:
    """pred: (N, K) scores; target: (N,) integer classes. The multiclass hinge (SVM) loss, PyTorch's
    MultiMarginLoss(p=1, margin=1): loss_n = sum over i != y of max(0, 1 - pred[y] + pred[i]) / K.
    A margin of exactly 0 contributes no gradient (PyTorch's backward tests > 0)."""
    _check_reduction(reduction, "multi_margin")
    pred, target = np.asarray(pred), np.asarray(target)
    _check_float("prediction", pred, "multi_margin")
    if pred.ndim != 2:
        raise ValueError(f"multi_margin: prediction must be (N, K) class scores, got shape {pred.shape}")
    N, K = pred.shape
    if target.shape != (N,) or not np.issubdtype(target.dtype, np.integer):
        raise ValueError(f"multi_margin: target must be ({N},) integer class indices, got shape {target.shape}, "
                         f"dtype {target.dtype}")
    bad = (target < 0) | (target >= K)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"multi_margin: class index {int(target[i])} (row {i}) is out of range; valid: 0..{K - 1}")
    rows = np.arange(N)
    margins = 1.0 - pred[rows, target][:, None] + pred
    margins[rows, target] = 0.0
    active = margins > 0
    losses = np.where(active, margins, 0.0).sum(axis=1) / K
    dpred = active / K
    dpred[rows, target] = -active.sum(axis=1) / K
    if reduction == "mean":
        dpred /= N
        return float(losses.sum() / N), dpred.astype(pred.dtype, copy=False)
    return float(losses.sum()), dpred.astype(pred.dtype, copy=False)


LOSSES: dict[str, Callable[[np.ndarray, np.ndarray, str], tuple[float, np.ndarray]]] = {
    "cross_entropy": cross_entropy,
    "mse": mse,
    "bce_with_logits": bce_with_logits,
    "multi_margin": multi_margin,
}
