"""The ops checked three ways: central-difference gradients (float64), an independent forward
(onnx.reference), and PyTorch's own numbers (tests/fixtures/torch_golden.npz, made by
make_torch_fixtures.py; torch itself is not needed here)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from cnnspec.onnx_fixes import reference_ops
from cnnspec.ops import OPS, get_op
from cnnspec.ops.gradcheck_util import numeric_grad, rel_error

GOLDEN = Path(__file__).parent / "fixtures" / "torch_golden.npz"
GRAD_TOL = 1e-7


def distinct(rng, shape, spread=4.0):
    """Distinct values at least spread/n apart: no max-pool ties and nothing within 1e-3 of a ReLU kink."""
    n = int(np.prod(shape))
    return ((rng.permutation(n) + 0.5) * (spread / n) - spread / 2).reshape(shape)


def conv_attrs(**over):
    return {"stride": (1, 1), "pads": (0, 0, 0, 0), "dilation": (1, 1), "groups": 1, "padding_mode": "zeros", **over}


def pool_attrs(kernel, **over):
    return {"kernel": kernel, "stride": kernel, "pads": (0, 0, 0, 0), "dilation": (1, 1), "ceil_mode": False,
            "count_include_pad": True, **over}


# ------------------------------------------------------------------ cases: (id, op, attrs, x shapes, params, train)
# Params are given as shapes; buffers for batchnorm are added in make_case.

CASES = [
    ("conv_basic", "conv2d", conv_attrs(pads=(1, 1, 1, 1)), [(2, 3, 5, 6)], {"weight": (4, 3, 3, 3), "bias": (4,)}),
    ("conv_nobias_stride2", "conv2d", conv_attrs(stride=(2, 2), pads=(1, 1, 1, 1)), [(2, 2, 7, 6)],
     {"weight": (3, 2, 3, 3)}),
    ("conv_stride_hw_asym_pads", "conv2d", conv_attrs(stride=(2, 3), pads=(0, 2, 1, 1)), [(1, 2, 7, 8)],
     {"weight": (3, 2, 3, 2), "bias": (3,)}),
    ("conv_dilation", "conv2d", conv_attrs(dilation=(2, 3), pads=(2, 1, 1, 2)), [(2, 2, 7, 8)],
     {"weight": (2, 2, 3, 2), "bias": (2,)}),
    ("conv_groups2", "conv2d", conv_attrs(groups=2, pads=(1, 1, 1, 1)), [(2, 4, 5, 5)],
     {"weight": (6, 2, 3, 3), "bias": (6,)}),
    ("conv_depthwise", "conv2d", conv_attrs(groups=3, pads=(1, 1, 1, 1), stride=(2, 2)), [(2, 3, 6, 6)],
     {"weight": (3, 1, 3, 3), "bias": (3,)}),
    ("conv_depthwise_x2", "conv2d", conv_attrs(groups=3, pads=(1, 0, 1, 0)), [(1, 3, 5, 5)],
     {"weight": (6, 1, 3, 2)}),
    ("conv_1x1", "conv2d", conv_attrs(), [(2, 4, 3, 3)], {"weight": (5, 4, 1, 1), "bias": (5,)}),
] + [
    (f"conv_{mode}{suffix}", "conv2d", conv_attrs(padding_mode=mode, **over), [x_shape],
     {"weight": w_shape, "bias": (w_shape[0],)})
    for mode in ("reflect", "replicate", "circular")
    for suffix, over, x_shape, w_shape in (
        ("", {"pads": (1, 1, 1, 1)}, (2, 2, 5, 6), (3, 2, 3, 3)),
        ("_asym_stride", {"pads": (2, 1, 0, 2), "stride": (2, 1)}, (2, 2, 5, 6), (3, 2, 3, 3)),
        ("_dilation_groups", {"pads": (2, 2, 1, 2), "dilation": (2, 1), "groups": 2}, (1, 4, 5, 6), (4, 2, 3, 2)))
] + [
    # ONNX stores float attributes (epsilon, alpha) as float32: the eps and slope here are exact in float32
    # so the float64 comparison with onnx.reference stays at 1e-12.
    ("batchnorm_4d_train", "batchnorm", {"eps": 2.0 ** -17, "momentum": 0.1}, [(3, 2, 3, 4)],
     {"weight": (2,), "bias": (2,)}, True),
    ("batchnorm_4d_eval", "batchnorm", {"eps": 2.0 ** -17, "momentum": 0.1}, [(3, 2, 3, 4)],
     {"weight": (2,), "bias": (2,)}, False),
    ("batchnorm_2d_train", "batchnorm", {"eps": 2.0 ** -10, "momentum": 0.3}, [(5, 3)],
     {"weight": (3,), "bias": (3,)}, True),
    ("batchnorm_2d_eval", "batchnorm", {"eps": 2.0 ** -17, "momentum": 0.1}, [(5, 3)],
     {"weight": (3,), "bias": (3,)}, False),
    ("relu", "relu", {}, [(2, 3, 4, 4)], {}),
    ("leaky_relu", "leaky_relu", {"slope": 0.125}, [(2, 3, 4, 4)], {}),
    ("sigmoid", "sigmoid", {}, [(4, 5)], {}),
    ("tanh", "tanh", {}, [(2, 2, 3, 3)], {}),
    ("softmax_2d", "softmax", {}, [(3, 5)], {}),
    ("softmax_4d", "softmax", {}, [(2, 3, 2, 3)], {}),
    ("maxpool_2x2", "maxpool", pool_attrs((2, 2)), [(2, 2, 4, 6)], {}),
    ("maxpool_2x2_eval", "maxpool", pool_attrs((2, 2)), [(2, 2, 4, 6)], {}, False),
    ("maxpool_3x3_s2_pad", "maxpool", pool_attrs((3, 3), stride=(2, 2), pads=(1, 1, 1, 1)), [(1, 2, 7, 6)], {}),
    ("maxpool_asym_pads", "maxpool", pool_attrs((3, 2), stride=(1, 2), pads=(1, 0, 0, 1)), [(1, 2, 5, 6)], {}),
    ("maxpool_dilation", "maxpool", pool_attrs((2, 2), stride=(1, 1), dilation=(2, 2), pads=(1, 1, 1, 1)),
     [(1, 2, 5, 5)], {}),
    ("maxpool_ceil_hang", "maxpool", pool_attrs((2, 2), ceil_mode=True), [(1, 2, 5, 7)], {}),
    # Windows with holes (dilation) that step by their span: they never overlap, yet leave inputs
    # that no window reads, whose gradient must be 0.
    ("maxpool_dilation_gaps", "maxpool", pool_attrs((2, 2), stride=(3, 3), dilation=(2, 2)), [(2, 2, 6, 6)], {}),
    ("maxpool_ceil_pad", "maxpool", pool_attrs((3, 3), stride=(2, 2), pads=(1, 1, 1, 1), ceil_mode=True),
     [(1, 2, 6, 8)], {}),
] + [
    (f"avgpool_{name}_{'cip' if cip else 'nocip'}", "avgpool", {**attrs, "count_include_pad": cip}, [shape], {})
    for name, attrs, shape in (
        ("2x2", pool_attrs((2, 2)), (2, 2, 4, 6)),
        ("3x3_s2_pad", pool_attrs((3, 3), stride=(2, 2), pads=(1, 1, 1, 1)), (1, 2, 7, 6)),
        ("asym_pads", pool_attrs((3, 2), stride=(2, 1), pads=(0, 1, 2, 1)), (1, 2, 6, 5)),
        ("ceil_hang", pool_attrs((2, 2), ceil_mode=True), (1, 2, 5, 7)),
        ("ceil_pad", pool_attrs((3, 3), stride=(2, 2), pads=(1, 1, 1, 1), ceil_mode=True), (1, 2, 6, 8)),
    )
    for cip in (True, False)
] + [
    ("global_avgpool", "global_avgpool", {}, [(2, 3, 3, 4)], {}),
    ("flatten", "flatten", {}, [(2, 3, 2, 2)], {}),
    ("dropout_train", "dropout", {"rate": 0.4}, [(3, 10)], {}, True),
    ("dropout_eval", "dropout", {"rate": 0.4}, [(3, 10)], {}, False),
    ("dropout_rate0", "dropout", {"rate": 0.0}, [(3, 10)], {}, True),
    ("dense", "dense", {}, [(4, 6)], {"weight": (3, 6), "bias": (3,)}),
    ("dense_nobias", "dense", {}, [(4, 6)], {"weight": (3, 6)}),
    ("add2", "add", {}, [(2, 3, 2, 2)] * 2, {}),
    ("add3", "add", {}, [(2, 3, 2, 2)] * 3, {}),
    ("concat_4d", "concat", {}, [(2, 1, 3, 3), (2, 3, 3, 3), (2, 2, 3, 3)], {}),
    ("concat_2d", "concat", {}, [(3, 4), (3, 2)], {}),
    # Activations: inputs are scaled in make_case to cross every piece (relu6's 0 and 6, hard*'s -3 and 3).
    ("relu6", "relu6", {}, [(2, 3, 4, 4)], {}),
    ("silu", "silu", {}, [(2, 3, 4, 4)], {}),
    ("hardswish", "hardswish", {}, [(2, 3, 4, 4)], {}),
    ("hardsigmoid", "hardsigmoid", {}, [(4, 10)], {}),
    ("gelu", "gelu", {"approximate": "none"}, [(2, 3, 4, 4)], {}),
    ("gelu_tanh", "gelu", {"approximate": "tanh"}, [(4, 10)], {}),
    ("batchnorm_noaffine_train", "batchnorm", {"eps": 2.0 ** -17, "momentum": 0.1, "affine": False}, [(3, 2, 3, 4)],
     {}, True),
    ("batchnorm_noaffine_eval", "batchnorm", {"eps": 2.0 ** -17, "momentum": 0.1, "affine": False}, [(5, 3)], {},
     False),
    ("layernorm_4d", "layernorm", {"eps": 2.0 ** -10, "affine": True}, [(2, 3, 3, 4)],
     {"weight": (3, 3, 4), "bias": (3, 3, 4)}),
    ("layernorm_2d", "layernorm", {"eps": 2.0 ** -10, "affine": True}, [(3, 5)], {"weight": (5,), "bias": (5,)}),
    ("layernorm_noaffine", "layernorm", {"eps": 0.5, "affine": False}, [(2, 2, 3, 3)], {}),
    ("groupnorm_4d", "groupnorm", {"groups": 2, "eps": 2.0 ** -10, "affine": True}, [(2, 4, 3, 3)],
     {"weight": (4,), "bias": (4,)}),
    ("groupnorm_2d", "groupnorm", {"groups": 3, "eps": 2.0 ** -10, "affine": True}, [(3, 6)],
     {"weight": (6,), "bias": (6,)}),
    ("groupnorm_noaffine_1group", "groupnorm", {"groups": 1, "eps": 0.5, "affine": False}, [(2, 3, 2, 3)], {}),
    ("lrn_size3", "lrn", {"size": 3, "alpha": 0.5, "beta": 0.75, "k": 1.0}, [(2, 5, 3, 3)], {}),
    ("lrn_size4_even", "lrn", {"size": 4, "alpha": 0.25, "beta": 0.5, "k": 2.0}, [(2, 6, 2, 3)], {}),
    ("lrn_size5_wide", "lrn", {"size": 5, "alpha": 1.0, "beta": 1.5, "k": 0.5}, [(1, 4, 3, 2)], {}),
    ("adaptive_avgpool_uneven", "adaptive_avgpool", {"output_size": (3, 2)}, [(2, 2, 7, 5)], {}),
    ("adaptive_avgpool_up", "adaptive_avgpool", {"output_size": (5, 4)}, [(1, 2, 3, 3)], {}),
    ("adaptive_avgpool_uniform", "adaptive_avgpool", {"output_size": (2, 3)}, [(2, 2, 6, 6)], {}),
    ("multiply_same", "multiply", {"gate": None}, [(2, 3, 2, 2)] * 2, {}),
    ("multiply_gate_1d", "multiply", {"gate": 1}, [(2, 3, 4, 4), (2, 3)], {}),
    ("multiply_gate_first", "multiply", {"gate": 0}, [(2, 3, 1, 1), (2, 3, 3, 2)], {}),
    ("channel_split_4d", "channel_split", {"start": 2, "stop": 4}, [(2, 6, 2, 3)], {}),
    ("channel_split_2d", "channel_split", {"start": 0, "stop": 3}, [(3, 9)], {}),
    ("channel_shuffle_g2", "channel_shuffle", {"groups": 2}, [(2, 6, 2, 3)], {}),
    ("channel_shuffle_g3", "channel_shuffle", {"groups": 3}, [(3, 6, 1, 2)], {}),
]


def make_case(case, seed=0, dtype=np.float64):
    """-> (op_name, attrs, xs, params, buffers, train) with seeded values."""
    _, op, attrs, x_shapes, p_shapes, *rest = case
    train = rest[0] if rest else True
    rng = np.random.default_rng(seed)
    xs = [distinct(rng, s) for s in x_shapes]  # distinct everywhere: harmless for smooth ops
    params = {k: rng.standard_normal(s) for k, s in p_shapes.items()}
    buffers = {}
    if op == "batchnorm":
        C = x_shapes[0][1]
        xs = [x * 3 + 0.7 for x in xs]
        buffers = {"running_mean": rng.standard_normal(C), "running_var": rng.random(C) + 0.5,
                   "num_batches_tracked": np.array(0, dtype=np.int64)}
    if op in ("sigmoid", "tanh", "softmax", "silu", "gelu", "layernorm", "groupnorm", "lrn"):
        xs = [x * 1.5 for x in xs]
    if op in ("hardswish", "hardsigmoid"):
        xs = [x * 2.5 for x in xs]  # [-5, 5]: all three pieces
    if op == "relu6":
        xs = [x * 4 for x in xs]    # [-8, 8]: below 0, between, above 6
    def cast(arrays):
        return {k: (v.astype(dtype) if v.dtype.kind == "f" else v) for k, v in arrays.items()}
    return op, attrs, [x.astype(dtype) for x in xs], cast(params), cast(buffers), train


def check_gradients(op, attrs, xs, params, buffers, train, seed=0, backward=None):
    """Largest relative error over dx_i and every dparam of sum(out * g), g a random upstream gradient."""
    impl = get_op(op)
    backward = backward or impl.backward

    def run():
        return impl.forward(attrs, xs, params, buffers, train, np.random.default_rng(seed))

    out, cache, _ = run()
    g = np.random.default_rng(99).standard_normal(out.shape)
    dxs, dparams = backward(attrs, g, cache)
    def f():
        return float(np.sum(run()[0] * g))
    assert len(dxs) == len(xs)
    assert set(dparams) == set(params), f"dparams {sorted(dparams)} vs params {sorted(params)}"
    errors = {}
    for i, (x, dx) in enumerate(zip(xs, dxs)):
        assert dx.shape == x.shape and dx.dtype == x.dtype
        errors[f"dx{i}"] = rel_error(numeric_grad(f, x), dx)
    for k, p in params.items():
        assert dparams[k].shape == p.shape and dparams[k].dtype == p.dtype
        errors[k] = rel_error(numeric_grad(f, p), dparams[k])
    return errors


# ------------------------------------------------------------------ registry


def test_registry_matches_schema_layer_types():
    from cnnspec.schema import LAYER_TYPES
    assert set(OPS) == set(LAYER_TYPES)
    with pytest.raises(KeyError, match="known: adaptive_avgpool, add, avgpool"):
        get_op("conv3d")


def test_every_op_has_a_gradient_case():
    assert {c[1] for c in CASES} == set(OPS)


# ------------------------------------------------------------------ gradients


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_gradients_central_differences(case):
    errors = check_gradients(*make_case(case))
    assert max(errors.values()) < GRAD_TOL, errors


def _scaled(backward, factor):
    def wrong(attrs, dout, cache):
        dxs, dparams = backward(attrs, dout, cache)
        return [dx * factor for dx in dxs], dparams
    return wrong


def test_checker_catches_gradient_off_by_one_percent():
    case = make_case(CASES[0])
    assert max(check_gradients(*case).values()) < GRAD_TOL
    errors = check_gradients(*case, backward=_scaled(OPS["conv2d"].backward, 1.01))
    assert errors["dx0"] > 1e-3  # ~0.01: the check would fail
    assert errors["weight"] < GRAD_TOL


def test_checker_catches_transposed_kernel():
    op, attrs, xs, params, buffers, train = make_case(CASES[0])

    def transposed(attrs, dout, cache):
        cols, w, *rest = cache
        return OPS["conv2d"].backward(attrs, dout, (cols, w.transpose(0, 1, 3, 2), *rest))

    errors = check_gradients(op, attrs, xs, params, buffers, train, backward=transposed)
    assert errors["dx0"] > 1e-2


def test_checker_catches_maxpool_gradient_to_wrong_element():
    op, attrs, xs, params, buffers, train = make_case(next(c for c in CASES if c[0] == "maxpool_2x2"))

    def to_last(attrs, dout, cache):
        kind, argmax, *rest = cache
        return OPS["maxpool"].backward(attrs, dout, (kind, np.full_like(argmax, 3), *rest))

    errors = check_gradients(op, attrs, xs, params, buffers, train, backward=to_last)
    assert errors["dx0"] > 0.1


def test_numeric_grad_and_rel_error():
    x = np.array([1.0, -2.0, 3.0])
    assert rel_error(numeric_grad(lambda: float(np.sum(x ** 3)), x), 3 * x ** 2) < 1e-9
    assert x.tolist() == [1.0, -2.0, 3.0]  # restored
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    assert rel_error(np.array([1.0, 0.0]), np.array([1.01, 0.0])) == pytest.approx(0.01 / 1.01)


# ------------------------------------------------------------------ contract: dtype, purity


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_float32_stays_float32_and_inputs_are_not_mutated(case):
    op, attrs, xs, params, buffers, train = make_case(case, dtype=np.float32)
    before = [a.copy() for a in xs + list(params.values()) + list(buffers.values())]
    out, cache, updates = OPS[op].forward(attrs, xs, params, buffers, train, np.random.default_rng(0))
    assert out.dtype == np.float32
    dxs, dparams = OPS[op].backward(attrs, np.ones_like(out), cache)
    assert all(dx.dtype == np.float32 for dx in dxs)
    assert all(d.dtype == np.float32 for d in dparams.values())
    assert all(v.dtype == buffers[k].dtype for k, v in updates.items())
    after = xs + list(params.values()) + list(buffers.values())
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def _stored(a: np.ndarray, layout: str) -> np.ndarray:
    """The same values as a, in another memory layout: batch-last (the engine's), or a strided view."""
    if layout == "batch_last":
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 0, -1)), -1, 0)
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]  # every other element: neither C- nor batch-last-contiguous


@pytest.mark.parametrize("layout", ["batch_last", "strided"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_memory_layout_does_not_change_results(case, layout):
    """Ops index arrays as (N, C, H, W) whatever their strides: the engine stores activations batch-last
    (ops/parallel.py), the model input and flatten's gradient arrive batch-first, and every op must give
    the same numbers for all of them."""
    op, attrs, xs, params, buffers, train = make_case(case)
    impl = OPS[op]
    out, cache, updates = impl.forward(attrs, xs, params, buffers, train, np.random.default_rng(0))
    g = np.random.default_rng(1).standard_normal(out.shape)
    dxs, dparams = impl.backward(attrs, g, cache)

    xs2 = [_stored(x, layout) for x in xs]
    out2, cache2, updates2 = impl.forward(attrs, xs2, params, buffers, train, np.random.default_rng(0))
    dxs2, dparams2 = impl.backward(attrs, _stored(g, layout), cache2)
    close = dict(rtol=1e-14, atol=1e-15)  # reductions may sum in another order; nothing else may differ
    np.testing.assert_allclose(out2, out, **close)
    for a, b in zip(dxs2, dxs):
        np.testing.assert_allclose(a, b, **close)
    for k in dparams:
        np.testing.assert_allclose(dparams2[k], dparams[k], **close)
    for k in updates:
        np.testing.assert_allclose(updates2[k], updates[k], **close)


@pytest.mark.parametrize("case", [c for c in CASES if c[1] in ("conv2d", "batchnorm", "relu", "maxpool", "avgpool",
                                                               "add", "concat") and len(c[3][0]) == 4],
                         ids=lambda c: c[0])
def test_ops_keep_activations_batch_last(case):
    """The speed contract of ops/parallel.py: from a batch-last input (as a conv produces), these ops
    return a batch-last output and gradient, so nothing downstream pays for a transpose copy."""
    op, attrs, xs, params, buffers, train = make_case(case)
    xs = [_stored(x, "batch_last") for x in xs]
    out, cache, _ = OPS[op].forward(attrs, xs, params, buffers, train, np.random.default_rng(0))
    dxs, _ = OPS[op].backward(attrs, _stored(np.ones(out.shape), "batch_last"), cache)
    for a in [out] + [dx for dx in dxs if dx is not None]:
        assert np.moveaxis(a, 0, -1).flags.c_contiguous, f"{op}: {a.shape} stored with strides {a.strides}"


def test_batchnorm_updates_only_in_train_mode():
    op, attrs, xs, params, buffers, _ = make_case(next(c for c in CASES if c[0] == "batchnorm_4d_train"))
    rng = np.random.default_rng(0)
    _, _, updates = OPS[op].forward(attrs, xs, params, buffers, True, rng)
    assert set(updates) == {"running_mean", "running_var", "num_batches_tracked"}
    assert updates["num_batches_tracked"] == 1 and updates["num_batches_tracked"].dtype == np.int64
    assert OPS[op].forward(attrs, xs, params, buffers, False, rng)[2] == {}


def test_batchnorm_rejects_one_value_per_channel():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        OPS["batchnorm"].forward({"eps": 1e-5, "momentum": 0.1}, [np.ones((1, 3))], {"weight": np.ones(3),
                                 "bias": np.zeros(3)}, {"running_mean": np.zeros(3), "running_var": np.ones(3)},
                                 True, np.random.default_rng(0))


def test_maxpool_ties_go_to_first_maximum():
    x = np.array([[[[1.0, 5.0, 2.0, 2.0],
                    [5.0, 5.0, 2.0, 2.0]]]])
    out, cache, _ = OPS["maxpool"].forward(pool_attrs((2, 2)), [x], {}, {}, True, None)
    (dx,), _ = OPS["maxpool"].backward(pool_attrs((2, 2)), np.array([[[[1.0, 10.0]]]]), cache)
    assert out.tolist() == [[[[5.0, 2.0]]]]
    assert dx.tolist() == [[[[0.0, 1.0, 10.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]]


def test_maxpool_propagates_nan():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 1, 0] = np.nan
    for train in (True, False):
        out = OPS["maxpool"].forward(pool_attrs((2, 2)), [x], {}, {}, train, None)[0]
        assert np.isnan(out[0, 0, 0, 0]) and not np.isnan(out[0, 0, 1:, 1:]).any()


def test_dropout_mask_from_rng():
    x = np.ones((200, 50))
    out = OPS["dropout"].forward({"rate": 0.3}, [x], {}, {}, True, np.random.default_rng(7))[0]
    keep = np.random.default_rng(7).random(x.shape) >= 0.3
    np.testing.assert_array_equal(out, np.where(keep, 1 / 0.7, 0.0))
    assert OPS["dropout"].forward({"rate": 0.3}, [x], {}, {}, False, None)[0] is x


def test_add_gradients_are_read_only():
    (d1, d2), _ = OPS["add"].backward({}, np.ones((2, 2)), 2)
    for d in (d1, d2):
        with pytest.raises(ValueError):
            d += 1


# ------------------------------------------------------------------ independent forward: onnx.reference


def _onnx_run(nodes, inputs: dict, initializers: dict, opset: int = 21):
    """Run a small float64 ONNX graph (opset 21, IR 10) with the reference evaluator.

    The output is declared with OUT_SHAPE (our output's shape), and the strict full check runs ONNX's
    shape inference against it: an independent check of our shape arithmetic too.
    """
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(k, TensorProto.DOUBLE, v.shape) for k, v in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, OUT_SHAPE[0])],
        [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    onnx.checker.check_model(model)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    # The evaluator's LRN sums over the wrong axis, and its Gelu and HardSwish run in float32: replaced by the
    # ONNX spec's formulas (cnnspec/onnx_fixes.py, what verification uses; tested on their own below).
    return ReferenceEvaluator(model, new_ops=reference_ops(opset)).run(None, inputs)[0]


OUT_SHAPE = [None]


def _pool_onnx_attrs(attrs):
    a = {"kernel_shape": list(attrs["kernel"]), "strides": list(attrs["stride"]),
         "pads": [attrs["pads"][0], attrs["pads"][1], attrs["pads"][2], attrs["pads"][3]],
         "ceil_mode": int(attrs["ceil_mode"])}
    return a


def _i64(*values):
    return np.array(values, dtype=np.int64)


def onnx_forward(op, attrs, xs, params, buffers):
    x0 = {"x0": xs[0]}
    node = helper.make_node
    if op == "batchnorm" and not params:
        C = xs[0].shape[1]
        params = {"weight": np.ones(C), "bias": np.zeros(C)}
    if op in ("layernorm", "groupnorm"):
        shape = xs[0].shape[1:] if op == "layernorm" else xs[0].shape[1:2]
        inits = params or {"weight": np.ones(shape), "bias": np.zeros(shape)}
        if op == "layernorm":
            n = node("LayerNormalization", ["x0", "weight", "bias"], ["y"], axis=1, epsilon=attrs["eps"])
        else:
            n = node("GroupNormalization", ["x0", "weight", "bias"], ["y"], num_groups=attrs["groups"],
                     epsilon=attrs["eps"], stash_type=TensorProto.DOUBLE)
        return _onnx_run([n], x0, inits)
    if op == "lrn":
        size = attrs["size"]
        if size % 2:
            return _onnx_run([node("LRN", ["x0"], ["y"], size=size, alpha=attrs["alpha"], beta=attrs["beta"],
                                   bias=attrs["k"])], x0, {})
        # ONNX's LRN centres an even window one channel later than PyTorch: PyTorch's own formula instead.
        nodes = [node("Mul", ["x0", "x0"], ["sq"]), node("Unsqueeze", ["sq", "ax"], ["sq5"]),
                 node("AveragePool", ["sq5"], ["avg5"], kernel_shape=[size, 1, 1],
                      pads=[size // 2, 0, 0, (size - 1) // 2, 0, 0], count_include_pad=1),
                 node("Squeeze", ["avg5", "ax"], ["avg"]), node("Mul", ["avg", "alpha"], ["sa"]),
                 node("Add", ["sa", "k"], ["div"]), node("Pow", ["div", "beta"], ["p"]), node("Div", ["x0", "p"], ["y"])]
        return _onnx_run(nodes, x0, {"ax": _i64(1), "alpha": np.array(attrs["alpha"]), "k": np.array(attrs["k"]),
                                     "beta": np.array(attrs["beta"])})
    if op == "adaptive_avgpool":
        # Independent of the exporter: one Slice + ReduceMean per output cell, stacked.
        (_, _, h, w), (oh, ow) = xs[0].shape, attrs["output_size"]
        nodes, inits, cells = [], {"axes": _i64(2, 3)}, []
        for i in range(oh):
            for j in range(ow):
                hs, he = (i * h) // oh, -(-((i + 1) * h) // oh)
                ws, we = (j * w) // ow, -(-((j + 1) * w) // ow)
                inits[f"s{i}_{j}"], inits[f"e{i}_{j}"] = _i64(hs, ws), _i64(he, we)
                nodes += [node("Slice", ["x0", f"s{i}_{j}", f"e{i}_{j}", "axes"], [f"win{i}_{j}"]),
                          node("ReduceMean", [f"win{i}_{j}", "axes"], [f"m{i}_{j}"], keepdims=1)]
                cells.append(f"m{i}_{j}")
            nodes.append(node("Concat", cells[-ow:], [f"row{i}"], axis=3))
        nodes.append(node("Concat", [f"row{i}" for i in range(oh)], ["y"], axis=2))
        return _onnx_run(nodes, x0, inits)
    if op == "multiply":
        names, inits = ["x0", "x1"], {}
        if attrs["gate"] is not None and xs[attrs["gate"]].ndim == 2:
            g = f"x{attrs['gate']}"
            nodes = [node("Unsqueeze", [g, "axes"], ["g4"])]
            inits["axes"] = _i64(2, 3)
            names[attrs["gate"]] = "g4"
        else:
            nodes = []
        return _onnx_run(nodes + [node("Mul", names, ["y"])], {"x0": xs[0], "x1": xs[1]}, inits)
    if op == "channel_split":
        return _onnx_run([node("Slice", ["x0", "s", "e", "a"], ["y"])], x0,
                         {"s": _i64(attrs["start"]), "e": _i64(attrs["stop"]), "a": _i64(1)})
    if op == "channel_shuffle":
        # ONNX has no channel shuffle: PyTorch's view (N, g, C/g, ...), transpose, view back.
        n, c = xs[0].shape[:2]
        g = attrs["groups"]
        rest = xs[0].shape[2:]
        return _onnx_run([node("Reshape", ["x0", "s1"], ["r"]), node("Transpose", ["r"], ["t"],
                                                                      perm=[0, 2, 1, *range(3, len(rest) + 3)]),
                          node("Reshape", ["t", "s2"], ["y"])], x0,
                         {"s1": _i64(n, g, c // g, *rest), "s2": _i64(n, c, *rest)})
    if op == "conv2d":
        pt, pl, pb, pr = attrs["pads"]
        conv_in, nodes, conv_pads = "x0", [], [pt, pl, pb, pr]
        if attrs["padding_mode"] != "zeros":
            onnx_mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}[attrs["padding_mode"]]
            nodes.append(helper.make_node("Pad", ["x0", "pads"], ["xp"], mode=onnx_mode))
            params = {**params, "pads": np.array([0, 0, pt, pl, 0, 0, pb, pr], dtype=np.int64)}
            conv_in, conv_pads = "xp", [0, 0, 0, 0]
        names = [conv_in, "weight"] + (["bias"] if "bias" in params else [])
        nodes.append(helper.make_node("Conv", names, ["y"], strides=list(attrs["stride"]), pads=conv_pads,
                                      dilations=list(attrs["dilation"]), group=attrs["groups"]))
        return _onnx_run(nodes, x0, params)
    if op == "batchnorm":
        node = helper.make_node("BatchNormalization", ["x0", "weight", "bias", "running_mean", "running_var"], ["y"],
                                epsilon=attrs["eps"], momentum=1 - attrs["momentum"])
        inits = {**params, "running_mean": buffers["running_mean"], "running_var": buffers["running_var"]}
        return _onnx_run([node], x0, inits)
    if op == "maxpool":
        return _onnx_run([helper.make_node("MaxPool", ["x0"], ["y"], dilations=list(attrs["dilation"]),
                                           **_pool_onnx_attrs(attrs))], x0, {})
    if op == "avgpool":
        return _onnx_run([helper.make_node("AveragePool", ["x0"], ["y"], count_include_pad=int(
            attrs["count_include_pad"]), **_pool_onnx_attrs(attrs))], x0, {})
    if op == "dense":
        names = ["x0", "weight"] + (["bias"] if "bias" in params else [])
        return _onnx_run([helper.make_node("Gemm", names, ["y"], transB=1)], x0, params)
    if op in ("add", "concat"):
        names = [f"x{i}" for i in range(len(xs))]
        node = helper.make_node("Sum", names, ["y"]) if op == "add" else helper.make_node("Concat", names, ["y"], axis=1)
        return _onnx_run([node], dict(zip(names, xs)), {})
    if op == "relu6":
        return _onnx_run([node("Clip", ["x0", "lo", "hi"], ["y"])], x0, {"lo": np.array(0.0), "hi": np.array(6.0)})
    if op == "silu":
        return _onnx_run([node("Sigmoid", ["x0"], ["s"]), node("Mul", ["x0", "s"], ["y"])], x0, {})
    if op == "hardsigmoid":  # the HardSigmoid op's alpha is a float32 attribute; 1/6 is not exact in float32
        return _onnx_run([node("Add", ["x0", "three"], ["a"]), node("Clip", ["a", "lo", "hi"], ["c"]),
                          node("Div", ["c", "hi"], ["y"])], x0,
                         {"three": np.array(3.0), "lo": np.array(0.0), "hi": np.array(6.0)})
    simple = {"relu": ("Relu", {}), "leaky_relu": ("LeakyRelu", {"alpha": attrs.get("slope")}),
              "sigmoid": ("Sigmoid", {}), "tanh": ("Tanh", {}), "softmax": ("Softmax", {"axis": 1}),
              "global_avgpool": ("GlobalAveragePool", {}), "flatten": ("Flatten", {"axis": 1}),
              "dropout": ("Identity", {}), "hardswish": ("HardSwish", {}),
              "gelu": ("Gelu", {"approximate": attrs.get("approximate", "none")})}
    onnx_op, onnx_attrs = simple[op]
    return _onnx_run([helper.make_node(onnx_op, ["x0"], ["y"], **onnx_attrs)], x0, {})


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_forward_matches_onnx_reference(case):
    op, attrs, xs, params, buffers, _ = make_case(case)
    ours = OPS[op].forward(attrs, xs, params, buffers, False, np.random.default_rng(0))[0]
    OUT_SHAPE[0] = ours.shape
    expected = onnx_forward(op, attrs, xs, params, buffers)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------------ PyTorch's numbers


def _golden_cases(prefix):
    if not GOLDEN.exists():
        pytest.fail(f"{GOLDEN} is missing: run python tests/fixtures/make_torch_fixtures.py (needs torch)")
    data = np.load(GOLDEN)
    names = sorted({k.split("/")[1] for k in data.files if k.startswith(prefix + "/")})
    return data, names


GOLDEN_DATA, GOLDEN_OPS = _golden_cases("op")


def _part(data, key, prefix):
    return {k[len(key) + len(prefix):]: data[k] for k in data.files if k.startswith(key + prefix)}


@pytest.mark.parametrize("name", GOLDEN_OPS)
def test_matches_torch(name):
    data, key = GOLDEN_DATA, f"op/{name}/"
    meta = json.loads(str(data[key + "meta"]))
    xs = [data[key + f"x{i}"] for i in range(len(_part(data, key, "dx")))]
    params, buffers = _part(data, key, "param."), _part(data, key, "buffer.")
    attrs = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["attrs"].items()}
    out, cache, updates = OPS[meta["op"]].forward(attrs, xs, params, buffers, meta["train"], np.random.default_rng(0))
    np.testing.assert_allclose(out, data[key + "out"], rtol=1e-10, atol=1e-13)
    dxs, dparams = OPS[meta["op"]].backward(attrs, data[key + "g"], cache)
    for i, dx in enumerate(dxs):
        np.testing.assert_allclose(dx, data[key + f"dx{i}"], rtol=1e-10, atol=1e-12, err_msg=f"dx{i}")
    expected = _part(data, key, "dparam.")
    assert set(dparams) == set(expected)
    for k, v in expected.items():
        np.testing.assert_allclose(dparams[k], v, rtol=1e-10, atol=1e-12, err_msg=k)
    expected = _part(data, key, "update.")
    assert set(updates) == set(expected)
    for k, v in expected.items():
        np.testing.assert_allclose(updates[k], v, rtol=1e-12, atol=0, err_msg=k)


def test_golden_file_covers_every_op():
    ops = {json.loads(str(GOLDEN_DATA[f"op/{n}/meta"]))["op"] for n in GOLDEN_OPS}
    assert ops == set(OPS) - {"dropout"}  # torch's RNG is not NumPy's: see test_dropout_scale_matches_torch


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5])
def test_dropout_scale_matches_torch(rate):
    x = np.random.default_rng(1).standard_normal((40, 50))
    out = OPS["dropout"].forward({"rate": rate}, [x], {}, {}, True, np.random.default_rng(2))[0]
    kept = out != 0
    assert abs(kept.mean() - (1 - rate)) < 0.05
    np.testing.assert_array_equal(out[kept], x[kept] * GOLDEN_DATA[f"dropout/{rate}/scale"][0])


def test_keep_freed_memory_is_safe_to_call():
    from cnnspec.memory import keep_freed_memory
    assert keep_freed_memory() in (True, False)
    out = OPS["relu"].forward({}, [np.ones((300, 300))], {}, {}, True, None)[0]  # allocations still work
    assert out.sum() == 90000.0


def test_relu_gradient_passes_through_nan_like_pytorch():
    # PyTorch's threshold_backward(grad, result, 0) is `result <= 0 ? 0 : grad`: NaN <= 0 is false, so the
    # gradient passes where the input is NaN; it is 0 at x <= 0 (x == 0 and -0.0 included).
    x = np.array([[np.nan, -1.0, 0.0, -0.0, 2.0, -np.inf, np.inf, 1e-300]])
    dout = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]])
    expected = np.array([[1.0, 0.0, 0.0, 0.0, 5.0, 0.0, 7.0, 8.0]])
    out, cache, _ = OPS["relu"].forward({}, [x], {}, {}, True, None)
    (dx,), _ = OPS["relu"].backward({}, dout, cache)
    np.testing.assert_array_equal(out, [[np.nan, 0.0, 0.0, 0.0, 2.0, 0.0, np.inf, 1e-300]])
    np.testing.assert_array_equal(dx, expected)
    assert not np.signbit(dx).any()


@pytest.mark.parametrize("name, attrs, expected", [
    ("relu", {}, 2.0),                  # threshold_backward: NaN <= 0 is false, the gradient passes
    ("leaky_relu", {"slope": 0.25}, 0.5),  # NaN > 0 is false: grad * slope
    ("relu6", {}, 0.0),                 # hardtanh_backward's vectorised kernel masks NaN
    ("hardsigmoid", {}, 0.0),           # only inside (-3, 3)
    ("hardswish", {}, np.nan),          # grad * (x / 3 + 1/2)
])
def test_activation_gradients_at_nan_like_pytorch(name, attrs, expected):
    # PyTorch 2.13's values for a tensor of 64 NaNs and a gradient of 2 (float32 and float64 alike; its scalar
    # kernels, used only for a few trailing values, differ for relu6 and hardswish).
    x = np.full((2, 32), np.nan)
    out, cache, _ = OPS[name].forward(attrs, [x], {}, {}, True, None)
    (dx,), _ = OPS[name].backward(attrs, np.full_like(x, 2.0), cache)
    assert np.isnan(out).all()
    np.testing.assert_array_equal(dx, np.full_like(x, expected))


@pytest.mark.parametrize("channels, hw", [(3, 32), (5, 24), (32, 30)])
def test_batchnorm_results_do_not_depend_on_the_thread_count(monkeypatch, channels, hw):
    # np.einsum's per-row sums differ between a call on one row and on several, so blocks of rows cut by the
    # thread count changed the last bits of the variance (3 channels, 2 threads: blocks of 1 and 2 rows)
    from cnnspec.ops import parallel
    rng = np.random.default_rng(channels)
    x = parallel.batch_first(rng.standard_normal((channels, hw, hw, 32)))
    dout = parallel.batch_first(rng.standard_normal((channels, hw, hw, 32)))
    params = {"weight": rng.standard_normal(channels), "bias": rng.standard_normal(channels)}
    buffers = {"running_mean": np.zeros(channels), "running_var": np.ones(channels)}
    results = []
    for threads in (1, 2, 3, 4):
        monkeypatch.setattr(parallel, "num_threads", lambda: threads)
        out, cache, updates = OPS["batchnorm"].forward({"eps": 1e-5, "momentum": 0.1}, [x], params, buffers, True, None)
        (dx,), grads = OPS["batchnorm"].backward({}, dout, cache)
        results.append([np.ascontiguousarray(a).tobytes() for a in (out, updates["running_var"], dx, *grads.values())])
    assert all(r == results[0] for r in results[1:])


def test_parallel_run_returns_every_slice_and_raises_what_a_slice_raised(monkeypatch):
    from cnnspec.ops import parallel
    monkeypatch.setattr(parallel, "num_threads", lambda: 3)
    elements = 3 * parallel.MIN_ELEMENTS_PER_SLICE
    assert parallel.run(lambda s: (s.start, s.stop), 9, elements) == [(0, 3), (3, 6), (6, 9)]
    for failing in (0, 3, 6):  # the calling thread's slice, or a worker's
        def fn(s, failing=failing):
            if s.start == failing:
                raise ValueError(f"slice {s.start}")
            return s.start
        with pytest.raises(ValueError, match=f"slice {failing}"):
            parallel.run(fn, 9, elements)
        assert parallel.run(lambda s: s.start, 9, elements) == [0, 3, 6]  # and the workers still work


def test_parallel_run_from_many_threads_at_once(monkeypatch):
    """The service grades in several request threads: a caller that finds the workers busy runs its slices
    itself, with the same results."""
    import threading
    from cnnspec.ops import parallel
    monkeypatch.setattr(parallel, "num_threads", lambda: 2)
    a = np.arange(1 << 18, dtype=np.float64)
    want = [a[s].sum() for s in parallel.slices(a.size, a.size)]
    errors, results = [], []

    def caller():
        try:
            for _ in range(200):
                results.append(parallel.run(lambda s: a[s].sum(), a.size, a.size))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 800 and all(r == want for r in results)
