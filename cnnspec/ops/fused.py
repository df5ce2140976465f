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
from .pooling import _argmax, _maxpool_forward, _scatter


def _maxpool_relu_forward(attrs, xs, params, buffers, train, rng):
    """x: (N, C, H, W) -> relu(maxpool(x)), batch-last. The relu runs in place on the pooled output (fresh
    memory the pool owns): the pre-relu values are not needed again (relu's backward reads its output)."""
    out, cache, _ = _maxpool_forward(attrs, xs, params, buffers, train, rng)
    parallel.elementwise(lambda o: np.maximum(o, 0, out=o), out)  # what ops/activations.relu computes
    return out, (cache, out), {}


def _maxpool_relu_backward(attrs, dout, cache):
    """relu's backward then maxpool's, in maxpool's one pass: a window whose relu output is 0 gets an argmax
    that is no offset, so maxpool's dout * (argmax == k) is dout * 0 at each of its values.

    That is bit for bit relu's dout * (out != 0) followed by maxpool's * (argmax == k): multiplying by two
    factors in {0, 1} one after the other gives dout when both are 1, and dout * 0 otherwise (dout * 0 * 0
    and dout * 0 * 1 are dout * 0, the same signed zero or NaN), which is what one factor, their product,
    gives."""
    pool_cache, out = cache
    argmax, x_shape = _argmax(attrs, pool_cache)
    kernel = attrs["kernel"]
    none = kernel[0] * kernel[1]  # no window offset has this index
    index = argmax if none <= np.iinfo(argmax.dtype).max else argmax.astype(np.int32)
    keep = parallel.batch_last(out) != 0
    masked = np.where(keep, index, np.array(none, index.dtype))
    return [_scatter(attrs, dout, masked, x_shape)], {}


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
