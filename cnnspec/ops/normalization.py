"""Per-sample normalisations: layer norm, group norm (PyTorch nn.LayerNorm over a whole sample, nn.GroupNorm)
and local response normalisation across channels (nn.LocalResponseNorm = Caffe's LRN = ONNX LRN).

Layer and group norm use the sample's own statistics (biased variance), in training and evaluation alike, so
they keep no running buffers. Batch norm lives in batchnorm.py.
"""
from __future__ import annotations

import numpy as np

from .op import Op


def _normalise(x: np.ndarray, groups: int, eps: float):
    """x: (N, ...) viewed as (N, groups, m) -> (xhat (N, groups, m), rstd (N, groups, 1))."""
    g = np.ascontiguousarray(x).reshape(x.shape[0], groups, -1)
    mean = g.mean(axis=2, keepdims=True)
    xc = g - mean
    var = (xc * xc).mean(axis=2, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    return xc * rstd, rstd


def _normalise_backward(dxhat: np.ndarray, xhat: np.ndarray, rstd: np.ndarray) -> np.ndarray:
    """Gradient through xhat = (x - mean) * rstd over the last axis of (N, groups, m) arrays:
    dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))."""
    return rstd * (dxhat - dxhat.mean(axis=2, keepdims=True)
                   - xhat * (dxhat * xhat).mean(axis=2, keepdims=True))


def _layernorm_forward(attrs, xs, params, buffers, train, rng):
    """x: (N, *S) -> (x - mean) / sqrt(var + eps) * weight + bias, statistics over each sample's S;
    weight, bias: S (absent with affine: false)."""
    (x,) = xs
    xhat, rstd = _normalise(x, 1, attrs.get("eps", 1e-5))
    xhat = xhat.reshape(x.shape)
    w = params.get("weight")
    out = xhat * w + params["bias"] if w is not None else xhat.copy()
    return out, (xhat, rstd, w), {}


def _layernorm_backward(attrs, dout, cache):
    xhat, rstd, w = cache
    n = dout.shape[0]
    dxhat = dout * w if w is not None else dout
    dx = _normalise_backward(np.ascontiguousarray(dxhat).reshape(n, 1, -1), xhat.reshape(n, 1, -1), rstd)
    dparams = {} if w is None else {"weight": (dout * xhat).sum(axis=0), "bias": dout.sum(axis=0)}
    return [dx.reshape(dout.shape)], dparams


def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """(C,) -> broadcastable against (N, C, ...) of `ndim` dimensions."""
    return v.reshape((-1,) + (1,) * (ndim - 2))


def _groupnorm_forward(attrs, xs, params, buffers, train, rng):
    """x: (N, C, H, W) or (N, C) -> normalised over each sample's groups of C/groups channels (and H, W);
    then weight * . + bias per channel, weight, bias: (C,) (absent with affine: false)."""
    (x,) = xs
    xhat, rstd = _normalise(x, attrs["groups"], attrs.get("eps", 1e-5))
    xhat = xhat.reshape(x.shape)
    w = params.get("weight")
    if w is None:
        return xhat, (xhat, rstd, None), {}
    return xhat * _per_channel(w, x.ndim) + _per_channel(params["bias"], x.ndim), (xhat, rstd, w), {}


def _groupnorm_backward(attrs, dout, cache):
    xhat, rstd, w = cache
    n, groups = dout.shape[0], attrs["groups"]
    dxhat = dout * _per_channel(w, dout.ndim) if w is not None else dout
    dx = _normalise_backward(np.ascontiguousarray(dxhat).reshape(n, groups, -1), xhat.reshape(n, groups, -1), rstd)
    axes = (0,) + tuple(range(2, dout.ndim))
    dparams = {} if w is None else {"weight": (dout * xhat).sum(axis=axes), "bias": dout.sum(axis=axes)}
    return [dx.reshape(dout.shape)], dparams


def _channel_window_sum(v: np.ndarray, before: int, after: int) -> np.ndarray:
    """s[:, c] = sum of v[:, c - before .. c + after] (channels outside 0..C-1 count as 0); v: (N, C, ...)."""
    C = v.shape[1]
    pad = [(0, 0)] * v.ndim
    pad[1] = (before, after)
    padded = np.pad(v, pad)
    s = padded[:, 0:C].copy()
    for o in range(1, before + after + 1):
        s += padded[:, o:o + C]
    return s


def _lrn_forward(attrs, xs, params, buffers, train, rng):
    """x: (N, C, H, W) -> x / (k + alpha/size * sum of x^2 over channels c - size//2 .. c + (size-1)//2)^beta,
    PyTorch's LocalResponseNorm (the sum is an average pool of x^2 over `size` zero-padded channels)."""
    (x,) = xs
    size, alpha, beta, k = attrs["size"], attrs["alpha"], attrs["beta"], attrs["k"]
    avg = _channel_window_sum(x * x, size // 2, (size - 1) // 2) / size
    div = avg * alpha + k
    return x / div ** beta, (x, div), {}


def _lrn_backward(attrs, dout, cache):
    x, div = cache
    size, alpha, beta = attrs["size"], attrs["alpha"], attrs["beta"]
    scale = div ** -beta
    # Channel c enters the sums of the outputs c' with c' - size//2 <= c <= c' + (size-1)//2.
    u = dout * x * scale / div
    back = _channel_window_sum(u, (size - 1) // 2, size // 2)
    return [dout * scale - (2 * beta * alpha / size) * x * back], {}


layernorm = Op("layernorm", _layernorm_forward, _layernorm_backward)
groupnorm = Op("groupnorm", _groupnorm_forward, _groupnorm_backward)
lrn = Op("lrn", _lrn_forward, _lrn_backward)
