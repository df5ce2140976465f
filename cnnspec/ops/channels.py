"""Layers that gate, split or reorder channels: multiply (squeeze-and-excitation), channel_split and
channel_shuffle (ShuffleNet)."""
from __future__ import annotations

import numpy as np

from .op import Op
from .parallel import batch_first, batch_last


def _multiply_forward(attrs, xs, params, buffers, train, rng):
    """xs: two arrays of one shape -> their product; or (N, C, H, W) and a gate (N, C) or (N, C, 1, 1)
    (either order, attrs["gate"] says which) -> each channel times its gate value."""
    a, b = xs
    gate = attrs.get("gate")
    if gate is not None:
        full, g = (a, b) if gate == 1 else (b, a)
        g4 = g.reshape(g.shape[0], g.shape[1], 1, 1)
        return full * g4, (full, g4, g.shape, gate), {}
    return a * b, (a, b, None, None), {}


def _multiply_backward(attrs, dout, cache):
    a, b, gate_shape, gate = cache
    if gate is None:
        return [dout * b, dout * a], {}
    full, g4 = a, b
    dfull = dout * g4
    dgate = (dout * full).sum(axis=(2, 3)).reshape(gate_shape)
    return ([dfull, dgate] if gate == 1 else [dgate, dfull]), {}


def _split_forward(attrs, xs, params, buffers, train, rng):
    """x: (N, C, ...) -> x[:, start:stop] (a view: ops never write their inputs)."""
    (x,) = xs
    return x[:, attrs["start"]:attrs["stop"]], x.shape, {}


def _split_backward(attrs, dout, x_shape):
    dx = batch_first(np.zeros(x_shape[1:] + x_shape[:1], dout.dtype))  # batch-last, as the engine stores
    dx[:, attrs["start"]:attrs["stop"]] = dout
    return [dx], {}


def _shuffle_order(channels: int, groups: int) -> np.ndarray:
    """Output channel j reads input channel (j % groups) * (channels // groups) + j // groups."""
    j = np.arange(channels)
    return (j % groups) * (channels // groups) + j // groups


def _shuffle_forward(attrs, xs, params, buffers, train, rng):
    """x: (N, C, ...) -> channels reordered as PyTorch's ChannelShuffle: view (N, g, C/g, ...), swap the
    two channel axes, flatten them again."""
    (x,) = xs
    order = _shuffle_order(x.shape[1], attrs["groups"])
    return batch_first(batch_last(x)[order]), order, {}


def _shuffle_backward(attrs, dout, order):
    return [batch_first(batch_last(dout)[np.argsort(order)])], {}


multiply = Op("multiply", _multiply_forward, _multiply_backward, n_inputs=2)
channel_split = Op("channel_split", _split_forward, _split_backward)
channel_shuffle = Op("channel_shuffle", _shuffle_forward, _shuffle_backward)
