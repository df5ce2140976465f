"""Losses and optimizers: the lecture's hand-computed numbers, central-difference gradients, PyTorch's numbers
(tests/fixtures/torch_golden.npz) and the error messages."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cnnspec.losses import LOSSES
from cnnspec.ops import OPS
from cnnspec.ops.gradcheck_util import numeric_grad, rel_error
from cnnspec.optim import sgd_step

GOLDEN = np.load(Path(__file__).parent / "fixtures" / "torch_golden.npz")


def _names(prefix):
    return sorted({k.split("/")[1] for k in GOLDEN.files if k.startswith(prefix + "/")})


# ------------------------------------------------------------------ the lecture's numbers


def test_lecture_prediction_and_mse():
    # One neuron, no bias: 0.5*0.6 + 0.1*0.8 = 0.38; squared error to the target 3.
    x, w = np.array([[0.6, 0.8]]), np.array([[0.5, 0.1]])
    pred = OPS["dense"].forward({}, [x], {"weight": w}, {}, True, None)[0]
    assert pred[0, 0] == pytest.approx(0.38, abs=1e-15)
    loss, dpred = LOSSES["mse"](pred, np.array([[3.0]]), "mean")
    assert loss == pytest.approx(6.8644, abs=1e-12)
    assert dpred[0, 0] == pytest.approx(2 * (0.38 - 3), abs=1e-12)
    # A second sample (0.5*0.7 + 0.1*0.8 = 0.43): (0.43 - 3)^2 = 6.6049.
    pred = OPS["dense"].forward({}, [np.array([[0.7, 0.8]])], {"weight": w}, {}, True, None)[0]
    assert pred[0, 0] == pytest.approx(0.43, abs=1e-15)
    assert LOSSES["mse"](pred, np.array([[3.0]]), "sum")[0] == pytest.approx(6.6049, abs=1e-12)


@pytest.mark.parametrize("lr, expected", [(1.0, 0.2), (0.01, 0.497)])
def test_lecture_sgd_step(lr, expected):
    params, velocity = sgd_step({"w": np.array(0.5)}, {"w": np.array(0.3)}, {}, lr=lr)
    assert float(params["w"]) == pytest.approx(expected, abs=1e-15)
    assert velocity == {}


# ------------------------------------------------------------------ gradients by central differences

LOSS_CASES = {
    "cross_entropy_index": ("cross_entropy", (4, 5), lambda r: r.integers(0, 5, 4)),
    "cross_entropy_prob": ("cross_entropy", (4, 5), lambda r: r.dirichlet(np.ones(5), 4)),
    "cross_entropy_prob_unnormalised": ("cross_entropy", (3, 4), lambda r: r.random((3, 4))),
    "mse": ("mse", (2, 3, 2), lambda r: r.standard_normal((2, 3, 2))),
    "bce_with_logits": ("bce_with_logits", (4, 3), lambda r: r.random((4, 3))),
    "multi_margin": ("multi_margin", (5, 4), lambda r: r.integers(0, 4, 5)),  # hinge: no margin within 1e-6 of 0
}


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", sorted(LOSS_CASES))
def test_loss_gradients(name, reduction):
    loss, shape, make_target = LOSS_CASES[name]
    rng = np.random.default_rng(3)
    pred = rng.standard_normal(shape) * 2
    target = make_target(rng)
    value, dpred = LOSSES[loss](pred, target, reduction)
    assert isinstance(value, float) and dpred.shape == pred.shape
    numeric = numeric_grad(lambda: LOSSES[loss](pred, target, reduction)[0], pred)
    assert rel_error(numeric, dpred) < 1e-7


def test_mean_is_sum_over_batch_for_cross_entropy_and_over_elements_otherwise():
    rng = np.random.default_rng(0)
    pred = rng.standard_normal((4, 3))
    for loss, target, divisor in (("cross_entropy", np.array([0, 2, 1, 1]), 4), ("mse", pred * 0.5, 12),
                                  ("bce_with_logits", rng.random((4, 3)), 12)):
        total, dsum = LOSSES[loss](pred, target, "sum")
        mean, dmean = LOSSES[loss](pred, target, "mean")
        assert mean == pytest.approx(total / divisor, rel=1e-14)
        np.testing.assert_allclose(dmean, dsum / divisor, rtol=1e-14)


def test_stable_for_extreme_logits():
    pred = np.array([[1000.0, -1000.0, 0.0]])
    loss, dpred = LOSSES["cross_entropy"](pred, np.array([1]), "mean")
    assert loss == pytest.approx(2000.0) and np.isfinite(dpred).all()
    loss, dpred = LOSSES["bce_with_logits"](pred, np.array([[0.0, 1.0, 0.5]]), "sum")
    assert loss == pytest.approx(2000.0 + np.log(2.0)) and np.isfinite(dpred).all()


def test_float32_in_float32_out():
    pred = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    targets = {"cross_entropy": np.array([0, 3, 1]), "mse": pred * 2, "bce_with_logits": np.full((3, 4), 0.5, np.float32)}
    for loss, target in targets.items():
        assert LOSSES[loss](pred, target, "mean")[1].dtype == np.float32


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("loss, pred, target, match", [
    ("cross_entropy", np.zeros((3, 4)), np.array([0, 4, 1]), r"class index 4 \(row 1\) is out of range; valid: 0..3"),
    ("cross_entropy", np.zeros((3, 4)), np.array([0, -100, 1]), "class index -100"),
    ("cross_entropy", np.zeros((3, 4)), np.array([0.0, 1.0, 2.0]), r"\(3,\) integer class indices .* dtype float64"),
    ("cross_entropy", np.zeros((3, 4)), np.array([0, 1]), r"got shape \(2,\)"),
    ("cross_entropy", np.zeros((3, 4)), np.zeros((3, 5)), r"\(3, 4\) float class probabilities"),
    ("cross_entropy", np.zeros((3, 4)), np.zeros((3, 4), dtype=np.int64), "dtype int64"),
    ("cross_entropy", np.zeros(4), np.array([0]), r"must be \(N, K\) logits, got shape \(4,\)"),
    ("cross_entropy", np.zeros((3, 4), dtype=np.int64), np.array([0, 1, 2]), "prediction must be a float array"),
    ("mse", np.zeros((3, 1)), np.zeros(3), r"target shape \(3,\) must equal prediction shape \(3, 1\)"),
    ("mse", np.zeros(3), np.array([1, 2, 3]), "target must be a float array, got dtype int64"),
    ("bce_with_logits", np.zeros((2, 2)), np.zeros((2, 3)), "must equal prediction shape"),
])
def test_loss_errors(loss, pred, target, match):
    with pytest.raises(ValueError, match=match):
        LOSSES[loss](pred, target, "mean")


def test_bad_reduction():
    with pytest.raises(ValueError, match=r"reduction must be one of \('mean', 'sum'\), got 'none'"):
        LOSSES["mse"](np.zeros(2), np.zeros(2), "none")


# ------------------------------------------------------------------ SGD


def test_sgd_leaves_inputs_alone_and_skips_params_without_grads():
    params = {"a": np.array([1.0, 2.0]), "b": np.array([3.0])}
    grads = {"a": np.array([0.5, 0.5])}
    velocity = {"a": np.array([1.0, 1.0])}
    new_params, new_velocity = sgd_step(params, grads, velocity, lr=0.1, momentum=0.9)
    assert params["a"].tolist() == [1.0, 2.0] and velocity["a"].tolist() == [1.0, 1.0]
    np.testing.assert_allclose(new_velocity["a"], [1.4, 1.4])
    np.testing.assert_allclose(new_params["a"], [0.86, 1.86])
    assert new_params["b"] is params["b"] and "b" not in new_velocity


def test_sgd_first_momentum_step_uses_the_gradient_undampened():
    _, velocity = sgd_step({"w": np.zeros(2)}, {"w": np.array([1.0, -2.0])}, {}, lr=0.1, momentum=0.9, dampening=0.5)
    np.testing.assert_array_equal(velocity["w"], [1.0, -2.0])


@pytest.mark.parametrize("kwargs, match", [
    ({"lr": 0.1, "nesterov": True}, "nesterov needs momentum > 0"),
    ({"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True}, "dampening 0"),
    ({"lr": -1.0}, "lr=-1.0"),
])
def test_sgd_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sgd_step({"w": np.zeros(2)}, {"w": np.zeros(2)}, {}, **kwargs)


def test_sgd_shape_mismatch():
    with pytest.raises(ValueError, match=r"gradient of 'w' has shape \(3,\), parameter has \(2,\)"):
        sgd_step({"w": np.zeros(2)}, {"w": np.zeros(3)}, {}, lr=0.1)


# ------------------------------------------------------------------ PyTorch's numbers


@pytest.mark.parametrize("name", _names("loss"))
def test_loss_matches_torch(name):
    key = f"loss/{name}/"
    meta = json.loads(str(GOLDEN[key + "meta"]))
    loss, dpred = LOSSES[meta["loss"]](GOLDEN[key + "pred"], GOLDEN[key + "target"], meta["reduction"])
    assert loss == pytest.approx(float(GOLDEN[key + "loss"]), rel=1e-12)
    np.testing.assert_allclose(dpred, GOLDEN[key + "dpred"], rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("name", _names("sgd"))
def test_sgd_matches_torch_over_three_steps(name):
    key = f"sgd/{name}/"
    hp = json.loads(str(GOLDEN[key + "meta"]))
    params = {k: GOLDEN[key + f"param.{k}"] for k in ("a", "b")}
    velocity = {}
    for step in range(3):
        grads = {k: GOLDEN[key + f"grad{step}.{k}"] for k in params}
        params, velocity = sgd_step(params, grads, velocity, **hp)
        for k in params:
            np.testing.assert_allclose(params[k], GOLDEN[key + f"after{step}.{k}"], rtol=1e-10, atol=1e-15,
                                       err_msg=f"{k} after step {step}")


def test_golden_file_covers_every_loss_and_sgd_option():
    losses = {json.loads(str(GOLDEN[f"loss/{n}/meta"]))["loss"] for n in _names("loss")}
    assert losses == set(LOSSES)
    options = set().union(*(json.loads(str(GOLDEN[f"sgd/{n}/meta"])) for n in _names("sgd")))
    assert options == {"lr", "momentum", "dampening", "nesterov", "weight_decay"}


# ------------------------------------------------------------------ Adam, AdamW, RMSprop, multipliers, schedules


def _optimizer(**fields):
    from cnnspec.schema import OPTIMIZER_CLASSES
    kind = fields.pop("type", "sgd")
    return OPTIMIZER_CLASSES[kind](type=kind, **fields) if kind != "sgd" else OPTIMIZER_CLASSES[kind](**fields)


def _run_update(opt, params, grads_per_step):
    from cnnspec.optim import update
    state, history = {}, []
    for grads in grads_per_step:
        for k in params:
            params[k], new = update(opt, k, params[k], grads[k], state, opt.lr, opt.weight_decay)
            state.update(new)
        history.append(dict(params))
    return history, state


@pytest.mark.parametrize("name", _names("optim"))
def test_optimizer_matches_torch_over_three_steps(name):
    key = f"optim/{name}/"
    opt = _optimizer(**json.loads(str(GOLDEN[key + "meta"])))
    params = {k: GOLDEN[key + f"param.{k}"] for k in ("a", "b")}
    grads = [{k: GOLDEN[key + f"grad{step}.{k}"] for k in params} for step in range(3)]
    history, state = _run_update(opt, params, grads)
    for step, after in enumerate(history):
        for k, v in after.items():
            np.testing.assert_allclose(v, GOLDEN[key + f"after{step}.{k}"], rtol=1e-12, atol=1e-15,
                                       err_msg=f"{k} after step {step}")
    assert int(state["a.step"]) == 3


def test_golden_file_covers_every_optimizer_option():
    seen = {}
    for n in _names("optim"):
        meta = json.loads(str(GOLDEN[f"optim/{n}/meta"]))
        seen.setdefault(meta.pop("type"), set()).update(meta)
    assert seen == {"adam": {"lr", "betas", "eps", "weight_decay", "amsgrad"},
                    "adamw": {"lr", "betas", "weight_decay", "amsgrad"},
                    "rmsprop": {"lr", "alpha", "eps", "momentum", "centered", "weight_decay"}}


def test_adam_first_step_by_hand():
    """CS231n's check: after one step every weight moves by lr * sign(g) (m_hat / sqrt(v_hat) = g / |g|)."""
    opt = _optimizer(type="adam", lr=0.01, eps=0.0)
    (after,), _ = _run_update(opt, {"w": np.array([1.0, -2.0, 3.0])}, [{"w": np.array([0.5, -4.0, 1e-3])}])
    np.testing.assert_allclose(after["w"], [0.99, -1.99, 2.99], rtol=1e-13)


def test_adamw_decays_the_weight_not_the_gradient():
    opt = _optimizer(type="adamw", lr=0.1, weight_decay=0.5, eps=0.0)
    (after,), state = _run_update(opt, {"w": np.array([2.0])}, [{"w": np.array([1.0])}])
    assert after["w"][0] == pytest.approx(2.0 * (1 - 0.05) - 0.1)
    np.testing.assert_allclose(state["w.exp_avg"], [0.1])  # the decay never enters the moments


def test_multipliers_first_matching_key_wins():
    from cnnspec.optim import multipliers
    opt = _optimizer(lr_mult={"conv1.bias": 3, "*.bias": 2}, decay_mult={"*.bias": 0, "fc?.weight": 0.5})
    assert multipliers(opt, "conv1.bias") == (3.0, 0.0)
    assert multipliers(opt, "fc.bias") == (2.0, 0.0)
    assert multipliers(opt, "fc1.weight") == (1.0, 0.5)
    assert multipliers(opt, "conv1.weight") == (1.0, 1.0)


@pytest.mark.parametrize("name", _names("schedule"))
def test_schedules_match_torch(name):
    """lr_mult scales a parameter group's base rate; eta_min stays absolute, as in PyTorch's param groups."""
    from cnnspec.optim import scheduled_lr
    schedule = json.loads(str(GOLDEN[f"schedule/{name}/meta"]))
    lrs = GOLDEN[f"schedule/{name}/lrs"]
    for per in ("epoch", "step"):
        opt = _optimizer(lr=0.1, schedule={**schedule, "per": per})
        for t, (group1, group3) in enumerate(lrs):
            when = {"epoch": t} if per == "epoch" else {"steps": t}
            assert scheduled_lr(opt, **when) == pytest.approx(group1, rel=1e-12, abs=1e-17)
            assert scheduled_lr(opt, **when, base=0.3) == pytest.approx(group3, rel=1e-12, abs=1e-17)
    opt = _optimizer(lr=0.1, schedule={**schedule, "per": "epoch"})
    assert scheduled_lr(opt, epoch=0, steps=100) == 0.1  # an epoch schedule ignores the steps


def test_model_step_uses_the_spec_optimizer_multipliers_and_schedule():
    import cnnspec
    spec = cnnspec.loads_spec(
        "cnnspec: 1\nname: t\ninput: {shape: [2]}\nlayers:\n  - {name: fc, type: dense, units: 1}\n"
        "weights: {fc.weight: [[0.5, 0.1]], fc.bias: [0.0]}\nloss: {type: mse}\n"
        "optimizer: {type: sgd, lr: 0.1, weight_decay: 0.5, lr_mult: {fc.bias: 2}, decay_mult: {'*.bias': 0},\n"
        "            schedule: {type: step, step_size: 1, gamma: 0.5, per: step}}\n")
    model = cnnspec.compile(spec)
    x, y = np.array([[1.0, 2.0]]), np.array([[1.0]])
    model.train_step(x, y)  # pred 0.7, dL/dpred = -0.6: dw = [-0.6, -1.2], db = -0.6
    np.testing.assert_allclose(model.params["fc.weight"], [[0.5 - 0.1 * (-0.6 + 0.25), 0.1 - 0.1 * (-1.2 + 0.05)]])
    np.testing.assert_allclose(model.params["fc.bias"], [0.0 - 0.2 * -0.6])  # lr_mult 2, no decay
    before = model.params["fc.bias"].copy()
    model.loss(model.forward(x, train=True), y)
    g = model.backward()["fc.bias"]
    model.step()                              # the second step at lr 0.05 (per: step)
    np.testing.assert_allclose(model.params["fc.bias"], before - 2 * 0.05 * g)
    assert model.steps_taken == 2


def test_unknown_multiplier_key_is_a_spec_error():
    import cnnspec
    with pytest.raises(cnnspec.SpecError, match=r"optimizer.lr_mult: 'fc.bais' matches no parameter"):
        cnnspec.loads_spec("cnnspec: 1\nname: t\ninput: {shape: [2]}\nlayers:\n  - {name: fc, type: dense, units: 1}\n"
                           "optimizer: {lr_mult: {fc.bais: 2}}\n")


def test_multi_margin_by_hand():
    """CS231n's SVM example: scores [3.2, 5.1, -1.7] for class 0: max(0, 5.1 - 3.2 + 1) + max(0, -1.7 - 3.2 + 1)
    = 2.9, divided by 3 classes as PyTorch does."""
    from cnnspec.losses import multi_margin
    loss, d = multi_margin(np.array([[3.2, 5.1, -1.7]]), np.array([0]))
    assert loss == pytest.approx(2.9 / 3)
    np.testing.assert_allclose(d, [[-1 / 3, 1 / 3, 0.0]])
    with pytest.raises(ValueError, match="multi_margin: target must be"):
        multi_margin(np.zeros((2, 3)), np.zeros(2))
