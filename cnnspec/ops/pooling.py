"""Max, average, global and adaptive average pooling (PyTorch MaxPool2d / AvgPool2d / AdaptiveAvgPool2d).

Both windowed pools loop over the kh*kw kernel offsets, never over pixels: for one offset, the inputs
seen by every output position form one strided slice of the padded batch-last input (C, Hp, Wp, N),
whose rows run along the batch, so the passes work on those views directly. This one path covers
stride == kernel (no padding copy is made then) as well as padding, dilation and ceil_mode.
"""
from __future__ import annotations

import numpy as np

from .. import shapes
from ..shapes import window_out
from . import parallel
from .op import Op
from .parallel import batch_first, batch_last
from .windows import offset_slices, pad_constant, unpad_grad


def _geometry(attrs, hw):
    """Resolved window attributes plus the output size and the padding the windows actually reach.

    With ceil_mode the last window may hang past the declared end padding; PyTorch clips it, which
    equals padding further with a value that never wins (max) or adds nothing (sum).
    """
    H, W = hw
    kernel = tuple(attrs["kernel"])
    stride = tuple(attrs.get("stride") or kernel)
    pads = tuple(attrs.get("pads", (0, 0, 0, 0)))
    dilation = tuple(attrs.get("dilation", (1, 1)))
    ceil = bool(attrs.get("ceil_mode", False))
    oh = window_out(H, kernel[0], stride[0], pads[0], pads[2], dilation[0], ceil)
    ow = window_out(W, kernel[1], stride[1], pads[1], pads[3], dilation[1], ceil)
    assert oh > 0 and ow > 0, f"pool kernel {kernel} does not fit input {hw} with pads {pads}"
    reach_h = (oh - 1) * stride[0] + dilation[0] * (kernel[0] - 1) + 1  # padded rows the windows span
    reach_w = (ow - 1) * stride[1] + dilation[1] * (kernel[1] - 1) + 1
    reach_pads = (pads[0], pads[1], max(reach_h - pads[0] - H, 0), max(reach_w - pads[1] - W, 0))
    return kernel, stride, pads, dilation, (oh, ow), reach_pads


# ---------------------------------------------------------------- max pool


def _index_dtype(kernel) -> type:
    return np.uint8 if kernel[0] * kernel[1] <= 256 else np.int32


def _windows(tp: np.ndarray, kernel, stride, dilation, out_hw) -> list[np.ndarray]:
    """tp: (C, Hp, Wp, N) -> the kh*kw views (C, OH, OW, N) of what each kernel offset sees."""
    return [tp[offset_slices(i, j, out_hw, stride, dilation)] for i in range(kernel[0]) for j in range(kernel[1])]


def _max_and_argmax(windows: list[np.ndarray], out: np.ndarray, argmax: np.ndarray) -> None:
    """windows: K views -> out = max over K, argmax = index of the FIRST maximum, as PyTorch's CPU kernel.

    Branch-free: offset k wins where it is strictly greater than the best so far (ties keep the
    earlier one), and since k grows, the winning index is a running maximum of k*won. A NaN wins and
    then stays (PyTorch: `val > max || isnan(val)`), so NaN propagates with its index.
    """
    np.copyto(out, windows[0])
    argmax[...] = 0
    for k in range(1, len(windows)):
        won = np.greater(windows[k], out).view(np.uint8).astype(argmax.dtype, copy=False)
        won *= argmax.dtype.type(k)  # k * won in place (the bools' bytes, as 0/1 of the index type)
        np.maximum(argmax, won, out=argmax)
        np.maximum(out, windows[k], out=out)  # equals the winner where won; NaN-propagating
    if np.isnan(out).any():  # rare: redo the index with PyTorch's NaN rule
        argmax[...] = 0
        best = windows[0].copy()
        for k in range(1, len(windows)):
            won = (windows[k] > best) | np.isnan(windows[k])
            np.copyto(argmax, k, where=won)
            np.copyto(best, windows[k], where=won)


def _maxpool(attrs, x: np.ndarray, with_argmax: bool):
    """x: (N, C, H, W) -> (out (N, C, OH, OW) batch-last, argmax (C, OH, OW, N) or None); channel
    slices on separate threads."""
    kernel, stride, _, dilation, out_hw, reach = _geometry(attrs, x.shape[2:])
    t = batch_last(x)
    shape = (t.shape[0],) + out_hw + (t.shape[3],)
    out = np.empty(shape, x.dtype)
    argmax = np.empty(shape, _index_dtype(kernel)) if with_argmax else None

    def pool(cs):
        windows = _windows(pad_constant(t[cs], reach, -np.inf), kernel, stride, dilation, out_hw)
        if with_argmax:
            _max_and_argmax(windows, out[cs], argmax[cs])
        else:
            np.copyto(out[cs], windows[0])
            for w in windows[1:]:
                np.maximum(out[cs], w, out=out[cs])

    parallel.run(pool, t.shape[0], t.size)
    return batch_first(out), argmax


def _maxpool_forward(attrs, xs, params, buffers, train, rng):
    """x: (N, C, H, W) -> out: (N, C, OH, OW), batch-last; padding counts as -inf."""
    (x,) = xs
    if not train:
        return _maxpool(attrs, x, with_argmax=False)[0], ("eval", x), {}  # backward (rare) recomputes argmax
    out, argmax = _maxpool(attrs, x, with_argmax=True)
    return out, ("train", argmax, x.shape), {}


def _argmax(attrs, cache) -> tuple[np.ndarray, tuple[int, ...]]:
    """(argmax (C, OH, OW, N), x's shape) of a forward's cache; recomputed from x after an eval forward."""
    if cache[0] == "eval":
        x = cache[1]
        return _maxpool(attrs, x, with_argmax=True)[1], x.shape
    return cache[1], cache[2]


def _maxpool_backward(attrs, dout, cache):
    """dout: (N, C, OH, OW) -> dx: (N, C, H, W); each window's gradient goes to its first maximum."""
    argmax, x_shape = _argmax(attrs, cache)
    return [_scatter(attrs, dout, argmax, x_shape)], {}


def _scatter(attrs, dout, argmax, x_shape) -> np.ndarray:
    """dx (N, C, H, W), batch-last: dout * (argmax == k) at every window's offset k (an argmax that is no
    offset, as ops/fused.maxpool_relu makes, sends nothing)."""
    kernel, stride, _, dilation, out_hw, reach = _geometry(attrs, x_shape[2:])
    N, C, H, W = x_shape
    tp_shape = (C, reach[0] + H + reach[2], reach[1] + W + reach[3], N)
    # Windows that do not overlap write each element at most once: write instead of accumulate, and
    # when they also tile the whole padded input, every element is written: no zero fill is needed.
    # (dout * mask rather than a masked copy: a random mask makes masked copies branchy and slow.)
    span = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
    disjoint = span[0] <= stride[0] and span[1] <= stride[1]
    tiled = (dilation == (1, 1) and kernel == stride  # windows without holes, side by side
             and (out_hw[0] * stride[0], out_hw[1] * stride[1]) == tp_shape[1:3])
    dtp = (np.empty if tiled else np.zeros)(tp_shape, dtype=dout.dtype)
    g_all = batch_last(dout)

    def scatter(cs):
        g, a, d = g_all[cs], argmax[cs], dtp[cs]
        for k, target in enumerate(_windows(d, kernel, stride, dilation, out_hw)):
            if disjoint:
                np.multiply(g, a == k, out=target)
            else:
                target += g * (a == k)

    parallel.run(scatter, C, dtp.size)
    return batch_first(unpad_grad(dtp, (H, W), reach, "zeros"))


# ---------------------------------------------------------------- average pool


def _avg_divisor(attrs, hw, kernel, stride, pads, out_hw, dtype) -> np.ndarray:
    """(OH, OW, 1) divisors, PyTorch's rule exactly (the trailing 1 broadcasts over the batch).

    Per axis: start = o*s - pad_begin, end = min(start + k, size + pad_end): the window clipped to the
    declared padding (a ceil_mode overhang never counts). count_include_pad divides by that length,
    otherwise by the part inside the input, clip(end, 0, size) - clip(start, 0, size).
    """
    include_pad = attrs.get("count_include_pad", True)
    lengths = []
    for size, k, s, p0, p1, n in zip(hw, kernel, stride, pads[:2], pads[2:], out_hw):
        start = np.arange(n) * s - p0
        end = np.minimum(start + k, size + p1)
        if include_pad:
            lengths.append(end - start)
        else:
            lengths.append(np.minimum(end, size) - np.maximum(start, 0))
    return np.multiply.outer(*lengths).astype(dtype)[:, :, None]


def _avgpool_forward(attrs, xs, params, buffers, train, rng):
    """x: (N, C, H, W) -> out: (N, C, OH, OW), batch-last."""
    (x,) = xs
    kernel, stride, pads, dilation, out_hw, reach = _geometry(attrs, x.shape[2:])
    assert dilation == (1, 1), "avgpool has no dilation"
    tp = pad_constant(batch_last(x), reach, 0.0)
    windows = _windows(tp, kernel, stride, dilation, out_hw)
    out = windows[0].copy()
    for w in windows[1:]:
        out += w
    divisor = _avg_divisor(attrs, x.shape[2:], kernel, stride, pads, out_hw, x.dtype)
    out /= divisor
    return batch_first(out), (x.shape, tp.shape, divisor), {}


def _avgpool_backward(attrs, dout, cache):
    """dout: (N, C, OH, OW) -> dx: (N, C, H, W)."""
    x_shape, tp_shape, divisor = cache
    kernel, stride, _, dilation, out_hw, reach = _geometry(attrs, x_shape[2:])
    g = batch_last(dout) / divisor
    dtp = np.zeros(tp_shape, dtype=dout.dtype)
    for target in _windows(dtp, kernel, stride, dilation, out_hw):
        target += g
    H, W = x_shape[2:]
    return [batch_first(unpad_grad(dtp, (H, W), reach, "zeros"))], {}


# ---------------------------------------------------------------- global average pool


def _global_avgpool_forward(attrs, xs, params, buffers, train, rng):
    """x: (N, C, H, W) -> out: (N, C, 1, 1), the mean over H and W."""
    (x,) = xs
    return x.mean(axis=(2, 3), keepdims=True), x.shape, {}


def _global_avgpool_backward(attrs, dout, x_shape):
    dx = np.empty(x_shape, dtype=dout.dtype)
    dx[...] = dout / (x_shape[2] * x_shape[3])
    return [dx], {}


# ---------------------------------------------------------------- adaptive average pool


def _adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    return [shapes.adaptive_window(i, size, out) for i in range(out)]


def _adaptive_avgpool_forward(attrs, xs, params, buffers, train, rng):
    """x: (N, C, H, W) -> (N, C, oh, ow): output (i, j) is the mean of its window (PyTorch's
    AdaptiveAvgPool2d). A window is a rectangle, so its mean is taken along H, then along W."""
    (x,) = xs
    N, C, H, W = x.shape
    oh, ow = attrs["output_size"]
    rows, cols = _adaptive_windows(H, oh), _adaptive_windows(W, ow)
    t = batch_first(np.empty((C, oh, W, N), x.dtype))  # batch-last, as the engine stores activations
    for i, (a, b) in enumerate(rows):
        t[:, :, i] = x[:, :, a:b].mean(axis=2)
    out = batch_first(np.empty((C, oh, ow, N), x.dtype))
    for j, (a, b) in enumerate(cols):
        out[:, :, :, j] = t[:, :, :, a:b].mean(axis=3)
    return out, x.shape, {}


def _adaptive_avgpool_backward(attrs, dout, x_shape):
    N, C, H, W = x_shape
    oh, ow = attrs["output_size"]
    dt = batch_first(np.zeros((C, oh, W, N), dout.dtype))
    for j, (a, b) in enumerate(_adaptive_windows(W, ow)):
        dt[:, :, :, a:b] += dout[:, :, :, j, None] / (b - a)
    dx = batch_first(np.zeros((C, H, W, N), dout.dtype))
    for i, (a, b) in enumerate(_adaptive_windows(H, oh)):
        dx[:, :, a:b] += dt[:, :, i, None] / (b - a)
    return [dx], {}


maxpool = Op("maxpool", _maxpool_forward, _maxpool_backward)
avgpool = Op("avgpool", _avgpool_forward, _avgpool_backward)
global_avgpool = Op("global_avgpool", _global_avgpool_forward, _global_avgpool_backward)
adaptive_avgpool = Op("adaptive_avgpool", _adaptive_avgpool_forward, _adaptive_avgpool_backward)
