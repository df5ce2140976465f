"""verify_onnx: it passes good exports, and it catches wrong ones, naming the first diverging layer
(testing the tester); bad files are DataErrors; the result is plain data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import cnnspec
from cnnspec.errors import DataError
from cnnspec.onnx_export import export_onnx, to_onnx
from cnnspec.onnx_verify import TOLERANCES, RuntimeRun, _compare, load_onnx, verify_onnx

ROOT = Path(__file__).resolve().parents[1]

SPEC = """cnnspec: 1
name: mutants
input: {shape: [6, 7, 3], layout: HWC}
layers:
  - {name: conv1, type: conv2d, filters: 4, kernel: 3, padding: 1}
  - {name: bn1, type: batchnorm}
  - {name: relu1, type: relu}
  - {name: conv2, type: conv2d, filters: 4, kernel: 2, padding: same}
  - {name: pool, type: avgpool, kernel: 3, stride: 2, padding: 1}
  - {name: sm, type: softmax}
  - {name: flat, type: flatten}
  - {name: fc, type: dense, units: 3}
"""


@pytest.fixture(scope="module")
def model():
    m = cnnspec.compile(cnnspec.loads_spec(SPEC))
    rng = np.random.default_rng(1)
    m.set_weights({"bn1.running_mean": rng.normal(0, 0.5, 4), "bn1.running_var": rng.uniform(0.5, 2, 4),
                   "bn1.weight": rng.uniform(0.5, 1.5, 4), "bn1.bias": rng.normal(0, 0.5, 4)})
    return m


def _mutate(m: onnx.ModelProto, node: str, **attrs) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(m)
    n = next(n for n in out.graph.node if n.name == node)
    for name, value in attrs.items():
        for i, a in enumerate(n.attribute):
            if a.name == name:
                del n.attribute[i]
                break
        n.attribute.append(helper.make_attribute(name, value))
    return out


def _corrupt_initializer(m: onnx.ModelProto, name: str, delta: float) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(m)
    t = next(t for t in out.graph.initializer if t.name == name)
    a = numpy_helper.to_array(t).copy()
    a.flat[0] += delta
    t.CopyFrom(numpy_helper.from_array(a, name))
    return out


def test_good_export_passes_with_both_runtimes(model):
    result = verify_onnx(model)
    assert result.ok and result.first_divergence is None and result.failure is None
    assert [(r.runtime, r.dtype) for r in result.runs] == [("onnx.reference", "float64"), ("onnxruntime", "float32")]
    assert [r.layer for r in result.layers][:4] == ["conv1", "conv1", "bn1", "bn1"]  # per layer, both runtimes
    assert len(result.layers) == 2 * 8
    for row in result.layers:
        rtol, atol = TOLERANCES[row.dtype]
        assert row.max_rel < rtol, row


@pytest.mark.parametrize("mutation,first", [
    (lambda m: _corrupt_initializer(m, "conv2.weight", 0.05), "conv2"),
    (lambda m: _corrupt_initializer(m, "bn1.running_mean", 1e-6), "bn1"),
    (lambda m: _mutate(m, "bn1", epsilon=1e-2), "bn1"),                     # a wrong BN convention
    (lambda m: _mutate(m, "pool", count_include_pad=0), "pool"),            # ONNX's default, not PyTorch's
    (lambda m: _mutate(m, "conv2", pads=[1, 1, 0, 0]), "conv2"),             # 'same' pads at the wrong end
    (lambda m: _mutate(m, "sm", axis=-1), "sm"),                             # softmax over width, not channels
])
def test_verify_catches_a_wrong_export_and_names_the_first_layer(model, mutation, first):
    bad = mutation(to_onnx(model))
    result = verify_onnx(model, bad)
    assert not result.ok
    assert result.first_divergence == first
    assert f"layer '{first}'" in result.failure
    bad_rows = [r for r in result.layers if not r.ok]
    assert bad_rows[0].layer == first
    before = [r for r in result.layers if r.layer in ("conv1",) and first != "conv1"]
    assert all(r.ok for r in before)


def test_a_tiny_error_only_float64_sees(model):
    """1e-6 on one running mean: far beyond float64 tolerance, inside float32's."""
    result = verify_onnx(model, _corrupt_initializer(to_onnx(model), "bn1.running_mean", 1e-6))
    rows = {(r.layer, r.runtime): r for r in result.layers}
    assert not rows["bn1", "onnx.reference"].ok and rows["bn1", "onnxruntime"].ok
    assert [r.ok for r in result.runs] == [False, True]


def test_tolerance_override(model):
    strict = verify_onnx(model, rtol=0.0, atol=0.0)
    assert not strict.ok  # float32 rounding is never exactly zero
    assert all(r.rtol == 0 and r.atol == 0 for r in strict.runs)
    assert "exceeds atol 0 + rtol 0" in strict.failure
    assert not next(r for r in strict.runs if r.runtime == "onnxruntime").ok
    loose = verify_onnx(model, _corrupt_initializer(to_onnx(model), "bn1.running_mean", 1e-6), rtol=1e-4)
    assert loose.ok


def test_result_is_json_data(model):
    data = verify_onnx(model, batch=3, seed=5).to_dict()
    text = json.dumps(data, allow_nan=False)
    back = json.loads(text)
    assert back["ok"] is True and back["batch"] == 3 and back["seed"] == 5 and back["failure"] is None
    assert set(back["layers"][0]) == {"layer", "type", "runtime", "dtype", "shape", "max_abs", "max_rel", "ok",
                                      "note"}
    assert back["layers"][0]["shape"] == [6, 7, 4]  # the declared (HWC) layout


def test_float32_model_runs_onnxruntime_only(model):
    m32 = model.astype(np.float32)
    result = verify_onnx(m32)
    assert result.ok and [r.runtime for r in result.runs] == ["onnxruntime"]


def test_float32_file_checked_against_float64_engine(model, tmp_path):
    path = tmp_path / "m32.onnx"
    export_onnx(model.astype(np.float32), path)
    result = verify_onnx(model, path)
    assert result.ok and [(r.runtime, r.dtype) for r in result.runs] == [("onnxruntime", "float32")]
    assert result.onnx == str(path)


def test_file_from_another_text_of_the_spec_gets_a_note(model, tmp_path):
    path = tmp_path / "m.onnx"
    export_onnx(model, path)
    other = cnnspec.compile(cnnspec.loads_spec(SPEC + "# edited\n"))
    other.set_weights({**model.params, **{k: v for k, v in model.buffers.items() if "num_batches" not in k}})
    result = verify_onnx(other, path)
    assert result.ok and "different text of the spec" in result.notes[0]
    assert verify_onnx(model, path).notes == []


def test_renamed_layers_are_skipped_but_the_output_is_compared(model):
    m = to_onnx(model)
    rename = {o: "x_" + o for n in m.graph.node for o in n.output if o != "fc"}  # another exporter's names
    for n in m.graph.node:
        n.output[:] = [rename.get(o, o) for o in n.output]
        n.input[:] = [rename.get(i, i) for i in n.input]
    for vi in m.graph.value_info:
        vi.name = rename.get(vi.name, vi.name)
    result = verify_onnx(model, m)
    rows = {r.layer: r for r in result.layers if r.runtime == "onnxruntime"}
    assert rows["conv1"].note.startswith("skipped") and rows["fc"].note == "" and rows["fc"].ok
    assert result.ok


def test_fixed_batch_size_in_file_is_used(model, tmp_path):
    m = to_onnx(model)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    path = tmp_path / "b1.onnx"
    onnx.save(m, str(path))
    result = verify_onnx(model, path, batch=4)
    assert result.ok and result.batch == 1 and "fixed batch size of 1" in result.notes[0]


@pytest.mark.parametrize("content,match", [
    (b"", "not an ONNX model"),
    (b"this is not protobuf at all \x00\xff\xfe", "not an ONNX model"),
    (b"cnnspec: 1\nname: x\n", "not an ONNX model"),
])
def test_garbage_files_are_data_errors(tmp_path, content, match, model):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match):
        verify_onnx(model, path)


def test_truncated_and_missing_files(tmp_path, model):
    good = to_onnx(model).SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="cut.onnx"):
        load_onnx(path)
    with pytest.raises(DataError, match="not found"):
        load_onnx(tmp_path / "nope.onnx")
    with pytest.raises(DataError, match="directory"):
        load_onnx(tmp_path)


def test_foreign_model_is_a_data_error(tmp_path, model):
    other = cnnspec.compile(ROOT / "specs" / "lenet5.yaml")
    path = tmp_path / "lenet.onnx"
    export_onnx(other, path)
    with pytest.raises(DataError, match=r"does not match spec 'mutants'.*\(N, 1, 32, 32\).*\(N, 6, 7, 3\) \(HWC\)"):
        verify_onnx(model, path)
    # a model with an integer input
    g = helper.make_graph([helper.make_node("Identity", ["input"], ["y"])], "g",
                          [helper.make_tensor_value_info("input", onnx.TensorProto.INT64, ["N", 6, 7, 3])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.INT64, ["N", 6, 7, 3])])
    path2 = tmp_path / "int.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10), str(path2))
    with pytest.raises(DataError, match="element type INT64"):
        verify_onnx(model, path2)


@pytest.mark.parametrize("kwargs,match", [({"batch": 0}, "batch"), ({"rtol": -1.0}, "rtol"),
                                          ({"atol": float("nan")}, "atol")])
def test_bad_arguments(model, kwargs, match):
    with pytest.raises(DataError, match=match):
        verify_onnx(model, **kwargs)


def test_compare_nan_and_inf_policy():
    class Node:
        name, type, shape = "x", "relu", (3,)
    run = RuntimeRun("onnxruntime", "float32", 1e-4, 1e-5)
    want = np.array([[1.0, np.inf, np.nan]])
    assert _compare(Node, "onnxruntime", "float32", want.copy(), want, run, False).ok  # same inf, both NaN
    row = _compare(Node, "onnxruntime", "float32", np.array([[1.0, np.inf, 0.0]]), want, run, False)
    assert not row.ok and "NaN" in row.note
    row = _compare(Node, "onnxruntime", "float32", np.array([[1.0, 2.0]]), np.array([[1.0, 2.0, 3.0]]), run, False)
    assert not row.ok and "shape" in row.note and row.max_abs is None


def test_float64_file_checked_against_float32_engine(model, tmp_path):
    """A float32 engine's values carry float32 rounding: a float64 file is compared at float32 tolerance (and a
    note says so), not reported as diverging by 1e-7; a real error is still caught."""
    path = tmp_path / "m64.onnx"
    export_onnx(model, path)
    m32 = model.astype(np.float32)
    result = verify_onnx(m32, path)
    assert result.ok, result.failure
    assert [(r.runtime, r.dtype) for r in result.runs] == [("onnx.reference", "float64"), ("onnxruntime", "float32")]
    assert all((r.rtol, r.atol) == TOLERANCES["float32"] for r in result.runs)
    assert any("compared at float32 tolerance" in n for n in result.notes)
    bad = verify_onnx(m32, _corrupt_initializer(to_onnx(model), "conv2.weight", 0.05))
    assert not bad.ok and bad.first_divergence == "conv2"
    assert verify_onnx(model, path).notes == []  # float64 engine: float64 tolerance, no note
