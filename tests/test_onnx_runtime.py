"""--backend onnxruntime (cnnspec/onnx_runtime.py) against the NumPy engine: the same Evaluation up to float32
rounding (loss within a float32 tolerance, identical predictions and confusion on samples whose top scores are
well apart), evaluation mode (batch norm's running statistics, no dropout), the CLI's errors and limits."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cnnspec
from cnnspec import onnx_runtime
from cnnspec.cli import main

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"

# batch norm and dropout in one small HWC model (4-D input in the declared layout, a Transpose in the export)
BN_DROPOUT = """cnnspec: 1
name: bn-dropout
input: {shape: [10, 10, 3], layout: HWC}
layers:
  - {name: conv, type: conv2d, filters: 6, kernel: 3, padding: same}
  - {name: bn, type: batchnorm}
  - {name: relu, type: relu}
  - {name: pool, type: maxpool, kernel: 2}
  - {name: flat, type: flatten}
  - {name: fc1, type: dense, units: 16}
  - {name: drop, type: dropout, rate: 0.5}
  - {name: fc2, type: dense, units: 4}
loss: {type: cross_entropy}
optimizer: {lr: 0.05, momentum: 0.9}
"""


def _spec(name, tmp_path):
    if name == "bn_dropout":
        path = tmp_path / "bn_dropout.yaml"
        path.write_text(BN_DROPOUT)
        return path
    return SPECS / f"{name}.yaml"


def _trained(spec, dtype, n=48, steps=3):
    """The spec's model after a few training steps: running statistics and weights away from their initial
    values (an export that used batch statistics, or kept dropout on, would not match)."""
    model = cnnspec.compile(spec, dtype=dtype)
    rng = np.random.default_rng(1)
    classes = model.shapes[model.output_name][0]
    x = rng.standard_normal((n, *model.spec.input.shape)) + 0.5
    y = rng.integers(0, classes, n)
    for _ in range(steps):
        model.train_step(x[:16], y[:16])
    for name in model.buffers:
        if name.endswith("running_var"):  # statistics a batch would never give: eval mode must use these
            model.buffers[name] = model.buffers[name] * 3.0 + 0.5
    return model, x, y


def _well_separated(model, x, y, margin=1e-3):
    """The samples whose two largest scores (NumPy engine) are more than `margin` apart, relative to the
    scores' scale: float32 rounding cannot swap their predicted class."""
    out = model.forward(x)
    top = np.sort(out, axis=1)
    keep = (top[:, -1] - top[:, -2]) > margin * max(1.0, np.abs(out).max())
    return x[keep], y[keep]


@pytest.mark.parametrize("name", ["lenet5", "bench_cnn", "lecture_cnn", "vgg_blocks", "resnet_basic_block",
                                  "bn_dropout"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_onnxruntime_evaluation_matches_the_engine(name, dtype, tmp_path):
    n = 12 if name in ("lecture_cnn", "vgg_blocks") else 40
    model, x, y = _trained(_spec(name, tmp_path), dtype, n=n)
    x, y = _well_separated(model, x, y)
    assert len(x) >= n // 2
    want = model.evaluate(x, y, batch_size=7)
    got = onnx_runtime.evaluate(model, x, y, batch_size=5)
    assert got.samples == want.samples and (got.loss_type, got.reduction) == (want.loss_type, want.reduction)
    assert got.loss == pytest.approx(want.loss, rel=2e-5, abs=1e-6)
    assert (got.correct, got.labels) == (want.correct, want.labels)
    assert np.array_equal(got.confusion, want.confusion)
    assert got.accuracy == want.accuracy


def test_eval_mode_is_used_not_batch_statistics_or_dropout(tmp_path):
    model, x, y = _trained(_spec("bn_dropout", tmp_path), "float32")
    ort = onnx_runtime.OrtModel(model)
    got = ort.forward(x[:8])
    assert got.dtype == np.float32 and got.shape == (8, 4)
    np.testing.assert_allclose(got, model.forward(x[:8], train=False), rtol=1e-4, atol=1e-5)
    assert not np.allclose(model.forward(x[:8], train=True), model.forward(x[:8], train=False), atol=1e-3)
    np.testing.assert_allclose(ort.forward(x[:1]), got[:1], rtol=1e-5, atol=1e-6)  # a batch of one: no batch stats


def test_regression_and_multi_label_losses(tmp_path):
    spec = ("cnnspec: 1\nname: r\ninput: {shape: [3]}\nlayers:\n  - {type: dense, units: 5}\n  - {type: tanh}\n"
            "  - {type: dense, units: 2}\nloss: {type: LOSS, reduction: RED}\n")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 3))
    for loss, red, y in [("mse", "mean", rng.standard_normal((30, 2))), ("mse", "sum", rng.standard_normal((30, 2))),
                         ("bce_with_logits", "mean", (rng.random((30, 2)) > 0.5).astype(float))]:
        path = tmp_path / f"{loss}_{red}.yaml"
        path.write_text(spec.replace("LOSS", loss).replace("RED", red))
        model = cnnspec.compile(path)
        want, got = model.evaluate(x, y, 8), onnx_runtime.evaluate(model, x, y, 8)
        assert got.loss == pytest.approx(want.loss, rel=1e-5)
        assert got.accuracy is None if loss == "mse" else got.correct == want.correct


# ---------------------------------------------------------------- the CLI

def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.fixture
def blobs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    x = rng.standard_normal((90, 2)) * 0.3 + np.array([[2, 0], [-2, 0], [0, 2]])[y]
    np.savez(tmp_path / "d.npz", x=x, y=y)
    (tmp_path / "m.yaml").write_text("cnnspec: 1\nname: blobs\ninput: {shape: [2]}\nlayers:\n"
                                     "  - {type: dense, units: 8}\n  - {type: relu}\n  - {type: dense, units: 3}\n"
                                     "loss: {type: cross_entropy}\noptimizer: {lr: 0.1, momentum: 0.9}\n")
    return tmp_path / "m.yaml", tmp_path / "d.npz"


def test_cli_evaluate_backends_agree(capsys, blobs):
    spec, data = blobs
    assert cli(capsys, "train", spec, "--data", data, "--epochs", 3, "--out", "w.npz")[0] == 0
    results = {}
    for backend in ("numpy", "onnxruntime"):
        code, out, err = cli(capsys, "evaluate", spec, "--weights", "w.npz", "--data", data, "--json",
                             "--backend", backend)
        assert code == 0
        results[backend] = json.loads(out)
        assert results[backend]["backend"] == backend
    a, b = results["numpy"], results["onnxruntime"]
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    assert (b["correct"], b["confusion"]) == (a["correct"], a["confusion"])
    assert "float32 rounding" in err  # the spec is float64: a note says what onnxruntime runs
    code, out, _ = cli(capsys, "evaluate", spec, "--weights", "w.npz", "--data", data, "--backend", "onnxruntime",
                       "--dtype", "float32")
    assert code == 0 and out.splitlines()[0].endswith("with w.npz in onnxruntime (float32)")


def test_cli_train_validates_in_onnxruntime(capsys, blobs):
    spec, data = blobs
    rows = {}
    for backend in ("numpy", "onnxruntime"):
        code, out, _ = cli(capsys, "train", spec, "--data", data, "--epochs", 2, "--val-split", 0.3, "--json",
                           "--out", f"{backend}.npz", "--backend", backend)
        assert code == 0
        rows[backend] = [json.loads(line) for line in out.splitlines()]
    for a, b in zip(rows["numpy"], rows["onnxruntime"]):
        assert b["loss"] == a["loss"] and b["accuracy"] == a["accuracy"]  # training itself is the engine's
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)
        assert b["val_accuracy"] == a["val_accuracy"]


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "d.npz", "--backend", "onnxruntime"], "--backend onnxruntime runs the validation"),
    (["evaluate", "--data", "bad.npz", "--backend", "onnxruntime"],
     r"loss cross_entropy: class index 7 \(row 0\) is out of range; valid: 0\.\.2"),
    (["evaluate", "--data", "d.npz", "--backend", "onnxruntime", "--max-memory", "20KiB"], "memory"),
])
def test_cli_errors_exit_2(capsys, blobs, args, message):
    spec, _ = blobs
    np.savez("bad.npz", x=np.zeros((4, 2)), y=np.full(4, 7))
    code, out, err = cli(capsys, args[0], spec, *args[1:])
    assert code == 2 and out == "" and re.search(message, err), err


@pytest.mark.parametrize("args, message", [
    (["evaluate", "--data", "d.npz", "--backend", "torch"], "invalid choice: 'torch'"),
    (["run", "-x", "x.npy", "--backend", "onnxruntime"], "unrecognized arguments: --backend"),  # no teaching output
])
def test_cli_usage_errors(capsys, blobs, args, message):
    spec, _ = blobs
    with pytest.raises(SystemExit) as exc:
        main([args[0], str(spec), *args[1:]])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_the_memory_limit_counts_onnxruntime_copies(tmp_path):
    model = cnnspec.compile(SPECS / "bench_cnn.yaml", max_memory="64MiB")
    est = onnx_runtime.memory_estimate(model, 256)
    assert [label for label, _ in est.extra if "onnxruntime" in label]
    assert est.total > model.memory_estimate(256).total * 0.5
    with pytest.raises(cnnspec.DataError, match="Use a smaller --batch-size"):
        onnx_runtime.check_memory(model, 100_000)
    onnx_runtime.check_memory(model, 1)


def test_the_cli_does_not_import_onnxruntime_for_the_numpy_backend(blobs):
    spec, data = blobs
    code = ("import sys\nfrom cnnspec.cli import main\n"
            f"rc = main(['evaluate', {str(spec)!r}, '--data', {str(data)!r}])\n"
            "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime')))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert r.stdout.splitlines()[-1] == "0 []", r.stdout + r.stderr
