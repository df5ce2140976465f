"""ONNX export: every example spec and randomized specs covering every layer option export, pass
onnx.checker's full check, and agree with the NumPy engine in onnx's reference evaluator (float64) and in
onnxruntime (float32), layer by layer. Also: names, metadata, opsets, layout boundary, file writing."""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import cnnspec
from cnnspec.errors import CnnspecError, DataError, SpecError
from cnnspec.onnx_export import (DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, ExportError, cast_model, export_onnx,
                                 to_onnx)
from cnnspec.onnx_export import live_layers
from cnnspec.onnx_verify import verify_onnx
from cnnspec.schema import LAYER_TYPES

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
LARGEST = {("float64", "max_abs"): 0.0, ("float64", "max_rel"): 0.0, ("float32", "max_abs"): 0.0,
           ("float32", "max_rel"): 0.0}  # the largest errors seen, by run dtype (printed with -s)


def spec_text(layers, shape=(3, 9, 10), layout="CHW", dtype="float64", output=None, name="t") -> str:
    lines = ["cnnspec: 1", f"name: {name}",
             f"input: {{shape: {list(shape)}, layout: {layout}, dtype: {dtype}}}", "layers:"]
    lines += [f"  - {json.dumps(layer)}" for layer in layers]
    if output:
        lines.append(f"output: {output}")
    return "\n".join(lines) + "\n"


def build(layers, seed=0, **kw):
    """Compile a spec with randomized biases and batch-norm state (the defaults 0/1 would hide conventions)."""
    model = cnnspec.compile(cnnspec.loads_spec(spec_text(layers, **kw)))
    randomize(model, seed)
    return model


def randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    values = {}
    for k, v in {**model.params, **model.buffers}.items():
        if k.endswith("num_batches_tracked"):
            continue
        if k.endswith("running_var") or (k.endswith(".weight") and v.ndim == 1):
            values[k] = rng.uniform(0.5, 2.0, v.shape)
        elif k.endswith(".bias") or k.endswith("running_mean"):
            values[k] = rng.normal(0, 0.5, v.shape)
    model.set_weights(values)


def check(model, opset=DEFAULT_OPSET, batch=2):
    """Export, run the full checker, verify every layer; return the ModelProto."""
    m = to_onnx(model, opset)
    onnx.checker.check_model(m, full_check=True)
    result = verify_onnx(model, m, batch=batch)
    for row in result.layers:
        for key in ("max_abs", "max_rel"):
            LARGEST[row.dtype, key] = max(LARGEST[row.dtype, key], getattr(row, key))
    assert result.ok, result.failure
    want = {"float64": ["onnx.reference", "onnxruntime"], "float32": ["onnxruntime"]}[model.dtype.name]
    assert [r.runtime for r in result.runs] == want
    assert {r.layer for r in result.layers} == {n.name for n in live_layers(model.graph)}
    assert not any(r.note for r in result.layers)  # every layer was found and compared
    return m


@pytest.fixture(scope="module", autouse=True)
def _report_largest():
    yield
    print("\nlargest errors: " + ", ".join(f"{d} {k} {v:.3g}" for (d, k), v in LARGEST.items()))


# ---------------------------------------------------------------- every example spec


def test_specs_dir_is_not_empty():
    assert len(SPECS) >= 5


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_example_spec_exports_and_verifies(path):
    model = cnnspec.compile(path)
    m = check(model)
    assert m.ir_version == 10 and [(o.domain, o.version) for o in m.opset_import] == [("", 21)]
    live = {n.name for n in live_layers(model.graph)}
    assert live <= {n.name for n in m.graph.node}
    inits = {t.name for t in m.graph.initializer}
    want = {k for k in (*model.params, *model.buffers) if not k.endswith("num_batches_tracked")}
    assert {k for k in want if k.rsplit(".", 1)[0] in live} <= inits
    assert all("." in t or "/" in t for t in inits)


# ---------------------------------------------------------------- single layers, every option

CONV = [
    {"filters": 4, "kernel": 3},
    {"filters": 6, "kernel": [2, 3], "stride": [2, 1], "padding": [1, 0], "dilation": [1, 2], "groups": 3,
     "bias": False},
    {"filters": 4, "kernel": 4, "padding": "same"},                 # asymmetric pads: (1, 1, 2, 2)
    {"filters": 5, "kernel": [3, 2], "padding": "same", "dilation": [2, 3]},
    {"filters": 3, "kernel": 3, "padding": "valid", "stride": 2},
    {"filters": 6, "kernel": 3, "groups": 3, "padding": 1},           # depthwise
    *({"filters": 4, "kernel": 3, "padding": [2, 1], "stride": [2, 1], "padding_mode": m}
      for m in ("reflect", "replicate", "circular")),
    *({"filters": 2, "kernel": [4, 2], "padding": "same", "padding_mode": m, "dilation": [1, 2]}
      for m in ("reflect", "replicate", "circular")),
]
SIMPLE = [
    ({"type": "batchnorm"}, (3, 9, 10)),
    ({"type": "batchnorm", "eps": 1.0e-3, "momentum": 0.3}, (3, 9, 10)),
    ({"type": "batchnorm", "eps": 0.5}, (7,)),                         # float32-exact eps, 2-D input
    ({"type": "batchnorm"}, (7,)),
    ({"type": "relu"}, (3, 9, 10)),
    ({"type": "sigmoid"}, (3, 9, 10)),
    ({"type": "tanh"}, (5,)),
    ({"type": "softmax"}, (3, 9, 10)),                                  # over channels
    ({"type": "softmax"}, (6,)),
    ({"type": "leaky_relu"}, (3, 9, 10)),                               # 0.01: PRelu in float64
    ({"type": "leaky_relu", "slope": 0.25}, (3, 9, 10)),                 # float32-exact: LeakyRelu
    ({"type": "leaky_relu", "slope": -0.3}, (6,)),
    ({"type": "global_avgpool"}, (3, 9, 10)),
    ({"type": "flatten"}, (3, 9, 10)),
    ({"type": "flatten"}, (4,)),
    ({"type": "dropout", "rate": 0.3}, (3, 9, 10)),
    ({"type": "dense", "units": 4}, (6,)),
    ({"type": "dense", "units": 3, "bias": False}, (6,)),
    ({"type": "relu6"}, (3, 9, 10)),
    ({"type": "silu"}, (3, 9, 10)),
    ({"type": "silu"}, (6,)),
    ({"type": "hardswish"}, (3, 9, 10)),
    ({"type": "hardsigmoid"}, (3, 9, 10)),
    ({"type": "gelu"}, (3, 9, 10)),
    ({"type": "gelu", "approximate": "tanh"}, (6,)),
    ({"type": "batchnorm", "affine": False}, (3, 9, 10)),
    ({"type": "batchnorm", "affine": False}, (7,)),
    ({"type": "layernorm"}, (3, 9, 10)),
    ({"type": "layernorm", "eps": 0.5, "affine": False}, (7,)),
    ({"type": "groupnorm", "groups": 3}, (6, 9, 10)),
    ({"type": "groupnorm", "groups": 2, "eps": 1.0e-3, "affine": False}, (6,)),
    ({"type": "lrn", "size": 5}, (6, 9, 10)),                        # alpha 1e-4: PyTorch's formula in float64
    ({"type": "lrn", "size": 3, "alpha": 0.5, "beta": 0.5, "k": 2.0}, (6, 9, 10)),   # float32-exact: LRN
    ({"type": "lrn", "size": 4, "alpha": 0.25}, (6, 9, 10)),          # even size: PyTorch's formula
    ({"type": "adaptive_avgpool", "output_size": [3, 5]}, (3, 9, 10)),  # uniform: AveragePool
    ({"type": "adaptive_avgpool", "output_size": [4, 3]}, (3, 9, 10)),  # uneven both ways
    ({"type": "adaptive_avgpool", "output_size": [12, 1]}, (3, 9, 10)),  # more rows than the input
    ({"type": "channel_split", "parts": 3, "index": 2}, (6, 9, 10)),
    ({"type": "channel_split", "index": 0}, (6,)),
    ({"type": "channel_shuffle", "groups": 3}, (6, 9, 10)),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("layout", ["CHW", "HWC"])
@pytest.mark.parametrize("opts", CONV, ids=[f"conv{i}" for i in range(len(CONV))])
def test_conv_options(opts, layout, dtype):
    shape = (3, 9, 10) if layout == "CHW" else (9, 10, 3)
    check(build([{"name": "c", "type": "conv2d", **opts}], shape=shape, layout=layout, dtype=dtype))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("layer,shape", SIMPLE, ids=[f"{s[0]['type']}{i}" for i, s in enumerate(SIMPLE)])
def test_single_layer(layer, shape, dtype):
    layout = "HWC" if len(shape) == 3 and dtype == "float32" else "CHW"
    if layout == "HWC":
        shape = (shape[1], shape[2], shape[0])
    check(build([{"name": "x", **layer}], shape=shape, layout=layout, dtype=dtype))


def _pool_cases():
    cases = []
    for size in (5, 6, 7):
        for k in (1, 2, 3):
            for s in (1, 2, 3):
                for p in range(0, k // 2 + 1):
                    cases.append(("maxpool", size, k, s, p, 1 if k == 1 else (k % 2) + 1, True, None))
                    for cip in (True, False):
                        cases.append(("avgpool", size, k, s, p, 1, True, cip))
    cases += [("maxpool", 7, 2, 1, 2, 3, False, None), ("maxpool", 8, 2, 2, 2, 3, True, None),   # pads >= kernel
              ("avgpool", 6, 3, 2, 1, 1, False, True), ("avgpool", 6, 3, 2, 1, 1, False, False),
              ("maxpool", 6, 3, 2, 1, 2, False, None)]
    return cases


def test_pools_every_ceil_padding_and_count_case():
    """ceil_mode where PyTorch drops a last window, where the window hangs past the padding (the onnx
    reference evaluator's AveragePool gets that wrong with ceil_mode), count_include_pad both ways."""
    ran = 0
    for typ, size, k, s, p, d, ceil, cip in _pool_cases():
        layer = {"name": "p", "type": typ, "kernel": k, "stride": s, "padding": p, "ceil_mode": ceil}
        if typ == "maxpool":
            layer["dilation"] = d
        else:
            layer["count_include_pad"] = cip
        try:
            model = build([layer], shape=(2, size, size + 1))
        except SpecError:
            continue  # the kernel does not fit
        check(model)
        ran += 1
    assert ran > 100


@pytest.mark.parametrize("layout", ["CHW", "HWC"])
def test_dag_add_concat_both_layouts(layout):
    layers = [
        {"name": "a", "type": "conv2d", "filters": 4, "kernel": 3, "padding": 1},
        {"name": "b", "type": "conv2d", "filters": 4, "kernel": 1, "inputs": ["input"]},
        {"name": "c", "type": "conv2d", "filters": 4, "kernel": 3, "padding": "same", "padding_mode": "reflect",
         "inputs": ["input"]},
        {"name": "sum2", "type": "add", "inputs": ["a", "b"]},
        {"name": "sum3", "type": "add", "inputs": ["a", "b", "c"]},
        {"name": "cat2", "type": "concat", "inputs": ["sum2", "c"]},
        {"name": "cat3", "type": "concat", "inputs": ["cat2", "sum3", "input"]},
        {"name": "bn", "type": "batchnorm"},
        {"name": "pool", "type": "maxpool", "kernel": 2, "ceil_mode": True},
    ]
    shape = (3, 7, 9) if layout == "CHW" else (7, 9, 3)
    for dtype in ("float64", "float32"):
        m = check(build(layers, shape=shape, layout=layout, dtype=dtype))
        ops = {n.name: n.op_type for n in m.graph.node}
        assert ops["sum2"] == "Add" and ops["sum3"] == "Sum" and ops["cat3"] == "Concat"
        out = m.graph.output[0]
        assert out.name == "pool"
        dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
        assert dims == (["N", 15, 4, 5] if layout == "CHW" else ["N", 4, 5, 15])


@pytest.mark.parametrize("layout", ["CHW", "HWC"])
def test_squeeze_excitation_and_shuffle_unit_both_layouts(layout):
    """multiply with a [C, 1, 1] gate (convolutions), a [C] gate (dense), and of equal shapes; a ShuffleNet v2
    unit: channel_split, a branch, concat, channel_shuffle."""
    layers = [
        {"name": "c", "type": "conv2d", "filters": 8, "kernel": 3, "padding": 1},
        {"name": "pool", "type": "global_avgpool"},
        {"name": "fc1", "type": "conv2d", "filters": 2, "kernel": 1},
        {"name": "act", "type": "silu"},
        {"name": "fc2", "type": "conv2d", "filters": 8, "kernel": 1},
        {"name": "gate", "type": "hardsigmoid"},
        {"name": "se", "type": "multiply", "inputs": ["c", "gate"]},
        {"name": "flat", "type": "flatten", "inputs": ["pool"]},
        {"name": "d", "type": "dense", "units": 8},
        {"name": "g2", "type": "sigmoid"},
        {"name": "se2", "type": "multiply", "inputs": ["g2", "se"]},
        {"name": "sq", "type": "multiply", "inputs": ["se2", "se2"]},
        {"name": "left", "type": "channel_split", "index": 0},
        {"name": "right", "type": "channel_split", "index": 1, "inputs": ["sq"]},
        {"name": "b", "type": "conv2d", "filters": 4, "kernel": 1},
        {"name": "bn", "type": "batchnorm"},
        {"name": "r", "type": "relu6"},
        {"name": "cat", "type": "concat", "inputs": ["left", "r"]},
        {"name": "shuffle", "type": "channel_shuffle", "groups": 2},
    ]
    shape = (3, 7, 9) if layout == "CHW" else (7, 9, 3)
    for dtype in ("float64", "float32"):
        m = check(build(layers, shape=shape, layout=layout, dtype=dtype))
        assert m.graph.output[0].name == "shuffle"


def _random_layer(rng: random.Random, shape, names):
    """One random layer that fits `shape` (internal CHW or (F,)), or None."""
    if len(shape) == 1:
        return rng.choice([{"type": "dense", "units": rng.randint(1, 6), "bias": rng.random() < 0.7},
                           {"type": "batchnorm", "eps": rng.choice([1.0e-5, 1.0e-3])},
                           {"type": rng.choice(["relu", "sigmoid", "tanh", "softmax"])},
                           {"type": "leaky_relu", "slope": rng.choice([0.01, 0.1, 0.5])},
                           {"type": "dropout", "rate": 0.2}])
    c, h, w = shape
    k = rng.randint(1, min(3, h, w))
    g = rng.choice([g for g in (1, 2, 3) if c % g == 0])
    choice = rng.random()
    if choice < 0.35:
        return {"type": "conv2d", "filters": g * rng.randint(1, 3), "kernel": [k, rng.randint(1, min(3, w))],
                "stride": rng.choice([1, 1, 2]), "padding": rng.choice([0, 1, [1, 0]]), "groups": g,
                "dilation": rng.choice([1, 1, 2]) if min(h, w) > 6 else 1,
                "padding_mode": rng.choice(["zeros", "reflect", "replicate", "circular"]),
                "bias": rng.random() < 0.7}
    if choice < 0.45:
        return {"type": "conv2d", "filters": rng.randint(1, 4), "kernel": rng.choice([2, 3]), "padding": "same",
                "padding_mode": rng.choice(["zeros", "reflect", "circular"])}
    if choice < 0.55 and min(h, w) >= 2:
        return {"type": "maxpool", "kernel": 2, "stride": rng.choice([1, 2]), "ceil_mode": rng.random() < 0.5,
                "padding": rng.choice([0, 1])}
    if choice < 0.65 and min(h, w) >= 2:
        return {"type": "avgpool", "kernel": 2, "stride": rng.choice([1, 2]), "ceil_mode": rng.random() < 0.5,
                "padding": rng.choice([0, 1]), "count_include_pad": rng.random() < 0.5}
    if choice < 0.75:
        return {"type": "batchnorm", "eps": rng.choice([1.0e-5, 1.0e-2]), "momentum": 0.2}
    if choice < 0.85:
        return {"type": rng.choice(["relu", "tanh", "sigmoid", "softmax", "leaky_relu", "dropout"])}
    same = [n for n, s in names.items() if s == shape]
    if len(same) >= 2:
        return {"type": rng.choice(["add", "concat"]), "inputs": rng.sample(same, rng.choice([2, min(3, len(same))]))}
    return {"type": rng.choice(["flatten", "global_avgpool"])}


def _random_spec(seed: int):
    """A valid random spec of 4-9 layers: chains with branches, add/concat, both layouts and dtypes."""
    rng = random.Random(seed)
    layout, dtype = rng.choice(["CHW", "HWC"]), rng.choice(["float64", "float32"])
    c, h, w = rng.randint(1, 4), rng.randint(5, 10), rng.randint(5, 10)
    shape_in = (c, h, w) if layout == "CHW" else (h, w, c)
    shape, layers, shapes = (c, h, w), [], {"input": (c, h, w)}
    for i in range(rng.randint(4, 9)):
        layer = {"name": f"l{i}", **_random_layer(rng, shape, shapes)}
        if rng.random() < 0.2 and layer["type"] not in ("add", "concat"):
            layer["inputs"] = [rng.choice([n for n, s in shapes.items() if len(s) == len(shape)])]
        try:
            spec = cnnspec.loads_spec(spec_text(layers + [layer], shape=shape_in, layout=layout, dtype=dtype))
        except SpecError:
            continue  # e.g. a kernel that does not fit: draw another layer
        layers.append(layer)
        shape = shapes[layer["name"]] = spec.graph.nodes[layer["name"]].shape
    return cnnspec.loads_spec(spec_text(layers, shape=shape_in, layout=layout, dtype=dtype, name=f"random-{seed}"))


@pytest.mark.parametrize("seed", range(40))
def test_random_multi_layer_specs(seed):
    spec = _random_spec(seed)
    model = cnnspec.compile(spec)
    randomize(model, seed)
    check(model, batch=3)


def test_random_specs_cover_layouts_dtypes_merges_and_padding_modes():
    seen, modes = set(), set()
    for seed in range(16):
        spec = _random_spec(seed)
        seen |= {layer.type for layer in spec.layers} | {spec.input.layout, spec.input.dtype}
        modes |= {layer.padding_mode for layer in spec.layers if layer.type == "conv2d"}
    assert {"CHW", "HWC", "float32", "float64", "conv2d", "add", "concat", "maxpool", "avgpool", "batchnorm"} <= seen
    assert modes == {"zeros", "reflect", "replicate", "circular"}


def test_single_layer_cases_cover_every_layer_type():
    """A new layer type in the schema needs export tests here."""
    covered = {layer["type"] for layer, _ in SIMPLE} | {"conv2d", "maxpool", "avgpool", "add", "concat", "multiply"}
    assert covered == set(LAYER_TYPES)


# ---------------------------------------------------------------- conventions in the file


def _node(m, name):
    return next(n for n in m.graph.node if n.name == name)


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def test_conventions_in_attributes():
    model = build([
        {"name": "c", "type": "conv2d", "filters": 4, "kernel": 4, "padding": "same"},
        {"name": "bn", "type": "batchnorm", "momentum": 0.3, "eps": 0.5},
        {"name": "ap", "type": "avgpool", "kernel": 3, "stride": 2, "padding": 1, "count_include_pad": False},
        {"name": "sm", "type": "softmax"},
        {"name": "fl", "type": "flatten"},
        {"name": "fc", "type": "dense", "units": 2},
    ])
    m = to_onnx(model)
    assert _attrs(_node(m, "c"))["pads"] == [1, 1, 2, 2]           # [top, left, bottom, right]
    bn = _attrs(_node(m, "bn"))
    assert bn["momentum"] == pytest.approx(0.7) and bn["epsilon"] == 0.5
    assert _attrs(_node(m, "ap"))["count_include_pad"] == 0
    assert _attrs(_node(m, "sm"))["axis"] == 1 and _attrs(_node(m, "fl"))["axis"] == 1
    assert _node(m, "fc").op_type == "Gemm" and _attrs(_node(m, "fc"))["transB"] == 1
    assert list(_node(m, "fc").input) == ["fl", "fc.weight", "fc.bias"]
    assert list(_node(m, "c").input) == ["input", "c.weight", "c.bias"]


def test_float64_eps_and_slope_stay_exact():
    model = build([{"name": "bn", "type": "batchnorm", "eps": 1.0e-5},
                   {"name": "lr", "type": "leaky_relu", "slope": 0.01}], shape=(3, 4, 4))
    model.buffers["bn.running_var"][:] = 1e-7  # where a float32 epsilon would cost 1e-9 relative
    m = to_onnx(model)
    assert _node(m, "lr").op_type == "PRelu"
    assert "bn/eps_remainder_add" in {n.name for n in m.graph.node}
    result = verify_onnx(model, m)
    assert result.ok and max(r.max_rel for r in result.layers if r.dtype == "float64") < 1e-14
    m32 = to_onnx(model.astype(np.float32))
    assert _node(m32, "lr").op_type == "LeakyRelu" and len(m32.graph.node) == 2


def test_metadata_names_and_dynamic_batch():
    path = ROOT / "specs" / "lecture_cnn.yaml"
    model = cnnspec.compile(path)
    m = to_onnx(model)
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["cnnspec.spec_name"] == "lecture-cnn"
    assert meta["cnnspec.version"] == cnnspec.__version__
    assert meta["cnnspec.spec_sha256"] == hashlib.sha256(model.spec.document.source.encode()).hexdigest()
    assert meta["cnnspec.init_seed"] == str(model.spec.init.seed)
    assert m.graph.name == "lecture-cnn" and m.producer_name == "cnnspec"
    assert [i.name for i in m.graph.input] == ["input"]
    dims = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 100, 100, 3]  # the declared HWC layout
    assert [n.name for n in m.graph.node][:2] == ["input/to_nchw", "conv1"]
    # the batch is dynamic: onnxruntime runs batch 1 and 3 and agrees with the engine
    session = ort.InferenceSession(cast_model(m, np.float32).SerializeToString(), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = np.random.default_rng(n).normal(size=(n, 100, 100, 3))
        got = session.run(None, {"input": x.astype(np.float32)})[0]
        np.testing.assert_allclose(got, model.forward(x), rtol=1e-4, atol=1e-5)


def test_hwc_output_is_in_declared_layout():
    model = build([{"name": "c", "type": "conv2d", "filters": 5, "kernel": 3}], shape=(8, 9, 2), layout="HWC",
                  dtype="float32")
    m = to_onnx(model)
    x = np.random.default_rng(0).normal(size=(2, 8, 9, 2)).astype(np.float32)
    got = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert got.shape == (2, 6, 7, 5)
    np.testing.assert_allclose(got, model.forward(x), rtol=1e-5, atol=1e-5)
    assert [n.name for n in m.graph.node] == ["input/to_nchw", "c", "c/to_hwc"]


def test_layers_after_output_are_not_exported():
    model = build([{"name": "a", "type": "relu"}, {"name": "b", "type": "tanh"}], output="a", shape=(4,))
    m = check(model)
    assert [n.name for n in m.graph.node] == ["a"] and m.graph.output[0].name == "a"


def test_weights_in_initializers_are_the_models():
    model = build([{"name": "c", "type": "conv2d", "filters": 2, "kernel": 2, "groups": 1},
                   {"name": "bn", "type": "batchnorm"}], shape=(2, 3, 3))
    m = to_onnx(model)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    for k in ("c.weight", "c.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
        store = model.params if k in model.params else model.buffers
        np.testing.assert_array_equal(inits[k], store[k])
        assert inits[k].dtype == np.float64
    assert "bn.num_batches_tracked" not in inits


# ---------------------------------------------------------------- opsets


def _all_options_model(dtype="float64", circular=True):
    return build([
        {"name": "c1", "type": "conv2d", "filters": 4, "kernel": 3, "padding": 1,
         "padding_mode": "circular" if circular else "reflect"},
        {"name": "c2", "type": "conv2d", "filters": 4, "kernel": 2, "padding": "same", "padding_mode": "replicate",
         "groups": 2},
        {"name": "bn", "type": "batchnorm"}, {"name": "act", "type": "leaky_relu"},
        {"name": "mp", "type": "maxpool", "kernel": 2, "ceil_mode": True, "dilation": 1},
        {"name": "ap", "type": "avgpool", "kernel": 2, "stride": 1, "padding": 1, "ceil_mode": True},
        {"name": "sum", "type": "add", "inputs": ["ap", "ap"]}, {"name": "sm", "type": "softmax"},
        {"name": "drop", "type": "dropout"}, {"name": "gap", "type": "global_avgpool"},
        {"name": "fl", "type": "flatten"}, {"name": "fc", "type": "dense", "units": 3},
    ], shape=(3, 7, 8), dtype=dtype)


@pytest.mark.parametrize("opset", range(MIN_OPSET, MAX_OPSET + 1))
def test_every_supported_opset(opset):
    m = check(_all_options_model(circular=opset >= 19), opset=opset)
    assert m.opset_import[0].version == opset
    assert m.ir_version == onnx.helper.find_min_ir_version_for(list(m.opset_import))


def test_opset_that_cannot_express_a_layer_names_it():
    model = _all_options_model()
    with pytest.raises(SpecError) as exc:
        to_onnx(model, 18)
    text = str(exc.value)
    assert "layer 'c1'" in text and "opset 19" in text and "circular" in text
    assert text.startswith("<string>:")  # positioned in the spec


@pytest.mark.parametrize("opset", [MIN_OPSET - 1, MAX_OPSET + 1, 0, "21", True])
def test_unsupported_opset(opset):
    with pytest.raises(ExportError, match=f"opsets {MIN_OPSET} to {MAX_OPSET}"):
        to_onnx(_all_options_model(), opset)
    assert issubclass(ExportError, CnnspecError)


# ---------------------------------------------------------------- files


def test_export_writes_model_and_text_atomically(tmp_path):
    model = cnnspec.compile(ROOT / "specs" / "lenet5.yaml")
    out = tmp_path / "lenet.onnx"
    m = export_onnx(model, out, text=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet.onnx", "lenet.onnxtxt"]
    loaded = onnx.load(str(out))
    assert loaded.SerializeToString() == m.SerializeToString()
    text = (tmp_path / "lenet.onnxtxt").read_text()
    assert "ir_version: 10" in text and "Conv" in text and '["location": "lenet.onnx"]' in text
    assert len(text) < 20_000  # big tensors are referenced, not printed
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


from cnnspec.files import _umask  # noqa: E402


@pytest.mark.parametrize("where", ["missing/dir/m.onnx", "is_a_dir", "file/m.onnx"])
def test_unwritable_path_leaves_nothing(tmp_path, where):
    (tmp_path / "is_a_dir").mkdir()
    (tmp_path / "file").write_text("x")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(DataError, match="cannot write|is a directory|does not exist"):
        export_onnx(_all_options_model(), tmp_path / where, text=True)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_failed_export_writes_nothing(tmp_path):
    with pytest.raises(SpecError):
        export_onnx(_all_options_model(), tmp_path / "m.onnx", opset=17, text=True)
    assert list(tmp_path.iterdir()) == []


def test_cast_model_to_float32_runs_in_onnxruntime():
    model = _all_options_model()
    m32 = cast_model(to_onnx(model), np.float32)
    onnx.checker.check_model(m32, full_check=True)
    assert {t.data_type for t in m32.graph.initializer} <= {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}


@pytest.mark.parametrize("case", ["hwc_concat_gap_softmax", "features_bn_dropout_softmax", "output_mid_hwc"])
def test_combinations_at_batch_1_and_7(case):
    """Option combinations the single-layer cases do not reach, through both runtimes at two batch sizes
    (the batch dimension is really dynamic), at the lowest and the default opset."""
    kw = {}
    if case == "hwc_concat_gap_softmax":
        layers = [{"name": "a", "type": "conv2d", "filters": 3, "kernel": 3, "padding": 1, "groups": 3,
                   "padding_mode": "replicate"},
                  {"name": "b", "type": "conv2d", "filters": 2, "kernel": 1, "inputs": ["input"]},
                  {"name": "cat", "type": "concat", "inputs": ["a", "b", "input"]},
                  {"name": "gap", "type": "global_avgpool"}, {"name": "sm", "type": "softmax"}]
        kw = {"shape": (6, 7, 3), "layout": "HWC"}
    elif case == "features_bn_dropout_softmax":
        layers = [{"name": "bn", "type": "batchnorm", "momentum": 0.5}, {"name": "d", "type": "dropout"},
                  {"name": "fc", "type": "dense", "units": 3}, {"name": "sm", "type": "softmax"}]
        kw = {"shape": (5,)}
    else:  # the output in the middle, a branch before it and layers after it that are not exported
        layers = [{"name": "a", "type": "conv2d", "filters": 3, "kernel": 3},
                  {"name": "side", "type": "relu", "inputs": ["input"]},
                  {"name": "p", "type": "avgpool", "kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True,
                   "count_include_pad": False, "inputs": ["a"]},
                  {"name": "later", "type": "flatten"}]
        kw = {"shape": (8, 9, 3), "layout": "HWC", "output": "p"}
    for dtype in ("float64", "float32"):
        model = build(layers, dtype=dtype, **kw)
        for opset in (MIN_OPSET, DEFAULT_OPSET):
            for batch in (1, 7):
                m = check(model, opset=opset, batch=batch)
    assert {n.name for n in m.graph.node} >= {n.name for n in live_layers(model.graph)}
    if case == "output_mid_hwc":
        assert not {"side", "later"} & {n.name for n in m.graph.node}
