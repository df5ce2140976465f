"""Fully connected layer (PyTorch Linear / ONNX Gemm with transB=1): out = x @ w.T + b."""
from __future__ import annotations

from .op import Op


def forward(attrs, xs, params, buffers, train, rng):
    """x: (N, F_in), weight: (units, F_in), bias: (units,) -> out: (N, units)."""
    (x,) = xs
    w, b = params["weight"], params.get("bias")
    assert x.ndim == 2 and x.shape[1] == w.shape[1], f"dense weight {w.shape} does not fit input {x.shape}"
    out = x @ w.T
    if b is not None:
        out += b
    return out, (x, w, b is not None), {}


def backward(attrs, dout, cache, need_dx=True):
    """dout: (N, units) -> dx (N, F_in) (None when need_dx is False); dweight (units, F_in), dbias (units,)."""
    x, w, has_bias = cache
    dparams = {"weight": dout.T @ x}
    if has_bias:
        dparams["bias"] = dout.sum(axis=0)
    return [dout @ w if need_dx else None], dparams


dense = Op("dense", forward, backward, skips_dx=True)
