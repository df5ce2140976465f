"""Shape formulas against independent brute-force counts of window positions (property tests) and known numbers."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnnspec
from cnnspec import shapes
from cnnspec.errors import SpecError


def count_windows(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, dilation: int = 1,
                  ceil_mode: bool = False) -> int:
    """Count window start positions by walking along the padded axis; no output-size formula involved.

    floor mode: a window is kept when all its taps lie inside the padded input.
    ceil mode (PyTorch): walking on from the last window that fits, one more window is taken while the
    previous one did not reach the end of the padded input - but never one that starts in the end padding.
    """
    padded = pad_begin + size + pad_end
    extent = dilation * (kernel - 1) + 1          # cells from the first tap to the last
    count = 0
    start = 0
    while True:
        taps = [start + dilation * t for t in range(kernel)]
        fits = all(0 <= t < padded for t in taps)
        if not ceil_mode:
            if not fits:
                return count
        else:
            previous_end = start - stride + extent - 1   # last cell of the window before this one
            if previous_end >= padded - 1 or start >= pad_begin + size:
                return count
        count += 1
        start += stride


def spec_text(shape, layer: str) -> str:
    return f"cnnspec: 1\nname: prop\ninput:\n  shape: {list(shape)}\nlayers:\n  - {{name: x, {layer}}}\n"


def inferred(shape, layer: str):
    return cnnspec.loads_spec(spec_text(shape, layer)).graph.nodes["x"].shape


# ---------------------------------------------------------------- the brute force itself


def test_brute_force_counts_known_cases():
    assert count_windows(100, 3, 1, 0, 0) == 98           # the lecture's 100x100x3 with 3x3 kernels
    assert count_windows(16, 3, 1, 0, 0) == 14
    assert count_windows(5, 3, 2, 1, 1) == 3
    assert count_windows(12, 3, 2, 0, 0, ceil_mode=True) == 6
    assert count_windows(12, 3, 2, 0, 0) == 5
    assert count_windows(4, 3, 3, 0, 0, ceil_mode=True) == 2
    assert count_windows(5, 2, 2, 1, 1, ceil_mode=True) == 3   # a 4th would start in the end padding


# ---------------------------------------------------------------- window_out against the brute force


@settings(max_examples=400, deadline=None)
@given(size=st.integers(1, 40), kernel=st.integers(1, 7), stride=st.integers(1, 5), pad_begin=st.integers(0, 4),
       pad_end=st.integers(0, 4), dilation=st.integers(1, 3))
def test_window_out_floor_equals_counting(size, kernel, stride, pad_begin, pad_end, dilation):
    assert shapes.window_out(size, kernel, stride, pad_begin, pad_end, dilation) == \
        count_windows(size, kernel, stride, pad_begin, pad_end, dilation)


@settings(max_examples=400, deadline=None)
@given(size=st.integers(1, 40), kernel=st.integers(1, 7), stride=st.integers(1, 5), pad=st.integers(0, 3),
       dilation=st.integers(1, 3))
def test_window_out_ceil_equals_pytorch_rule(size, kernel, stride, pad, dilation):
    pad = min(pad, kernel // 2)
    assert shapes.window_out(size, kernel, stride, pad, pad, dilation, ceil_mode=True) == \
        count_windows(size, kernel, stride, pad, pad, dilation, ceil_mode=True)


def test_window_out_matches_pytorch():
    """Output sizes PyTorch computed (tests/fixtures/make_torch_pool_sizes.py); 0 where it refuses."""
    import json
    from pathlib import Path
    table = json.loads((Path(__file__).parent / "fixtures" / "torch_pool_sizes.json").read_text())
    assert len(table["rows"]) == 864
    for size, k, s, p, d, ceil, want in table["rows"]:
        assert max(shapes.window_out(size, k, s, p, p, d, ceil), 0) == want, (size, k, s, p, d, ceil)


# ---------------------------------------------------------------- shape inference against the brute force


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=st.integers(1, 6), h=st.integers(1, 24), w=st.integers(1, 24), f=st.integers(1, 6),
       kh=st.integers(1, 6), kw=st.integers(1, 6), sh=st.integers(1, 4), sw=st.integers(1, 4),
       ph=st.integers(0, 3), pw=st.integers(0, 3), dh=st.integers(1, 3), dw=st.integers(1, 3),
       hwc=st.booleans(), bias=st.booleans())
def test_conv2d_shape_and_params(c, h, w, f, kh, kw, sh, sw, ph, pw, dh, dw, hwc, bias):
    shape = (h, w, c) if hwc else (c, h, w)
    layer = (f"type: conv2d, filters: {f}, kernel: [{kh}, {kw}], stride: [{sh}, {sw}], padding: [{ph}, {pw}], "
             f"dilation: [{dh}, {dw}], bias: {'true' if bias else 'false'}")
    oh, ow = count_windows(h, kh, sh, ph, ph, dh), count_windows(w, kw, sw, pw, pw, dw)
    text = spec_text(shape, layer)
    if hwc:
        text = text.replace("input:\n", "input:\n  layout: HWC\n")
    if oh == 0 or ow == 0:
        with pytest.raises(SpecError, match="exceeds the padded input"):
            cnnspec.loads_spec(text)
        return
    graph = cnnspec.loads_spec(text).graph
    node = graph.nodes["x"]
    assert node.shape == (f, oh, ow)
    assert graph.declared(node.shape) == ((oh, ow, f) if hwc else (f, oh, ow))
    assert node.param_count == f * c * kh * kw + (f if bias else 0)
    assert node.macs == f * oh * ow * c * kh * kw
    assert node.attrs == {"stride": (sh, sw), "pads": (ph, pw, ph, pw), "dilation": (dh, dw), "groups": 1,
                          "padding_mode": "zeros"}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(h=st.integers(1, 24), w=st.integers(1, 24), kh=st.integers(1, 7), kw=st.integers(1, 7),
       dh=st.integers(1, 3), dw=st.integers(1, 3))
def test_same_padding_keeps_the_size(h, w, kh, kw, dh, dw):
    layer = f"type: conv2d, filters: 2, kernel: [{kh}, {kw}], padding: same, dilation: [{dh}, {dw}]"
    node = cnnspec.loads_spec(spec_text((3, h, w), layer)).graph.nodes["x"]
    assert node.shape == (2, h, w)
    top, left, bottom, right = node.attrs["pads"]
    assert (top + bottom, left + right) == (dh * (kh - 1), dw * (kw - 1))
    assert 0 <= bottom - top <= 1 and 0 <= right - left <= 1     # the odd pixel at the end, as PyTorch
    assert count_windows(h, kh, 1, top, bottom, dh) == h and count_windows(w, kw, 1, left, right, dw) == w


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["maxpool", "avgpool"]), c=st.integers(1, 4), h=st.integers(1, 24),
       w=st.integers(1, 24), kh=st.integers(1, 6), kw=st.integers(1, 6), sh=st.integers(1, 4), sw=st.integers(1, 4),
       ph=st.integers(0, 3), pw=st.integers(0, 3), dh=st.integers(1, 3), ceil=st.booleans(),
       default_stride=st.booleans())
def test_pool_shape(kind, c, h, w, kh, kw, sh, sw, ph, pw, dh, ceil, default_stride):
    ph, pw = min(ph, kh // 2), min(pw, kw // 2)
    dh = dh if kind == "maxpool" else 1
    if default_stride:
        sh, sw = kh, kw
    layer = (f"type: {kind}, kernel: [{kh}, {kw}], padding: [{ph}, {pw}], ceil_mode: {str(ceil).lower()}"
             + ("" if default_stride else f", stride: [{sh}, {sw}]")
             + (f", dilation: [{dh}, 1]" if kind == "maxpool" else ""))
    oh = count_windows(h, kh, sh, ph, ph, dh, ceil)
    ow = count_windows(w, kw, sw, pw, pw, 1, ceil)
    if oh == 0 or ow == 0:
        with pytest.raises(SpecError, match="exceeds the padded input"):
            inferred((c, h, w), layer)
        return
    node = cnnspec.loads_spec(spec_text((c, h, w), layer)).graph.nodes["x"]
    assert node.shape == (c, oh, ow)
    assert node.attrs["kernel"] == (kh, kw) and node.attrs["stride"] == (sh, sw)
    assert node.attrs["pads"] == (ph, pw, ph, pw) and node.attrs["ceil_mode"] is ceil
    assert node.params == {} and node.macs == 0


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 6), p=st.integers(0, 5))
def test_pool_padding_limit_is_pytorchs(k, p):
    layer = f"type: maxpool, kernel: {k}, stride: 1, padding: {p}"
    if p <= k // 2:
        assert inferred((1, 16, 16), layer)[1] == count_windows(16, k, 1, p, p)
    else:
        with pytest.raises(SpecError, match=rf"padding {p} must be at most half the kernel height: "
                                            rf"{p} > {k} // 2 = {k // 2}"):
            inferred((1, 16, 16), layer)


@settings(max_examples=80, deadline=None)
@given(c=st.integers(1, 12), f=st.integers(1, 12), g=st.integers(1, 12))
def test_groups(c, f, g):
    layer = f"type: conv2d, filters: {f}, kernel: 1, groups: {g}"
    if c % g or f % g:
        with pytest.raises(SpecError, match=f"groups {g} must divide both the input channels and the filters"):
            inferred((c, 4, 4), layer)
    else:
        node = cnnspec.loads_spec(spec_text((c, 4, 4), layer)).graph.nodes["x"]
        assert node.params["weight"] == (f, c // g, 1, 1)
        assert node.param_count == f * (c // g) + f


# ---------------------------------------------------------------- formula text, as explain prints it


@pytest.mark.parametrize("args, text", [
    ((100, 3, 1, 0, 0), "98 = floor((100 + 2*0 - 3)/1) + 1"),
    ((16, 3, 1, 0, 0), "14 = floor((16 + 2*0 - 3)/1) + 1"),
    ((32, 5, 2, 1, 2), "16 = floor((32 + 1 + 2 - 5)/2) + 1"),
    ((12, 3, 1, 2, 2, 2), "12 = floor((12 + 2*2 - 2*(3-1) - 1)/1) + 1"),
    ((12, 3, 2, 0, 0, 1, True), "6 = ceil((12 + 2*0 - 3)/2) + 1"),
    ((5, 2, 2, 1, 1, 1, True), "3 = ceil((5 + 2*1 - 2)/2) + 1 - 1 (a last window starting in the padding is dropped)"),
])
def test_window_out_text(args, text):
    assert shapes.window_out_text(*args) == text


def test_same_pads():
    assert shapes.same_pads(3) == (1, 1)
    assert shapes.same_pads(4) == (1, 2)
    assert shapes.same_pads(3, dilation=2) == (2, 2)
    assert shapes.same_pads(1) == (0, 0)


def test_parameter_formulas():
    assert shapes.conv_params(3, 6, (3, 3), 1, True) == 168                 # the lecture: 6*(3*3*3) + 6
    assert shapes.conv_params(32, 64, (3, 3), 1, True) == 18_496            # 64*(3*3*32) + 64
    assert shapes.conv_params(16, 16, (3, 3), 16, False) == 144             # depthwise
    assert shapes.dense_params(400, 120, True) == 48_120
    assert shapes.conv_macs(3, (6, 98, 98), (3, 3), 1) == 6 * 98 * 98 * 27
    assert shapes.flatten_size((16, 5, 5)) == 400
