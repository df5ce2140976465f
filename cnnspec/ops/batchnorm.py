"""Batch normalisation over channels, PyTorch's BatchNorm1d/2d semantics.

Train: normalise with the batch mean and the biased batch variance; update the running stats with
running = (1 - momentum) * running + momentum * batch, where the variance uses the UNBIASED estimate
(n / (n - 1)), and count the batch in num_batches_tracked. Eval: normalise with the running stats.

Everything runs on channel rows: the input viewed as (C, m), one row per channel, which is free for
batch-last activations (parallel.py) and a copy otherwise. Each statistic is then a contiguous row
reduction. Threads take whole blocks of rows whose size depends on the shape alone (`_blocks`): np.einsum's
per-row dot products depend on how many rows one call gets (a single row takes another path), so blocks
cut by the thread count would make results depend on it.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import DataError
from . import parallel
from .op import Op


def _rows(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) or (N, C) -> (C, m) contiguous channel rows (a view when x is batch-last)."""
    assert x.ndim in (2, 4), f"batchnorm expects (N, F) or (N, C, H, W), got shape {x.shape}"
    t = parallel.contiguous(parallel.batch_last(x))
    return t.reshape(t.shape[0], -1)


def _unrows(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Channel rows (C, m) -> the (N, C, ...) view with `shape`."""
    return parallel.batch_first(rows.reshape(tuple(shape[1:]) + (shape[0],)))


BLOCK_BYTES = 1 << 21  # a block of rows is at most about this many bytes
MIN_BLOCKS = 2  # and at least this many when threads are used (a count that depends on the shape only; more,
                # smaller blocks measured up to 2x slower on 2 cores: each block is ~10 NumPy calls)


def _blocks(fn, rows: np.ndarray) -> None:
    """fn(cs) for consecutive blocks of channel rows cs covering rows (C, m): blocks of a size fixed by the
    shape, in parallel by whole blocks, so no result depends on the thread count."""
    C, m = rows.shape
    # at most BLOCK_BYTES each and, when threads would be used (parallel.slices), at least MIN_BLOCKS blocks
    wanted = -(-rows.nbytes // BLOCK_BYTES)
    if rows.size >= 2 * parallel.MIN_ELEMENTS_PER_SLICE:
        wanted = max(wanted, MIN_BLOCKS)
    per = -(-C // min(max(wanted, 1), C))
    count = -(-C // per)

    def run(bs):
        for k in range(bs.start, bs.stop):
            fn(slice(k * per, min((k + 1) * per, C)))

    parallel.run(run, count, rows.size)


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row dot products of two (c, m) arrays: sum(a * b, axis=1) without materialising a * b."""
    return np.einsum("cm,cm->c", a, b)  # measured 2x faster than np.vecdot here (which calls BLAS)


def _weight_bias(params, C: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    w, b = params.get("weight"), params.get("bias")
    return (np.ones(C, dtype) if w is None else w), (np.zeros(C, dtype) if b is None else b)


class EvalFold(NamedTuple):
    """Evaluation mode's batch norm as one affine map per channel, out = x * scale + shift, and what its
    backward reads. Arrays made when it is made: a later optimizer step (which replaces the parameters)
    does not change them."""
    scale: np.ndarray
    shift: np.ndarray
    weight: np.ndarray
    invstd: np.ndarray
    running_mean: np.ndarray
    affine: bool  # the layer has weight and bias parameters


def eval_fold(attrs, params, buffers, C: int, dtype) -> EvalFold:
    w, b = _weight_bias(params, C, dtype)
    invstd = 1.0 / np.sqrt(buffers["running_var"] + attrs.get("eps", 1e-5))
    scale = w * invstd
    shift = b - buffers["running_mean"] * scale
    return EvalFold(scale, shift, w, invstd, buffers["running_mean"], params.get("weight") is not None)


def apply_fold(x: np.ndarray, fold: EvalFold, relu: bool) -> np.ndarray:
    """x * scale + shift per channel (then relu when asked): the element operations of evaluation mode,
    whatever array they run on (ops/fused.py runs them on a max pool's output). Batch-last."""
    return _unrows(_affine_rows(_rows(x), fold.scale, fold.shift, relu), x.shape)


def _affine_rows(rows: np.ndarray, scale: np.ndarray, shift: np.ndarray, relu: bool) -> np.ndarray:
    """rows * scale + shift per channel row (then relu), in channel blocks; new memory."""
    out = np.empty_like(rows)

    def affine(cs):
        np.multiply(rows[cs], scale[cs, None], out=out[cs])
        out[cs] += shift[cs, None]
        if relu:
            np.maximum(out[cs], 0, out=out[cs])  # what ops/activations.relu computes

    _blocks(affine, rows)
    return out


def evaluate(x: np.ndarray, fold: EvalFold, relu: bool = False):
    """Evaluation mode's forward: (out, cache) as forward(train=False) returns them."""
    rows = _rows(x)
    out = _affine_rows(rows, fold.scale, fold.shift, relu)
    cache = ("eval", rows, fold.running_mean, fold.invstd, fold.weight, fold.affine,
             (rows, fold.scale, fold.shift, out, x.shape) if relu else None)
    return _unrows(out, x.shape), cache


def forward(attrs, xs, params, buffers, train, rng, relu=False):
    """x: (N, C, H, W) or (N, C); weight, bias, running_mean, running_var: (C,) -> out: same as x.

    relu: return relu(out) instead, applied to each slice of channels as soon as it is normalised (the
    fused batchnorm_relu of ops/fused.py); the cache then holds what `output_from_cache` needs."""
    (x,) = xs
    if not train:
        out, cache = evaluate(x, eval_fold(attrs, params, buffers, x.shape[1], x.dtype), relu)
        return out, cache, {}
    C = x.shape[1]
    eps = attrs.get("eps", 1e-5)
    w, b = _weight_bias(params, C, x.dtype)
    rows = _rows(x)
    out = np.empty_like(rows)
    m = rows.shape[1]
    if m < 2:
        raise DataError(f"batchnorm in training needs more than 1 value per channel, got input shape {x.shape}: "
                        "give a batch of 2 or more, or run in evaluation mode (PyTorch refuses it too)")
    # Every channel is independent, so each thread normalises a slice of channels from start to end.
    xc = np.empty_like(rows)
    mean = np.empty(C, x.dtype)
    var = np.empty(C, x.dtype)

    def normalise(cs):
        r, xcs = rows[cs], xc[cs]
        mean[cs] = r.mean(axis=1)
        np.subtract(r, mean[cs, None], out=xcs)
        var[cs] = _row_dot(xcs, xcs) / m  # biased: what normalises
        # out = (xc * invstd) * w + b folded into one per-channel scale: xhat is never materialised.
        np.multiply(xcs, (w[cs] / np.sqrt(var[cs] + eps))[:, None], out=out[cs])
        out[cs] += b[cs, None]
        if relu:
            np.maximum(out[cs], 0, out=out[cs])  # what ops/activations.relu computes

    _blocks(normalise, rows)
    invstd = 1.0 / np.sqrt(var + eps)

    momentum = attrs.get("momentum", 0.1)
    tracked = buffers.get("num_batches_tracked", np.array(0, dtype=np.int64))
    if momentum is None:  # PyTorch's cumulative moving average
        momentum = 1.0 / float(tracked + 1)
    updates = {
        "running_mean": (1 - momentum) * buffers["running_mean"] + momentum * mean,
        "running_var": (1 - momentum) * buffers["running_var"] + momentum * (var * (m / (m - 1))),
        "num_batches_tracked": np.asarray(tracked + 1, dtype=np.int64),
    }
    # the scale exactly as normalise computed it (elementwise, so slicing does not change a bit)
    fused = (xc, w / np.sqrt(var + eps), b, out, x.shape) if relu else None
    return _unrows(out, x.shape), ("train", xc, invstd, w, params.get("weight") is not None, fused), updates


def output_from_cache(cache) -> np.ndarray:
    """The batch norm output of a forward made with relu=True, recomputed from its cache with the same
    operations as the forward (so bit for bit what forward(relu=False) returns), batch-last."""
    rows, scale, shift, _, shape = cache[6] if cache[0] == "eval" else cache[5]  # training: xc, scale, b
    return _unrows(_affine_rows(rows, scale, shift, relu=False), shape)


def _relu_grad(g: np.ndarray, out: np.ndarray) -> np.ndarray:
    """What ops/activations.relu's backward computes: g * (out != 0)."""
    return np.multiply(g, out != 0)


def backward(attrs, dout, cache, relu=False):
    """dout: like x -> dx, dweight (C,), dbias (C,) (no dparams when the layer has no affine params).

    relu: the cache is from forward(relu=True) and dout is the gradient of relu(out): relu's backward is
    applied first, to each slice of channels as the batch norm backward reaches it."""
    g = _rows(dout)
    C, m = g.shape
    if cache[0] == "eval":
        _, rows, mean, invstd, w, affine, fused = cache
        if relu:
            g = _relu_grad(g, fused[3])
        dx = g * (w * invstd)[:, None]
        dparams = {}
        if affine:
            xhat = (rows - mean[:, None]) * invstd[:, None]
            dparams = {"weight": _row_dot(g, xhat), "bias": g.sum(axis=1)}
        return [_unrows(dx, dout.shape)], dparams
    _, xc, invstd, w, affine, fused = cache
    db = np.empty(C, dout.dtype)
    dw = np.empty(C, dout.dtype)
    dx = np.empty_like(g)

    def grad(cs):
        gs, xcs, dxs = g[cs], xc[cs], dx[cs]
        if relu:
            gs = _relu_grad(gs, fused[3][cs])  # contiguous rows, like the unfused relu's gradient
        inv = invstd[cs]
        db[cs] = gs.sum(axis=1)
        dw[cs] = _row_dot(gs, xcs) * inv  # sum(dout * xhat)
        # The batch statistics depend on every x: dx = w*invstd * (dout - mean(dout) - xhat*mean(dout*xhat)),
        # with xhat = xc*invstd, evaluated as ((xc*k + mean(dout)) subtracted from dout) * w*invstd.
        np.multiply(xcs, (inv * dw[cs] / m)[:, None], out=dxs)
        dxs += (db[cs] / m)[:, None]
        np.subtract(gs, dxs, out=dxs)
        dxs *= (w[cs] * inv)[:, None]

    _blocks(grad, g)
    dparams = {"weight": dw, "bias": db} if affine else {}
    return [_unrows(dx, dout.shape)], dparams


batchnorm = Op("batchnorm", forward, backward)
