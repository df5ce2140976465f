"""Batch normalisation over channels, PyTorch's BatchNorm1d/2d semantics.

Train: normalise with the batch mean and the biased batch variance; update the running stats with
running = (1 - momentum) * running + momentum * batch, where the variance uses the UNBIASED estimate
(n / (n - 1)), and count the batch in num_batches_tracked. Eval: normalise with the running stats.
"""
from __future__ import annotations

import numpy as np

from . import parallel
from .op import Op


def _stat_axes(x: np.ndarray) -> tuple[int, ...]:
    assert x.ndim in (2, 4), f"batchnorm expects (N, F) or (N, C, H, W), got shape {x.shape}"
    return (0,) if x.ndim == 2 else (0, 2, 3)


def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """(C,) -> broadcastable against (N, C) or (N, C, H, W)."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _channel_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sum over every axis but 1 of a*b, without materialising a*b: (C,)."""
    N, C = a.shape[:2]
    return np.einsum("ncp,ncp->c", a.reshape(N, C, -1), b.reshape(N, C, -1))


def forward(attrs, xs, params, buffers, train, rng):
    """x: (N, C, H, W) or (N, C); weight, bias, running_mean, running_var: (C,) -> out: same as x."""
    (x,) = xs
    axes = _stat_axes(x)
    C = x.shape[1]
    eps = attrs.get("eps", 1e-5)
    w, b = params.get("weight"), params.get("bias")
    w = np.ones(C, x.dtype) if w is None else w
    b = np.zeros(C, x.dtype) if b is None else b

    nd = x.ndim
    out = np.empty_like(x)
    if not train:
        invstd = 1.0 / np.sqrt(buffers["running_var"] + eps)
        scale = w * invstd
        shift = b - buffers["running_mean"] * scale

        def affine(cs):
            np.multiply(x[:, cs], _per_channel(scale[cs], nd), out=out[:, cs])
            out[:, cs] += _per_channel(shift[cs], nd)

        parallel.run(affine, C, x.size)
        return out, ("eval", x, buffers["running_mean"], invstd, w, params.get("weight") is not None), {}

    m = x.size // C
    if m < 2:
        raise ValueError(f"batchnorm in training needs more than 1 value per channel, got input shape {x.shape}")
    # Every channel is independent, so each thread normalises a slice of channels from start to end.
    xc = np.empty_like(x)
    mean = np.empty(C, x.dtype)
    var = np.empty(C, x.dtype)

    def normalise(cs):
        xs, xcs = x[:, cs], xc[:, cs]
        mean[cs] = xs.mean(axis=axes)
        np.subtract(xs, _per_channel(mean[cs], nd), out=xcs)
        var[cs] = _channel_dot(xcs, xcs) / m  # biased: what normalises
        # out = (xc * invstd) * w + b folded into one per-channel scale: xhat is never materialised.
        np.multiply(xcs, _per_channel(w[cs] / np.sqrt(var[cs] + eps), nd), out=out[:, cs])
        out[:, cs] += _per_channel(b[cs], nd)

    parallel.run(normalise, C, x.size)
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
    return out, ("train", xc, invstd, w, params.get("weight") is not None), updates


def backward(attrs, dout, cache):
    """dout: like x -> dx, dweight (C,), dbias (C,) (no dparams when the layer has no affine params)."""
    axes = _stat_axes(dout)
    nd = dout.ndim
    db = dout.sum(axis=axes)
    if cache[0] == "eval":
        _, x, mean, invstd, w, affine = cache
        dx = dout * _per_channel(w * invstd, nd)
        dparams = {}
        if affine:
            xhat = (x - _per_channel(mean, nd)) * _per_channel(invstd, nd)
            dparams = {"weight": _channel_dot(dout, xhat), "bias": db}
        return [dx], dparams
    _, xc, invstd, w, affine = cache
    m = dout.size // dout.shape[1]
    C = dout.shape[1]
    dw = np.empty(C, dout.dtype)
    dx = np.empty_like(dout)

    def grad(cs):
        g, xcs, dxs = dout[:, cs], xc[:, cs], dx[:, cs]
        inv = invstd[cs]
        dw[cs] = _channel_dot(g, xcs) * inv  # sum(dout * xhat)
        # The batch statistics depend on every x: dx = w*invstd * (dout - mean(dout) - xhat*mean(dout*xhat)),
        # with xhat = xc*invstd, evaluated as ((xc*k + mean(dout)) subtracted from dout) * w*invstd.
        np.multiply(xcs, _per_channel(inv * dw[cs] / m, nd), out=dxs)
        dxs += _per_channel(db[cs] / m, nd)
        np.subtract(g, dxs, out=dxs)
        dxs *= _per_channel(w[cs] * inv, nd)

    parallel.run(grad, C, dout.size)
    dparams = {"weight": dw, "bias": db} if affine else {}
    return [dx], dparams


batchnorm = Op("batchnorm", forward, backward)
