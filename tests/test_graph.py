"""Shape inference and the graph: names, inputs (DAGs), shape impossibilities, cascades, limits, weights."""
from __future__ import annotations

import pytest

import cnnspec
from cnnspec import graph as graph_mod
from cnnspec.errors import ShapeError, SpecError
from peak import peak_bytes  # tests/peak.py

HEAD = "cnnspec: 1\nname: t\ninput:\n  shape: [3, 8, 8]\nlayers:\n"   # layers start on line 6


def problems(text: str) -> list[tuple[int | None, int | None, str]]:
    with pytest.raises(SpecError) as info:
        cnnspec.loads_spec(text, "x.yaml")
    return [(p.line, p.col, p.message) for p in info.value.problems]


def shapes_of(text: str) -> dict:
    g = cnnspec.loads_spec(text).graph
    return {name: node.shape for name, node in g.nodes.items()}


# ---------------------------------------------------------------- names


def test_default_names_count_per_type_and_skip_taken_names():
    g = cnnspec.loads_spec(HEAD + "  - {type: relu}\n  - {type: relu, name: relu_2}\n  - {type: relu}\n"
                           "  - {type: conv2d, filters: 2, kernel: 1}\n").graph
    assert list(g.nodes) == ["relu_1", "relu_2", "relu_3", "conv2d_1"]


def test_default_names_skip_names_given_later():
    g = cnnspec.loads_spec(HEAD + "  - {type: relu}\n  - {type: tanh, name: relu_1}\n").graph
    assert list(g.nodes) == ["relu_2", "relu_1"]


def test_duplicate_layer_name():
    assert problems(HEAD + "  - {name: a, type: relu}\n  - {name: a, type: tanh}\n") == [
        (7, 12, "duplicate layer name 'a' (first declared at line 6); names must be unique")]


def test_reserved_name():
    assert problems(HEAD + "  - {name: input, type: relu}\n") == [
        (6, 12, "layer name 'input' is reserved for the model input; choose another")]


def test_layers_after_a_duplicate_are_not_blamed_for_it():
    # The dense layer's implicit input is the duplicate 'a' (a flatten); it must not be checked against the
    # first 'a' (a conv) and reported as "dense on 3-D".
    assert problems(HEAD + "  - {name: a, type: conv2d, filters: 4, kernel: 3}\n  - {name: a, type: flatten}\n"
                           "  - {type: dense, units: 2}\n") == [
        (7, 12, "duplicate layer name 'a' (first declared at line 6); names must be unique")]


# ---------------------------------------------------------------- inputs and DAGs


def test_inputs_default_to_the_previous_layer_and_the_first_to_the_input():
    g = cnnspec.loads_spec(HEAD + "  - {name: a, type: relu}\n  - {name: b, type: relu}\n").graph
    assert g.nodes["a"].inputs == ("input",) and g.nodes["b"].inputs == ("a",)


def test_residual_and_branches():
    text = HEAD + """\
  - {name: c1, type: conv2d, filters: 3, kernel: 3, padding: 1}
  - {name: res, type: add, inputs: [c1, input]}
  - {name: b1, type: conv2d, filters: 2, kernel: 1, inputs: [input]}
  - {name: b2, type: maxpool, kernel: 3, stride: 1, padding: 1, inputs: [res]}
  - {name: cat, type: concat, inputs: [b1, b2, res]}
"""
    g = cnnspec.loads_spec(text).graph
    assert g.nodes["res"].shape == (3, 8, 8) and g.nodes["res"].inputs == ("c1", "input")
    assert g.nodes["cat"].shape == (8, 8, 8) and g.nodes["cat"].attrs == {"axis": 1}
    assert g.nodes["cat"].in_shapes == ((2, 8, 8), (3, 8, 8), (3, 8, 8))
    assert g.output == "cat"


def test_unknown_input_with_suggestion():
    assert problems(HEAD + "  - {name: conv1, type: relu}\n  - {name: b, type: relu, inputs: [conv]}\n") == [
        (7, 36, "layer 'b': unknown input 'conv'; did you mean 'conv1'? (layers above: input, conv1)")]


def test_input_declared_later_is_a_cycle():
    assert problems(HEAD + "  - {name: a, type: relu, inputs: [b]}\n  - {name: b, type: relu, inputs: [a]}\n") == [
        (6, 36, "layer 'a': input 'b' is declared later (line 7); a layer can only take inputs from layers above "
                "it (this also rules out cycles)")]


def test_own_output_as_input():
    assert problems(HEAD + "  - {name: a, type: relu, inputs: [a]}\n") == [
        (6, 36, "layer 'a' cannot take its own output as input")]


def test_one_input_layers_take_one_input():
    assert problems(HEAD + "  - {name: a, type: relu}\n  - {name: b, type: relu, inputs: [a, input]}\n") == [
        (7, 35, "layer 'b' (relu) takes exactly one input, got 2; combine them first with an add or concat layer")]


def test_output_key():
    assert cnnspec.loads_spec(HEAD + "  - {name: a, type: relu}\n  - {name: b, type: tanh}\noutput: a\n").graph.output == "a"
    assert problems(HEAD + "  - {name: a, type: relu}\noutput: b\n") == [
        (7, 9, "output 'b' is not a layer (layers: a)")]
    assert problems(HEAD + "  - {name: conv1, type: relu}\noutput: conv\n") == [
        (7, 9, "output 'conv' is not a layer; did you mean 'conv1'? (layers: conv1)")]


# ---------------------------------------------------------------- shape impossibilities


def test_kernel_larger_than_padded_input():
    assert problems(HEAD + "  - {name: c, type: conv2d, filters: 4, kernel: 5, padding: 1}\n"
                           "  - {name: d, type: conv2d, filters: 4, kernel: 9}\n") == [
        (7, 49, "layer 'd' (conv2d): kernel height 9 exceeds the padded input height 6 (input [4, 6, 6] from 'c'): "
                "output height = floor((6 + 2*0 - 9)/1) + 1 < 1")]


def test_kernel_width_and_dilation():
    assert problems(HEAD.replace("[3, 8, 8]", "[3, 8, 4]") +
                    "  - {name: c, type: conv2d, filters: 4, kernel: [3, 3], dilation: 2}\n") == [
        (6, 49, "layer 'c' (conv2d): kernel width 3 (dilated to 5) exceeds the padded input width 4 "
                "(input [3, 8, 4] from 'input'): output width = floor((4 + 2*0 - 2*(3-1) - 1)/1) + 1 < 1")]


def test_kernel_too_large_for_a_pool_points_at_the_kernel():
    assert problems(HEAD.replace("[3, 8, 8]", "[3, 1, 1]") + "  - {name: p, type: maxpool, kernel: 2}\n")[0][:2] == \
        (6, 38)


def test_problem_points_at_the_type_when_the_key_is_a_default():
    # groups defaults to 1 and cannot be wrong; 'same' padding given: caret at it. Dense has no such key.
    assert problems(HEAD + "  - {name: fc, type: dense, units: 1}\n")[0][:2] == (6, 16)


def test_kernel_too_large_in_hwc_reports_hwc_shapes():
    text = HEAD.replace("[3, 8, 8]", "[4, 4, 3]\n  layout: HWC") + "  - {name: c, type: conv2d, filters: 2, kernel: 5}\n"
    ((_, _, msg),) = problems(text)
    assert "(input [4, 4, 3] from 'input')" in msg


def test_dense_on_3d_input_says_add_a_flatten():
    assert problems(HEAD + "  - {name: fc, type: dense, units: 10}\n") == [
        (6, 16, "layer 'fc' (dense): dense needs a [features] input, got [3, 8, 8] from 'input'; "
                "add a {type: flatten} layer before it (it would give [192])")]


def test_conv_on_1d_input():
    assert problems(HEAD.replace("[3, 8, 8]", "[10]") + "  - {name: c, type: conv2d, filters: 2, kernel: 1}\n") == [
        (6, 15, "layer 'c' (conv2d): conv2d needs a 3-D input ([C, H, W]), got [10] from 'input'")]


@pytest.mark.parametrize("kind", ["maxpool", "avgpool"])
def test_pool_on_1d_input(kind):
    ((_, _, msg),) = problems(HEAD.replace("[3, 8, 8]", "[10]") + f"  - {{name: p, type: {kind}, kernel: 2}}\n")
    assert msg == f"layer 'p' ({kind}): {kind} needs a 3-D input ([C, H, W]), got [10] from 'input'"


def test_add_mismatch():
    assert problems(HEAD + "  - {name: a, type: conv2d, filters: 4, kernel: 3}\n"
                           "  - {name: s, type: add, inputs: [a, input]}\n") == [
        (7, 15, "layer 's' (add): add needs inputs of the same shape, got [4, 6, 6] from 'a' and [3, 8, 8] from "
                "'input'")]


def test_concat_mismatch_and_match():
    assert problems(HEAD + "  - {name: a, type: maxpool, kernel: 2}\n"
                           "  - {name: s, type: concat, inputs: [a, input]}\n") == [
        (7, 15, "layer 's' (concat): concat joins along channels, so all other dimensions must match; got "
                "[3, 4, 4] from 'a' and [3, 8, 8] from 'input'")]
    assert shapes_of(HEAD + "  - {name: a, type: relu}\n  - {name: s, type: concat, inputs: [a, input]}\n")["s"] == \
        (6, 8, 8)


def test_concat_of_features():
    text = HEAD.replace("[3, 8, 8]", "[5]") + ("  - {name: a, type: dense, units: 3}\n"
                                                "  - {name: s, type: concat, inputs: [a, input]}\n")
    assert shapes_of(text)["s"] == (8,)


def test_groups_not_dividing():
    assert problems(HEAD + "  - {name: g, type: conv2d, filters: 4, kernel: 3, groups: 2}\n") == [
        (6, 60, "layer 'g' (conv2d): groups 2 must divide both the input channels and the filters, got 3 "
                "channels (input [3, 8, 8] from 'input') and 4 filters: 3 % 2 = 1")]


def test_same_padding_needs_stride_1():
    assert problems(HEAD + "  - {name: c, type: conv2d, filters: 4, kernel: 3, stride: 2, padding: same}\n") == [
        (6, 72, "layer 'c' (conv2d): padding 'same' needs stride 1 (as in PyTorch), got stride 2; give the padding "
                "as numbers instead")]


def test_valid_padding_is_zero():
    assert shapes_of(HEAD + "  - {name: c, type: conv2d, filters: 4, kernel: 3, padding: valid}\n")["c"] == (4, 6, 6)


def test_padding_modes():
    assert shapes_of(HEAD + "  - {name: c, type: conv2d, filters: 4, kernel: 3, padding: 2, padding_mode: circular}"
                            "\n")["c"] == (4, 10, 10)
    ((_, _, msg),) = problems(HEAD + "  - {name: c, type: conv2d, filters: 4, kernel: 3, padding: 8, "
                                     "padding_mode: reflect}\n")
    assert msg == ("layer 'c' (conv2d): padding 8 is too large for padding_mode 'reflect' on input height 8 "
                   "(must be < input size)")


def test_pool_padding_more_than_half_the_kernel():
    assert problems(HEAD + "  - {name: p, type: avgpool, kernel: 3, padding: 2}\n") == [
        (6, 50, "layer 'p' (avgpool): padding 2 must be at most half the kernel height: 2 > 3 // 2 = 1 "
                "(PyTorch's rule; a window would see only padding)")]


def test_batchnorm_and_activations_keep_shapes():
    text = HEAD + "".join(f"  - {{type: {t}}}\n" for t in
                          ("batchnorm", "relu", "leaky_relu", "sigmoid", "tanh", "softmax", "dropout"))
    assert set(shapes_of(text).values()) == {(3, 8, 8)}


def test_batchnorm_params_and_buffers():
    g = cnnspec.loads_spec(HEAD + "  - {name: bn, type: batchnorm, eps: 1.0e-3, momentum: 0.2}\n").graph
    bn = g.nodes["bn"]
    assert bn.params == {"weight": (3,), "bias": (3,)}
    assert bn.buffers == {"running_mean": (3,), "running_var": (3,), "num_batches_tracked": ()}
    assert bn.attrs == {"eps": 1e-3, "momentum": 0.2}
    assert g.buffer_count == 7


def test_global_avgpool_and_flatten():
    s = shapes_of(HEAD + "  - {name: g, type: global_avgpool}\n  - {name: f, type: flatten}\n")
    assert s == {"g": (3, 1, 1), "f": (3,)}


def test_attrs_contract_used_by_the_engine_and_exporter():
    text = HEAD + ("  - {name: c, type: conv2d, filters: 3, kernel: [3, 1], stride: [2, 1], padding: same,"
                   " stride: 1}\n")
    with pytest.raises(SpecError, match="duplicate key 'stride'"):
        cnnspec.loads_spec(text)
    g = cnnspec.loads_spec(HEAD + """\
  - {name: c, type: conv2d, filters: 3, kernel: [4, 1], padding: same, groups: 3, padding_mode: replicate}
  - {name: m, type: maxpool, kernel: 3, stride: 2, padding: 1, dilation: 1, ceil_mode: true}
  - {name: a, type: avgpool, kernel: 2, count_include_pad: false}
  - {name: l, type: leaky_relu, slope: 0.2}
  - {name: d, type: dropout, rate: 0.25}
""").graph
    n = g.nodes
    assert n["c"].attrs == {"stride": (1, 1), "pads": (1, 0, 2, 0), "dilation": (1, 1), "groups": 3,
                            "padding_mode": "replicate"}
    assert n["c"].params == {"weight": (3, 1, 4, 1), "bias": (3,)}
    assert n["m"].attrs == {"kernel": (3, 3), "stride": (2, 2), "pads": (1, 1, 1, 1), "ceil_mode": True,
                            "dilation": (1, 1)}
    assert n["a"].attrs == {"kernel": (2, 2), "stride": (2, 2), "pads": (0, 0, 0, 0), "ceil_mode": False,
                            "count_include_pad": False}
    assert n["l"].attrs == {"slope": 0.2} and n["d"].attrs == {"rate": 0.25}
    assert [node.line for node in n.values()] == [6, 7, 8, 9, 10]


def test_graph_declared_and_shape_of():
    g = cnnspec.loads_spec(HEAD.replace("[3, 8, 8]", "[8, 6, 3]\n  layout: HWC") +
                           "  - {name: c, type: conv2d, filters: 5, kernel: 3}\n  - {name: f, type: flatten}\n").graph
    assert g.input_shape == (3, 8, 6) and g.shape_of("input") == (3, 8, 6)
    assert g.shape_of("c") == (5, 6, 4) and g.declared(g.shape_of("c")) == (6, 4, 5)
    assert g.declared((120,)) == (120,) and g.layout == "HWC"


# ---------------------------------------------------------------- several errors together, no cascades


def test_independent_shape_errors_are_reported_together_and_cascades_are_not():
    text = HEAD + """\
  - {name: c1, type: conv2d, filters: 4, kernel: 11}
  - {name: bn1, type: batchnorm}
  - {name: fc1, type: dense, units: 10}
  - {name: side, type: conv2d, filters: 4, kernel: 3, inputs: [input]}
  - {name: fc2, type: dense, units: 10}
  - {name: sum, type: add, inputs: [c1, side]}
  - {name: ok, type: relu, inputs: [side]}
"""
    found = problems(text)
    assert [(line, col) for line, col, _ in found] == [(6, 50), (10, 17)]
    assert "kernel height 11" in found[0][2] and "'fc2' (dense): dense needs a [features] input" in found[1][2]


def test_schema_errors_and_reference_errors_are_reported_together():
    text = HEAD + """\
  - {name: conv1, type: conv2d, filters: 16, kernel: 3, bias: yes}
  - {name: pool1, type: maxpool, kernel: 2}
  - {name: conv1, type: conv2d, filters: 16, kernel: 3}
  - {name: fc, type: dense, units: 10, inputs: [pool2]}
"""
    assert problems(text) == [
        (6, 63, "layer 1 ('conv1', conv2d): bias: expected true or false, got 'yes' (string) (cnnspec reads YAML "
                "1.2: yes/no/on/off are text; write true or false)"),
        (8, 12, "duplicate layer name 'conv1' (first declared at line 6); names must be unique"),
        (9, 49, "layer 'fc': unknown input 'pool2'; did you mean 'pool1'? (layers above: input, conv1, pool1)")]


def test_reference_checks_skip_what_the_schema_reports():
    # An invalid name or type: its own error only; no guesses about names that cannot be known.
    text = HEAD + ("  - {name: 'a b', type: relu}\n  - {type: conv9}\n  - {name: c, type: relu, inputs: [x]}\n"
                   "  - {name: d, type: relu, inputs: 'a'}\n  - {name: e, type: add, inputs: [c]}\n")
    found = problems(text)
    assert [(line, col) for line, col, _ in found] == [(6, 12), (7, 12), (9, 35), (10, 34)]
    assert "unknown input" not in str(found)


def test_shape_error_is_a_spec_error():
    with pytest.raises(ShapeError):
        cnnspec.loads_spec(HEAD + "  - {type: dense, units: 1}\n")
    assert issubclass(ShapeError, SpecError)


# ---------------------------------------------------------------- absurd sizes, before anything is allocated


def test_a_billion_filters_is_rejected_before_anything_is_allocated():
    found = []
    assert peak_bytes(lambda: found.extend(problems(HEAD + "  - {name: c, type: conv2d, filters: 1000000000, "
                                                           "kernel: 3}\n"))) < 2 * 1024**2
    assert found == [(6, 15, "layer 'c' (conv2d): output [1000000000, 6, 6] has 36,000,000,000 values; the limit "
                             "is 268,435,456 per tensor (2 GiB in float64)")]


def test_a_huge_input_is_rejected_before_anything_is_allocated():
    found = []
    text = HEAD.replace("[3, 8, 8]", "[100000, 100000, 3]\n  layout: HWC") + "  - {type: relu}\n"
    assert peak_bytes(lambda: found.extend(problems(text))) < 2 * 1024**2
    assert found == [(4, 10, "input shape [100000, 100000, 3] has 30,000,000,000 values per sample; the limit is "
                             "268,435,456 (2 GiB in float64)")]


def test_a_huge_dense_weight_is_rejected():
    ((_, _, msg),) = problems(HEAD.replace("[3, 8, 8]", "[100000]") + "  - {name: fc, type: dense, units: 100000}\n")
    assert msg == ("layer 'fc' (dense): parameter 'fc.weight' [100000, 100000] has 10,000,000,000 values; the "
                   "limit is 268,435,456 per tensor (2 GiB in float64)")


def test_huge_numbers_anywhere_are_checked_arithmetically():
    # A loop or an allocation over any of these numbers would never finish; only arithmetic on them returns.
    found = []
    text = (HEAD + "  - {type: conv2d, filters: 3, kernel: 3, padding: 1000000000000, dilation: 99999999999}\n"
                   "  - {type: maxpool, kernel: 100000000000000000000}\n")
    assert peak_bytes(lambda: found.extend(problems(text))) < 2 * 1024**2
    assert found


def test_limit_is_just_inclusive():
    big = graph_mod.MAX_ELEMENTS
    assert cnnspec.loads_spec(HEAD.replace("[3, 8, 8]", f"[{big}]") + "  - {type: relu}\n")
    assert problems(HEAD.replace("[3, 8, 8]", f"[{big + 1}]") + "  - {type: relu}\n")


# ---------------------------------------------------------------- explicit weights


WHEAD = HEAD.replace("[3, 8, 8]", "[2]") + "  - {name: fc, type: dense, units: 1, bias: false}\n"


def test_inline_weights_are_checked_by_name_and_shape():
    assert cnnspec.loads_spec(WHEAD + "weights:\n  fc.weight: [[0.5, 0.1]]\n").weights == {"fc.weight": [[0.5, 0.1]]}
    assert problems(WHEAD + "weights:\n  fc.weigth: [[0.5, 0.1]]\n  fc.bias: [0]\n  fc2.weight: [1]\n") == [
        (8, 3, "weights: layer 'fc' (dense) has no parameter 'weigth'; did you mean 'fc.weight'? (its parameters: "
               "weight)"),
        (9, 3, "weights: layer 'fc' (dense) has no parameter 'bias' (it has bias: false) (its parameters: weight)"),
        (10, 3, "weights: unknown parameter 'fc2.weight'; did you mean 'fc.weight'? (parameters: fc.weight)")]


def test_inline_weight_shapes_and_values():
    assert problems(WHEAD + "weights:\n  fc.weight: [0.5, 0.1]\n") == [
        (8, 14, "weights: 'fc.weight' has shape [2], the model expects [1, 2] ([units, in_features])")]
    assert problems(WHEAD + "weights:\n  fc.weight: [[0.5, .nan]]\n") == [
        (8, 14, "weights: 'fc.weight' must be numbers; found nan is not a finite number")]
    assert problems(WHEAD + "weights:\n  fc.weight: [[0.5], [0.1, 0.2]]\n") == [
        (8, 14, "weights: 'fc.weight' must be numbers; found items of different shapes side by side (a list of "
                "shape [1], a list of shape [2]); every row must have the same shape")]
    assert problems(WHEAD + "weights:\n  fc.weight: [[0.5, true]]\n") == [
        (8, 14, "weights: 'fc.weight' must be numbers; found True is not a number")]


def test_batchnorm_buffers_can_be_given():
    text = HEAD.replace("[3, 8, 8]", "[2]") + ("  - {name: bn, type: batchnorm}\nweights:\n  bn.running_mean: [0, 1]\n"
                                                "  bn.num_batches_tracked: 3\n")
    assert cnnspec.loads_spec(text).weights["bn.num_batches_tracked"] == 3


def test_weight_files_must_exist(tmp_path):
    spec = tmp_path / "net.yaml"
    spec.write_text(WHEAD + "weights:\n  fc.weight: w.npy\n")
    with pytest.raises(SpecError) as info:
        cnnspec.load_spec(spec)
    assert [(p.line, p.col) for p in info.value.problems] == [(8, 14)]
    assert f"weights: 'fc.weight': file 'w.npy' not found (paths are relative to the spec's folder, {tmp_path})" \
        in str(info.value)
    (tmp_path / "w.npy").write_bytes(b"")
    assert cnnspec.load_spec(spec).weights == {"fc.weight": "w.npy"}
    spec.write_text(WHEAD + "weights: trained.npz\n")
    with pytest.raises(SpecError, match="weights file 'trained.npz' not found"):
        cnnspec.load_spec(spec)


def test_weights_of_a_failed_layer_are_not_reported_again():
    text = HEAD + "  - {name: fc, type: dense, units: 1}\nweights:\n  fc.weight: [[1]]\n"
    ((_, _, msg),) = problems(text)
    assert "dense needs a [features] input" in msg


# ---------------------------------------------------------------- the public API


def test_load_spec_and_loads_spec(tmp_path):
    p = tmp_path / "net.yaml"
    p.write_text(HEAD + "  - {type: relu}\n")
    spec = cnnspec.load_spec(p)
    assert spec.source_path == str(p) and spec.document.filename == str(p)
    assert cnnspec.load_spec(str(p)).name == "t"
    assert cnnspec.loads_spec(HEAD + "  - {type: relu}\n").source_path is None
    with pytest.raises(SpecError) as info:
        cnnspec.load_spec(tmp_path / "missing.yaml")
    assert str(info.value) == f"{tmp_path / 'missing.yaml'}: spec file not found"


def test_graph_is_built_once_and_cached():
    spec = cnnspec.loads_spec(HEAD + "  - {type: relu}\n")
    assert spec.graph is spec.graph


def test_build_graph_without_a_document():
    from cnnspec.schema import Spec
    spec = Spec.model_validate({"cnnspec": 1, "name": "x", "input": {"shape": [3, 4, 4]},
                                "layers": [{"type": "dense", "units": 2}]})
    with pytest.raises(ShapeError) as info:
        graph_mod.build_graph(spec)
    assert str(info.value).startswith("<spec>: layer 'dense_1' (dense): dense needs a [features] input")


def test_cross_entropy_needs_class_scores():
    assert problems(HEAD + "  - {name: c, type: conv2d, filters: 2, kernel: 3}\nloss: {type: cross_entropy}\n") == [
        (7, 14, "loss cross_entropy needs class scores [classes] per sample from the output layer, got [2, 6, 6] "
                "from 'c'; end with a flatten (or global_avgpool + flatten) and a dense layer")]
    # mse and bce_with_logits work on any shape.
    assert cnnspec.loads_spec(HEAD + "  - {type: conv2d, filters: 2, kernel: 3}\nloss: {type: mse}\n")


def test_impossible_weight_paths_are_a_clear_error(tmp_path):
    spec = tmp_path / "net.yaml"
    spec.write_text(WHEAD + 'weights:\n  fc.weight: "' + "x" * 5000 + '.npy"\n')
    with pytest.raises(SpecError, match="not found"):
        cnnspec.load_spec(spec)
    spec.write_text(WHEAD + 'weights: "a\\0b.npz"\n')
    with pytest.raises(SpecError, match="not found"):
        cnnspec.load_spec(spec)


def test_reference_checks_survive_an_invalid_merge_input_list():
    # Found by fuzzing: a concat whose inputs the schema rejects must not crash the name checks.
    text = HEAD + "  - {name: a, type: relu}\n  - {name: cat, type: concat, inputs: [a, 'b c']}\n"
    assert [(line, col) for line, col, _ in problems(text)] == [(7, 43)]
