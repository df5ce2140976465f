"""`cnnspec run`, `train`, `gradcheck` through the CLI: outputs, files, exit codes, bad input."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnspec.cli import main

SPECS = Path(__file__).resolve().parent.parent / "specs"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Every test runs in its own folder: a default output (train without --out) never lands in the repo."""
    monkeypatch.chdir(tmp_path)


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.fixture
def lecture_arrays(tmp_path):
    np.save(tmp_path / "x.npy", np.array([[0.6, 0.8]]))
    np.save(tmp_path / "y.npy", np.array([[3.0]]))
    return tmp_path


def test_run_dumps_the_lecture_numbers(capsys, lecture_arrays):
    t = lecture_arrays
    code, out, _ = cli(capsys, "run", SPECS / "lecture_linear.yaml", "--input", t / "x.npy", "--target", t / "y.npy",
                       "--steps", 1, "--dump", t / "out.npz")
    assert code == 0
    assert "loss (mse, mean): 6.8644" in out
    d = np.load(t / "out.npz")
    assert d["output"][0, 0] == pytest.approx(0.38)
    assert float(d["loss"]) == pytest.approx(6.8644)
    np.testing.assert_allclose(d["grad/fc.weight"], [[-3.144, -4.192]])
    np.testing.assert_allclose(d["param/fc.weight"], [[0.53144, 0.14192]])   # lr 0.01
    np.testing.assert_allclose(d["act/fc"], d["output"])
    np.testing.assert_allclose(d["grad/input"], [[2 * (0.38 - 3) * 0.5, 2 * (0.38 - 3) * 0.1]])


def test_run_lr_one_oscillates(capsys, lecture_arrays):
    """With lr 1 and |x|^2 = 1 the update multiplies the error by 1 - 2 = -1: the loss repeats."""
    t = lecture_arrays
    code, out, _ = cli(capsys, "run", SPECS / "lecture_sgd_lr1.yaml", "-x", t / "x.npy", "-y", t / "y.npy",
                       "--steps", 2, "--dump", t / "o.npz")
    assert code == 0
    d = np.load(t / "o.npz")
    np.testing.assert_allclose(d["loss_history"], [6.8644, 6.8644])
    np.testing.assert_allclose(d["param/fc.weight"], [[0.5, 0.1]], atol=1e-12)   # back where it started


def test_run_without_target_dumps_activations_only(capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((2, 1, 32, 32)))
    code, out, _ = cli(capsys, "run", SPECS / "lenet5.yaml", "-x", tmp_path / "x.npy", "--dump", tmp_path / "o.npz")
    assert code == 0
    d = np.load(tmp_path / "o.npz")
    assert d["act/c1"].shape == (2, 6, 28, 28) and d["act/s4"].shape == (2, 16, 5, 5)
    assert "loss" not in d.files and not any(k.startswith("grad/") for k in d.files)


@pytest.mark.parametrize("make, args, message", [
    (lambda t: np.save(t / "x.npy", np.zeros((1, 3))), ["-x", "x.npy"], r"expects \(N, 2\)"),
    (lambda t: np.save(t / "x.npy", np.array([[np.nan, 1.0]])), ["-x", "x.npy"], "nan at index"),
    (lambda t: (t / "x.npy").write_bytes(b"not numpy"), ["-x", "x.npy"], "not a readable .npy"),
    (lambda t: np.save(t / "x.npy", np.array([[{}, 1]], dtype=object)), ["-x", "x.npy"], "pickled"),
    (lambda t: None, ["-x", "missing.npy"], "not found"),
    (lambda t: _lying_npy(t / "x.npy"), ["-x", "x.npy"], r"has 1,000,000,000,000 values; the limit is"),
    (lambda t: np.save(t / "x.npy", np.zeros((1, 2))), ["-x", "x.npy", "--steps", "1"], "needs --target"),
    (lambda t: np.save(t / "x.npy", np.zeros((1, 2))), ["-x", "x.npy", "--steps", "-1"], ">= 0"),
    (lambda t: (np.save(t / "x.npy", np.zeros((1, 2))), np.save(t / "y.npy", np.zeros((3, 3)))),
     ["-x", "x.npy", "-y", "y.npy"], "mse"),
    (lambda t: (np.save(t / "x.npy", np.zeros((1, 2))), np.savez(t / "w.npz", **{"fc.weight": np.zeros((2, 2))})),
     ["-x", "x.npy", "--weights", "w.npz"], r"'fc.weight' has shape \(2, 2\), the model expects \(1, 2\)"),
    (lambda t: np.save(t / "x.npy", np.zeros((1, 2))), ["-x", "x.npy", "--dump", "nodir/o.npz"], "does not exist"),
])
def test_run_bad_input_exits_2_with_a_clear_message(capsys, tmp_path, monkeypatch, make, args, message):
    monkeypatch.chdir(tmp_path)
    make(tmp_path)
    code, out, err = cli(capsys, "run", SPECS / "lecture_linear.yaml", *args)
    assert code == 2
    assert __import__("re").search(message, err), err
    assert not list(tmp_path.glob("**/*.tmp"))


def _lying_npy(path):
    """An .npy whose header claims 10**12 float64 values over 64 bytes: loading it would try 7 TiB."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
        f.write(b"\0" * 64)


def test_train_refuses_a_lying_npz_member_before_loading_it(capsys, tmp_path):
    import zipfile
    _blobs(tmp_path)
    _lying_npy(tmp_path / "x.npy")
    with zipfile.ZipFile(tmp_path / "bad.npz", "w") as zf:
        zf.write(tmp_path / "x.npy", "x.npy")
    code, _, err = cli(capsys, "train", tmp_path / "m.yaml", "--data", tmp_path / "bad.npz")
    assert code == 2 and "bad.npz['x'] has 1,000,000,000,000 values" in err


def _blobs(tmp_path, n=64):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 2)) * 0.3 + np.array([[2, 0], [-2, 0], [0, 2]])[y]
    np.savez(tmp_path / "d.npz", x=x, y=y)
    (tmp_path / "m.yaml").write_text("cnnspec: 1\nname: blobs\ninput: {shape: [2]}\nlayers:\n"
                                     "  - {type: dense, units: 8}\n  - {type: relu}\n  - {type: dense, units: 3}\n"
                                     "loss: {type: cross_entropy}\noptimizer: {lr: 0.1, momentum: 0.9}\n")


def test_train_learns_checkpoints_and_plots(capsys, tmp_path):
    _blobs(tmp_path)
    code, out, _ = cli(capsys, "train", tmp_path / "m.yaml", "--data", tmp_path / "d.npz", "--epochs", 5,
                       "--batch-size", 16, "--out", tmp_path / "w.npz", "--plot", tmp_path / "loss.svg", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[-1]["loss"] < rows[0]["loss"] and rows[-1]["accuracy"] > 0.9
    assert (tmp_path / "loss.svg").read_text().startswith("<svg")
    # the checkpoint is accepted by run and by a further train
    np.save(tmp_path / "x.npy", np.load(tmp_path / "d.npz")["x"][:4])
    assert cli(capsys, "run", tmp_path / "m.yaml", "-x", tmp_path / "x.npy", "--weights", tmp_path / "w.npz")[0] == 0
    code, out, _ = cli(capsys, "train", tmp_path / "m.yaml", "--data", tmp_path / "d.npz", "--weights",
                       tmp_path / "w.npz", "--epochs", 1, "--out", tmp_path / "w2.npz")
    assert code == 0 and "epoch 1/1" in out


@pytest.mark.parametrize("data, message", [
    (dict(x=np.zeros((4, 2))), "missing array 'y' (found: x)"),
    (dict(z=np.zeros((4, 2))), "missing arrays 'x' and 'y' (found: z)"),
    (dict(x=np.zeros((4, 2)), y=np.zeros(3, int)), "x has 4 samples but y has 3"),
    (dict(x=np.zeros((4, 3)), y=np.zeros(4, int)), r"expects \(M, 2\)"),
    (dict(x=np.full((4, 2), np.inf), y=np.zeros(4, int)), "inf at index"),
])
def test_train_bad_data_exits_2(capsys, tmp_path, data, message):
    _blobs(tmp_path)
    np.savez(tmp_path / "bad.npz", **data)
    code, _, err = cli(capsys, "train", tmp_path / "m.yaml", "--data", tmp_path / "bad.npz")
    assert code == 2 and message in err.replace("\\", "") or __import__("re").search(message, err), err


def test_train_divergence_exits_1(capsys, tmp_path):
    _blobs(tmp_path)
    text = (tmp_path / "m.yaml").read_text().replace("lr: 0.1", "lr: 1.0e+300")
    (tmp_path / "m.yaml").write_text(text)
    code, _, err = cli(capsys, "train", tmp_path / "m.yaml", "--data", tmp_path / "d.npz", "--epochs", 3)
    assert code == 1 and "diverged" in err


def test_gradcheck_cli(capsys):
    code, out, _ = cli(capsys, "gradcheck", SPECS / "lecture_cnn.yaml".replace("lecture_cnn", "lenet5"), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["ok"] and {r["name"] for r in data["rows"]} >= {"c1.weight", "output.bias", "input"}


def test_interrupting_train_keeps_the_last_checkpoint(tmp_path):
    """SIGINT mid-training: exit 130, the last epoch's checkpoint intact and loadable, no temp files."""
    import signal
    import time
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((2048, 1, 32, 32)), y=rng.integers(0, 10, 2048))
    proc = subprocess.Popen([sys.executable, "-m", "cnnspec", "train", str(SPECS / "lenet5.yaml"), "--data",
                             str(tmp_path / "d.npz"), "--epochs", "50", "--batch-size", "256", "--out",
                             str(tmp_path / "w.npz")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a suite started in the background inherits SIGINT ignored (POSIX), and Python then
                            # installs no handler: give the child the default, as a terminal would
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while not (tmp_path / "w.npz").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    state = np.load(tmp_path / "w.npz")
    assert "c1.weight" in state.files
    assert not list(tmp_path.glob(".*tmp"))


def test_run_notes_parameters_a_partial_checkpoint_does_not_hold(capsys, lecture_arrays):
    t = lecture_arrays
    np.savez(t / "part.npz", **{"fc.weight": np.array([[1.0, 1.0]])})
    (t / "two.yaml").write_text("cnnspec: 1\nname: two\ninput: {shape: [2]}\nlayers:\n"
                                "  - {name: fc, type: dense, units: 1}\n")
    code, out, err = cli(capsys, "run", t / "two.yaml", "-x", t / "x.npy", "--weights", t / "part.npz")
    assert code == 0
    assert "note: " in err and "has no value for fc.bias; it keeps the seeded initial value" in err


def test_run_prints_small_outputs_and_shortens_large_ones(capsys, lecture_arrays, tmp_path):
    t = lecture_arrays
    code, out, _ = cli(capsys, "run", SPECS / "lecture_linear.yaml", "-x", t / "x.npy")
    assert code == 0
    assert out.splitlines() == ["output fc: shape (1, 1)", "[[0.38]]"]          # the lecture's 0.38, on screen
    code, out, _ = cli(capsys, "run", SPECS / "lecture_linear.yaml", "-x", t / "x.npy", "-y", t / "y.npy",
                       "--steps", 2)
    assert "[[0.38]]" in out and "after 2 optimizer steps: loss history 6.8644, " in out
    assert "after 1 optimizer step:" in cli(capsys, "run", SPECS / "lecture_linear.yaml", "-x", t / "x.npy", "-y",
                                      t / "y.npy", "--steps", 1)[1]
    np.save(tmp_path / "x2.npy", np.random.default_rng(0).standard_normal((2, 1, 32, 32)))
    code, out, _ = cli(capsys, "run", SPECS / "lenet5.yaml", "-x", tmp_path / "x2.npy")
    lines = out.splitlines()
    assert lines[0] == "output output: shape (2, 10)" and len(lines) == 3       # 20 values: every one
    assert len(lines[1].split()) == 11 and lines[1].startswith("[[")
    (tmp_path / "conv.yaml").write_text("cnnspec: 1\nname: c\ninput: {shape: [1, 32, 32]}\nlayers:\n"
                                        "  - {name: c1, type: conv2d, filters: 6, kernel: 5}\n")
    code, out, _ = cli(capsys, "run", tmp_path / "conv.yaml", "-x", tmp_path / "x2.npy")
    lines = out.splitlines()
    assert code == 0 and len(lines) <= 16 and "..." in out
    assert re.match(r"\(9,408 values, min -?\d\.\d+, mean -?\d\.\d+(e-\d+)?, max \d\.\d+; --dump OUT.npz writes them "
                    r"all\)", lines[-1]), lines[-1]


def test_gradcheck_shows_a_zero_gradient_as_zero_not_as_rel_error_1(capsys):
    code, out, _ = cli(capsys, "gradcheck", SPECS / "lecture_cnn.yaml")      # conv1's bias feeds batch norm
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("conv1.bias"))
    assert re.search(r"24 elements  gradient ~0 both ways \(largest \d\.\de-\d\d; abs error \d\.\de-\d\d\)  ok$", row), row
    assert "1.00e+00" not in out
    assert re.search(r"^fc.weight +24 elements  max rel error \S+  max abs error \S+  ok$", out, re.M)
    code, out, _ = cli(capsys, "gradcheck", SPECS / "lecture_cnn.yaml", "--json")
    rows = {r["name"]: r for r in json.loads(out)["rows"]}
    assert rows["conv1.bias"]["near_zero"] and rows["conv1.bias"]["max_magnitude"] < 1e-8
    assert not rows["fc.weight"]["near_zero"] and rows["fc.weight"]["max_magnitude"] > 1e-3


def test_render_gradcheck_says_when_a_row_passes_only_on_the_absolute_error():
    from cnnspec.cli.engine_cmds import render_gradcheck
    from cnnspec.gradient_check import GradcheckResult, GradcheckRow
    result = GradcheckResult(rows=[GradcheckRow("a", 1, 0.05, 5e-9, 0, True, 1e-7),
                                   GradcheckRow("b", 3, 1.0, 0.5, 0, False, 0.5)])
    lines = render_gradcheck(result).splitlines()
    assert lines[0] == "a    1 element   max rel error 5.00e-02  max abs error 5.00e-09  ok on the absolute error (< 1e-08)"
    assert lines[1] == "b    3 elements  max rel error 1.00e+00  max abs error 5.00e-01  FAIL"
    assert lines[2].startswith("gradcheck FAILED")


def test_a_wrong_checkpoint_is_summarised_not_listed(capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 32, 32)))
    wrong = {f"{layer}.{kind}": np.zeros(3) for layer in ("c1", "c3", "c5", "f6", "output") for kind in ("weight", "bias")}
    wrong.update({"bogus": np.zeros(1), "c1.wieght": np.zeros(1)})
    np.savez(tmp_path / "w.npz", **wrong)
    code, out, err = cli(capsys, "run", SPECS / "lenet5.yaml", "-x", tmp_path / "x.npy", "--weights", tmp_path / "w.npz")
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 3, err                                      # was one line per parameter (12)
    assert lines[0].startswith(f"{tmp_path / 'w.npz'}: 2 unknown parameters: 'bogus', 'c1.wieght' (did you mean "
                               "'c1.weight'?) (the model's: c1.weight, c1.bias")
    assert lines[1] == (f"{tmp_path / 'w.npz'}: 10 parameters have the wrong shape: c1.weight (expected [6, 1, 5, 5], "
                        "got [3]), c1.bias (expected [6], got [3]), c3.weight (expected [16, 6, 5, 5], got [3]) "
                        "and 7 more")
    assert lines[2].endswith("is it a checkpoint of another spec? This model ('lenet5') has 10 parameters "
                             "(`cnnspec summary SPEC` lists them)")


def test_a_loss_error_names_the_loss_once(capsys, lecture_arrays):
    t = lecture_arrays
    np.save(t / "y3.npy", np.zeros((3, 3)))
    code, _, err = cli(capsys, "run", SPECS / "lecture_linear.yaml", "-x", t / "x.npy", "-y", t / "y3.npy")
    assert code == 2
    assert err.strip() == "loss mse: target shape (3, 3) must equal prediction shape (1, 1)"
