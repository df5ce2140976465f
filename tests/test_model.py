"""The engine's public API: the lecture's numbers, weights, save/load, layouts, dtypes, dropout, errors."""
from pathlib import Path

import numpy as np
import pytest

import cnnspec
from cnnspec.errors import DataError, SpecError

SPECS = Path(__file__).resolve().parent.parent / "specs"


# ---------------------------------------------------------------- the lecture's worked numbers
@pytest.mark.parametrize("x, y_hat, loss", [((0.6, 0.8), 0.38, 6.8644), ((0.7, 0.8), 0.43, 6.6049)])
def test_lecture_forward_pass_and_squared_error(x, y_hat, loss):
    model = cnnspec.compile(SPECS / "lecture_linear.yaml")
    out = model.forward(np.array([x]))
    assert out.shape == (1, 1)
    assert out[0, 0] == pytest.approx(y_hat, abs=1e-15)
    assert model.loss(out, np.array([[3.0]])) == pytest.approx(loss, abs=1e-12)


def test_lecture_gradient_and_sgd_update():
    model = cnnspec.compile(SPECS / "lecture_linear.yaml")
    model.loss(model.forward(np.array([[0.6, 0.8]])), np.array([[3.0]]))
    grads = model.backward()
    # dL/dw = 2 (y_hat - y) x = 2 * (0.38 - 3) * (0.6, 0.8)
    np.testing.assert_allclose(grads["fc.weight"], [[-3.144, -4.192]], rtol=1e-14)
    model.step()  # lr 0.01
    np.testing.assert_allclose(model.params["fc.weight"], [[0.5 + 0.03144, 0.1 + 0.04192]], rtol=1e-14)


@pytest.mark.parametrize("lr, expected", [(1.0, 0.2), (0.01, 0.497)])
def test_lecture_update_rule_with_the_notes_gradient(lr, expected):
    """The notes illustrate w_new = w_old - lr * grad with grad 0.3: 0.2 (lr 1) and 0.497 (lr 0.01)."""
    model = cnnspec.compile(SPECS / "lecture_linear.yaml")
    model.spec.optimizer.lr = lr
    model.step({"fc.weight": np.array([[0.3, 0.0]])})
    assert model.params["fc.weight"][0, 0] == pytest.approx(expected, abs=1e-15)
    assert model.params["fc.weight"][0, 1] == pytest.approx(0.1, abs=1e-15)


def test_lecture_conv_shapes_through_the_engine():
    model = cnnspec.compile(SPECS / "lecture_conv1.yaml")
    out = model.forward(np.random.default_rng(0).standard_normal((2, 100, 100, 3)))
    assert out.shape == (2, 98, 98, 6)                       # not 97 x 97 x 6 as in the notes
    assert model.params["conv1.weight"].shape == (6, 3, 3, 3)
    model = cnnspec.compile(SPECS / "lecture_conv2.yaml")
    assert model.shapes["conv1"] == (14, 14, 64)
    assert model.params["conv1.weight"].shape[1:] == (32, 3, 3)   # each kernel is 3x3x32


# ---------------------------------------------------------------- layouts and dtypes
def _spec(layout, shape, dtype="float64", extra=""):
    return cnnspec.loads_spec(f"""
cnnspec: 1
name: t
input: {{shape: {shape}, layout: {layout}, dtype: {dtype}}}
layers:
  - {{name: conv, type: conv2d, filters: 4, kernel: 3, padding: 1}}
  - {{name: bn, type: batchnorm}}
  - {{name: pool, type: maxpool, kernel: 2}}
  - {{name: flat, type: flatten}}
  - {{name: fc, type: dense, units: 3}}
loss: {{type: cross_entropy}}
{extra}""")


def test_hwc_and_chw_compute_the_same_thing():
    chw = cnnspec.compile(_spec("CHW", [2, 6, 6]))
    hwc = cnnspec.compile(_spec("HWC", [6, 6, 2]))
    hwc.set_weights(chw.state_dict())
    x = np.random.default_rng(1).standard_normal((3, 2, 6, 6))
    a = chw.forward(x, train=True)
    b = hwc.forward(x.transpose(0, 2, 3, 1), train=True)
    np.testing.assert_allclose(a, b, rtol=1e-13)
    np.testing.assert_allclose(chw.activations["conv"], hwc.activations["conv"].transpose(0, 3, 1, 2), rtol=1e-13)
    assert hwc.shapes["pool"] == (3, 3, 4) and chw.shapes["pool"] == (4, 3, 3)
    chw.loss(a, np.array([0, 1, 2]))
    hwc.loss(b, np.array([0, 1, 2]))
    chw.backward()
    hwc.backward()
    np.testing.assert_allclose(chw.input_grad, hwc.input_grad.transpose(0, 3, 1, 2), rtol=1e-12)


def test_float32_model_stays_float32_and_agrees_with_float64():
    m64 = cnnspec.compile(_spec("CHW", [2, 6, 6]))
    m32 = cnnspec.compile(_spec("CHW", [2, 6, 6], dtype="float32"))
    m32.set_weights(m64.state_dict())
    x = np.random.default_rng(2).standard_normal((2, 2, 6, 6))
    out32 = m32.forward(x)
    assert out32.dtype == np.float32 and m32.params["conv.weight"].dtype == np.float32
    np.testing.assert_allclose(out32, m64.forward(x), rtol=1e-5, atol=1e-6)
    m32.loss(out32, np.array([0, 2]))
    assert all(g.dtype == np.float32 for g in m32.backward().values())


def test_init_is_deterministic_and_seeded():
    a = cnnspec.compile(_spec("CHW", [2, 6, 6])).params["conv.weight"]
    b = cnnspec.compile(_spec("CHW", [2, 6, 6])).params["conv.weight"]
    c = cnnspec.compile(_spec("CHW", [2, 6, 6], extra="init: {seed: 1}")).params["conv.weight"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    bound = 1 / np.sqrt(2 * 3 * 3)   # torch_default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert np.abs(a).max() <= bound


@pytest.mark.parametrize("scheme, check", [
    ("zeros", lambda w, fan_in, fan_out: np.all(w == 0)),
    ("he_uniform", lambda w, fan_in, fan_out: np.abs(w).max() <= np.sqrt(6 / fan_in)),
    ("xavier_uniform", lambda w, fan_in, fan_out: np.abs(w).max() <= np.sqrt(6 / (fan_in + fan_out))),
    ("he_normal", lambda w, fan_in, fan_out: abs(w.std() / np.sqrt(2 / fan_in) - 1) < 0.1),
    ("xavier_normal", lambda w, fan_in, fan_out: abs(w.std() / np.sqrt(2 / (fan_in + fan_out)) - 1) < 0.1),
])
def test_init_schemes(scheme, check):
    spec = cnnspec.loads_spec(f"""
cnnspec: 1
name: t
input: {{shape: [400]}}
layers: [{{name: fc, type: dense, units: 300}}]
init: {{scheme: {scheme}}}
""")
    model = cnnspec.compile(spec)
    assert check(model.params["fc.weight"], 400, 300)


# ---------------------------------------------------------------- dropout and batch norm state
def test_dropout_is_seeded_inverted_and_off_in_eval():
    spec = """
cnnspec: 1
name: t
input: {shape: [1000]}
layers: [{name: drop, type: dropout, rate: 0.25}]
"""
    x = np.ones((4, 1000))
    a = cnnspec.compile(cnnspec.loads_spec(spec)).forward(x, train=True)
    b = cnnspec.compile(cnnspec.loads_spec(spec)).forward(x, train=True)
    np.testing.assert_array_equal(a, b)                       # same seed, same mask
    assert set(np.unique(a)) == {0.0, 1 / 0.75}               # kept values scaled by 1/(1-p)
    assert abs((a == 0).mean() - 0.25) < 0.03
    np.testing.assert_array_equal(cnnspec.compile(cnnspec.loads_spec(spec)).forward(x), x)


def test_batchnorm_running_statistics_follow_pytorch():
    model = cnnspec.compile(_spec("CHW", [2, 6, 6]))
    x = np.random.default_rng(3).standard_normal((5, 2, 6, 6)) * 3 + 1
    model.forward(x, train=True)
    conv = model.activations["conv"]
    mean, var = conv.mean(axis=(0, 2, 3)), conv.var(axis=(0, 2, 3), ddof=1)   # unbiased for running_var
    np.testing.assert_allclose(model.buffers["bn.running_mean"], 0.1 * mean, rtol=1e-12)
    np.testing.assert_allclose(model.buffers["bn.running_var"], 0.9 + 0.1 * var, rtol=1e-12)
    assert int(model.buffers["bn.num_batches_tracked"]) == 1
    before = {k: v.copy() for k, v in model.buffers.items()}
    model.forward(x, train=False)
    for k, v in model.buffers.items():
        np.testing.assert_array_equal(v, before[k])           # eval mode leaves buffers alone


# ---------------------------------------------------------------- weights, save and load
def test_save_load_round_trip_with_state_dict_names(tmp_path):
    model = cnnspec.compile(SPECS / "resnet_basic_block.yaml")
    x = np.random.default_rng(4).standard_normal((2, 64, 8, 8))
    model.forward(x, train=True)
    model.save(tmp_path / "w.npz")
    keys = set(np.load(tmp_path / "w.npz").files)
    assert {"conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
            "bn1.num_batches_tracked", "fc.weight", "fc.bias"} <= keys
    other = cnnspec.compile(SPECS / "resnet_basic_block.yaml")
    other.spec.init.seed = 99
    other.load(tmp_path / "w.npz")
    np.testing.assert_array_equal(other.forward(x), model.forward(x))


def test_load_mismatch_names_key_and_both_shapes(tmp_path):
    model = cnnspec.compile(SPECS / "lenet5.yaml")
    state = model.state_dict()
    state["c1.weight"] = np.zeros((6, 1, 3, 3))
    np.savez(tmp_path / "w.npz", **state)
    with pytest.raises(DataError, match=r"'c1.weight' has shape \(6, 1, 3, 3\), the model expects \(6, 1, 5, 5\)"):
        model.load(tmp_path / "w.npz")
    np.savez(tmp_path / "w2.npz", **{"c1.wieght": np.zeros((6, 1, 5, 5))})
    with pytest.raises(DataError, match="unknown parameter 'c1.wieght'; did you mean 'c1.weight'"):
        model.load(tmp_path / "w2.npz")
    np.savez(tmp_path / "w3.npz", **{"c1.weight": np.zeros((6, 1, 5, 5))})
    with pytest.raises(DataError, match="missing"):
        model.load(tmp_path / "w3.npz")                       # a checkpoint must be complete
    state = model.state_dict()
    del state["c1.bias"]
    np.savez(tmp_path / "w4.npz", **state)
    with pytest.raises(DataError, match="missing c1.bias"):
        model.load(tmp_path / "w4.npz")
    bn = cnnspec.compile(SPECS / "resnet_basic_block.yaml")
    state = bn.state_dict()
    del state["bn1.running_var"], state["bn1.num_batches_tracked"]
    np.savez(tmp_path / "w5.npz", **state)
    with pytest.raises(DataError, match=r"missing bn1\.running_var$"):   # statistics are part of a checkpoint,
        bn.load(tmp_path / "w5.npz")                                    # num_batches_tracked may be absent
    state = model.state_dict()
    state["f6.bias"] = np.where(np.arange(84) == 7, np.inf, 0.0)
    np.savez(tmp_path / "w6.npz", **state)
    with pytest.raises(DataError, match=r"\['f6.bias'\]: contains inf at index \(7,\)"):
        model.load(tmp_path / "w6.npz")
    with pytest.raises(DataError, match=r"weights: 'f6.bias': contains inf at index \(7,\)"):
        model.set_weights({"f6.bias": state["f6.bias"]})
    with pytest.raises(DataError, match=r"weights: 'f6.bias': expected numbers, got an array of dtype <U1"):
        model.set_weights({"f6.bias": np.array(["a"] * 84)})
    model.load(tmp_path / "w3.npz", strict=False)              # unless asked otherwise
    assert not model.params["c1.weight"].any()


def test_spec_weights_inline_npy_and_npz(tmp_path):
    np.save(tmp_path / "w.npy", np.array([[0.5, 0.1]]))
    np.savez(tmp_path / "all.npz", **{"fc.weight": np.array([[0.25, 0.75]])})
    base = "cnnspec: 1\nname: t\ninput: {shape: [2]}\nlayers: [{name: fc, type: dense, units: 1, bias: false}]\n"
    (tmp_path / "a.yaml").write_text(base + "weights: {fc.weight: w.npy}\n")
    (tmp_path / "b.yaml").write_text(base + "weights: all.npz\n")
    x = np.array([[0.6, 0.8]])
    assert cnnspec.compile(tmp_path / "a.yaml").forward(x)[0, 0] == pytest.approx(0.38)
    assert cnnspec.compile(tmp_path / "b.yaml").forward(x)[0, 0] == pytest.approx(0.75)


@pytest.mark.parametrize("weights, message", [
    ("{fc.weight: [0.5, 0.1]}", r"'fc.weight' has shape .2,?.,? the model expects .1, 2."),
    ("{fc.weight: [[0.5], [0.1, 0.2]]}", "same shape"),
    ("{fc.weight: [[0.5, .nan]]}", "not a finite number"),
    ("{fc.wieght: [[0.5, 0.1]]}", "did you mean 'fc.weight'"),
    ("{fc.weight: missing.npy}", "not found"),
])
def test_spec_weights_errors_point_at_the_line(weights, message):
    text = ("cnnspec: 1\nname: t\ninput: {shape: [2]}\n"
            "layers: [{name: fc, type: dense, units: 1, bias: false}]\n"
            f"weights: {weights}\n")
    with pytest.raises(SpecError, match=message) as info:
        cnnspec.compile(cnnspec.loads_spec(text, "w.yaml"))
    assert "w.yaml:5:" in str(info.value)


# ---------------------------------------------------------------- bad calls
def test_forward_rejects_wrong_input_shapes_with_the_expected_one():
    model = cnnspec.compile(SPECS / "lecture_conv1.yaml")
    with pytest.raises(DataError, match=r"expects \(N, 100, 100, 3\) in HWC layout"):
        model.forward(np.zeros((1, 3, 100, 100)))
    with pytest.raises(DataError, match="add a batch dimension"):
        model.forward(np.zeros((100, 100, 3)))
    with pytest.raises(DataError, match="must be numbers"):
        model.forward(np.array([["a"]]))


def test_huge_batch_is_refused_before_allocating():
    model = cnnspec.compile(SPECS / "lecture_cnn.yaml")
    x = np.lib.stride_tricks.as_strided(np.zeros(1), (100000, 100, 100, 3), (0, 0, 0, 0))
    with pytest.raises(DataError, match="GiB of activations"):
        model.forward(x)


def test_backward_and_step_need_their_predecessors():
    model = cnnspec.compile(SPECS / "lecture_linear.yaml")
    with pytest.raises(DataError, match="forward"):
        model.backward()
    with pytest.raises(DataError, match="backward"):
        model.step()
    model.forward(np.array([[1.0, 1.0]]))
    with pytest.raises(DataError, match="loss"):
        model.backward()


def test_loss_without_a_loss_in_the_spec():
    model = cnnspec.compile(SPECS / "lecture_conv1.yaml")
    with pytest.raises(DataError, match="no `loss:`"):
        model.loss(np.zeros((1, 98, 98, 6)), np.zeros((1, 98, 98, 6)))


# ---------------------------------------------------------------- gradcheck, and that it can fail
@pytest.mark.parametrize("name", ["lenet5", "resnet_basic_block", "inception_branches", "lecture_linear"])
def test_gradcheck_passes_on_example_specs(name):
    result = cnnspec.gradcheck(SPECS / f"{name}.yaml", max_elements=8)
    assert result.ok, result.to_dict()


def test_gradcheck_catches_a_wrong_gradient(monkeypatch):
    from cnnspec.ops import OPS
    conv = OPS["conv2d"]
    original = conv.backward

    def wrong(attrs, dout, cache):
        dxs, dparams = original(attrs, dout, cache)
        return dxs, {**dparams, "weight": dparams["weight"] * 1.001}

    monkeypatch.setattr(conv, "backward", wrong) if not hasattr(type(conv), "__dataclass_fields__") else \
        monkeypatch.setitem(OPS, "conv2d", type(conv)(conv.name, conv.forward, wrong, conv.n_inputs))
    result = cnnspec.gradcheck(SPECS / "lenet5.yaml", max_elements=4)
    failed = {r.name for r in result.rows if not r.ok}
    assert failed == {"c1.weight", "c3.weight"}
