"""Inverted dropout: at train time zero each value with probability `rate` and scale the kept ones by
1/(1 - rate), so eval is the identity. The mask comes from the caller's seeded generator."""
from __future__ import annotations

from .op import Op


def forward(attrs, xs, params, buffers, train, rng):
    """x: any shape -> out: same shape. Eval (or rate 0) returns x itself."""
    (x,) = xs
    rate = attrs.get("rate", 0.5)
    if not train or rate == 0:
        return x, None, {}
    keep = rng.random(x.shape) >= rate
    # x*keep is exact (x or 0), so this rounds once, like PyTorch's x * (mask / (1 - p)).
    scale = x.dtype.type(1.0 / (1.0 - rate))
    out = x * keep
    out *= scale
    return out, (keep, scale), {}


def backward(attrs, dout, cache):
    """dout: like x -> dx: like x."""
    if cache is None:
        return [dout], {}
    keep, scale = cache
    dx = dout * keep
    dx *= scale
    return [dx], {}


dropout = Op("dropout", forward, backward)
