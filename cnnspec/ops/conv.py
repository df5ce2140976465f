"""2-D convolution (PyTorch Conv2d / ONNX Conv semantics, cross-correlation), by im2col and one GEMM.

Layout of the column matrix: rows (C, kh, kw), columns (OH, OW, N). With rows first, each group's rows
are one contiguous block (so all groups run as one stacked matmul); with the batch last, the im2col copy
and the col2im accumulation move along contiguous (OW, N) rows of the batch-last input (parallel.py).
The GEMM then writes the output as (F, OH, OW, N), which is the engine's activation layout, so the
output needs no transpose copy and the incoming gradient is already the matrix the backward GEMMs take.
Measured on bench-cnn in float64: col2im 1.6x faster than with (N, OH, OW) columns, whose rows are OW
long; (N*OH*OW, C*kh*kw) rows-per-pixel, whose copies move along a kw-long axis, was 1.5-3x slower.

The bias rides in the GEMM: cols gets a last row of ones and the weight matrix a last column holding
the bias, so the product adds it (no extra pass over the output) and the weight-gradient GEMM yields
the bias gradient (the row sums of dout) as its last column.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..shapes import window_out
from . import parallel
from .op import Op
from .parallel import batch_first, batch_last
from .windows import offset_slices, pad_mode, unpad_grad


def _im2col(tp: np.ndarray, kernel, stride, dilation, out_hw, ones_row: bool) -> np.ndarray:
    """tp: (C, Hp, Wp, N) padded input -> cols (C*kh*kw [+ 1], OH*OW*N), contiguous; channel slices in
    parallel. ones_row appends a row of ones (the bias's)."""
    C, N = tp.shape[0], tp.shape[3]
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    sC, sH, sW, sN = tp.strides
    windows = as_strided(tp, (C, kh, kw, oh, ow, N), (sC, dh * sH, dw * sW, sh * sH, sw * sW, sN), writeable=False)
    rows = C * kh * kw
    cols = np.empty((rows + ones_row, oh * ow * N), dtype=tp.dtype)
    body = cols[:rows].reshape(C, kh, kw, oh, ow, N)
    parallel.run(lambda cs: np.copyto(body[cs], windows[cs]), C, body.size)
    if ones_row:
        cols[rows] = 1
    return cols


def forward(attrs, xs, params, buffers, train, rng):
    """x: (N, C, H, W), weight: (F, C/groups, kh, kw), bias: (F,) -> out: (N, F, OH, OW), batch-last."""
    (x,) = xs
    w, b = params["weight"], params.get("bias")
    N, C, H, W = x.shape
    F, Cg, kh, kw = w.shape
    G = attrs.get("groups", 1)
    stride, pads, dilation = tuple(attrs["stride"]), tuple(attrs["pads"]), tuple(attrs.get("dilation", (1, 1)))
    mode = attrs.get("padding_mode", "zeros")
    assert Cg * G == C and F % G == 0, f"conv weight {w.shape} with groups={G} does not fit input {x.shape}"
    oh = window_out(H, kh, stride[0], pads[0], pads[2], dilation[0])
    ow = window_out(W, kw, stride[1], pads[1], pads[3], dilation[1])
    assert oh > 0 and ow > 0, f"conv kernel {kh}x{kw} (dilation {dilation}) does not fit padded input {x.shape}"

    fused_bias = b is not None and G == 1
    # A batch-first x (the model input) is made batch-last first: im2col would gather single values.
    t = parallel.contiguous(batch_last(x))
    cols = _im2col(pad_mode(t, pads, mode), (kh, kw), stride, dilation, (oh, ow), fused_bias)
    if G == 1:
        wm = w.reshape(F, -1)
        y = (np.concatenate([wm, b[:, None]], axis=1) if fused_bias else wm) @ cols
    else:
        y = np.matmul(w.reshape(G, F // G, -1), cols.reshape(G, -1, cols.shape[1])).reshape(F, -1)
        if b is not None:
            parallel.run(lambda fs: np.add(y[fs], b[fs, None], out=y[fs]), F, y.size)
    cache = (cols, w, b is not None, x.shape, (oh, ow))
    return batch_first(y.reshape(F, oh, ow, N)), cache, {}


def backward(attrs, dout, cache, need_dx=True):
    """dout: (N, F, OH, OW) -> dx (N, C, H, W) (None when need_dx is False); dweight, dbias (F,)."""
    cols, w, has_bias, (N, C, H, W), (oh, ow) = cache
    F, _, kh, kw = w.shape
    G = attrs.get("groups", 1)
    stride, pads, dilation = tuple(attrs["stride"]), tuple(attrs["pads"]), tuple(attrs.get("dilation", (1, 1)))
    mode = attrs.get("padding_mode", "zeros")

    # (F, OH, OW, N): a view when dout is batch-last, as the ops after a conv return it
    d = parallel.contiguous(batch_last(dout)).reshape(F, -1)
    if G == 1:
        rows = C * kh * kw
        dwb = (cols @ d.T).T  # the same product; this operand order runs ~15% faster in OpenBLAS here
        dparams = {"weight": dwb[:, :rows].reshape(w.shape)}
        if has_bias:
            dparams["bias"] = dwb[:, rows]  # cols' row of ones: the row sums of d
    else:
        d3 = d.reshape(G, F // G, -1)
        dw = np.matmul(d3, cols.reshape(G, -1, cols.shape[1]).transpose(0, 2, 1))
        dparams = {"weight": dw.reshape(w.shape)}
        if has_bias:
            dparams["bias"] = d @ np.ones(d.shape[1], d.dtype)  # a BLAS row sum: threaded, 2x np.sum here
    if not need_dx:  # the layer reads the model input and nobody asked for its gradient
        return [None], dparams
    if G == 1:
        dcols = w.reshape(F, -1).T @ d
    else:
        dcols = np.matmul(w.reshape(G, F // G, -1).transpose(0, 2, 1), d3)

    # col2im: accumulate in (C, Hp, Wp, N), the batch-last layout, so each offset's slice of dcols
    # adds without a transpose; channel slices are independent, so they run on separate threads.
    dcols = dcols.reshape(C, kh, kw, oh, ow, N)
    pt, pl, pb, pr = pads
    dtp = np.zeros((C, pt + H + pb, pl + W + pr, N), dtype=dout.dtype)

    def col2im(cs):
        target, source = dtp[cs], dcols[cs]
        for i in range(kh):
            for j in range(kw):
                target[offset_slices(i, j, (oh, ow), stride, dilation)] += source[:, i, j]

    parallel.run(col2im, C, dtp.size * kh * kw)
    return [batch_first(unpad_grad(dtp, (H, W), pads, mode))], dparams


conv2d = Op("conv2d", forward, backward, skips_dx=True)
