"""Every example spec loads with the right numbers; every bad spec fixture is rejected with exactly its problems."""
from __future__ import annotations

import json
from math import prod
from pathlib import Path

import pytest

import cnnspec
from cnnspec import yaml_io
from cnnspec.schema import json_schema
from cnnspec.summary import render_summary, summarize

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
BAD = ROOT / "tests" / "bad_specs"
MODELINE = "# yaml-language-server: $schema=../docs/cnnspec.schema.json"

# name -> (total params, output shape of the output layer in the declared layout, buffers).
# Parameter totals worked out by hand from the layer formulas (conv: F*(C/g*kh*kw) + F; dense: out*in + out;
# batchnorm: 2*C). LeNet-5's 61,706 is the figure from the literature.
EXPECTED = {
    "bench_cnn": (42_634, (10,), 192),
    "inception_branches": (1_957, (5,), 64),
    "lecture_cnn": (769_290, (10,), 64),
    "lecture_conv1": (168, (98, 98, 6), 0),
    "lecture_conv2": (18_496, (14, 14, 64), 0),
    "lecture_linear": (2, (1,), 0),
    "lecture_sgd_lr1": (2, (1,), 0),
    "lenet5": (61_706, (10,), 0),
    "resnet_basic_block": (74_634, (10,), 256),
    "vgg_blocks": (2_360_138, (10,), 0),
    # Parts of published networks (specs/architectures/ has the whole ones and test_architectures.py their counts):
    # torchvision's efficientnet_b0().features[2] and shufflenet_v2_x1_0().stage2[1].
    "mbconv_se_stage": (16_714, (24, 16, 16), 1_056),
    "shufflenet_v2_unit": (7_598, (116, 28, 28), 348),
}


def test_every_example_spec_is_listed():
    assert {p.stem for p in SPECS} == set(EXPECTED)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_example_spec_loads_with_the_right_totals(path):
    spec = cnnspec.load_spec(path)
    g = spec.graph
    params, out_shape, buffers = EXPECTED[path.stem]
    data = summarize(g)
    assert data["totals"]["params"] == params == g.param_count
    assert data["totals"]["trainable_params"] == params
    assert data["totals"]["buffers"] == buffers
    assert tuple(data["layers"][[entry["name"] for entry in data["layers"]].index(g.output)]["output_shape"]) \
        == out_shape
    assert sum(entry["params"] for entry in data["layers"]) == params
    itemsize = 8 if spec.input.dtype == "float64" else 4
    assert data["totals"]["param_bytes"] == (params + buffers) * itemsize
    assert data["totals"]["activation_bytes_per_sample"] == sum(prod(n.shape) for n in g.nodes.values()) * itemsize
    assert "Total params: " + f"{params:,}" in render_summary(data)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_example_spec_starts_with_the_schema_modeline(path):
    assert path.read_text(encoding="utf-8").splitlines()[0] == MODELINE


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_example_spec_is_valid_under_the_json_schema(path):
    import jsonschema  # a test dependency (pyproject [test])
    jsonschema.validate(yaml_io.load(path).data, json_schema(), cls=jsonschema.Draft202012Validator)


def test_docs_schema_file_is_up_to_date():
    # Regenerate with: python -m cnnspec schema -o docs/cnnspec.schema.json
    on_disk = json.loads((ROOT / "docs" / "cnnspec.schema.json").read_text(encoding="utf-8"))
    assert on_disk == json_schema()


def test_lecture_conv1_numbers():
    g = cnnspec.load_spec(ROOT / "specs" / "lecture_conv1.yaml").graph
    conv = g.nodes["conv1"]
    assert g.declared(conv.shape) == (98, 98, 6)
    assert conv.params == {"weight": (6, 3, 3, 3), "bias": (6,)}
    assert conv.param_count == 6 * (3 * 3 * 3) + 6 == 168


def test_lecture_conv2_numbers():
    g = cnnspec.load_spec(ROOT / "specs" / "lecture_conv2.yaml").graph
    conv = g.nodes["conv1"]
    assert g.declared(conv.shape) == (14, 14, 64)
    assert conv.params["weight"][1:] == (32, 3, 3)        # one kernel is 3x3x32
    assert conv.param_count == 64 * (3 * 3 * 32) + 64 == 18_496


def test_lenet5_layer_by_layer():
    g = cnnspec.load_spec(ROOT / "specs" / "lenet5.yaml").graph
    assert {n.name: n.shape for n in g.nodes.values() if n.param_count} == {
        "c1": (6, 28, 28), "c3": (16, 10, 10), "c5": (120,), "f6": (84,), "output": (10,)}
    assert [n.param_count for n in g.nodes.values() if n.param_count] == [156, 2_416, 48_120, 10_164, 850]


def test_lecture_cnn_flow():
    g = cnnspec.load_spec(ROOT / "specs" / "lecture_cnn.yaml").graph
    assert [(n.type, g.declared(n.shape)) for n in g.nodes.values()] == [
        ("conv2d", (98, 98, 32)), ("batchnorm", (98, 98, 32)), ("relu", (98, 98, 32)), ("maxpool", (49, 49, 32)),
        ("flatten", (76_832,)), ("dense", (10,))]


# ---------------------------------------------------------------- bad specs: exactly these problems, here

# file -> [(line, col, text the message contains)]; positions are 1-based, as printed.
BAD_EXPECTED = {
    "absurd_filters": [(6, 19, "output [1000000000, 30, 30] has 900,000,000,000 values; the limit is 268,435,456")],
    "absurd_input": [(4, 10, "input shape [100000, 100000, 3] has 30,000,000,000 values per sample")],
    "bad_inputs": [(6, 61, "layer 'a': input 'b' is declared later (line 7)"),
                   (7, 36, "layer 'b' cannot take its own output as input"),
                   (8, 36, "layer 'c': unknown input 'conv' (layers above: input, a, b)"),
                   (9, 42, "layer 'd': input 'e' is declared later (line 10)"),
                   (10, 35, "layer 'e' (relu) takes exactly one input, got 2")],
    "bad_weights": [(8, 3, "has no parameter 'weigth'; did you mean 'fc.weight'?"),
                    (9, 3, "has no parameter 'bias' (it has bias: false)")],
    "bad_weights2": [(8, 14, "'fc.weight' has shape [2, 3], the model expects [2, 2]"),
                     (9, 12, "'fc.bias' must be numbers; found items of different shapes side by side")],
    "cascade": [(6, 53, "layer 'conv1' (conv2d): kernel height 11 exceeds the padded input height 8"),
                (11, 17, "layer 'fc2' (dense): dense needs a [features] input, got [4, 6, 6] from 'side'")],
    "comments_only": [(None, None, "the spec has no content")],
    "dense_without_flatten": [(8, 16, "dense needs a [features] input, got [6, 12, 12] from 'pool1'; add a "
                                      "{type: flatten} layer before it (it would give [864])")],
    "duplicate_key": [(10, 5, "duplicate key 'filters' (first given at line 8)"),
                      (11, 1, "duplicate key 'name' (first given at line 2)")],
    "duplicate_names": [(8, 12, "duplicate layer name 'conv' (first declared at line 6)"),
                        (9, 12, "layer name 'input' is reserved")],
    "groups": [(6, 61, "groups 4 must divide both the input channels and the filters, got 6 channels"),
               (7, 61, "groups 3 must divide both the input channels and the filters, got 6 channels (input "
                       "[6, 8, 8] from 'input') and 8 filters: 8 % 3 = 2")],
    "kernel_too_large": [(9, 53, "kernel height 5 exceeds the padded input height 2 (input [2, 2, 8] from 'conv2'): "
                                 "output height = floor((2 + 2*0 - 5)/1) + 1 < 1")],
    "merge_mismatch": [(7, 17, "add needs inputs of the same shape, got [16, 14, 14] from 'conv1' and [8, 16, 16] "
                               "from 'input'"),
                       (9, 17, "concat joins along channels, so all other dimensions must match; got [16, 14, 14] "
                               "from 'conv1' and [8, 8, 8] from 'pool'")],
    "missing_keys": [(1, 1, "spec: missing required key 'name'"), (3, 3, "input: missing required key 'shape'"),
                     (5, 5, "layer 1 ('conv1', conv2d): missing required key 'filters'"),
                     (6, 5, "layer 2 ('fc', dense): missing required key 'units'"),
                     (7, 5, "layer 3 ('what'): missing required key 'type'"),
                     (8, 7, "loss: missing required key 'type'")],
    "nan_inf": [(6, 42, "slope: must be a finite number, got inf"), (7, 38, "eps: must be a finite number, got nan"),
                (8, 17, "optimizer.lr: must be a finite number, got nan"),
                (8, 33, "optimizer.momentum: must be a finite number, got -inf")],
    "not_a_mapping": [(1, 1, "a spec is a mapping with keys cnnspec, name, input, layers")],
    "out_of_range": [(4, 14, "input.shape[1]: must be >= 1, got 0"), (6, 39, "filters: must be >= 1, got 0"),
                     (6, 50, "kernel: must be positive (>= 1), got -1"),
                     (7, 50, "kernel: must be positive (>= 1), got [3, 0]"),
                     (7, 66, "stride: must be positive (>= 1), got 0"),
                     (7, 78, "padding: must be non-negative (>= 0), got -1"),
                     (8, 38, "eps: must be > 0.0, got 0"), (8, 51, "momentum: must be <= 1.0, got 2"),
                     (9, 37, "rate: must be < 1.0, got 1.0"), (10, 37, "rate: must be >= 0.0, got -0.1"),
                     (11, 36, "units: must be >= 1, got -3"), (12, 17, "optimizer.lr: must be > 0.0, got 0"),
                     (12, 30, "optimizer.momentum: must be >= 0.0, got -0.9")],
    "same_stride2": [(11, 14, "padding 'same' needs stride 1 (as in PyTorch), got stride 2")],
    "several_errors": [(2, 7, "name: must be letters, digits"), (6, 63, "bias: expected true or false, got 'yes'"),
                       (7, 56, "ceil_mode: expected true or false, got 'no'"),
                       (8, 12, "duplicate layer name 'conv1'"),
                       (9, 49, "unknown input 'pool2'; did you mean 'pool1'?"),
                       (10, 14, "loss.type: must be one of cross_entropy, mse, bce_with_logits, multi_margin; got 'crossentropy'")],
    "truncated": [(7, 1, "YAML syntax error: while parsing a flow node expected the node content, but found "
                         "'<stream end>'")],
    "unknown_keys": [(5, 3, "unknown key 'layuot' in input; did you mean 'layout'?"),
                     (7, 45, "unknown key 'kernal' in layer 1 ('conv1', conv2d); did you mean 'kernel'?"),
                     (8, 23, "unknown layer type 'conv2'; did you mean 'conv2d'?"),
                     (9, 29, "unknown key 'slope' in layer 3 ('out', relu) (valid keys: inputs, name, type)"),
                     (10, 1, "unknown key 'optimiser' in spec; did you mean 'optimizer'?")],
    "wrong_types": [(6, 42, "filters: expected an integer, got '4' (string) (write numbers without quotes)"),
                    (6, 55, "kernel: expected an integer or [height, width], got 'big'"),
                    (6, 68, "stride: expected an integer or [height, width], got 1.5"),
                    (7, 42, "filters: expected an integer, got 4.0 (number) (write 4)"),
                    (7, 64, "bias: expected true or false, got 1 (integer)"),
                    (8, 39, "rate: expected a number, got 'half'"),
                    (9, 5, "layer 4: expected a mapping of keys to values, got 'flatten'"),
                    (10, 17, "optimizer.lr: expected a number, got '0.1' (string)"),
                    (11, 14, "init.seed: expected an integer, got 1.5")],
    "yaml11_traps": [(6, 62, "bias: expected true or false, got 'no' (string) (cnnspec reads YAML 1.2"),
                     (7, 56, "ceil_mode: expected true or false, got 'on'")],
    "yaml_syntax": [(7, 5, "YAML syntax error: while parsing a flow mapping (started at line 6, column 5) "
                           "expected ',' or '}', but got '{'")],
    "yaml_tab": [(4, 1, "found character '\\t' that cannot start any token (indent with spaces, not tabs)")],
}


def test_every_bad_spec_is_listed():
    assert {p.stem for p in BAD.glob("*.yaml")} == set(BAD_EXPECTED)


@pytest.mark.parametrize("name", sorted(BAD_EXPECTED))
def test_bad_spec_is_rejected_with_exactly_its_problems(name):
    path = BAD / f"{name}.yaml"
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.load_spec(path)
    got = [(p.line, p.col, p.message) for p in info.value.problems]
    want = BAD_EXPECTED[name]
    assert [(line, col) for line, col, _ in got] == [(line, col) for line, col, _ in want], got
    for (_, _, message), (_, _, text) in zip(got, want):
        assert text in message
    rendered = str(info.value)
    for line, col, _ in want:
        assert (f"{path}:{line}:{col}: " if line else f"{path}: ") in rendered
