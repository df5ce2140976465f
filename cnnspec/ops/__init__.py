"""Layer implementations, registered explicitly by their spec type name.

Every op follows the contract in `op.py`: forward(attrs, xs, params, buffers, train, rng) ->
(out, cache, buffer_updates) and backward(attrs, dout, cache) -> (dxs, dparams).
"""
from __future__ import annotations

from .activations import gelu, hardsigmoid, hardswish, leaky_relu, relu, relu6, sigmoid, silu, softmax, tanh
from .batchnorm import batchnorm
from .channels import channel_shuffle, channel_split, multiply
from .conv import conv2d
from .dense import dense
from .dropout import dropout
from .normalization import groupnorm, layernorm, lrn
from .op import Op
from .pooling import adaptive_avgpool, avgpool, global_avgpool, maxpool
from .structural import add, concat, flatten

OPS: dict[str, Op] = {op.name: op for op in (
    conv2d, batchnorm, relu, leaky_relu, sigmoid, tanh, softmax, maxpool, avgpool, global_avgpool,
    flatten, dropout, dense, add, concat,
    relu6, silu, hardswish, hardsigmoid, gelu, layernorm, groupnorm, lrn, adaptive_avgpool, multiply,
    channel_split, channel_shuffle,
)}


def get_op(name: str) -> Op:
    """The op registered as `name`; an unknown name lists the known ones."""
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"unknown layer type '{name}' (known: {', '.join(sorted(OPS))})") from None


__all__ = ["OPS", "Op", "get_op"]
