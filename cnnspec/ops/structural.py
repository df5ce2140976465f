"""Layers that only move or combine values: flatten, add, concat."""
from __future__ import annotations

import numpy as np

from .op import Op
from .parallel import batch_first, batch_last


def _flatten_forward(attrs, xs, params, buffers, train, rng):
    """x: (N, ...) -> out: (N, prod(...)) in C order (PyTorch's C, H, W order)."""
    (x,) = xs
    return x.reshape(x.shape[0], -1), x.shape, {}


def _flatten_backward(attrs, dout, x_shape):
    return [dout.reshape(x_shape)], {}


def _add_forward(attrs, xs, params, buffers, train, rng):
    """xs: two or more arrays of one shape -> their sum."""
    assert len(xs) >= 2 and all(x.shape == xs[0].shape for x in xs), \
        f"add needs >= 2 inputs of one shape, got {[x.shape for x in xs]}"
    out = xs[0] + xs[1]
    for x in xs[2:]:
        out += x
    return out, len(xs), {}


def _add_backward(attrs, dout, n):
    # Every input gets the same gradient; one read-only view each, so an in-place accumulation by the
    # caller fails loudly instead of corrupting the other inputs' gradients.
    dout = dout.view()
    dout.flags.writeable = False
    return [dout] * n, {}


def _concat_forward(attrs, xs, params, buffers, train, rng):
    """xs: two or more (N, C_i, H, W) or (N, F_i) -> out: concatenated along axis 1."""
    assert len(xs) >= 2, f"concat needs >= 2 inputs, got {len(xs)}"
    sizes = [x.shape[1] for x in xs]
    # Along axis 0 of the batch-last views: each input is one contiguous block of the output.
    out = batch_first(np.concatenate([batch_last(x) for x in xs], axis=0))
    return out, np.cumsum(sizes)[:-1], {}


def _concat_backward(attrs, dout, splits):
    return [batch_first(part) for part in np.split(batch_last(dout), splits, axis=0)], {}


flatten = Op("flatten", _flatten_forward, _flatten_backward)
add = Op("add", _add_forward, _add_backward, n_inputs=None)
concat = Op("concat", _concat_forward, _concat_backward, n_inputs=None)
