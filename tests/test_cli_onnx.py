"""`cnnspec compile` and `cnnspec verify`: exit codes 0/1/2, output for terminals and for pipes, --json, and
bad input (unwritable path, opset, weights, .onnx files) leaving no partial file behind."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from cnnspec.cli import main

ROOT = Path(__file__).resolve().parents[1]
LECTURE = str(ROOT / "specs" / "lecture_cnn.yaml")
SMALL = """cnnspec: 1
name: small
input: {shape: [3, 8, 8]}
layers:
  - {name: conv1, type: conv2d, filters: 4, kernel: 3, padding: 1, padding_mode: circular}
  - {name: bn1, type: batchnorm}
  - {name: relu1, type: relu}
  - {name: pool1, type: maxpool, kernel: 2}
  - {name: flat, type: flatten}
  - {name: fc, type: dense, units: 3}
"""


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    return str(path)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_quickstart_compile_lecture_cnn_with_verify(tmp_path, capsys):
    out_path = tmp_path / "lecture.onnx"
    code, out, err = run(capsys, "compile", LECTURE, "-o", out_path, "--verify")
    assert code == 0, err
    assert out.startswith(f"wrote {out_path}: opset 21 (IR version 10), float64")
    assert "onnx.reference" in out and "onnxruntime" in out and "ok: all 6 layers agree" in out
    assert "\x1b[" not in out  # not a terminal: no colours
    assert "--dtype float32" in err  # the float64 Conv note
    onnx.checker.check_model(str(out_path), full_check=True)


def test_compile_text_json_and_float32(tmp_path, capsys, small):
    out_path = tmp_path / "m.onnx"
    code, out, err = run(capsys, "compile", small, "-o", out_path, "--text", "--json", "--dtype", "float32",
                         "--verify")
    assert code == 0, err
    data = json.loads(out)
    assert data["onnx"] == str(out_path) and data["text"] == str(tmp_path / "m.onnxtxt")
    assert data["opset"] == 21 and data["dtype"] == "float32" and data["ok"] is True
    assert data["verify"]["ok"] and {r["runtime"] for r in data["verify"]["layers"]} == {"onnxruntime"}
    assert files(tmp_path) == ["m.onnx", "m.onnxtxt", "small.yaml"]
    assert "Pad" in (tmp_path / "m.onnxtxt").read_text()
    session = ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"])  # float32 runs as-is
    assert session.run(None, {"input": np.zeros((2, 3, 8, 8), np.float32)})[0].shape == (2, 3)


def test_verify_default_and_json(capsys, small):
    code, out, err = run(capsys, "verify", small)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("verify small against an export made now (opset 21)")
    assert any(l.startswith("conv1") and "onnxruntime" in l for l in lines)  # plain: every row complete
    code, out, _ = run(capsys, "verify", small, "--json", "--batch", "3", "--seed", "7")
    data = json.loads(out)
    assert code == 0 and data["ok"] and data["batch"] == 3 and data["seed"] == 7


def test_verify_exit_1_names_first_diverging_layer(tmp_path, capsys, small):
    path = tmp_path / "m.onnx"
    assert run(capsys, "compile", small, "-o", path)[0] == 0
    m = onnx.load(str(path))
    t = next(t for t in m.graph.initializer if t.name == "fc.weight")
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 1.5, "fc.weight"))
    onnx.save(m, str(path))
    code, out, _ = run(capsys, "verify", small, "--onnx", path)
    assert code == 1
    assert "FAILED: first divergence at layer 'fc' (dense)" in out
    code, out, _ = run(capsys, "verify", small, "--onnx", path, "--json")
    assert code == 1 and json.loads(out)["first_divergence"] == "fc"


@pytest.mark.parametrize("content", [b"", b"garbage\x00\x01\x02", b"\x08\x07"])
def test_verify_garbage_onnx_exit_2(tmp_path, capsys, small, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    code, out, err = run(capsys, "verify", small, "--onnx", path)
    assert code == 2 and out == ""
    assert str(path) in err and "Traceback" not in err


def test_verify_foreign_onnx_exit_2(tmp_path, capsys, small):
    path = tmp_path / "lecture.onnx"
    assert run(capsys, "compile", LECTURE, "-o", path)[0] == 0
    code, out, err = run(capsys, "verify", small, "--onnx", path)
    assert code == 2 and "does not match spec 'small'" in err


def test_unwritable_output_exit_2_and_no_file(tmp_path, capsys, small):
    for target in (tmp_path / "no" / "such" / "dir" / "m.onnx", tmp_path):
        code, out, err = run(capsys, "compile", small, "-o", target, "--text")
        assert code == 2 and ("does not exist" in err or "is a directory" in err), err
    assert files(tmp_path) == ["small.yaml"]


def test_unsupported_opset_exit_2(tmp_path, capsys, small):
    for opset in ("12", "99"):
        code, out, err = run(capsys, "compile", small, "-o", tmp_path / "m.onnx", "--opset", opset)
        assert code == 2 and "opsets 13 to" in err
    code, out, err = run(capsys, "compile", small, "-o", tmp_path / "m.onnx", "--opset", "17", "--text")
    assert code == 2
    assert "layer 'conv1'" in err and "opset 19" in err and "small.yaml:5:" in err
    assert files(tmp_path) == ["small.yaml"]
    code, out, err = run(capsys, "compile", small, "-o", tmp_path / "m.onnx", "--opset", "19")
    assert code == 0


def test_weights_file(tmp_path, capsys, small):
    good = tmp_path / "w.npz"
    w = np.random.default_rng(0).normal(size=(3, 64))
    np.savez(good, **{"fc.weight": w})
    code, out, err = run(capsys, "compile", small, "-o", tmp_path / "m.onnx", "--weights", good, "--verify")
    assert code == 0 and "has no value for conv1.weight" in err
    m = onnx.load(str(tmp_path / "m.onnx"))
    np.testing.assert_array_equal(numpy_helper.to_array(next(t for t in m.graph.initializer
                                                             if t.name == "fc.weight")), w)
    assert {p.key: p.value for p in m.metadata_props}["cnnspec.weights_file"] == "w.npz"

    wrong_shape, unknown, garbage = tmp_path / "shape.npz", tmp_path / "unknown.npz", tmp_path / "garbage.npz"
    np.savez(wrong_shape, **{"fc.weight": np.zeros((3, 65))})
    np.savez(unknown, **{"fc2.weight": np.zeros((3, 64))})
    garbage.write_bytes(b"not a zip")
    for bad, match in ((wrong_shape, "'fc.weight' has shape (3, 65)"), (unknown, "unknown parameter 'fc2.weight'"),
                       (garbage, "not a readable .npz"), (tmp_path / "missing.npz", "not found")):
        out_path = tmp_path / f"{bad.stem}.onnx"
        code, out, err = run(capsys, "compile", small, "-o", out_path, "--weights", bad)
        assert code == 2 and match in err, err
        assert not out_path.exists()
        code, out, err = run(capsys, "verify", small, "--weights", bad)
        assert code == 2 and match in err
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_bad_spec_and_bad_arguments_exit_2(tmp_path, capsys, small):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMALL.replace("kernel: 3,", "kernel: 30,"))
    code, out, err = run(capsys, "compile", bad, "-o", tmp_path / "m.onnx")
    assert code == 2 and "bad.yaml:5:" in err and not (tmp_path / "m.onnx").exists()
    assert run(capsys, "verify", small, "--batch", "0")[0] == 2
    assert run(capsys, "verify", small, "--rtol", "-1")[0] == 2
    code, out, err = run(capsys, "verify", small, "--onnx", tmp_path / "x.onnx", "--opset", "19")
    assert code == 2 and "--opset" in err
    with pytest.raises(SystemExit) as exc:  # -o is required
        main(["compile", small])
    assert exc.value.code == 2


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("no_color", [False, True])
def test_terminal_output_is_pretty_and_colours_respect_no_color(monkeypatch, small, no_color):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("NO_PROGRESS", raising=False)
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)
    term = _Terminal()
    monkeypatch.setattr(sys, "stdout", term)
    assert main(["verify", small]) == 0
    out = term.getvalue()
    assert "─" in out  # a terminal gets the drawn rule and grouped rows
    assert ("\x1b[" in out) is (not no_color)
    rows = [l for l in out.splitlines() if "onnxruntime" in l and "float32" in l and "ok" in l]
    assert rows and all(l.startswith(" ") for l in rows)  # the layer name is shown once per group


@pytest.mark.parametrize("layers,output,blocked", [
    ("[{name: p, type: avgpool, kernel: 2}, {name: f, type: flatten}]", None, "AveragePool"),
    ("[{name: g, type: global_avgpool}, {name: f, type: flatten}, {name: a, type: leaky_relu}]", None,
     "GlobalAveragePool, PRelu"),  # slope 0.01 exports as PRelu in float64
    ("[{name: a, type: leaky_relu, slope: 0.5}]", None, "LeakyRelu"),
    ("[{name: r, type: relu}, {name: c, type: conv2d, filters: 2, kernel: 3}]", "r", None),  # conv not exported
    ("[{name: m, type: maxpool, kernel: 2}, {name: f, type: flatten}, {name: d, type: dense, units: 2}]", None, None),
])
def test_float64_note_names_what_onnxruntime_cannot_run(tmp_path, capsys, layers, output, blocked):
    """The note appears exactly when onnxruntime cannot load the float64 file, and names the ops."""
    spec = tmp_path / "s.yaml"
    spec.write_text(f"cnnspec: 1\nname: s\ninput: {{shape: [2, 6, 6]}}\nlayers: {layers}\n"
                    + (f"output: {output}\n" if output else ""))
    out_path = tmp_path / "m.onnx"
    code, out, err = run(capsys, "compile", spec, "-o", out_path)
    assert code == 0, err
    try:
        ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"])
        loads = True
    except Exception as exc:  # NOT_IMPLEMENTED
        assert "NOT_IMPLEMENTED" in str(exc)
        loads = False
    assert loads is (blocked is None)
    if blocked:
        assert f"no float64 {blocked}, so it cannot run this file" in err and "--dtype float32" in err
    else:
        assert "cannot run this file" not in err


def test_verify_does_not_claim_skipped_layers_agree(tmp_path, capsys, small):
    """A file from another exporter (other tensor names): only the output is compared, and the summary says so."""
    path = tmp_path / "m.onnx"
    assert run(capsys, "compile", small, "-o", path)[0] == 0
    m = onnx.load(str(path))
    rename = {o: "x_" + o for n in m.graph.node for o in n.output if o != "fc"}
    for n in m.graph.node:
        n.output[:] = [rename.get(o, o) for o in n.output]
        n.input[:] = [rename.get(i, i) for i in n.input]
    for vi in m.graph.value_info:
        vi.name = rename.get(vi.name, vi.name)
    onnx.save(m, str(path))
    code, out, err = run(capsys, "verify", small, "--onnx", path)
    assert code == 0, err
    assert "all 6 layers agree" not in out
    assert out.splitlines()[-1] == ("ok: 1 compared layer agrees with the engine; 5 not compared (no tensor of that "
                                    "name in the model): conv1, bn1, relu1, pool1, flat")
    conv_rows = [line for line in out.splitlines() if line.startswith("conv1")]
    assert conv_rows and all(line.endswith("skipped: no tensor of this name in the model") for line in conv_rows)
    assert not any(" ok (skipped" in line for line in out.splitlines())


def test_output_over_the_spec_or_weights_is_refused(tmp_path, capsys, small):
    before = Path(small).read_text()
    code, out, err = run(capsys, "compile", small, "-o", small)
    assert code == 2 and "is the spec this command reads" in err
    assert Path(small).read_text() == before
    weights = tmp_path / "w.npz"
    np.savez(weights, **{"fc.weight": np.zeros((3, 64))})
    data = weights.read_bytes()
    code, out, err = run(capsys, "compile", small, "-o", weights, "--weights", weights)
    assert code == 2 and "is the weights file this command reads" in err
    assert weights.read_bytes() == data
    assert files(tmp_path) == ["small.yaml", "w.npz"]
