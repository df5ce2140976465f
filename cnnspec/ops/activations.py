"""Elementwise activations and softmax. Each caches the least backward needs (often its output)."""
from __future__ import annotations

import numpy as np

from . import parallel
from .op import Op


def _relu_forward(attrs, xs, params, buffers, train, rng):
    """x: any shape -> max(x, 0) (NaN propagates, as in PyTorch)."""
    (x,) = xs
    out = parallel.elementwise(lambda o, a: np.maximum(a, 0, out=o), np.empty_like(x), x)
    return out, out, {}


def _relu_backward(attrs, dout, out):
    # Gradient 0 at x == 0, like PyTorch's threshold_backward.
    dx = parallel.elementwise(lambda d, g, o: np.multiply(g, o > 0, out=d), np.empty_like(out), dout, out)
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


relu = Op("relu", _relu_forward, _relu_backward)
leaky_relu = Op("leaky_relu", _leaky_relu_forward, _leaky_relu_backward)
sigmoid = Op("sigmoid", _sigmoid_forward, _sigmoid_backward)
tanh = Op("tanh", _tanh_forward, _tanh_backward)
softmax = Op("softmax", _softmax_forward, _softmax_backward)
