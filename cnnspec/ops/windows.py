"""Padding and sliding-window helpers shared by conv and the pools.

Everything works on batch-last arrays (C, H, W, N) (parallel.py) and loops over kernel offsets (kh*kw
of them), never over pixels or batch items: for one offset (i, j) the inputs seen by all output
positions form one strided slice, whose rows run along W and N.
"""
from __future__ import annotations

import numpy as np

from . import parallel

# PyTorch's padding_mode names -> np.pad's.
NP_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def offset_slices(i: int, j: int, out_hw: tuple[int, int], stride: tuple[int, int],
                  dilation: tuple[int, int] = (1, 1)) -> tuple[slice, slice, slice]:
    """Index of the padded input seen by kernel offset (i, j) at every output position.

    tp[offset_slices(...)] has shape (C, OH, OW, N).
    """
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    h0, w0 = i * dh, j * dw
    return (slice(None), slice(h0, h0 + sh * (oh - 1) + 1, sh), slice(w0, w0 + sw * (ow - 1) + 1, sw))


def pad_constant(t: np.ndarray, pads: tuple[int, int, int, int], value: float = 0.0) -> np.ndarray:
    """t: (C, H, W, N) -> (C, pt+H+pb, pl+W+pr, N), filled with `value`; t itself when no padding."""
    pt, pl, pb, pr = pads
    if not (pt or pl or pb or pr):
        return t
    C, H, W, N = t.shape
    tp = np.full((C, pt + H + pb, pl + W + pr, N), value, dtype=t.dtype)
    tp[:, pt:pt + H, pl:pl + W] = t
    return tp


def pad_mode(t: np.ndarray, pads: tuple[int, int, int, int], mode: str) -> np.ndarray:
    """t: (C, H, W, N) padded with PyTorch's padding_mode ("zeros", "reflect", "replicate", "circular")."""
    if mode == "zeros":
        return pad_constant(t, pads)
    pt, pl, pb, pr = pads
    if not (pt or pl or pb or pr):
        return t
    return np.pad(t, ((0, 0), (pt, pb), (pl, pr), (0, 0)), mode=NP_PAD_MODE[mode])


def unpad_grad(dtp: np.ndarray, hw: tuple[int, int], pads: tuple[int, int, int, int], mode: str) -> np.ndarray:
    """Gradient w.r.t. t of `pad_mode(t)`: dtp (C, Hp, Wp, N) -> dt (C, H, W, N), contiguous: dtp itself
    when there is no padding, else new memory.

    Zero padding just crops (a copy split over threads). Other modes copy input pixels into the border,
    so each border value's gradient is added back onto the pixel it was copied from; np.pad of an index
    range gives exactly that source map, which keeps the backward consistent with the forward by
    construction.
    """
    H, W = hw
    pt, pl, pb, pr = pads
    if not (pt or pl or pb or pr):
        return dtp
    if mode == "zeros":
        # a copy even where the crop is contiguous (one channel): never a view at an offset into dtp, whose
        # alignment could change which NaN a reduction over it returns, against the unfused ops'
        return parallel.copy(dtp[:, pt:pt + H, pl:pl + W])
    np_mode = NP_PAD_MODE[mode]
    # Fold the columns first, then the rows; each fold touches only the (few) padded lines.
    src_w = np.pad(np.arange(W), (pl, pr), mode=np_mode)
    border_w = np.r_[0:pl, pl + W:pl + W + pr]
    dtw = dtp[:, :, pl:pl + W].copy()
    np.add.at(dtw, (slice(None), slice(None), src_w[border_w]), dtp[:, :, border_w])
    src_h = np.pad(np.arange(H), (pt, pb), mode=np_mode)
    border_h = np.r_[0:pt, pt + H:pt + H + pb]
    dt = dtw[:, pt:pt + H].copy()
    np.add.at(dt, (slice(None), src_h[border_h]), dtw[:, border_h])
    return dt
