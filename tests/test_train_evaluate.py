"""Training that does not lose work or hide results: where `train` saves, validation, `evaluate`, readable
losses and divergence, and the training curve (its structure: axes, ticks, scales, series, per-batch points)."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import cnnspec
from cnnspec.cli import EXIT_INTERNAL, main
from cnnspec.plot import CHAR, TrainingHistory, linear_ticks, loss_scale, tick_labels, training_svg

SPECS = Path(__file__).resolve().parent.parent / "specs"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default outputs land here, never in the repository


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


BLOBS = ("cnnspec: 1\nname: blobs\ninput: {shape: [2]}\nlayers:\n  - {type: dense, units: 8}\n  - {type: relu}\n"
         "  - {type: dense, units: 3}\nloss: {type: cross_entropy}\noptimizer: {lr: 0.1, momentum: 0.9}\n")
LINEAR = ("cnnspec: 1\nname: line\ninput: {shape: [2]}\nlayers:\n  - {name: fc, type: dense, units: 1}\n"
          "loss: {type: mse}\noptimizer: {lr: LR}\n")


def blobs(tmp_path, n=64, seed=0, name="d.npz"):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 2)) * 0.3 + np.array([[2, 0], [-2, 0], [0, 2]])[y]
    np.savez(tmp_path / name, x=x, y=y)
    (tmp_path / "m.yaml").write_text(BLOBS)
    return tmp_path / "m.yaml", tmp_path / name


def line(tmp_path, lr):
    """Noise-free linear regression: with a good lr the loss falls to ~1e-30, with lr 10 it explodes."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 2))
    np.savez(tmp_path / "r.npz", x=x, y=x @ np.array([[1.0], [2.0]]))
    (tmp_path / "line.yaml").write_text(LINEAR.replace("LR", str(lr)))
    return tmp_path / "line.yaml", tmp_path / "r.npz"


# ---------------------------------------------------------------- where train saves


def test_train_without_out_saves_to_a_named_file_and_says_where(capsys, tmp_path):
    spec, data = blobs(tmp_path)
    code, out, _ = cli(capsys, "train", spec, "--data", data, "--epochs", 2)
    assert code == 0
    assert "the weights are saved to m.weights.npz after every epoch (named after the spec" in out
    assert "epoch 2/2: " in out and "(saved m.weights.npz)" in out
    first = dict(np.load(tmp_path / "m.weights.npz"))
    assert set(first) == {"dense_1.weight", "dense_1.bias", "dense_2.weight", "dense_2.bias"}
    # a second run never replaces the first one's weights: it takes the next free name
    code, out, err = cli(capsys, "train", spec, "--data", data, "--weights", "m.weights.npz", "--json")
    assert code == 0 and "note: the weights are saved to m.weights-2.npz" in err
    assert [json.loads(row)["epoch"] for row in out.splitlines()] == [1]     # --json: stdout is JSON only
    for k, v in np.load(tmp_path / "m.weights.npz").items():
        np.testing.assert_array_equal(v, first[k])
    assert (tmp_path / "m.weights-2.npz").exists()
    # the saved weights load into the model they came from
    cnnspec.compile(spec, weights=tmp_path / "m.weights-2.npz")


def test_train_refuses_a_bad_output_before_training(capsys, tmp_path, monkeypatch):
    spec, data = blobs(tmp_path)
    state = cnnspec.compile(spec).state_dict()

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking the outputs")
    monkeypatch.setattr(cnnspec.model.Model, "forward", no_training)
    code, out, err = cli(capsys, "train", spec, "--data", data, "--out", tmp_path / "no" / "w.npz")
    assert code == 2 and "does not exist" in err and "epoch" not in out
    np.savez(tmp_path / "w.npz", **state)
    code, out, err = cli(capsys, "train", spec, "--data", data, "--weights", tmp_path / "w.npz", "--out",
                         tmp_path / "w.npz")
    assert code == 2 and "is one of this command's inputs" in err and "epoch" not in out
    code, out, err = cli(capsys, "train", spec, "--data", data, "--plot", data)
    assert code == 2 and "is one of this command's inputs" in err and "epoch" not in out


# ---------------------------------------------------------------- validation


def test_val_split_holds_out_a_seeded_fraction(capsys, tmp_path):
    spec, data = blobs(tmp_path)
    code, out, _ = cli(capsys, "train", spec, "--data", data, "--epochs", 3, "--val-split", 0.25, "--out", "w.npz")
    assert code == 0
    assert "training blobs on 48 samples of" in out and "validation on 16 samples held out of" in out
    rows = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(rows) == 3 and all(re.search(r"val_loss \d\.\d+, val_accuracy \d\.\d{4}", r) for r in rows)
    code, again, _ = cli(capsys, "train", spec, "--data", data, "--epochs", 3, "--val-split", 0.25, "--out", "v.npz")
    assert [r for r in again.splitlines() if r.startswith("epoch")] == [r.replace("w.npz", "v.npz") for r in rows]


def test_val_data_is_evaluated_after_every_epoch_as_evaluate_would(capsys, tmp_path):
    spec, data = blobs(tmp_path)
    _, val = blobs(tmp_path, n=30, seed=1, name="v.npz")
    code, out, _ = cli(capsys, "train", spec, "--data", data, "--val-data", val, "--epochs", 2, "--out", "w.npz",
                       "--json")
    assert code == 0
    rows = [json.loads(r) for r in out.splitlines()]
    assert set(rows[-1]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"}
    code, out, _ = cli(capsys, "evaluate", spec, "--weights", "w.npz", "--data", val, "--json")
    assert code == 0
    ev = json.loads(out)
    assert ev["loss"] == pytest.approx(rows[-1]["val_loss"], rel=1e-12)
    assert ev["accuracy"] == pytest.approx(rows[-1]["val_accuracy"])


@pytest.mark.parametrize("args, message", [
    (["--val-split", "0.2", "--val-data", "d.npz"], "give --val-split or --val-data, not both"),
    (["--val-split", "1.5"], "--val-split must be a fraction between 0 and 1 (e.g. 0.1), got 1.5"),
    (["--val-split", "0"], "--val-split must be a fraction between 0 and 1"),
    (["--val-split", "0.001"], "--val-split 0.001 of 64 samples in d.npz holds out 0; it must leave at least one"),
    (["--val-data", "missing.npz"], "not found"),
])
def test_bad_validation_options_exit_2(capsys, tmp_path, args, message):
    spec, _ = blobs(tmp_path)
    code, out, err = cli(capsys, "train", spec, "--data", "d.npz", *args)
    assert code == 2 and message in err and "epoch" not in out


# ---------------------------------------------------------------- evaluate


def test_evaluate_prints_loss_accuracy_and_confusion_matrix(capsys, tmp_path):
    spec, data = blobs(tmp_path)
    assert cli(capsys, "train", spec, "--data", data, "--epochs", 5, "--batch-size", 16, "--out", "w.npz")[0] == 0
    code, out, err = cli(capsys, "evaluate", spec, "--weights", "w.npz", "--data", data)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"evaluate blobs on 64 samples of {data} with w.npz"
    assert re.fullmatch(r"loss \(cross_entropy, mean\): \d\.\d+(e-\d+)?", lines[1])
    assert re.fullmatch(r"accuracy: \d\.\d{4} \(\d+ of 64 samples right\)", lines[2])
    assert lines[3] == "confusion matrix (rows: true class, columns: predicted class):"
    assert lines[4].split() == ["true", "\\", "predicted", "0", "1", "2"]
    counts = np.array([[int(v) for v in row.split()[1:]] for row in lines[5:8]])
    y = np.load(data)["y"]
    assert counts.sum() == 64 and list(counts.sum(axis=1)) == [int((y == k).sum()) for k in range(3)]
    assert lines[8].startswith("  per-class recall")
    code, out, _ = cli(capsys, "evaluate", spec, "--weights", "w.npz", "--data", data, "--json", "--batch-size", 5)
    ev = json.loads(out)
    assert np.array(ev["confusion"]).tolist() == counts.tolist()
    assert ev["samples"] == 64 and ev["correct"] == int(np.trace(counts)) and ev["labels"] == 64
    # the loss over all samples, whatever the batch size, is the loss of one batch of all of them
    model = cnnspec.compile(spec, weights=tmp_path / "w.npz")
    d = np.load(data)
    assert ev["loss"] == pytest.approx(model.loss(model.forward(d["x"]), d["y"]), rel=1e-12)


def test_evaluate_without_weights_says_so_and_regression_has_no_accuracy(capsys, tmp_path):
    spec, data = line(tmp_path, 0.1)
    code, out, err = cli(capsys, "evaluate", spec, "--data", data)
    assert code == 0 and "note: no --weights and no `weights:` in the spec: evaluating the seeded initial" in err
    assert "accuracy" not in out and "confusion" not in out and "loss (mse, mean): " in out
    code, out, _ = cli(capsys, "evaluate", spec, "--data", data, "--json")
    assert json.loads(out)["accuracy"] is None and json.loads(out)["confusion"] is None


@pytest.mark.parametrize("make, args, message", [
    (lambda t: np.savez(t / "bad.npz", x=np.zeros((4, 3)), y=np.zeros(4, int)), ["--data", "bad.npz"],
     r"expects \(M, 2\)"),
    (lambda t: np.savez(t / "bad.npz", x=np.zeros((4, 2))), ["--data", "bad.npz"], "missing array 'y'"),
    (lambda t: np.savez(t / "bad.npz", x=np.zeros((4, 2)), y=np.zeros(4)), ["--data", "bad.npz"],
     r"loss cross_entropy: target must be .*; class indices must be integers"),
    (lambda t: np.savez(t / "bad.npz", x=np.zeros((4, 2)), y=np.full(4, 7)), ["--data", "bad.npz"],
     r"loss cross_entropy: class index 7 \(row 0\) is out of range; valid: 0\.\.2"),
    (lambda t: None, ["--data", "d.npz", "--weights", "nope.npz"], "not found"),
    (lambda t: None, ["--data", "d.npz", "--batch-size", "0"], "--batch-size must be >= 1"),
])
def test_evaluate_bad_input_exits_2(capsys, tmp_path, make, args, message):
    spec, _ = blobs(tmp_path)
    make(tmp_path)
    code, out, err = cli(capsys, "evaluate", spec, *args)
    assert code == 2 and out == "" and re.search(message, err), err
    assert "cross_entropy: cross_entropy" not in err


def test_evaluate_needs_a_loss_and_reports_internal_errors_as_3(capsys, tmp_path, monkeypatch):
    (tmp_path / "noloss.yaml").write_text("cnnspec: 1\nname: n\ninput: {shape: [2]}\nlayers:\n"
                                          "  - {type: dense, units: 3}\n")
    blobs(tmp_path)
    code, _, err = cli(capsys, "evaluate", tmp_path / "noloss.yaml", "--data", "d.npz")
    assert code == 2 and "the spec has no `loss:`; evaluating needs one" in err

    def broken(*args, **kwargs):
        raise RuntimeError("boom")
    monkeypatch.setattr(cnnspec.model.Model, "evaluate", broken)
    code, _, err = cli(capsys, "evaluate", tmp_path / "m.yaml", "--data", "d.npz")
    assert code == EXIT_INTERNAL and "internal error (RuntimeError: boom" in err


def test_model_evaluate_counts_bce_labels_and_sums_with_reduction_sum():
    spec = cnnspec.loads_spec("cnnspec: 1\nname: b\ninput: {shape: [2]}\nlayers:\n  - {name: fc, type: dense, "
                              "units: 2}\nloss: {type: bce_with_logits, reduction: sum}\n")
    model = cnnspec.compile(spec, weights={"fc.weight": np.array([[1.0, 0.0], [0.0, 1.0]]), "fc.bias": np.zeros(2)})
    x = np.array([[1.0, -1.0], [-2.0, 3.0], [0.5, 0.5]])
    y = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    ev = model.evaluate(x, y, batch_size=2)
    assert ev.loss == pytest.approx(model.loss(model.forward(x), y))           # sums add up across batches
    assert (ev.correct, ev.labels) == (4, 6) and ev.accuracy == pytest.approx(4 / 6)
    assert ev.confusion.tolist() == [[1, 1], [1, 3]]                            # rows true 0/1, columns predicted


# ---------------------------------------------------------------- readable losses, divergence


def test_a_converging_loss_prints_readably(capsys, tmp_path):
    spec, data = line(tmp_path, 0.5)
    code, out, _ = cli(capsys, "train", spec, "--data", data, "--epochs", 4, "--batch-size", 8, "--out", "w.npz")
    assert code == 0
    losses = re.findall(r"epoch \d/4: loss (\S+) \(saved w.npz\)", out)
    assert len(losses) == 4 and "0.000000" not in out                 # was: loss 0.000000 from epoch 2 on
    assert all(len(v) <= 10 for v in losses) and all(re.fullmatch(r"\d(\.\d+)?e-\d\d", v) for v in losses[1:]), losses


def test_a_diverging_run_says_so_and_exits_1(capsys, tmp_path):
    spec, data = line(tmp_path, 10.0)
    code, out, err = cli(capsys, "train", spec, "--data", data, "--epochs", 8, "--out", "w.npz", "--plot", "c.svg")
    assert code == 1
    assert re.search(r"training diverged: the loss grew from \S+ \(first batch\) to \S+e\+\d\d \(mean of epoch 2\), "
                     r"more than a million-fold. Try a smaller optimizer.lr \(now 10\)", err), err
    assert "the checkpoint of epoch 1 is in w.npz" in err and "the curve so far is in c.svg" in err
    assert not re.search(r"\d{12}", out + err)                      # no 68 digits of garbage
    assert "epoch 2/8" not in out                                   # the diverged epoch is not saved
    assert ET.parse(tmp_path / "c.svg").getroot().find(f".//{SVG}g[@id='loss-panel']") is not None


def test_a_nan_loss_says_so_and_keeps_nothing_unsaved(capsys, tmp_path):
    spec, data = line(tmp_path, "1.0e+300")
    code, out, err = cli(capsys, "train", spec, "--data", data, "--epochs", 3, "--out", "w.npz")
    assert code == 1 and re.search(r"training diverged: the loss became (nan|inf) at epoch 1, batch \d of 2", err)
    assert "nothing was saved (w.npz is written after a completed epoch)" in err
    assert not (tmp_path / "w.npz").exists()


# ---------------------------------------------------------------- the training curve


def _svg(path) -> ET.Element:
    return ET.parse(path).getroot()


def _texts(group) -> list[str]:
    return [t.text for t in group.iter(f"{SVG}text")]


def test_the_curve_after_one_epoch_has_axes_ticks_and_a_point_per_batch(capsys, tmp_path):
    spec, data = blobs(tmp_path, n=200)
    code, out, _ = cli(capsys, "train", spec, "--data", data, "--batch-size", 16, "--val-split", 0.2, "--out",
                       "w.npz", "--plot", "curve.svg")
    assert code == 0 and "training curve: curve.svg" in out
    root = _svg(tmp_path / "curve.svg")
    width, height = float(root.get("width")), float(root.get("height"))
    assert root.find(f"{SVG}text[@id='title']").text == "blobs: training on d.npz"
    for panel, ylabel in (("loss", "loss (cross_entropy, mean)"), ("accuracy", "accuracy (%)")):
        g = root.find(f".//{SVG}g[@id='{panel}-panel']")
        assert g is not None, panel
        labels = " ".join(_texts(g))
        assert ylabel in labels
        yticks = _texts(g.find(f"{SVG}g[@class='y-ticks']"))
        xticks = _texts(g.find(f"{SVG}g[@class='x-ticks']"))
        assert xticks == ["0.00", "0.25", "0.50", "0.75", "1.00"]          # fractions of the only epoch
        if panel == "accuracy":
            assert yticks == ["0", "20", "40", "60", "80", "100"]
        else:
            assert yticks[0] in ("0", "0.0", "0.00") or "log scale" in labels   # starts at 0, or says log
        # 160 training samples in batches of 16: one point per batch, for loss and for accuracy
        assert len(list(g.find(f"{SVG}g[@id='train-batch-{panel}']").iter(f"{SVG}circle"))) == 10
        assert len(list(g.find(f"{SVG}g[@id='train-epoch-{panel}']").iter(f"{SVG}circle"))) == 1
        assert len(list(g.find(f"{SVG}g[@id='val-{panel}']").iter(f"{SVG}circle"))) == 1
    assert "epoch (10 batches of 16 per epoch)" in _texts(root)
    legend = " ".join(_texts(root.find(f"{SVG}g[@id='legend']")))
    assert "train, each batch" in legend and "validation" in legend
    _assert_inside(root, width, height)


def _assert_inside(root, width, height):
    """Every text fits in the picture: right-aligned tick labels have room on their left, and so on."""
    for t in root.iter(f"{SVG}text"):
        if t.get("transform"):
            continue
        x, y, n = float(t.get("x")), float(t.get("y")), len(t.text or "") * CHAR
        anchor = t.get("text-anchor", "start")
        left = x - n if anchor == "end" else x - n / 2 if anchor == "middle" else x
        assert left >= 0 and left + n <= width and 0 < y <= height, (t.text, x, y)


def test_loss_scale_starts_at_zero_or_goes_log_when_the_values_span_decades():
    flat = loss_scale([0.52, 0.50, 0.51, 0.49])          # noise around 0.5 must not fill the panel
    assert (flat.lo, flat.log) == (0.0, False) and flat.hi >= 0.52 and flat.labels[0] in ("0", "0.0")
    assert flat.frac(0.49) > 0.6 and flat.frac(0.52) - flat.frac(0.49) < 0.1
    wide = loss_scale([2.3, 0.5, 1e-3, 2e-7])
    assert wide.log and wide.labels[0] == "1e-07" and wide.labels[-1] == "10" and wide.note == ""
    assert loss_scale([5.0, 1e-9, 0.0]).note == " (0 on the bottom edge)"
    assert not loss_scale([5.0, 0.07]).log                # less than two decades: linear from 0


def test_ticks_are_round_numbers():
    assert linear_ticks(0, 1.04) == [0, 0.25, 0.5, 0.75, 1.0, 1.25]
    assert linear_ticks(0, 7.3) == [0, 2, 4, 6, 8]
    assert linear_ticks(0, 0.0031) == [0, 0.001, 0.002, 0.003, 0.004]
    assert linear_ticks(0, 1, 4) == [0, 0.25, 0.5, 0.75, 1.0]
    assert tick_labels([0, 0.25, 0.5, 0.75, 1.0]) == ["0.00", "0.25", "0.50", "0.75", "1.00"]
    assert tick_labels([0, 500, 1000, 1500]) == ["0", "500", "1000", "1500"]
    assert tick_labels([0, 2e5, 4e5]) == ["0", "2e+05", "4e+05"]


def test_many_batches_are_averaged_and_many_epochs_get_whole_epoch_ticks():
    history = TrainingHistory(batches=[(e + (b + 1) / 100, 1.0 / (1 + e), 0.5) for e in range(30) for b in range(100)],
                              epochs=[{"epoch": e + 1, "loss": 1.0 / (1 + e), "accuracy": 0.5} for e in range(30)])
    root = ET.fromstring(training_svg(history, title="t", loss_label="loss (mse, mean)"))
    points = list(root.find(f".//{SVG}g[@id='train-batch-loss']").iter(f"{SVG}circle"))
    assert 400 <= len(points) <= 800
    assert "train, each batch (mean of 4)" in _texts(root.find(f"{SVG}g[@id='legend']"))
    xticks = _texts(root.find(f".//{SVG}g[@id='loss-panel']/{SVG}g[@class='x-ticks']"))
    assert xticks == ["0", "5", "10", "15", "20", "25", "30"]
    assert root.find(f".//{SVG}g[@id='val-loss']") is None          # no validation data, no validation series
    _assert_inside(root, float(root.get("width")), float(root.get("height")))


def test_a_regression_curve_has_no_accuracy_panel_and_long_labels_wrap():
    history = TrainingHistory(batches=[(0.5, 3.0, None), (1.0, 0.0, None)], epochs=[{"epoch": 1, "loss": 1.5}])
    root = ET.fromstring(training_svg(history, title="t", loss_label="loss (bce_with_logits, mean)"))
    assert root.find(f".//{SVG}g[@id='accuracy-panel']") is None
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "axis-label" and t.get("transform")]
    assert labels == ["loss (bce_with_logits, mean)"]
    log = TrainingHistory(batches=[(0.5, 3.0, None), (1.0, 0.0, None), (1.5, 1e-9, None)],
                          epochs=[{"epoch": 1, "loss": 1.5}])
    root = ET.fromstring(training_svg(log, title="t", loss_label="loss (bce_with_logits, mean)"))
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "axis-label" and t.get("transform")]
    assert len(labels) == 2 and all(len(t) * CHAR <= 240 for t in labels)    # wrapped to the panel's height
    assert " ".join(labels) == "loss (bce_with_logits, mean), log scale (0 on the bottom edge)"


def test_a_per_epoch_schedule_advances_with_the_epochs(capsys, tmp_path):
    """gamma 1e-12 every epoch: the second epoch's steps are ~0, so two epochs end where one ended (one batch
    per epoch, the same batch). Without the epoch count reaching the model, epoch 2 would step at the full lr."""
    spec, data = line(tmp_path, 0.05)
    spec.write_text(spec.read_text().replace("optimizer: {lr: 0.05}",
                                             "optimizer: {lr: 0.05, schedule: {type: step, step_size: 1, gamma: 1.0e-12}}"))
    ends = []
    for epochs in (1, 2):
        out = tmp_path / f"w{epochs}.npz"
        code, _, err = cli(capsys, "train", spec, "--data", data, "--epochs", epochs, "--batch-size", 64, "--out", out)
        assert code == 0, err
        ends.append(np.load(out)["fc.weight"])
    assert np.allclose(ends[0], ends[1], rtol=0, atol=1e-9)
    assert not np.allclose(ends[0], 0.0)  # the first epoch did move the weights
