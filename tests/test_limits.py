"""Hostile sizes: the total-parameter and working-memory limits, estimated from the graph before anything is
allocated (cnnspec/limits.py), how a user raises them (--max-memory, CNNSPEC_MAX_MEMORY, max_memory=), and
the estimate measured against the engine's real peak with tracemalloc."""
from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import cnnspec
from cnnspec import limits
from cnnspec.cli import build_parser, main
from cnnspec.errors import ShapeError
from cnnspec.limits import MemoryLimitError
from cnnspec.model import Model

SPECS = Path(__file__).resolve().parent.parent / "specs"
LECTURE_CNN = SPECS / "lecture_cnn.yaml"

# The spec: 30 dense layers of 16384 x 16384, 8 billion parameters (60 GiB in float64). Each weight
# is exactly at the per-tensor limit (2**28 values), so only a whole-model limit can refuse it.
HUGE_DENSE = ("cnnspec: 1\nname: huge-dense\ninput:\n  shape: [16384]\nlayers:\n"
              + "".join(f"  - {{name: fc{i}, type: dense, units: 16384}}\n" for i in range(1, 31)))


@pytest.fixture(autouse=True)
def _default_limit(monkeypatch):
    monkeypatch.delenv(limits.ENV_VAR, raising=False)
    monkeypatch.setenv("CNNSPEC_NUM_THREADS", "2")  # NumPy's buffers in the estimate are per thread


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


# ---------------------------------------------------------------- the spec


def test_check_refuses_the_60_gib_dense_stack_without_allocating():
    tracemalloc.start()
    try:
        with pytest.raises(ShapeError) as info:
            cnnspec.loads_spec(HUGE_DENSE, "huge.yaml")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20  # shapes only: no array of the model was ever allocated
    (problem,) = info.value.problems
    assert (problem.line, problem.col) == (7, 37)  # fc2's units: the layer where the total crosses the limit
    msg = problem.message
    assert msg.startswith("layer 'fc2' (dense): the model up to this layer has 536,903,680 parameters")
    assert "the limit is 536,870,912 parameters (the memory limit 4.00 GiB / 8 bytes)" in msg
    assert "The whole model has 8,053,555,200 parameters and needs an estimated 62.00 GiB" in msg
    assert "--max-memory 63GiB" in msg and "CNNSPEC_MAX_MEMORY=63GiB" in msg


def test_check_exits_2_with_the_numbers_and_max_memory_raises_the_limit(tmp_path, capsys):
    spec = tmp_path / "huge.yaml"
    spec.write_text(HUGE_DENSE)
    code, out, err = cli(capsys, "check", spec)
    assert code == 2 and out == ""
    assert f"{spec}:7:37: layer 'fc2' (dense)" in err and "8,053,555,200 parameters" in err
    code, out, err = cli(capsys, "check", "--max-memory", "63GiB", spec)
    assert (code, err) == (0, "") and "8,053,555,200 parameters" in out
    code, _, err = cli(capsys, "check", "--max-memory", "62GiB", spec)  # the parameters fit, the memory not
    assert code == 2 and "needs an estimated 62.00 GiB" in err


def test_the_environment_variable_sets_the_limit(monkeypatch, tmp_path, capsys):
    spec = tmp_path / "huge.yaml"
    spec.write_text(HUGE_DENSE)
    monkeypatch.setenv(limits.ENV_VAR, "63GiB")
    assert cli(capsys, "check", spec)[0] == 0
    assert cli(capsys, "check", "--max-memory", "4GiB", spec)[0] == 2  # the option wins
    monkeypatch.setenv(limits.ENV_VAR, "10MiB")
    code, _, err = cli(capsys, "check", LECTURE_CNN)
    assert code == 2 and "the memory limit is 10.00 MiB (10,485,760 bytes)" in err
    monkeypatch.setenv(limits.ENV_VAR, "lots")
    code, _, err = cli(capsys, "check", LECTURE_CNN)
    assert code == 2 and "CNNSPEC_MAX_MEMORY='lots': cannot read 'lots' as a size" in err


def test_a_smaller_limit_refuses_a_modest_model_at_the_layer_that_crosses_it():
    with pytest.raises(ShapeError) as info:
        cnnspec.compile(LECTURE_CNN, max_memory="10MiB")
    (problem,) = info.value.problems
    assert problem.line == 13 and problem.message.startswith(
        "layer 'bn1' (batchnorm): running one sample in float64 through the model up to this layer needs an "
        "estimated 11.67 MiB")
    assert "the memory limit is 10.00 MiB" in problem.message
    assert cnnspec.compile(LECTURE_CNN, max_memory=64 * 2**20).max_memory == 64 * 2**20
    # the model's own dtype counts: the float32 spec fits where its float64 copy does not
    spec = cnnspec.load_spec(SPECS / "vgg_blocks.yaml", max_memory="64MiB")
    with pytest.raises(ShapeError, match="in float64"):
        cnnspec.compile(spec, dtype="float64", max_memory="30MiB")
    assert cnnspec.compile(spec, dtype="float32", max_memory="30MiB").dtype == np.float32


def test_every_engine_and_spec_command_takes_max_memory():
    parser = build_parser()
    needs = {"check": ["S"], "summary": ["S"], "explain": ["S"], "compile": ["S", "-o", "o.onnx"],
             "verify": ["S"], "run": ["S", "-x", "x.npy"], "train": ["S", "--data", "d.npz"], "gradcheck": ["S"]}
    for command, args in needs.items():
        assert parser.parse_args([command, *args, "--max-memory", "1.5GiB"]).max_memory == 3 * 2**29, command
        assert parser.parse_args([command, *args]).max_memory is None


@pytest.mark.parametrize("text,size", [("8GiB", 8 * 2**30), ("512 MiB", 512 * 2**20), ("1.5G", 3 * 2**29),
                                       ("4000000000", 4_000_000_000), ("2GB", 2_000_000_000), ("64k", 65536),
                                       ("1tib", 2**40), (4096, 4096)])
def test_sizes(text, size):
    assert limits.parse_size(text) == size


@pytest.mark.parametrize("text", ["8 gigs", "", "GiB", "-1GiB", "0", "1e9", True, 1.5])
def test_bad_sizes_say_what_is_valid(text):
    with pytest.raises(ValueError, match="size|at least 1 byte"):
        limits.parse_size(text)


def test_bad_max_memory_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["check", "--max-memory", "8 gigs", str(LECTURE_CNN)])
    assert info.value.code == 2
    assert "argument --max-memory: cannot read '8 gigs' as a size" in capsys.readouterr().err


# ---------------------------------------------------------------- batches: refused before the forward pass


@pytest.fixture
def no_forward(monkeypatch):
    """Model.forward fails the test if it is called: a refusal must come first."""
    def forward(self, x, train=False):
        raise AssertionError("the forward pass ran")
    monkeypatch.setattr(Model, "forward", forward)


def test_run_refuses_a_large_batch_before_the_forward_pass(tmp_path, capsys, monkeypatch, no_forward):
    np.save(tmp_path / "x.npy", np.zeros((64, 100, 100, 3)))
    np.save(tmp_path / "y.npy", np.zeros(64, dtype=np.int64))
    monkeypatch.setenv(limits.ENV_VAR, "256MiB")
    code, out, err = cli(capsys, "run", LECTURE_CNN, "-x", tmp_path / "x.npy", "-y", tmp_path / "y.npy")
    assert code == 2 and out == ""
    assert err.startswith("a forward and backward pass on a batch of 64 in float64 needs an estimated 1.71 GiB")
    assert "525.22 MiB of activations" in err and "the limit is 256.00 MiB (268,435,456 bytes)" in err
    assert f"Use fewer samples than 64 in {tmp_path / 'x.npy'}" in err


def test_train_refuses_a_large_batch_before_the_forward_pass(tmp_path, capsys, no_forward):
    np.savez(tmp_path / "d.npz", x=np.zeros((64, 100, 100, 3), np.float32), y=np.zeros(64, dtype=np.int64))
    code, _, err = cli(capsys, "train", LECTURE_CNN, "--data", tmp_path / "d.npz", "--batch-size", 64,
                       "--max-memory", "512MiB")
    assert code == 2
    assert err.startswith("a training step (forward, backward, SGD) on a batch of 64 in float64 needs an estimated")
    assert "7.32 MiB of training data (x and y)" in err and "Use a smaller --batch-size" in err


def test_gradcheck_and_verify_refuse_a_large_batch(capsys, no_forward):
    code, _, err = cli(capsys, "gradcheck", LECTURE_CNN, "--batch", 64, "--max-memory", "256MiB")
    assert code == 2 and "a forward and backward pass on a batch of 64 in float64" in err
    code, _, err = cli(capsys, "verify", LECTURE_CNN, "--batch", 200, "--max-memory", "1GiB")
    assert code == 2 and "a forward pass on a batch of 200" in err and "ONNX copies of the weights" in err


def test_the_model_refuses_a_batch_before_allocating_it():
    model = cnnspec.compile(LECTURE_CNN, max_memory="256MiB")
    x = np.lib.stride_tricks.as_strided(np.zeros(1), (64, 100, 100, 3), (0, 0, 0, 0))  # no memory behind it
    tracemalloc.start()
    try:
        with pytest.raises(MemoryLimitError, match=r"a forward pass on a batch of 64 in float64 needs an estimated "
                                                   r"[\d.]+ MiB .* of activations"):
            model.forward(x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20
    assert isinstance(MemoryLimitError("x"), cnnspec.DataError)


def test_backward_is_refused_when_only_the_forward_fits():
    spec = cnnspec.load_spec(LECTURE_CNN)
    fwd = limits.estimate(spec.graph, 8, train=True).total
    bwd = limits.estimate(spec.graph, 8, train=True, backward=True).total
    model = cnnspec.compile(spec, max_memory=(fwd + bwd) // 2)
    out = model.forward(np.zeros((8, 100, 100, 3)), train=True)
    model.loss(out, np.zeros(8, dtype=np.int64))
    with pytest.raises(MemoryLimitError, match="a forward and backward pass on a batch of 8"):
        model.backward()


def test_remembered_estimates_are_per_dtype_and_per_batch():
    # Model remembers forward's estimate per question; a float64 copy of a float32 model asks anew.
    spec = cnnspec.load_spec(LECTURE_CNN)
    fits32 = limits.estimate(spec.graph, 4, "float32").total
    model = cnnspec.compile(spec, dtype="float32", max_memory=fits32 + fits32 // 4)
    model.forward(np.zeros((4, 100, 100, 3), np.float32))
    model.forward(np.zeros((4, 100, 100, 3), np.float32))  # the remembered answer: still fits
    with pytest.raises(MemoryLimitError, match="a batch of 4 in float64"):  # the same float32 input
        model.astype("float64").forward(np.zeros((4, 100, 100, 3), np.float32))
    with pytest.raises(MemoryLimitError, match="a batch of 8 in float32"):
        model.forward(np.zeros((8, 100, 100, 3), np.float32))


def test_remembered_estimates_follow_the_thread_count(monkeypatch):
    # each thread's temporaries count: a limit between the 1-thread and the 64-thread estimate
    spec = cnnspec.load_spec(LECTURE_CNN)
    monkeypatch.setenv("CNNSPEC_NUM_THREADS", "1")
    one = limits.estimate(spec.graph, 4, "float32").total
    monkeypatch.setenv("CNNSPEC_NUM_THREADS", "64")
    many = limits.estimate(spec.graph, 4, "float32").total
    assert one < many
    model = cnnspec.compile(spec, dtype="float32", max_memory=(one + many) // 2)
    x = np.zeros((4, 100, 100, 3), np.float32)
    monkeypatch.setenv("CNNSPEC_NUM_THREADS", "1")
    model.forward(x)
    monkeypatch.setenv("CNNSPEC_NUM_THREADS", "64")
    with pytest.raises(MemoryLimitError):
        model.forward(x)


def test_the_estimate_grows_with_the_batch_and_the_task():
    g = cnnspec.load_spec(SPECS / "bench_cnn.yaml").graph
    one, many = limits.estimate(g, 1), limits.estimate(g, 32)
    assert many.total > 20 * (one.total - one.weights - one.overhead)
    # parameters, running mean and variance of bn1 (32) and bn2 (64), two num_batches_tracked
    assert many.weights == one.weights == (g.param_count + 2 * 32 + 2 * 64) * 8 + 2 * 8
    train = limits.estimate(g, 32, train=True, backward=True, step=True)
    assert train.gradients == train.momentum == g.param_count * 8  # momentum 0.9
    assert train.total > limits.estimate(g, 32, train=True, backward=True).total > many.total
    assert limits.estimate(g, 32, dtype="float32").total < many.total


def test_specs_in_the_repository_fit_the_defaults_with_room_to_train():
    for path in sorted(SPECS.glob("*.yaml")):
        g = cnnspec.load_spec(path).graph
        assert limits.largest_batch(g, limits.DEFAULT_MAX_MEMORY, train=True, backward=True, step=True) >= 64, path


def test_the_spec_check_uses_the_same_numbers_as_the_estimate():
    spec = cnnspec.load_spec(LECTURE_CNN)
    need = limits.estimate(spec.graph, 1, objects=False).total
    assert limits.spec_problem(spec.graph, need) is None
    assert limits.spec_problem(spec.graph, need - 1) is not None


def test_summary_shows_the_estimate(capsys):
    code, out, _ = cli(capsys, "summary", LECTURE_CNN, "--max-memory", "2GiB")
    assert code == 0
    assert "Working memory, batch of 1 (estimate): inference 19.26 MiB, training 54.52 MiB" in out
    assert "Largest batch within the 2.00 GiB memory limit: inference 159, training 91" in out
    code, out, _ = cli(capsys, "summary", "--json", LECTURE_CNN)
    m = json.loads(out)["totals"]["memory"]
    assert m["limit"] == 4 * 2**30 and m["max_params"] == 2**29
    assert m["largest_training_batch"] > 91
    for key in ("inference_batch_1", "training_batch_1"):
        assert m[key] > 0


def test_a_step_keeps_dicts_the_caller_holds():
    model = cnnspec.compile(SPECS / "lecture_linear.yaml")
    before = model.params
    model.train_step(np.array([[0.6, 0.8]]), np.array([[3.0]]))
    np.testing.assert_allclose(before["fc.weight"], [[0.5, 0.1]])
    np.testing.assert_allclose(model.params["fc.weight"], [[0.53144, 0.14192]])


# ---------------------------------------------------------------- the estimate is an upper bound of the real peak


def _measure(spec, batch: int, task: str, dtype: str) -> tuple[int, int]:
    """(traced peak bytes of compile + task, the estimate for it)."""
    rng = np.random.default_rng(0)
    probe = cnnspec.compile(spec, dtype=dtype)
    x = rng.standard_normal((batch, *spec.input.shape)).astype(dtype)
    classes = probe.shapes[probe.output_name][0]
    y = rng.integers(0, classes, batch)
    del probe
    gc.collect()
    tracemalloc.start()
    try:
        model = cnnspec.compile(spec, dtype=dtype)
        if task == "forward":
            model.forward(x)
            est = model.memory_estimate(batch)
        elif task == "backward":
            model.loss(model.forward(x, train=True), y)
            model.backward()
            est = model.memory_estimate(batch, train=True, backward=True)
        else:
            for _ in range(2):
                model.train_step(x, y)
            est = model.memory_estimate(batch, train=True, backward=True, step=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, est.total


@pytest.mark.parametrize("name,batch,task,dtype", [
    ("lecture_cnn", 4, "backward", "float64"), ("lecture_cnn", 2, "train", "float32"),
    ("lecture_cnn", 8, "forward", "float64"), ("bench_cnn", 8, "train", "float64"),
    ("lenet5", 16, "forward", "float32"), ("resnet_basic_block", 4, "train", "float64"),
    ("inception_branches", 4, "backward", "float64"), ("vgg_blocks", 2, "train", "float32"),
])
def test_the_estimate_bounds_the_measured_peak(name, batch, task, dtype):
    spec = cnnspec.load_spec(SPECS / f"{name}.yaml")
    measured, estimated = _measure(spec, batch, task, dtype)
    assert measured <= estimated <= 4 * measured, (measured, estimated)
