"""Fused ops: two layers computed in one op, for the exact rewrites of cnnspec/rewrite.py.

They are not layer types (a spec cannot name them, and OPS lists only layer types); the rewrite stage puts
them in a model's execution plan where their result is bit for bit the two layers'. Each computes exactly
the element operations of its two layers (the same ufuncs on the same values, reductions over the same
slices), only without a full pass over memory between them, so its results are the unfused ones by
construction; rewrite.py states when replacing the two layers by one is exact.
"""
from __future__ import annotations

import numpy as np

from . import parallel
from .batchnorm import backward as _bn_backward, forward as _bn_forward, output_from_cache
from .op import Op
from .pooling import _maxpool_backward, _maxpool_forward


def _maxpool_relu_forward(attrs, xs, params, buffers, train, rng):
    """x: (N, C, H, W) -> relu(maxpool(x)), batch-last. The relu runs in place on the pooled output (fresh
    memory the pool owns): the pre-relu values are not needed again (relu's backward reads its output)."""
    out, cache, _ = _maxpool_forward(attrs, xs, params, buffers, train, rng)
    parallel.elementwise(lambda o: np.maximum(o, 0, out=o), out)  # what ops/activations.relu computes
    return out, (cache, out), {}


def _maxpool_relu_backward(attrs, dout, cache):
    """relu's backward (ops/activations.py: dout * (out != 0)) on the pooled shape, then maxpool's."""
    pool_cache, out = cache
    g = parallel.elementwise(lambda d, g_, o: np.multiply(g_, o != 0, out=d), np.empty_like(out), dout, out)
    return _maxpool_backward(attrs, g, pool_cache)


def _batchnorm_relu_forward(attrs, xs, params, buffers, train, rng):
    """x: (N, C, H, W) or (N, C) -> relu(batchnorm(x)); each slice of channels gets its relu while it is
    still in cache. The batch norm output is not kept: `batchnorm_output(cache)` recomputes it."""
    return _bn_forward(attrs, xs, params, buffers, train, rng, relu=True)


def _batchnorm_relu_backward(attrs, dout, cache):
    return _bn_backward(attrs, dout, cache, relu=True)


def batchnorm_output(cache) -> np.ndarray:
    """The batch norm output inside a batchnorm_relu (for model.activations), bit for bit the unfused op's."""
    return output_from_cache(cache)


maxpool_relu = Op("maxpool_relu", _maxpool_relu_forward, _maxpool_relu_backward)
batchnorm_relu = Op("batchnorm_relu", _batchnorm_relu_forward, _batchnorm_relu_backward)

FUSED: dict[str, Op] = {op.name: op for op in (maxpool_relu, batchnorm_relu)}
