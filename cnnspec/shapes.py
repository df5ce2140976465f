"""Integer shape formulas: the one place each is written.

Used by shape inference (graph.py), by `cnnspec explain` (which prints them with the numbers
substituted) and by the forward pass (pooling output sizes). Pure Python, integer floor division,
no NumPy, so `cnnspec check` stays light.
"""
from __future__ import annotations

from math import prod


def window_out(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int,
               dilation: int = 1, ceil_mode: bool = False) -> int:
    """Output length of a sliding window (conv or pool) along one axis, PyTorch's rule.

    floor((size + pad_begin + pad_end - dilation*(kernel-1) - 1) / stride) + 1, or ceil with
    ceil_mode, where a last window that would start in the end padding is dropped. Returns 0
    when no window fits; callers turn that into a user error.
    """
    span = size + pad_begin + pad_end - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return max(span // stride + 1, 0)
    # Python's // floors like PyTorch's div_rtn, also for a negative span: with stride > 1 a kernel that
    # overhangs the padded input by less than a stride still gives one window, as in PyTorch and ONNX.
    out = (span + stride - 1) // stride + 1
    # PyTorch (and ONNX since opset 19): a window may not start inside the right padding.
    if out > 0 and (out - 1) * stride >= size + pad_begin:
        out -= 1
    return max(out, 0)


def window_out_text(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int,
                    dilation: int = 1, ceil_mode: bool = False) -> str:
    """`window_out` with the numbers substituted, as `explain` prints it: '98 = floor((100 + 2*0 - 3)/1) + 1'."""
    out = window_out(size, kernel, stride, pad_begin, pad_end, dilation, ceil_mode)
    pads = f"2*{pad_begin}" if pad_begin == pad_end else f"{pad_begin} + {pad_end}"
    k = str(kernel) if dilation == 1 else f"{dilation}*({kernel}-1) - 1"
    rounding = "ceil" if ceil_mode else "floor"
    text = f"{out} = {rounding}(({size} + {pads} - {k})/{stride}) + 1"
    if ceil_mode and out != -(-(size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride) + 1:
        text += " - 1 (a last window starting in the padding is dropped)"
    return text


def same_pads(kernel: int, dilation: int = 1) -> tuple[int, int]:
    """Padding (begin, end) that keeps the size at stride 1; the odd pixel goes at the end, as in PyTorch."""
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2


def conv_params(in_channels: int, filters: int, kernel: tuple[int, int], groups: int, bias: bool) -> int:
    """filters * (in_channels/groups * kh * kw) + filters (bias)."""
    return filters * (in_channels // groups) * kernel[0] * kernel[1] + (filters if bias else 0)


def conv_macs(in_channels: int, out_shape: tuple[int, int, int], kernel: tuple[int, int], groups: int) -> int:
    """Multiply-accumulates of one sample: every output value is a dot product of length C/groups*kh*kw."""
    return prod(out_shape) * (in_channels // groups) * kernel[0] * kernel[1]


def dense_params(in_features: int, units: int, bias: bool) -> int:
    return units * in_features + (units if bias else 0)


def flatten_size(shape: tuple[int, ...]) -> int:
    return prod(shape)


def adaptive_window(i: int, size: int, out: int) -> tuple[int, int]:
    """Window i of `out` over a length `size` (PyTorch's adaptive pooling): [floor(i*size/out),
    ceil((i+1)*size/out)). Windows overlap when size is not a multiple of out, and repeat when out > size."""
    return (i * size) // out, -(-((i + 1) * size) // out)


def adaptive_uniform(size: int, out: int) -> tuple[int, int] | None:
    """(kernel, stride) when every adaptive window has one length and they start a fixed stride apart (so an
    ordinary average pool with no padding computes the same), else None."""
    windows = [adaptive_window(i, size, out) for i in range(out)]
    kernel = windows[0][1] - windows[0][0]
    stride = windows[1][0] - windows[0][0] if out > 1 else 1
    if all(e - s == kernel and s == i * stride for i, (s, e) in enumerate(windows)) and stride >= 1:
        return kernel, stride
    return None
