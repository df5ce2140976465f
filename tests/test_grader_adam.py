"""An Adam step as a grader exercise (CS231n checks Adam updates against hard-coded values): the reference
answers of `param_after_steps` come from Model.step, so they follow the spec's optimizer. The lecture's neuron
(w = (0.5, 0.1), x = (0.6, 0.8), y = 3, MSE) with Adam at lr 0.01: the first step moves every weight by
lr * sign(-g), since m_hat / sqrt(v_hat) = g / |g|."""
from __future__ import annotations

import pytest
import yaml

import grader

ASSIGNMENT = """\
cnnspec_assignment: 1
name: adam-step
title: One Adam step
grading: {rtol: 1.0e-4, atol: 1.0e-7}
models:
  neuron:
    spec:
      cnnspec: 1
      name: neuron-adam
      input: {shape: [2]}
      layers:
        - {name: fc, type: dense, units: 1, bias: false}
      weights: {fc.weight: [[0.5, 0.1]]}
      loss: {type: mse}
      optimizer: {type: adam, lr: 0.01}
    input: x
    target: y
data:
  x: [[0.6, 0.8]]
  y: [[3.0]]
questions:
  - {id: grad_w1, kind: gradient, model: neuron, param: fc.weight, index: [0, 0], text: "dL/dw1?"}
  - {id: w1_adam, kind: param_after_steps, model: neuron, param: fc.weight, index: [0, 0], steps: 1,
     text: "w1 after one Adam step (lr 0.01, betas 0.9 and 0.999, eps 1e-8)?"}
  - {id: w_adam2, kind: param_after_steps, model: neuron, param: fc.weight, steps: 2,
     text: "w after two Adam steps?"}
"""
# Step 2 by hand: g2 = 2*(0.51*0.6 + 0.11*0.8 - 3)*x = -5.212*x; m = 0.9*0.1*g1 + 0.1*g2, v likewise; w -= ...
RIGHT = {"grad_w1": -3.144, "w1_adam": 0.51, "w_adam2": [[0.5199986, 0.1199986]]}


@pytest.fixture(scope="module")
def adam_grader(tmp_path_factory):
    path = tmp_path_factory.mktemp("adam") / "adam.yaml"
    path.write_text(ASSIGNMENT)
    return grader.Grader(grader.load_assignment(path))


def grade(adam_grader, tmp_path, answers):
    path = tmp_path / "answers.yaml"
    path.write_text(yaml.safe_dump({"student_id": "s1", **answers}))
    return adam_grader.grade_file(path)


def test_adam_answers_are_graded_against_adams_formulas(adam_grader, tmp_path):
    r = grade(adam_grader, tmp_path, RIGHT)
    assert r.error is None and r.passed, [(q.id, q.status, q.message) for q in r.questions]


def test_an_sgd_step_is_not_an_adam_step(adam_grader, tmp_path):
    r = grade(adam_grader, tmp_path, {**RIGHT, "w1_adam": 0.53144})  # 0.5 - 0.01 * (-3.144): SGD's
    q = {q.id: q for q in r.questions}
    assert r.error is None and q["w1_adam"].status == "failed" and q["grad_w1"].status == "passed"


def test_a_wrong_gradient_carried_into_an_adam_step(adam_grader, tmp_path):
    r = grade(adam_grader, tmp_path, {**RIGHT, "grad_w1": 3.144, "w1_adam": 0.49})  # right for their gradient
    q = {q.id: q for q in r.questions}
    assert r.error is None
    assert q["w1_adam"].outcome == "carried_forward"


def test_a_wrong_adam_step_is_diagnosed_without_sgd_formulas(adam_grader, tmp_path):
    """Uphill with the right gradient: Adam's own formula gives 0.49; SGD-only slips (lr x g) are not offered."""
    r = grade(adam_grader, tmp_path, {**RIGHT, "w1_adam": 0.49})
    q = {q.id: q for q in r.questions}
    assert r.error is None and not r.internal_error
    assert [d.code for d in q["w1_adam"].diagnoses] == ["wrong_sign"]
    assert "adam moves the weight against the gradient" in q["w1_adam"].diagnoses[0].message
