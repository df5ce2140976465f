"""The activation, normalisation, pooling and channel layers of issue 12 through the whole tool: spec errors,
shapes, explain, summary, the memory estimate against the measured peak, ONNX export choices, and the
onnx.reference fixes verification relies on. (Gradients, onnx.reference and PyTorch numbers per op are in
test_ops.py; whole models in test_model_parity.py; every export option in test_onnx_export.py.)"""
from __future__ import annotations

import gc
import json
import math
import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import cnnspec
from cnnspec import limits
from cnnspec.errors import SpecError
from cnnspec.explain import explain
from cnnspec.onnx_export import to_onnx
from cnnspec.onnx_fixes import reference_ops


def spec_text(layers, shape=(8, 9, 9), extra="") -> str:
    lines = ["cnnspec: 1", "name: t", f"input: {{shape: {list(shape)}}}", "layers:"]
    lines += [f"  - {json.dumps(layer)}" for layer in layers]
    return "\n".join(lines) + "\n" + extra


def load(layers, **kw):
    return cnnspec.loads_spec(spec_text(layers, **kw))


def problems(layers, **kw) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load(layers, **kw)
    return [p.message for p in exc.value.problems]


# ---------------------------------------------------------------- spec errors


@pytest.mark.parametrize("layers,shape,message", [
    ([{"type": "groupnorm", "groups": 3}], (8, 5, 5),
     "layer 'groupnorm_1' (groupnorm): groups 3 must divide the 8 channels (input [8, 5, 5] from 'input'): 8 % 3 = 2"),
    ([{"type": "channel_split", "parts": 3, "index": 0}], (8, 5, 5),
     "layer 'channel_split_1' (channel_split): parts 3 must divide the 8 channels (input [8, 5, 5] from 'input'): "
     "8 % 3 = 2"),
    ([{"type": "channel_shuffle", "groups": 2}], (8,),
     "layer 'channel_shuffle_1' (channel_shuffle): channel_shuffle needs a 3-D input ([C, H, W]), got [8] from 'input'"),
    ([{"type": "lrn", "size": 5}], (8,), "layer 'lrn_1' (lrn): lrn needs a 3-D input ([C, H, W]), got [8] from 'input'"),
    ([{"type": "adaptive_avgpool", "output_size": 2}], (8,),
     "layer 'adaptive_avgpool_1' (adaptive_avgpool): adaptive_avgpool needs a 3-D input ([C, H, W]), got [8] from "
     "'input'"),
    ([{"name": "g", "type": "global_avgpool"}, {"name": "f", "type": "flatten"}, {"type": "dense", "units": 3},
      {"type": "multiply", "inputs": ["input", "dense_1"]}], (8, 5, 5),
     "layer 'multiply_1' (multiply): multiply needs two inputs of the same shape, or a [C, H, W] input and a "
     "per-channel gate [C] or [C, 1, 1] with the same C; got [8, 5, 5] from 'input' and [3] from 'dense_1'"),
])
def test_shape_errors_say_what_and_where(layers, shape, message):
    assert problems(layers, shape=shape) == [message]


def test_schema_errors():
    assert problems([{"type": "channel_split", "parts": 2, "index": 2}]) == [
        "layer 1 (channel_split): index must be less than parts (2): the groups are numbered 0 to 1, got 2"]
    assert problems([{"type": "gelu", "approximate": "erf"}]) == [
        "layer 1 (gelu): approximate: must be one of none, tanh; got 'erf' (string)"]
    assert problems([{"type": "multiply", "inputs": ["input"]}])[0].startswith(
        "layer 1 (multiply): inputs: must have at least 2 items")
    assert problems([{"type": "lrn"}]) == ["layer 1 (lrn): missing required key 'size'"]
    assert problems([{"type": "adaptive_avgpool", "output_size": [2, 0]}])[0].startswith(
        "layer 1 (adaptive_avgpool): output_size: must be positive")
    assert problems([{"type": "relu", "inputs": ["input", "input"]}]) == [
        "layer 'relu_1' (relu) takes exactly one input, got 2; combine them first with an add or concat layer"]


def test_multiply_takes_exactly_two_inputs():
    msg = problems([{"name": "a", "type": "relu"}, {"type": "multiply", "inputs": ["a", "a", "input"]}])
    assert msg[0].startswith("layer 2 (multiply): inputs: must have at most 2 items")


# ---------------------------------------------------------------- shapes, parameters, explain


def test_shapes_and_parameter_counts():
    g = load([
        {"name": "ln", "type": "layernorm"},
        {"name": "gn", "type": "groupnorm", "groups": 4},
        {"name": "bn", "type": "batchnorm", "affine": False},
        {"name": "ap", "type": "adaptive_avgpool", "output_size": [4, 3]},
        {"name": "l", "type": "channel_split", "index": 0},
        {"name": "r", "type": "channel_split", "index": 1, "inputs": ["ap"]},
        {"name": "gate", "type": "global_avgpool", "inputs": ["l"]},
        {"name": "m", "type": "multiply", "inputs": ["gate", "r"]},
        {"name": "sh", "type": "channel_shuffle", "groups": 2},
    ]).graph
    n = g.nodes
    assert n["ln"].params == {"weight": (8, 9, 9), "bias": (8, 9, 9)} and n["ln"].param_count == 2 * 648
    assert n["gn"].params == {"weight": (8,), "bias": (8,)}
    assert n["bn"].params == {} and set(n["bn"].buffers) == {"running_mean", "running_var", "num_batches_tracked"}
    assert n["ap"].shape == (8, 4, 3) and n["l"].shape == n["r"].shape == (4, 4, 3)
    assert n["l"].attrs == {"start": 0, "stop": 4} and n["r"].attrs == {"start": 4, "stop": 8}
    assert n["m"].shape == (4, 4, 3) and n["m"].attrs == {"gate": 0}
    assert g.param_count == 2 * 648 + 16


def test_explain_shows_the_windows_and_the_shuffle():
    text = explain(load([{"type": "adaptive_avgpool", "output_size": [3, 2]},
                         {"type": "channel_shuffle", "groups": 2}, {"type": "lrn", "size": 5}], shape=(4, 7, 6)).graph)
    assert "height: 7 -> 3 windows [0, 3), [2, 5), [4, 7) (all 3 long, 2 apart: an average pool with kernel 3, " \
           "stride 2)" in text
    assert "width: 6 -> 2 windows [0, 3), [3, 6) (all 3 long, 3 apart" in text
    assert "output channel j is input channel (j % 2) * 2 + j // 2 -> 0, 2, 1, 3" in text
    assert "neighbours of channel c: c - 2 to c + 2" in text
    text = explain(load([{"type": "adaptive_avgpool", "output_size": 3}], shape=(2, 5, 5)).graph)
    assert "height: 5 -> 3 windows [0, 2), [1, 4), [3, 5) (of different lengths)" in text
    text = explain(load([{"type": "batchnorm", "affine": False}]).graph)
    assert "y = x_hat" in text and "no parameters" in text


def test_default_init_of_norms_is_one_and_zero():
    model = cnnspec.compile(load([{"name": "ln", "type": "layernorm"}, {"name": "gn", "type": "groupnorm",
                                                                         "groups": 2}], extra="init: {scheme: he_normal}\n"))
    for name in ("ln", "gn"):
        assert (model.params[f"{name}.weight"] == 1).all() and (model.params[f"{name}.bias"] == 0).all()


# ---------------------------------------------------------------- the memory estimate bounds the real peak

LAYERS = [
    {"type": "relu6"}, {"type": "silu"}, {"type": "hardswish"}, {"type": "hardsigmoid"}, {"type": "gelu"},
    {"type": "gelu", "approximate": "tanh"}, {"type": "layernorm"}, {"type": "groupnorm", "groups": 4},
    {"type": "lrn", "size": 5}, {"type": "batchnorm", "affine": False},
    {"type": "adaptive_avgpool", "output_size": [7, 5]}, {"type": "channel_shuffle", "groups": 4},
    {"type": "channel_split", "parts": 4, "index": 1},
]


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: "_".join(str(v) for v in layer.values()))
@pytest.mark.parametrize("task", ["forward", "train"])
def test_the_estimate_bounds_the_measured_peak(layer, task):
    extra = "loss: {type: mse}\noptimizer: {lr: 0.1, momentum: 0.9}\n"
    # A conv before and after the layer: it is neither the first nor the last, as in a real network.
    spec = load([{"type": "conv2d", "filters": 16, "kernel": 1}, {"name": "x", **layer},
                 {"type": "conv2d", "filters": 4, "kernel": 1}], shape=(8, 48, 48), extra=extra)
    batch = 4
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *spec.input.shape))
    y = rng.standard_normal((batch, *spec.graph.nodes[spec.graph.output].shape))
    gc.collect()
    tracemalloc.start()
    try:
        model = cnnspec.compile(spec)
        if task == "forward":
            model.forward(x)
            est = model.memory_estimate(batch)
        else:
            for _ in range(2):
                model.train_step(x, y)
            est = model.memory_estimate(batch, train=True, backward=True, step=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= est.total <= 4 * peak, (peak, est.total)


def test_gelu_erf_temporaries_are_bounded():
    from cnnspec.ops.activations import ERF_CHUNK, _erf
    x = np.linspace(-4, 4, 3 * ERF_CHUNK + 5)
    np.testing.assert_array_equal(_erf(x), [math.erf(v) for v in x])
    tracemalloc.start()
    try:
        _erf(x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < x.nbytes + 48 * ERF_CHUNK


# ---------------------------------------------------------------- ONNX: which operators, which opsets


def _ops(model, opset=21) -> dict[str, str]:
    return {n.name: n.op_type for n in to_onnx(model, opset).graph.node}


def test_export_uses_the_onnx_operators():
    model = cnnspec.compile(load([
        {"name": "r6", "type": "relu6"}, {"name": "hs", "type": "hardswish"}, {"name": "ge", "type": "gelu"},
        {"name": "ln", "type": "layernorm"}, {"name": "gn", "type": "groupnorm", "groups": 2},
        {"name": "lrn", "type": "lrn", "size": 5, "alpha": 0.5}, {"name": "ap", "type": "adaptive_avgpool",
                                                                  "output_size": 3},
        {"name": "sp", "type": "channel_split", "index": 1}, {"name": "sh", "type": "channel_shuffle", "groups": 2},
        {"name": "si", "type": "silu"}, {"name": "hsg", "type": "hardsigmoid"},
    ]))
    ops = _ops(model)
    assert [ops[k] for k in ("r6", "hs", "ge", "ln", "gn", "lrn", "ap", "sp", "sh", "si", "hsg")] == [
        "Clip", "HardSwish", "Gelu", "LayerNormalization", "GroupNormalization", "LRN", "AveragePool", "Slice",
        "Reshape", "Mul", "Div"]   # silu = Sigmoid * x; float64 hardsigmoid = relu6(x + 3) / 6
    assert _ops(model.astype(np.float32))["hsg"] == "HardSigmoid"


def test_lrn_falls_back_to_pytorchs_formula_when_lrn_cannot_say_it():
    def lrn_ops(layer, dtype="float64"):
        model = cnnspec.compile(load([{"name": "n", "type": "lrn", **layer}]), dtype=dtype)
        return sorted(set(_ops(model).values()))
    assert lrn_ops({"size": 5, "alpha": 0.5}) == ["LRN"]
    assert lrn_ops({"size": 5}) == ["Add", "AveragePool", "Div", "Mul", "Pow", "Squeeze", "Unsqueeze"]  # alpha 1e-4
    assert lrn_ops({"size": 5}, "float32") == ["LRN"]
    assert "LRN" not in lrn_ops({"size": 4, "alpha": 0.5}, "float32")  # even: ONNX centres it elsewhere


def test_adaptive_pool_decomposes_only_uneven_axes():
    model = cnnspec.compile(load([{"name": "p", "type": "adaptive_avgpool", "output_size": [3, 3]}], shape=(2, 7, 5)))
    ops = [n.op_type for n in to_onnx(model).graph.node]
    assert ops.count("Slice") == 3 and ops.count("ReduceMean") == 3 and ops.count("Concat") == 1  # width 5 -> 3
    assert ops.count("AveragePool") == 1                                                           # height 7 -> 3


@pytest.mark.parametrize("layer,opset", [({"type": "hardswish"}, 14), ({"type": "gelu"}, 20),
                                         ({"type": "layernorm"}, 17), ({"type": "groupnorm", "groups": 2}, 21)])
def test_opsets_that_lack_an_operator_are_refused_with_the_layer(layer, opset):
    model = cnnspec.compile(load([{"name": "x", **layer}]))
    to_onnx(model, opset)
    with pytest.raises(SpecError, match=f"layer 'x' \\({layer['type']}\\) needs opset {opset} or later"):
        to_onnx(model, opset - 1)


def test_float64_eps_that_float32_cannot_hold_stays_exact():
    model = cnnspec.compile(load([{"name": "ln", "type": "layernorm", "eps": 0.1}]))
    m = to_onnx(model)
    assert [n.op_type for n in m.graph.node] == ["Mul", "LayerNormalization"]
    from cnnspec.onnx_verify import verify_onnx
    x = np.random.default_rng(0).standard_normal((2, 8, 9, 9)) * 1e-3   # variance far below eps
    model.forward(x)
    got = ReferenceEvaluator(m).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, model.activations["ln"], rtol=1e-12, atol=1e-14)
    assert verify_onnx(model, m).ok


# ---------------------------------------------------------------- the onnx.reference fixes


def _one_node(op, dtype=TensorProto.DOUBLE, **attrs):
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", dtype, None)],
                              [helper.make_tensor_value_info("y", dtype, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def test_reference_lrn_fix():
    """onnx.reference's LRN loops over the batch, not the channels: with N < C most channels get no sum."""
    x = np.random.default_rng(0).standard_normal((1, 5, 2, 2))
    m = _one_node("LRN", size=3, alpha=0.5, beta=0.75, bias=1.0)
    sq = x * x
    want = np.empty_like(x)
    for c in range(5):
        want[:, c] = x[:, c] / (1 + 0.5 / 3 * sq[:, max(c - 1, 0):c + 2].sum(axis=1)) ** 0.75
    np.testing.assert_allclose(ReferenceEvaluator(m, new_ops=reference_ops(21)).run(None, {"x": x})[0], want,
                               rtol=1e-14)
    assert not np.allclose(ReferenceEvaluator(m).run(None, {"x": x})[0], want)  # the evaluator's own is wrong


@pytest.mark.parametrize("op,attrs,fn", [
    ("Gelu", {}, lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2)))),
    ("Gelu", {"approximate": "tanh"},
     lambda v: 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)))),
    ("HardSwish", {}, lambda v: v * min(max(v / 6 + 0.5, 0), 1)),
])
def test_reference_float64_fixes(op, attrs, fn):
    """The evaluator runs Gelu's and HardSwish's function bodies with float32 constants (errors ~1e-8)."""
    x = np.linspace(-5, 5, 41)
    m = _one_node(op, **attrs)
    want = np.array([fn(v) for v in x])
    np.testing.assert_allclose(ReferenceEvaluator(m, new_ops=reference_ops(21)).run(None, {"x": x})[0], want,
                               rtol=1e-14, atol=1e-15)
    assert np.abs(ReferenceEvaluator(m).run(None, {"x": x})[0] - want).max() > 1e-10


def test_onnxruntime_float64_note_names_only_ops_it_cannot_run():
    from cnnspec.onnx_export import ort_float64_missing
    model = cnnspec.compile(load([{"type": "gelu", "approximate": "tanh"}, {"type": "relu6"},
                                  {"type": "layernorm"}]))
    assert ort_float64_missing(to_onnx(model)) == []
    model = cnnspec.compile(load([{"type": "gelu"}, {"type": "hardswish"}, {"type": "lrn", "size": 3,
                                                                             "alpha": 0.5}]))
    assert ort_float64_missing(to_onnx(model)) == ["HardSwish", "LRN", "Gelu"]
    onnx.checker.check_model(to_onnx(model), full_check=True)
