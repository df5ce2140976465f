"""Elementwise activations and softmax. Each caches the least backward needs (often its output).

Gradients at the kinks follow PyTorch's backward formulas exactly: relu6, hardsigmoid and hardswish take the
outer piece's slope at the ends of their middle piece (0 at relu6's 0 and 6, 0 and 1 at hardswish's -3 and 3)."""
from __future__ import annotations

import math

import numpy as np

from . import parallel
from .op import Op


def _relu_forward(attrs, xs, params, buffers, train, rng):
    """x: any shape -> max(x, 0) (NaN propagates, as in PyTorch)."""
    (x,) = xs
    out = parallel.elementwise(lambda o, a: np.maximum(a, 0, out=o), np.empty_like(x), x)
    return out, out, {}


def _relu_backward(attrs, dout, out):
    # PyTorch's threshold_backward: the gradient passes where NOT (out <= 0), so at x == 0 it is 0 and
    # where x is NaN it passes. out is max(x, 0): never negative and never -0.0 (np.maximum(-0.0, 0) is
    # +0.0), so `out != 0` is that condition in one comparison. A masked gradient is dout * 0 (PyTorch
    # writes 0 there; they differ only for an infinite or NaN dout, which gives NaN here).
    dx = parallel.elementwise(lambda d, g, o: np.multiply(g, o != 0, out=d), np.empty_like(out), dout, out)
    return [dx], {}


def _leaky_relu_forward(attrs, xs, params, buffers, train, rng):
    """x: any shape -> x where x > 0 else slope * x."""
    (x,) = xs
    positive = x > 0
    return np.where(positive, x, x * attrs.get("slope", 0.01)), positive, {}


def _leaky_relu_backward(attrs, dout, positive):
    return [np.where(positive, dout, dout * attrs.get("slope", 0.01))], {}


def _sigmoid_forward(attrs, xs, params, buffers, train, rng):
    """x: any shape -> 1 / (1 + exp(-x)), without overflow for large negative x."""
    (x,) = xs
    e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
    r = 1.0 / (1.0 + e)
    out = np.where(x >= 0, r, e * r)
    return out, out, {}


def _sigmoid_backward(attrs, dout, out):
    return [dout * out * (1.0 - out)], {}


def _tanh_forward(attrs, xs, params, buffers, train, rng):
    """x: any shape -> tanh(x)."""
    out = np.tanh(xs[0])
    return out, out, {}


def _tanh_backward(attrs, dout, out):
    return [dout * (1.0 - out * out)], {}


def _softmax_forward(attrs, xs, params, buffers, train, rng):
    """x: (N, K) or (N, C, H, W) -> softmax over axis 1 (classes / channels)."""
    (x,) = xs
    e = x - x.max(axis=1, keepdims=True)  # the largest exponent is 0: no overflow
    np.exp(e, out=e)
    e /= e.sum(axis=1, keepdims=True)
    return e, e, {}


def _softmax_backward(attrs, dout, out):
    # Jacobian-vector product: dx = out * (dout - sum_k dout_k * out_k).
    dx = dout - (dout * out).sum(axis=1, keepdims=True)
    dx *= out
    return [dx], {}


def _relu6_forward(attrs, xs, params, buffers, train, rng):
    """x: any shape -> min(max(x, 0), 6) (NaN propagates, as in PyTorch's hardtanh)."""
    (x,) = xs
    out = parallel.elementwise(lambda o, a: np.clip(a, 0, 6, out=o), np.empty_like(x), x)
    return out, out, {}


def _relu6_backward(attrs, dout, out):
    # PyTorch's hardtanh_backward: the gradient passes only strictly inside (0, 6).
    dx = parallel.elementwise(lambda d, g, o: np.multiply(g, (o > 0) & (o < 6), out=d), np.empty_like(out),
                              dout, out)
    return [dx], {}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow for large |x|."""
    e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
    r = 1.0 / (1.0 + e)
    return np.where(x >= 0, r, e * r)


def _silu_forward(attrs, xs, params, buffers, train, rng):
    """x: any shape -> x * sigmoid(x)."""
    (x,) = xs
    s = _sigmoid(x)
    return x * s, (x, s), {}


def _silu_backward(attrs, dout, cache):
    x, s = cache
    return [dout * (s * (1.0 + x * (1.0 - s)))], {}


def _hardsigmoid_forward(attrs, xs, params, buffers, train, rng):
    """x: any shape -> relu6(x + 3) / 6 (PyTorch's hardsigmoid)."""
    (x,) = xs
    return np.clip(x + 3, 0, 6) / 6, x, {}


# PyTorch's hardsigmoid_backward multiplies by 1/6 rounded to float32 (0.1666666716...), in float64 too; so do
# we, to give PyTorch's numbers (3e-8 relative from the exact slope).
_ONE_SIXTH = float(np.float32(1 / 6))


def _hardsigmoid_backward(attrs, dout, x):
    # 0 outside the open interval (-3, 3), as PyTorch.
    return [np.where((x > -3) & (x < 3), dout * _ONE_SIXTH, 0).astype(dout.dtype, copy=False)], {}


def _hardswish_forward(attrs, xs, params, buffers, train, rng):
    """x: any shape -> x * relu6(x + 3) / 6."""
    (x,) = xs
    return x * np.clip(x + 3, 0, 6) / 6, x, {}


def _hardswish_backward(attrs, dout, x):
    # PyTorch's hardswish_backward: 0 up to -3, x/3 + 1/2 on (-3, 3), 1 from 3 on; NaN where x is NaN
    # (its vectorised kernel, which every tensor of more than a few values takes, gives NaN there).
    slope = np.where(x <= -3, 0, np.where(x >= 3, 1, x / 3 + 0.5)).astype(dout.dtype, copy=False)
    return [dout * slope], {}


_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_KAPPA = 0.044715


ERF_CHUNK = 1 << 16  # values converted to Python floats at a time: bounds the temporaries at ~2 MiB


def _erf(x: np.ndarray) -> np.ndarray:
    """erf elementwise in float64. NumPy has none; math.erf is libm's (accurate to ~1 ulp), applied a chunk at a
    time so the Python floats it needs never outnumber ERF_CHUNK."""
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty(flat.size, np.float64)
    for i in range(0, flat.size, ERF_CHUNK):
        part = flat[i:i + ERF_CHUNK]
        out[i:i + part.size] = np.fromiter(map(math.erf, part.tolist()), dtype=np.float64, count=part.size)
    return out.reshape(x.shape)


def _gelu_forward(attrs, xs, params, buffers, train, rng):
    """x: any shape -> x * Phi(x) (exact), or PyTorch's tanh approximation with approximate: tanh."""
    (x,) = xs
    if attrs.get("approximate", "none") == "tanh":
        t = np.tanh(_SQRT_2_OVER_PI * (x + _KAPPA * x * x * x))
        return 0.5 * x * (1 + t), (x, t), {}
    cdf = (0.5 * (1.0 + _erf(x / math.sqrt(2)))).astype(x.dtype, copy=False)
    return x * cdf, (x, cdf), {}


def _gelu_backward(attrs, dout, cache):
    x, t = cache
    if attrs.get("approximate", "none") == "tanh":
        # PyTorch's GeluBackward for tanh: 0.5(1 + t) + 0.5x(1 - t^2) sqrt(2/pi)(1 + 3 kappa x^2)
        slope = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * _KAPPA * x * x)
        return [dout * slope], {}
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return [dout * (t + x * pdf)], {}


relu = Op("relu", _relu_forward, _relu_backward)
relu6 = Op("relu6", _relu6_forward, _relu6_backward)
silu = Op("silu", _silu_forward, _silu_backward)
hardsigmoid = Op("hardsigmoid", _hardsigmoid_forward, _hardsigmoid_backward)
hardswish = Op("hardswish", _hardswish_forward, _hardswish_backward)
gelu = Op("gelu", _gelu_forward, _gelu_backward)
leaky_relu = Op("leaky_relu", _leaky_relu_forward, _leaky_relu_backward)
sigmoid = Op("sigmoid", _sigmoid_forward, _sigmoid_backward)
tanh = Op("tanh", _tanh_forward, _tanh_backward)
softmax = Op("softmax", _softmax_forward, _softmax_backward)
