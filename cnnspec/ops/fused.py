"""Fused ops: several layers computed in one op, for the exact rewrites of cnnspec/rewrite.py.

They are not layer types (a spec cannot name them, and OPS lists only layer types); the rewrite stage puts
them in a model's execution plan where their result is bit for bit the layers'. Each computes the element
operations of its layers (the same ufuncs, reductions over the same slices), without a full pass over
memory between them, and some in another order (a relu or an evaluation-mode batch norm after the pool
instead of before); rewrite.py proves each exact where its pass applies it.
"""
from __future__ import annotations

import numpy as np

from . import parallel
from .batchnorm import apply_fold, backward as _bn_backward, eval_fold, evaluate as _bn_evaluate, \
    forward as _bn_forward, output_from_cache
from .op import Op
from .pooling import _argmax, _maxpool, _maxpool_forward, _scatter


def _maxpool_relu_forward(attrs, xs, params, buffers, train, rng):
    """x: (N, C, H, W) -> relu(maxpool(x)), batch-last. The relu runs in place on the pooled output (fresh
    memory the pool owns): the pre-relu values are not needed again (relu's backward reads its output)."""
    out, cache, _ = _maxpool_forward(attrs, xs, params, buffers, train, rng)
    parallel.elementwise(lambda o: np.maximum(o, 0, out=o), out)  # what ops/activations.relu computes
    return out, (cache, out), {}


def _maxpool_relu_backward(attrs, dout, cache):
    """relu's backward then maxpool's, in maxpool's one pass: a window whose relu output is 0 gets an argmax
    that is no offset (argmax + kh*kw), so maxpool's dout * (argmax == k) is dout * 0 at each of its values.

    That is bit for bit relu's dout * (out != 0) followed by maxpool's * (argmax == k): multiplying by two
    factors in {0, 1} one after the other gives dout when both are 1, and dout * 0 otherwise (dout * 0 * 0
    and dout * 0 * 1 are dout * 0, the same signed zero or NaN), which is what one factor, their product,
    gives."""
    pool_cache, out = cache
    argmax, x_shape = _argmax(attrs, pool_cache)
    kernel = attrs["kernel"]
    none = kernel[0] * kernel[1]  # no window offset has this index, nor any larger one
    # argmax + none where relu's output is 0: arithmetic on contiguous arrays (np.where over a random mask
    # measured 20x slower here)
    dtype = argmax.dtype if 2 * none - 1 <= np.iinfo(argmax.dtype).max else np.dtype(np.int32)
    masked = np.equal(parallel.batch_last(out), 0)
    masked = masked.view(np.uint8) if dtype == np.uint8 else masked.astype(dtype)
    masked *= dtype.type(none)
    masked += argmax
    return [_scatter(attrs, dout, masked, x_shape)], {}


def _batchnorm_relu_forward(attrs, xs, params, buffers, train, rng):
    """x: (N, C, H, W) or (N, C) -> relu(batchnorm(x)); each slice of channels gets its relu while it is
    still in cache. The batch norm output is not kept: `inner_output` recomputes it."""
    return _bn_forward(attrs, xs, params, buffers, train, rng, relu=True)


def _batchnorm_relu_backward(attrs, dout, cache):
    return _bn_backward(attrs, dout, cache, relu=True)


def _batchnorm_maxpool_relu_forward(attrs, xs, params, buffers, train, rng):
    """x: (N, C, H, W) -> relu(maxpool(batchnorm(x))), batch-last; attrs: {"batchnorm": ..., "maxpool": ...},
    the batch norm layer's parameters and buffers.

    In evaluation mode, when every channel's map x * scale + shift has a finite scale > 0 and a finite shift
    (rewrite.batchnorm_after_maxpool proves that exact), the pool runs first, on x, and the batch norm on a
    quarter of the values (2x2 windows); the cache keeps x and the map to recompute the rest on demand.
    Otherwise (training: batch statistics are not elementwise) the two ops run one after the other."""
    bn_attrs, pool_attrs = attrs["batchnorm"], attrs["maxpool"]
    (x,) = xs
    if not train:
        fold = eval_fold(bn_attrs, params, buffers, x.shape[1], x.dtype)
        if _increasing(fold):
            out = apply_fold(_maxpool(pool_attrs, x, with_argmax=False)[0], fold, relu=True)
            return out, ("pooled", x, fold, out), {}
    z, bn_cache, updates = _bn_forward(bn_attrs, xs, params, buffers, train, rng)
    out, pool_cache, _ = _maxpool_relu_forward(pool_attrs, [z], {}, {}, train, rng)
    return out, ("plain", z, bn_cache, pool_cache), updates


def _increasing(fold) -> bool:
    """x * scale + shift is non-decreasing in x and sends no number to NaN, in every channel."""
    return bool(np.all(fold.scale > 0) and np.isfinite(fold.scale).all() and np.isfinite(fold.shift).all())


def _batchnorm_maxpool_relu_backward(attrs, dout, cache):
    if cache[0] == "pooled":  # recompute what the unfused evaluation-mode forward kept
        _, x, fold, out = cache
        z, bn_cache = _bn_evaluate(x, fold)
        pool_cache = (("eval", z), out)
    else:
        _, z, bn_cache, pool_cache = cache
    (dz,), _ = _maxpool_relu_backward(attrs["maxpool"], dout, pool_cache)
    return _bn_backward(attrs["batchnorm"], dz, bn_cache)


def inner_output(op: str, cache) -> np.ndarray:
    """The first layer's output inside fused step `op` (for model.activations), bit for bit the unfused op's:
    the batch norm's output inside batchnorm_relu or batchnorm_maxpool_relu."""
    if op == "batchnorm_relu":
        return output_from_cache(cache)
    if cache[0] == "pooled":
        _, x, fold, _ = cache
        return _bn_evaluate(x, fold)[0]
    return cache[1]


maxpool_relu = Op("maxpool_relu", _maxpool_relu_forward, _maxpool_relu_backward)
batchnorm_relu = Op("batchnorm_relu", _batchnorm_relu_forward, _batchnorm_relu_backward)
batchnorm_maxpool_relu = Op("batchnorm_maxpool_relu", _batchnorm_maxpool_relu_forward,
                            _batchnorm_maxpool_relu_backward)

FUSED: dict[str, Op] = {op.name: op for op in (maxpool_relu, batchnorm_relu, batchnorm_maxpool_relu)}
