"""The schema: accepted specs and their defaults; every kind of rejected value, with its exact position and text."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnnspec
from cnnspec import schema
from cnnspec.errors import SpecError

HEAD = "cnnspec: 1\nname: t\ninput:\n  shape: [3, 8, 8]\nlayers:\n"   # layers start on line 6
TYPES = ("conv2d, batchnorm, relu, leaky_relu, sigmoid, tanh, softmax, maxpool, avgpool, global_avgpool, flatten, "
         "dropout, dense, add, concat, relu6, silu, hardswish, hardsigmoid, gelu, layernorm, groupnorm, lrn, "
         "adaptive_avgpool, multiply, channel_split, channel_shuffle")


def problems(text: str) -> list[tuple[int | None, int | None, str]]:
    with pytest.raises(SpecError) as info:
        cnnspec.loads_spec(text, "x.yaml")
    return [(p.line, p.col, p.message) for p in info.value.problems]


def one(text: str) -> tuple[int | None, int | None, str]:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------- accepted


def test_minimal_spec_and_defaults():
    spec = cnnspec.loads_spec(HEAD + "  - {type: conv2d, filters: 2, kernel: 3}\n")
    assert spec.input.layout == "CHW" and spec.input.dtype == "float64"
    conv = spec.layers[0]
    assert (conv.stride, conv.padding, conv.dilation, conv.groups, conv.bias, conv.padding_mode) == \
        (1, 0, 1, 1, True, "zeros")
    assert spec.loss is None and spec.output is None and spec.weights is None
    assert (spec.optimizer.type, spec.optimizer.lr, spec.optimizer.momentum, spec.optimizer.dampening,
            spec.optimizer.nesterov, spec.optimizer.weight_decay) == ("sgd", 0.01, 0.0, 0.0, False, 0.0)
    assert (spec.init.seed, spec.init.scheme) == (0, "torch_default")


def test_every_layer_type_with_every_option():
    text = HEAD.replace("[3, 8, 8]", "[4, 16, 16]") + """\
  - {name: c, type: conv2d, filters: 4, kernel: [3, 1], stride: [1, 2], padding: [1, 0], dilation: [2, 1],
     groups: 2, bias: false, padding_mode: reflect, inputs: [input]}
  - {name: bn, type: batchnorm, eps: 1.0e-3, momentum: 0.2}
  - {name: r, type: relu}
  - {name: lr, type: leaky_relu, slope: 0.2}
  - {name: sg, type: sigmoid}
  - {name: th, type: tanh}
  - {name: mp, type: maxpool, kernel: 2, stride: 1, padding: 1, dilation: 1, ceil_mode: true}
  - {name: ap, type: avgpool, kernel: [2, 2], stride: [2, 2], padding: 0, ceil_mode: false, count_include_pad: false}
  - {name: sum, type: add, inputs: [ap, ap]}
  - {name: cat, type: concat, inputs: [sum, ap]}
  - {name: gap, type: global_avgpool}
  - {name: fl, type: flatten}
  - {name: dr, type: dropout, rate: 0.0}
  - {name: fc, type: dense, units: 3, bias: false}
  - {name: sm, type: softmax}
  - {name: r6, type: relu6, inputs: [c]}
  - {name: si, type: silu}
  - {name: hs, type: hardswish}
  - {name: hsg, type: hardsigmoid}
  - {name: ge, type: gelu, approximate: tanh}
  - {name: ln, type: layernorm, eps: 1.0e-3, affine: false}
  - {name: gn, type: groupnorm, groups: 2, eps: 1.0e-3, affine: true}
  - {name: lrn, type: lrn, size: 3, alpha: 1.0e-3, beta: 0.5, k: 2.0}
  - {name: bn2, type: batchnorm, affine: false}
  - {name: aap, type: adaptive_avgpool, output_size: [3, 2]}
  - {name: half, type: channel_split, parts: 2, index: 1}
  - {name: shuf, type: channel_shuffle, groups: 2, inputs: [aap]}
  - {name: gate, type: global_avgpool}
  - {name: mul, type: multiply, inputs: [shuf, gate]}
output: fc
loss: {type: bce_with_logits, reduction: sum}
optimizer: {type: sgd, lr: 0.5, momentum: 0.9, dampening: 0.0, nesterov: true, weight_decay: 1.0e-4}
init: {seed: 7, scheme: xavier_uniform}
description: everything
"""
    spec = cnnspec.loads_spec(text)
    assert [layer.type for layer in spec.layers] == [
        "conv2d", "batchnorm", "relu", "leaky_relu", "sigmoid", "tanh", "maxpool", "avgpool", "add", "concat",
        "global_avgpool", "flatten", "dropout", "dense", "softmax", "relu6", "silu", "hardswish", "hardsigmoid",
        "gelu", "layernorm", "groupnorm", "lrn", "batchnorm", "adaptive_avgpool", "channel_split", "channel_shuffle",
        "global_avgpool", "multiply"]
    assert set(schema.LAYER_TYPES) == {layer.type for layer in spec.layers}
    assert spec.graph.output == "fc"


@pytest.mark.parametrize("scheme", ["torch_default", "he_normal", "he_uniform", "xavier_normal", "xavier_uniform",
                                    "zeros"])
def test_init_schemes(scheme):
    assert cnnspec.loads_spec(HEAD + f"  - {{type: relu}}\ninit: {{scheme: {scheme}}}\n").init.scheme == scheme


@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "bce_with_logits"])
def test_losses(loss):
    text = HEAD.replace("[3, 8, 8]", "[5]") + f"  - {{type: dense, units: 3}}\nloss: {{type: {loss}}}\n"
    assert cnnspec.loads_spec(text).loss.reduction == "mean"


def test_weights_forms():
    spec = cnnspec.loads_spec(HEAD.replace("[3, 8, 8]", "[2]") +
                              "  - {name: fc, type: dense, units: 1}\nweights: {fc.weight: [[1, 2.5]], fc.bias: [0]}\n")
    assert spec.weights == {"fc.weight": [[1, 2.5]], "fc.bias": [0]}


def test_pool_stride_defaults_to_kernel():
    spec = cnnspec.loads_spec(HEAD + "  - {name: p, type: maxpool, kernel: [2, 4]}\n")
    assert spec.graph.nodes["p"].attrs["stride"] == (2, 4)
    assert spec.graph.nodes["p"].shape == (3, 4, 2)


def test_yaml_12_numbers_are_accepted():
    spec = cnnspec.loads_spec(HEAD.replace("[3, 8, 8]", "[3, 010, 8]") +
                              "  - {type: batchnorm, eps: 1e-3}\noptimizer: {lr: 1e-2, weight_decay: 5E-4}\n")
    assert spec.input.shape == [3, 10, 8]
    assert spec.layers[0].eps == 0.001 and spec.optimizer.lr == 0.01 and spec.optimizer.weight_decay == 5e-4


def test_integers_are_accepted_for_floats():
    spec = cnnspec.loads_spec(HEAD + "  - {type: batchnorm, momentum: 1}\noptimizer: {lr: 1}\n")
    assert spec.optimizer.lr == 1 and spec.layers[0].momentum == 1


# ---------------------------------------------------------------- rejected: each kind, its position and text


def test_unknown_key_did_you_mean():
    assert one(HEAD + "  - {type: conv2d, filters: 2, kernal: 3}\n") == (
        6, 32, "unknown key 'kernal' in layer 1 (conv2d); did you mean 'kernel'? (valid keys: bias, dilation, "
               "filters, groups, inputs, kernel, name, padding, padding_mode, stride, type)")


def test_misspelled_required_key_is_one_mistake():
    # Not also "missing required key 'kernel'": that is the same mistake.
    (_line, _col, msg), = problems(HEAD + "  - {type: conv2d, filters: 2, kernal: 3}\n")
    assert "missing" not in msg


def test_unknown_top_level_key():
    assert one(HEAD + "  - {type: relu}\noptimiser: {lr: 0.1}\n") == (
        7, 1, "unknown key 'optimiser' in spec; did you mean 'optimizer'? (valid keys: cnnspec, description, "
              "init, input, layers, loss, name, optimizer, output, weights)")


def test_unknown_key_without_suggestion():
    assert one(HEAD + "  - {name: r, type: relu, slope: 0.1}\n") == (
        6, 27, "unknown key 'slope' in layer 1 ('r', relu) (valid keys: inputs, name, type)")


def test_unknown_key_in_input():
    assert one(HEAD.replace("  shape", "  shpe") + "  - {type: relu}\n") == (
        4, 3, "unknown key 'shpe' in input; did you mean 'shape'? (valid keys: dtype, layout, shape)")


def test_unknown_layer_type_did_you_mean():
    assert one(HEAD + "  - {type: conv2, filters: 2, kernel: 3}\n") == (
        6, 12, f"layer 1 (conv2): unknown layer type 'conv2'; did you mean 'conv2d'? (valid types: {TYPES})")


@pytest.mark.parametrize("typo, fix", [("Conv2D", "conv2d"), ("maxpooling", "maxpool"), ("linear", None),
                                       ("batch_norm", "batchnorm"), ("globalavgpool", "global_avgpool")])
def test_layer_type_suggestions(typo, fix):
    _, _, msg = one(HEAD + f"  - {{type: {typo}}}\n")
    assert (f"did you mean '{fix}'?" in msg) if fix else ("did you mean" not in msg)


def test_missing_type():
    assert one(HEAD + "  - {filters: 3}\n") == (6, 5, f"layer 1: missing required key 'type' (one of: {TYPES})")


def test_missing_required_layer_key():
    assert one(HEAD + "  - name: conv1\n    type: conv2d\n    kernel: 3\n") == (
        6, 5, "layer 1 ('conv1', conv2d): missing required key 'filters'")


def test_missing_required_top_level_keys():
    found = problems("cnnspec: 1\ninput: {shape: [2]}\n")
    assert found == [(1, 1, "spec: missing required key 'name'"), (1, 1, "spec: missing required key 'layers'")]


def test_missing_input_shape():
    assert one(HEAD.replace("  shape: [3, 8, 8]\n", "  layout: HWC\n") + "  - {type: relu}\n") == (
        4, 3, "input: missing required key 'shape'")


@pytest.mark.parametrize("fragment, col, message", [
    ("filters: '3', kernel: 3", 29, "filters: expected an integer, got '3' (string) (write numbers without quotes)"),
    ("filters: 3.0, kernel: 3", 29, "filters: expected an integer, got 3.0 (number) (write 3)"),
    ("filters: true, kernel: 3", 29, "filters: expected an integer, got True (boolean)"),
    ("filters: [3], kernel: 3", 29, "filters: expected an integer, got [3] (list)"),
    ("filters: 3, kernel: big", 40, "kernel: expected an integer or [height, width], got 'big' (string)"),
    ("filters: 3, kernel: [a, b]", 40, "kernel: expected an integer or [height, width], got ['a', 'b'] (list)"),
    ("filters: 3, kernel: 3.5", 40, "kernel: expected an integer or [height, width], got 3.5 (number)"),
    ("filters: 3, kernel: [3]", 40,
     "kernel: must be one integer or a list of 2 integers [height, width], got a list of 1"),
    ("filters: 3, kernel: [3, 3, 3]", 40,
     "kernel: must be one integer or a list of 2 integers [height, width], got a list of 3"),
    ("filters: 3, kernel: 3, padding: full", 52,
     "padding: expected an integer, [height, width], 'same' or 'valid', got 'full' (string)"),
    ("filters: 3, kernel: 3, bias: 1", 49, "bias: expected true or false, got 1 (integer)"),
    ("filters: 3, kernel: 3, bias: 'true'", 49, "bias: expected true or false, got 'true' (string)"),
    ("filters: 3, kernel: 3, padding_mode: zero", 57,
     "padding_mode: must be one of zeros, reflect, replicate, circular; got 'zero' (string); did you mean 'zeros'?"),
])
def test_wrong_types_in_conv(fragment, col, message):
    assert one(HEAD + f"  - {{type: conv2d, {fragment}}}\n") == (6, col, "layer 1 (conv2d): " + message)


@pytest.mark.parametrize("word", ["yes", "no", "on", "off", "y", "n", "Yes"])
def test_yaml_11_booleans_are_text_with_a_clear_error(word):
    assert one(HEAD + f"  - {{type: maxpool, kernel: 2, ceil_mode: {word}}}\n") == (
        6, 43, f"layer 1 (maxpool): ceil_mode: expected true or false, got '{word}' (string) "
               "(cnnspec reads YAML 1.2: yes/no/on/off are text; write true or false)")


def test_quoted_number_is_a_string():
    assert one(HEAD + "  - {type: relu}\noptimizer: {lr: '0.1'}\n") == (
        7, 17, "optimizer.lr: expected a number, got '0.1' (string) (write numbers without quotes)")


def test_quoted_version():
    assert one(HEAD.replace("cnnspec: 1", "cnnspec: '1'") + "  - {type: relu}\n") == (
        1, 10, "cnnspec: must be 1, got '1' (string) (write it without quotes)")


def test_unsupported_version():
    assert one(HEAD.replace("cnnspec: 1", "cnnspec: 2") + "  - {type: relu}\n") == (
        1, 10, "cnnspec: must be 1, got 2 (integer)")


@pytest.mark.parametrize("layer, col, message", [
    ("{type: conv2d, filters: 0, kernel: 3}", 29, "layer 1 (conv2d): filters: must be >= 1, got 0 (integer)"),
    ("{type: conv2d, filters: -4, kernel: 3}", 29, "layer 1 (conv2d): filters: must be >= 1, got -4 (integer)"),
    ("{type: conv2d, filters: 2, kernel: 0}", 40, "layer 1 (conv2d): kernel: must be positive (>= 1), got 0"),
    ("{type: conv2d, filters: 2, kernel: [3, -1]}", 40,
     "layer 1 (conv2d): kernel: must be positive (>= 1), got [3, -1]"),
    ("{type: conv2d, filters: 2, kernel: 3, stride: 0}", 51,
     "layer 1 (conv2d): stride: must be positive (>= 1), got 0"),
    ("{type: conv2d, filters: 2, kernel: 3, stride: [1, 0]}", 51,
     "layer 1 (conv2d): stride: must be positive (>= 1), got [1, 0]"),
    ("{type: conv2d, filters: 2, kernel: 3, dilation: 0}", 53,
     "layer 1 (conv2d): dilation: must be positive (>= 1), got 0"),
    ("{type: conv2d, filters: 2, kernel: 3, padding: -1}", 52,
     "layer 1 (conv2d): padding: must be non-negative (>= 0), got -1"),
    ("{type: conv2d, filters: 2, kernel: 3, groups: 0}", 51, "layer 1 (conv2d): groups: must be >= 1, got 0 (integer)"),
    ("{type: maxpool, kernel: 2, stride: 0}", 40, "layer 1 (maxpool): stride: must be positive (>= 1), got 0"),
    ("{type: dense, units: 0}", 26, "layer 1 (dense): units: must be >= 1, got 0 (integer)"),
    ("{type: dropout, rate: 1}", 27, "layer 1 (dropout): rate: must be < 1.0, got 1 (integer)"),
    ("{type: dropout, rate: 1.0}", 27, "layer 1 (dropout): rate: must be < 1.0, got 1.0 (number)"),
    ("{type: dropout, rate: 1.5}", 27, "layer 1 (dropout): rate: must be < 1.0, got 1.5 (number)"),
    ("{type: dropout, rate: -0.1}", 27, "layer 1 (dropout): rate: must be >= 0.0, got -0.1 (number)"),
    ("{type: batchnorm, eps: 0}", 28, "layer 1 (batchnorm): eps: must be > 0.0, got 0 (integer)"),
    ("{type: batchnorm, eps: -1.0e-5}", 28, "layer 1 (batchnorm): eps: must be > 0.0, got -1e-05 (number)"),
    ("{type: batchnorm, momentum: 1.5}", 33, "layer 1 (batchnorm): momentum: must be <= 1.0, got 1.5 (number)"),
])
def test_out_of_range(layer, col, message):
    assert one(HEAD + f"  - {layer}\n") == (6, col, message)


def test_input_shape_out_of_range():
    assert one(HEAD.replace("[3, 8, 8]", "[3, 0, 8]") + "  - {type: relu}\n") == (
        4, 14, "input.shape[1]: must be >= 1, got 0 (integer)")


@pytest.mark.parametrize("shape, message", [
    ("[8, 8]", "input.shape: must be [C, H, W], [H, W, C] or [features], got [8, 8] (2 dimensions); "
               "add a channel dimension, e.g. [1, H, W]"),
    ("[1, 3, 8, 8]", "input.shape: must be [C, H, W], [H, W, C] or [features], got [1, 3, 8, 8] (4 dimensions); "
                     "leave out the batch dimension: shape describes one sample"),
    ("[]", "input.shape: must be [C, H, W], [H, W, C] or [features], got [] (0 dimensions); "
           "give at least one size"),
])
def test_input_rank(shape, message):
    assert one(HEAD.replace("[3, 8, 8]", shape) + "  - {type: relu}\n") == (4, 10, message)


def test_optimizer_ranges():
    assert problems(HEAD + "  - {type: relu}\noptimizer: {lr: 0, momentum: -0.9, weight_decay: -1}\n") == [
        (7, 17, "optimizer.lr: must be > 0.0, got 0 (integer)"),
        (7, 30, "optimizer.momentum: must be >= 0.0, got -0.9 (number)"),
        (7, 50, "optimizer.weight_decay: must be >= 0.0, got -1 (integer)")]


def test_nesterov_needs_momentum():
    assert one(HEAD + "  - {type: relu}\noptimizer: {nesterov: true}\n") == (
        7, 12, "optimizer: nesterov needs momentum > 0 and dampening 0 (as in PyTorch), got momentum 0.0, "
               "dampening 0.0")


@pytest.mark.parametrize("text, col, value", [(".nan", 17, "nan"), (".inf", 17, "inf"), ("-.inf", 17, "-inf"),
                                              ("1e400", 17, "inf")])
def test_nan_and_inf_are_rejected(text, col, value):
    assert one(HEAD + f"  - {{type: relu}}\noptimizer: {{lr: {text}}}\n") == (
        7, col, f"optimizer.lr: must be a finite number, got {value} (number)")


def test_nan_in_layers():
    assert problems(HEAD + "  - {type: leaky_relu, slope: .nan}\n  - {type: batchnorm, eps: .inf}\n") == [
        (6, 31, "layer 1 (leaky_relu): slope: must be a finite number, got nan (number)"),
        (7, 28, "layer 2 (batchnorm): eps: must be a finite number, got inf (number)")]


def test_literal_choices():
    assert one(HEAD + "  - {type: relu}\nloss: {type: crossentropy}\n") == (
        7, 14, "loss.type: must be one of cross_entropy, mse, bce_with_logits, multi_margin; got 'crossentropy' (string); "
               "did you mean 'cross_entropy'?")
    assert one(HEAD.replace("  shape", "  layout: NCHW\n  shape") + "  - {type: relu}\n") == (
        4, 11, "input.layout: must be one of CHW, HWC; got 'NCHW' (string); did you mean 'CHW'?")
    assert one(HEAD + "  - {type: relu}\noptimizer: {type: adm}\n") == (
        7, 19, "optimizer: unknown optimizer type 'adm'; did you mean 'adam'? (valid types: sgd, adam, adamw, rmsprop)")
    assert one(HEAD + "  - {type: relu}\noptimizer: {type: adam, momentum: 0.9}\n") == (
        7, 25, "unknown key 'momentum' in optimizer (valid keys: amsgrad, betas, decay_mult, eps, lr, lr_mult, "
               "schedule, type, weight_decay)")
    assert one(HEAD + "  - {type: relu}\noptimizer: {schedule: {type: cosin}}\n") == (
        7, 30, "optimizer.schedule: unknown schedule type 'cosin'; did you mean 'cosine'? (valid types: step, cosine)")


def test_names_must_match_the_pattern():
    assert one(HEAD + "  - {name: 'conv 1', type: relu}\n") == (
        6, 12, "layer 1 ('conv 1', relu): name: must be letters, digits, '_' and '-', starting with a letter or "
               "'_'; got 'conv 1' (string)")
    assert one(HEAD.replace("name: t", "name: my net") + "  - {type: relu}\n") == (
        2, 7, "name: must be letters, digits, '_', '.' and '-'; got 'my net' (string)")


def test_layer_that_is_not_a_mapping():
    assert problems(HEAD + "  - relu\n  - [1, 2]\n  -\n") == [
        (6, 5, "layer 1: expected a mapping of keys to values, got 'relu' (string)"),
        (7, 5, "layer 2: expected a mapping of keys to values, got [1, 2] (list)"),
        (8, 4, "layer 3: expected a mapping of keys to values, got None (null)")]


def test_layers_must_be_a_non_empty_list():
    assert one(HEAD + "  []\n") == (6, 3, "layers: must have at least 1 item, got 0: [] (list)")
    assert one(HEAD + "  relu: {}\n") == (6, 3, "layers: expected a list, got {'relu': {}} (mapping)")
    assert one(HEAD) == (5, 8, "layers: expected a list, got None (null)")


def test_merge_layers_need_two_inputs():
    assert one(HEAD + "  - {type: add, inputs: [input]}\n") == (
        6, 25, "layer 1 (add): inputs: must have at least 2 items, got 1: ['input'] (list)")
    assert one(HEAD + "  - {type: concat}\n") == (6, 5, "layer 1 (concat): missing required key 'inputs'")


def test_inputs_must_be_a_list_of_names():
    assert one(HEAD + "  - {type: relu, inputs: input}\n") == (
        6, 26, "layer 1 (relu): inputs: expected a list, got 'input' (string)")
    assert one(HEAD + "  - {type: relu, inputs: [1]}\n") == (
        6, 27, "layer 1 (relu): inputs[0]: expected a string, got 1 (integer)")


def test_pool_padding_modes_are_for_conv():
    assert one(HEAD + "  - {type: maxpool, kernel: 2, padding: same}\n") == (
        6, 41, "layer 1 (maxpool): padding: expected an integer or [height, width] ('same' and 'valid' are for "
               "conv2d), got 'same' (string)")


def test_weights_values():
    head = HEAD.replace("[3, 8, 8]", "[2]") + "  - {name: fc, type: dense, units: 1}\n"
    assert one(head + "weights:\n  fc.weight: true\n") == (
        8, 14, "weights: 'fc.weight' must be a number, nested lists of numbers, or a path to a .npy file, "
               "got True (boolean)")
    assert one(head + "weights: [1]\n") == (
        7, 10, "weights: expected a path to a .npz file or a mapping of parameter names to values, got [1] (list)")


def test_spec_that_is_not_a_mapping():
    assert one("- 1\n- 2\n") == (1, 1, "a spec is a mapping with keys cnnspec, name, input, layers, ...; "
                                       "got [1, 2] (list)")
    assert one("# nothing\n") == (None, None, "the spec has no content (only comments or blank lines); expected "
                                             "a mapping with keys cnnspec, name, input, layers, ...")


def test_several_schema_errors_are_reported_together():
    text = HEAD + ("  - {name: a, type: conv2d, filters: 0, kernel: 3}\n"
                   "  - {name: b, type: relu, foo: 1}\n"
                   "  - {type: dense}\n"
                   "loss: {type: mse, reduction: avg}\n")
    assert problems(text) == [
        (6, 38, "layer 1 ('a', conv2d): filters: must be >= 1, got 0 (integer)"),
        (7, 27, "unknown key 'foo' in layer 2 ('b', relu) (valid keys: inputs, name, type)"),
        (8, 5, "layer 3 (dense): missing required key 'units'"),
        (9, 30, "loss.reduction: must be one of mean, sum; got 'avg' (string)")]


def test_rendered_error_names_file_line_col_and_shows_caret():
    with pytest.raises(SpecError) as info:
        cnnspec.loads_spec(HEAD + "  - {type: conv2d, filters: 2, kernal: 3}\n", "specs/net.yaml")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("specs/net.yaml:6:32: unknown key 'kernal'")
    assert lines[1] == "      - {type: conv2d, filters: 2, kernal: 3}"
    assert lines[2] == "    " + " " * 31 + "^"


def test_spec_errors_are_value_errors():
    assert issubclass(SpecError, ValueError)
    with pytest.raises(ValueError):
        cnnspec.loads_spec("cnnspec: 1\n")


# ---------------------------------------------------------------- the JSON Schema


def test_json_schema_is_valid_and_strict():
    import jsonschema  # a test dependency (pyproject [test])
    s = schema.json_schema()
    jsonschema.Draft202012Validator.check_schema(s)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(s["required"]) == {"cnnspec", "name", "input", "layers"}
    assert s["additionalProperties"] is False
    for name, definition in s["$defs"].items():
        if "properties" in definition:
            assert definition.get("additionalProperties") is False, name


def test_json_schema_rejects_what_the_loader_rejects():
    import jsonschema  # a test dependency (pyproject [test])
    from cnnspec import yaml_io
    v = jsonschema.Draft202012Validator(schema.json_schema())
    bad = [
        "  - {type: conv2d, filters: 2, kernal: 3}\n",
        "  - {type: conv2, filters: 2, kernel: 3}\n",
        "  - {type: conv2d, filters: 0, kernel: 3}\n",
        "  - {type: conv2d, filters: 2, kernel: [3, 3, 3]}\n",
        "  - {type: dropout, rate: 1.0}\n",
        "  - {type: maxpool, kernel: 2, padding: same}\n",
        "  - {type: add, inputs: [input]}\n",
        "  - {type: relu, name: 'a b'}\n",
    ]
    for layer in bad:
        assert not v.is_valid(yaml_io.loads(HEAD + layer).data), layer
    assert v.is_valid(yaml_io.loads(HEAD + "  - {type: conv2d, filters: 2, kernel: [3, 1], padding: same}\n").data)


def test_problems_from_validation_accepts_other_roots():
    # The grader validates assignments with its own models through the same translation.
    from pydantic import ValidationError

    from cnnspec import yaml_io

    class Assignment(schema._Model):
        title: str
        points: schema.PositiveInt = 1

    doc = yaml_io.loads("title: hw1\npoints: 0\nextra: 1\n", "a.yaml")
    with pytest.raises(ValidationError) as info:
        Assignment.model_validate(doc.data)
    vocabulary = schema.Vocabulary("assignment", lambda path, data: ".".join(map(str, path)),
                                   lambda path, data: Assignment)
    found = schema.problems_from_validation(info.value, doc, vocabulary)
    assert [(p.line, p.col, p.message) for p in found] == [
        (2, 9, "points: must be >= 1, got 0 (integer)"),
        (3, 1, "unknown key 'extra' in assignment (valid keys: points, title)")]


# ---------------------------------------------------------------- robustness: mangled specs never crash

_ROOT = Path(__file__).resolve().parent.parent
_TEXTS = [p.read_text(encoding="utf-8") for p in sorted((_ROOT / "specs").glob("*.yaml"))
          + sorted((_ROOT / "tests" / "bad_specs").glob("*.yaml"))]
_PIECES = list("{}[]:,-&*!|>'\"#\t\n 0123456789.eE+_abxyz") + [
    "yes", ".nan", "1e9", "inputs: [", "type: ", "weights: {a: 1}", "~", "\u00e9", "&x ", "*x", "<<: "]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mangled_specs_give_spec_errors_never_crashes(data):
    text = data.draw(st.sampled_from(_TEXTS))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(text)))
        action = data.draw(st.sampled_from(["insert", "delete", "copy"]))
        if action == "insert":
            text = text[:i] + data.draw(st.sampled_from(_PIECES)) + text[i:]
        elif action == "delete":
            text = text[:i] + text[i + data.draw(st.integers(1, 5)):]
        else:
            j = data.draw(st.integers(0, len(text)))
            text = text[:i] + text[j:j + data.draw(st.integers(1, 20))] + text[i:]
    try:
        cnnspec.loads_spec(text, "m.yaml")
    except SpecError as exc:
        rendered = str(exc)
        assert rendered.startswith("m.yaml") and "Traceback" not in rendered
