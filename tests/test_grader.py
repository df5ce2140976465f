"""Grading the real examples: the lecture's numbers, each classic mistake named, error carried forward."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import grader
from grader.reference import Reference
from grader.submission import Submission, parse_answer

ROOT = Path(__file__).resolve().parents[1]
LECTURE = ROOT / "specs" / "assignments" / "lecture.yaml"
BN = ROOT / "specs" / "assignments" / "bn_pool_ce.yaml"
DATA = ROOT / "tests" / "grader_data" / "lecture"


@pytest.fixture(scope="module")
def lecture():
    return grader.load_assignment(LECTURE)


@pytest.fixture(scope="module")
def lecture_grader(lecture):
    return grader.Grader(lecture)


@pytest.fixture(scope="module")
def bn():
    return grader.load_assignment(BN)


@pytest.fixture(scope="module")
def bn_grader(bn):
    return grader.Grader(bn)


def by_id(result):
    return {q.id: q for q in result.questions}


def submit(answers: dict, student: str | None = None) -> Submission:
    return Submission("<test>", student, {k: parse_answer(v, Path(".")) for k, v in answers.items()})


def codes(q):
    return [d.code for d in q.diagnoses]


# ---------------------------------------------------------------------------- the lecture's numbers


def test_lecture_reference_numbers(lecture):
    sol = Reference(lecture, lecture.variant()).solution()
    assert sol["conv1_shape"] == [98, 98, 6]          # the notes' 97x97x6 is a slip
    assert sol["conv1_kernel"] == [3, 3, 3]
    assert sol["conv1_weight"] == [6, 3, 3, 3]
    assert sol["conv1_params"] == 168
    assert sol["conv2_shape"] == [14, 14, 64]
    assert sol["conv2_kernel"] == [3, 3, 32]
    assert sol["conv2_params"] == 18496
    np.testing.assert_allclose(sol["relu_out"], [[16, 0, 0.5, 0]])
    assert float(np.squeeze(sol["y_hat"])) == pytest.approx(0.38)
    assert sol["loss"] == pytest.approx(6.8644)
    assert float(sol["grad_w1"]) == pytest.approx(2 * (0.38 - 3) * 0.6)   # -3.144
    np.testing.assert_allclose(sol["grad_w"], [[-3.144, -4.192]])
    assert float(sol["w1_new"]) == pytest.approx(0.5 - 0.01 * -3.144)     # 0.53144
    assert float(sol["w1_new_lr1"]) == pytest.approx(3.644)


def test_correct_submission_scores_full(lecture_grader):
    r = lecture_grader.grade_file(DATA / "correct.yaml")
    assert r.error is None and r.passed
    assert r.score == r.max_score == 15
    assert by_id(r)["loss"].status == "passed"  # 6.864 (the lecture's rounding of 6.8644) is within tolerance


def test_lecture_slips_97_and_made_up_gradient(lecture_grader):
    r = by_id(lecture_grader.grade_file(DATA / "lecture_slips.yaml"))
    q = r["conv1_shape"]
    assert q.score == 0 and codes(q) == ["no_plus_one"]
    assert "98 = floor((100 + 2*0 - 3)/1) + 1" in q.diagnoses[0].message
    assert "97" in q.diagnoses[0].message
    # 0.497 = 0.5 - 0.01*0.3 is right for the student's own (made-up) gradient: carried forward.
    w = r["w1_new"]
    assert w.outcome == "carried_forward" and w.score == pytest.approx(0.5)
    assert w.carried_forward.from_questions == ["grad_w1"]
    assert "grad_w1" in w.carried_forward.message and "50%" in w.carried_forward.message
    assert r["grad_w"].outcome == "partially_correct" and r["grad_w"].score == pytest.approx(0.5)


CLASSIC = {
    "conv1_shape": "layout_swapped", "conv1_kernel": "kernel_depth_forgotten", "conv1_weight": "tensorflow_order",
    "conv1_params": "bias_forgotten", "conv2_shape": "channels_from_input", "conv2_kernel": "depth_from_filters",
    "conv2_params": "bias_forgotten", "relu_out": "layer_not_applied", "loss": "half_mse", "grad_w1": "wrong_sign",
    "grad_w": "factor_two", "w1_new_lr1": "step_not_weight",
}


def test_each_classic_mistake_is_named(lecture_grader):
    r = by_id(lecture_grader.grade_file(DATA / "classic_mistakes.yaml"))
    for qid, code in CLASSIC.items():
        assert code in codes(r[qid]), (qid, codes(r[qid]), r[qid].message)
    assert r["y_hat"].status == "passed"
    assert "HWC" in r["conv1_shape"].diagnoses[0].message
    # 0.46856 = 0.5 - 0.01 * 3.144 is a correct step with the student's own (sign-flipped) gradient: carried
    # forward, and not also "the step went uphill" (which presumes the gradient was right).
    assert r["w1_new"].outcome == "carried_forward" and codes(r["w1_new"]) == []


def test_update_uphill_is_named_when_the_gradient_was_right(lecture_grader):
    r = by_id(lecture_grader.grade(submit({"grad_w1": -3.144, "w1_new": 0.46856})))
    assert codes(r["w1_new"]) == ["wrong_sign"] and r["w1_new"].carried_forward is None


def test_error_carried_forward_from_wrong_output(lecture_grader):
    r = lecture_grader.grade_file(DATA / "carried_forward.yaml")
    q = by_id(r)
    assert q["y_hat"].score == 0
    for qid in ("loss", "grad_w1", "grad_w"):
        assert q[qid].outcome == "carried_forward", (qid, q[qid].message)
        assert q[qid].carried_forward.from_questions == ["y_hat"]
        assert q[qid].score == pytest.approx(0.5)
    for qid in ("w1_new", "w1_new_lr1"):     # right for the student's (carried-forward) gradient -3.084
        assert q[qid].outcome == "carried_forward" and q[qid].carried_forward.from_questions == ["grad_w1"]
    assert r.score == pytest.approx(11.5)


def test_no_carry_forward_when_upstream_is_right(lecture_grader):
    r = by_id(lecture_grader.grade(submit({"y_hat": 0.38, "loss": 6.6049})))
    assert r["loss"].score == 0 and r["loss"].carried_forward is None


def test_carry_forward_credit_is_configurable(tmp_path):
    text = LECTURE.read_text().replace("carry_forward: 0.5", "carry_forward: 1.0")
    (tmp_path / "a.yaml").write_text(text)
    for name in ("lecture_conv1.yaml", "lecture_conv2.yaml", "lecture_linear.yaml", "lecture_sgd_lr1.yaml"):
        (tmp_path / name).write_text((ROOT / "specs" / name).read_text())
    text = text.replace("../lecture_", "lecture_")
    (tmp_path / "a.yaml").write_text(text)
    a = grader.load_assignment(tmp_path / "a.yaml")
    r = by_id(grader.grade(a, submit({"y_hat": 0.43, "loss": 6.6049})))
    assert r["loss"].score == 1.0 and r["loss"].status == "passed" and r["loss"].outcome == "carried_forward"


def test_tolerance_and_significant_figures(lecture_grader):
    r = by_id(lecture_grader.grade(submit({"loss": 6.864, "grad_w1": -3.14, "w1_new": 0.5})))
    assert r["loss"].status == "passed"
    assert r["grad_w1"].status == "failed"            # 3 significant figures: 0.13% off
    assert "too_few_digits" in codes(r["grad_w1"])
    assert "unchanged" in codes(r["w1_new"])


def test_rounding_diagnosis_two_figures(lecture_grader):
    r = by_id(lecture_grader.grade(submit({"loss": 6.9})))
    assert codes(r["loss"]) == ["too_few_digits"] and "2 significant figures" in r["loss"].diagnoses[0].message


# ---------------------------------------------------------------------------- shapes: padding, stride, +1

SHAPES = """
cnnspec_assignment: 1
name: shapes
model:
  spec:
    cnnspec: 1
    name: s
    input: {shape: [3, 32, 32]}
    layers:
      - {name: c1, type: conv2d, filters: 8, kernel: 5, stride: 2, padding: 2}
      - {name: p1, type: maxpool, kernel: 3, stride: 2, ceil_mode: false}
      - {name: c2, type: conv2d, filters: 4, kernel: 3, dilation: 2}
questions:
  - {id: c1, kind: output_shape, layer: c1}
  - {id: p1, kind: output_shape, layer: p1}
  - {id: c2, kind: output_shape, layer: c2}
  - {id: n, kind: param_count}
  - {id: nc1, kind: param_count, layer: c1}
"""


@pytest.fixture(scope="module")
def shapes_grader():
    return grader.Grader(grader.loads_assignment(SHAPES, "shapes.yaml"))


@pytest.mark.parametrize("answer,code", [
    ([8, 15, 15], "no_plus_one"),            # right: floor((32 + 4 - 5)/2) + 1 = 16
    ([8, 14, 14], "padding_ignored"),        # floor((32 - 5)/2) + 1 = 14
    ([8, 32, 32], "stride_ignored"),         # floor((32 + 4 - 5)/1) + 1 = 32
    ([8, 15, 15], "no_plus_one"),
    ([16, 16, 8], "layout_swapped"),
    ([3, 16, 16], "channels_from_input"),
    ([1, 8, 16, 16], "batch_dim_included"),
    ([16, 16, 3], "channels_from_input"),    # and the layout: both named
])
def test_shape_mistakes(shapes_grader, answer, code):
    q = by_id(shapes_grader.grade(submit({"c1": answer})))["c1"]
    assert q.status == "failed" and code in codes(q), (answer, codes(q))


def test_pool_rounding_and_dilation(shapes_grader):
    # p1 input 16: floor((16 - 3)/2) + 1 = 7; ceil would give 8. c2: dilation 2 spans 5: 7 - 5 + 1 = 3.
    r = by_id(shapes_grader.grade(submit({"p1": [8, 8, 8], "c2": [4, 5, 5], "c1": [8, 16, 16]})))
    assert "rounded_up" in codes(r["p1"])
    assert "dilation_ignored" in codes(r["c2"])
    assert r["c1"].status == "passed"


def test_shape_carried_forward(shapes_grader):
    # c1 wrong (32 instead of 16) -> p1 from it: floor((32 - 3)/2) + 1 = 15 is right for the student's c1.
    r = by_id(shapes_grader.grade(submit({"c1": [8, 32, 32], "p1": [8, 15, 15]})))
    assert r["p1"].outcome == "carried_forward" and r["p1"].carried_forward.from_questions == ["c1"]


def test_param_count_mistakes(shapes_grader):
    # c1: 8*(3*5*5) + 8 = 608
    r = by_id(shapes_grader.grade(submit({"nc1": 600, "n": 608 + (4 * 8 * 9 + 4) - 8 - 4})))
    assert "bias_forgotten" in codes(r["nc1"])
    assert "bias_forgotten" in codes(r["n"])
    r = by_id(shapes_grader.grade(submit({"nc1": 76})))
    assert "one_filter_only" in codes(r["nc1"])
    r = by_id(shapes_grader.grade(submit({"nc1": 8 * 25 + 8})))
    assert "kernel_depth_forgotten" in codes(r["nc1"])


# ---------------------------------------------------------------------------- per-student variants, BN, CE


def test_variants_are_deterministic_and_differ(bn):
    a1, a2 = bn.variant("s1"), bn.variant(" S1 ")
    for k in a1.data:
        np.testing.assert_array_equal(a1.data[k], a2.data[k])
    b = bn.variant("s2")
    assert not np.array_equal(a1.data["x"], b.data["x"])
    np.testing.assert_array_equal(a1.data["b_conv"], b.data["b_conv"])   # fixed data is shared


def test_variant_needs_a_student_id(bn_grader):
    r = bn_grader.grade(submit({"conv_shape": [2, 4, 4]}))
    assert r.error and "student id" in r.error


def solution_of(a, student):
    return {k: (v if isinstance(v, (list, int, float)) else np.asarray(v).tolist())
            for k, v in Reference(a, a.variant(student)).solution().items()}


def test_solution_scores_full_only_for_its_student(bn, bn_grader):
    sol = solution_of(bn, "s1")
    assert bn_grader.grade(submit(sol, "s1")).passed
    other = bn_grader.grade(submit(sol, "s2"))
    assert not other.passed
    assert by_id(other)["conv_shape"].status == "passed"   # shapes are the same for everyone


@pytest.fixture(scope="module")
def bn_ref(bn):
    return Reference(bn, bn.variant("s1"))


def test_bn_and_loss_mistakes(bn, bn_grader, bn_ref):
    run = bn_ref.run("model")
    run.model
    x = run.bn_input("bn1")
    logits = run.output
    g = run.grads["fc.bias"]
    o = run.spec.optimizer
    answers = {
        "bn_var": x.var(axis=(0, 2, 3), ddof=1).tolist(),
        "bn_mean": x[:1].mean(axis=(0, 2, 3)).tolist(),
        "logits": (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).tolist(),
        "pred": (np.argmax(logits, 1) + 1).tolist(),
        "loss": run.loss_value * 2,
        "grad_fc_bias": (-g).tolist(),
        "fc_bias_1": (run.initial_params["fc.bias"] + o.lr * g).tolist(),
        "fc_bias_2": bn_ref.run("model").params_after(1)["fc.bias"].tolist(),
        "n_params": 51 + 4,
        "conv_shape": [2, 2, 2],
    }
    r = by_id(bn_grader.grade(submit(answers, "s1")))
    expect = {"bn_var": "bn_unbiased_variance", "bn_mean": "one_sample_only", "logits": "softmax_given",
              "pred": "one_based", "loss": "sum_vs_mean", "grad_fc_bias": "wrong_sign",
              "fc_bias_2": "one_step_only", "n_params": "buffers_counted", "conv_shape": "padding_ignored"}
    for qid, code in expect.items():
        assert code in codes(r[qid]), (qid, codes(r[qid]), r[qid].message)
    # w + lr * g is the right step for the student's own (sign-flipped) gradient: carried forward, no "uphill".
    assert r["fc_bias_1"].outcome == "carried_forward" and codes(r["fc_bias_1"]) == []


def test_value_mistakes_recomputed_by_the_engine(bn, bn_grader, bn_ref):
    run = bn_ref.run("model")
    run.model
    x = run.x
    no_bias = run.layer_forward("conv1", x, params={"bias": np.zeros(2)})
    flipped = run.layer_forward("conv1", x, params={"weight": run.initial_params["conv1.weight"][:, :, ::-1, ::-1]})
    avg = run.layer_forward("pool1", run.activation("relu1"), changes={"type": "avgpool"})
    xb = run.bn_input("bn1")
    mean, var1 = xb.mean(axis=(0, 2, 3), keepdims=True), xb.var(axis=(0, 2, 3), ddof=1, keepdims=True)
    r = by_id(bn_grader.grade(submit({"conv_out": no_bias.tolist(), "pool_out": avg.tolist(),
                                      "bn_out": ((xb - mean) / np.sqrt(var1 + 1e-5)).tolist()}, "s1")))
    assert "bias_forgotten" in codes(r["conv_out"])
    assert "wrong_pooling" in codes(r["pool_out"])
    assert "bn_unbiased_variance" in codes(r["bn_out"])
    r = by_id(bn_grader.grade(submit({"conv_out": flipped.tolist()}, "s1")))
    assert "kernel_flipped" in codes(r["conv_out"])


def test_momentum_forgotten(bn, bn_grader, bn_ref):
    run = bn_ref.run("model")
    plain = run.params_after_with(2, momentum=0.0)["fc.bias"]
    r = by_id(bn_grader.grade(submit({"fc_bias_2": plain.tolist()}, "s1")))
    assert "momentum_forgotten" in codes(r["fc_bias_2"])


def test_partial_credit_and_bn_carried_forward(bn, bn_grader, bn_ref):
    run = bn_ref.run("model")
    run.model
    conv = run.activation("conv1").copy()
    conv[0, 0, 0, :] += 1.0                       # 4 of 64 values wrong
    axes = (0, 2, 3)
    r = by_id(bn_grader.grade(submit({"conv_out": conv.tolist(), "bn_mean": conv.mean(axis=axes).tolist(),
                                      "bn_var": conv.var(axis=axes).tolist()}, "s1")))
    q = r["conv_out"]
    assert q.outcome == "partially_correct" and q.fraction_correct == pytest.approx(60 / 64)
    assert q.score == pytest.approx(2 * 60 / 64)
    assert "60 of 64 elements within tolerance" in q.message and "[0, 0, 0," in q.message
    assert r["bn_mean"].outcome == "carried_forward"
    assert r["bn_var"].outcome == "carried_forward"


def test_nan_answer_is_wrong_and_named(lecture_grader):
    q = by_id(lecture_grader.grade(submit({"grad_w": [[float("nan"), -4.192]]})))["grad_w"]
    assert q.status == "partial" and q.score == pytest.approx(0.5) and "NaN" in q.message  # w2 right: 1 of 2


def test_reference_computed_once_per_variant(bn):
    g = grader.Grader(bn)
    sol = solution_of(bn, "s1")
    g.grade(submit(sol, "s1"))
    ref = g.reference("s1")
    g.grade(submit(sol, "S1"))
    assert g.reference("s1") is ref and len(g._refs) == 1
    g.grade(submit(sol, "s2"))
    assert len(g._refs) == 2


SMALL_BN = """
cnnspec_assignment: 1
name: eps
model:
  spec:
    cnnspec: 1
    name: m
    input: {shape: [2]}
    layers:
      - {name: bn, type: batchnorm, eps: 1.0e-3}
      - {name: fc, type: dense, units: 1, bias: false}
    loss: {type: mse}
    optimizer: {type: sgd, lr: 0.1}
    weights: {fc.weight: [[0.5, -0.25]]}
  input: x
  target: y
data:
  x: [[0.01, 0.02], [0.03, 0.01], [0.02, 0.05]]
  y: [[1.0], [0.0], [2.0]]
questions:
  - {id: bn_out, kind: activation, layer: bn}
  - {id: w, kind: param_after_steps, param: fc.weight}
  - {id: loss, kind: loss}
"""


def test_epsilon_forgotten_no_learning_rate_and_sum(tmp_path):
    a = grader.loads_assignment(SMALL_BN, "eps.yaml")
    ref = Reference(a, a.variant())
    run = ref.run("model")
    run.model
    x = run.x
    no_eps = (x - x.mean(0)) / np.sqrt(x.var(0))
    w = run.initial_params["fc.weight"] - run.grads["fc.weight"]
    r = by_id(grader.grade(a, submit({"bn_out": no_eps.tolist(), "w": w.tolist(), "loss": run.loss_value * 3})))
    assert "bn_epsilon_forgotten" in codes(r["bn_out"])
    assert "no_learning_rate" in codes(r["w"])
    assert "sum_vs_mean" in codes(r["loss"]) and "number of elements = 3" in r["loss"].diagnoses[0].message


# ---------------------------------------------------------------------------- zero points, carry_forward: 0

ONE_NEURON = """
cnnspec_assignment: 1
name: neuron
grading: {carry_forward: CF}
model:
  spec:
    cnnspec: 1
    name: m
    input: {shape: [2]}
    layers:
      - {name: fc, type: dense, units: 1, bias: false}
    loss: {type: mse}
    optimizer: {type: sgd, lr: 0.1}
    weights: {fc.weight: [[0.5, -0.25]]}
  input: x
  target: y
data:
  x: [[1.0, 2.0]]
  y: [[1.0]]
questions:
  - {id: out, kind: output, visibility: hidden}
  - {id: loss, kind: loss}
  - {id: practice, kind: param_count, points: 0}
"""


def test_wrong_answer_to_a_zero_point_question_is_not_passed():
    a = grader.loads_assignment(ONE_NEURON.replace("CF", "0.5"), "n.yaml")
    r = grader.grade(a, submit({"out": 0.0, "loss": 1.0, "practice": 5}))
    q = by_id(r)["practice"]
    assert q.status == "failed" and q.outcome == "wrong" and not r.passed
    assert by_id(grader.grade(a, submit({"out": 0.0, "loss": 1.0, "practice": 2})))["practice"].status == "passed"


def test_carry_forward_zero_turns_it_off():
    a = grader.loads_assignment(ONE_NEURON.replace("CF", "0"), "n.yaml")
    q = by_id(grader.grade(a, submit({"out": 0.5, "loss": 0.25})))["loss"]   # (0.5 - 1)^2: right for out = 0.5
    assert q.score == 0 and q.outcome == "wrong"
    # No credit, but the feedback still says why (and diagnoses nothing that presumes 'out' was right).
    assert q.carried_forward.credit == 0 and "no points" in q.carried_forward.message and q.diagnoses == []


def test_a_blank_student_id_is_no_student_id(bn, bn_grader):
    r = bn_grader.grade(submit({"conv_shape": [2, 4, 4]}, "   "))
    assert r.error and "student id" in r.error
    r = bn_grader.grade(submit({"conv_shape": [2, 4, 4]}, "s1"), student_id="  ")   # falls back to the file's id
    assert r.error is None and r.variant == "student:s1"


def test_huge_sizes_and_counts_are_reported_as_given(lecture_grader):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = by_id(lecture_grader.grade(submit({"conv1_params": 1.0e30, "conv1_shape": [1.0e300, 98, 6]})))
    assert r["conv1_params"].message == "expected 168, got 1e+30"
    assert r["conv1_shape"].message == "expected [98, 98, 6], got [1e+300, 98, 6]"


def test_nonfinite_match_messages_have_no_nan_percentages():
    from grader.compare import Tolerance, compare_float
    tol = Tolerance(1e-3, 1e-6)
    for e in (float("nan"), float("inf")):
        c = compare_float(np.array(1.0), e, tol, "match")
        assert not c.ok and "nan%" not in c.message and "relative" not in c.message, c.message
    assert compare_float(np.array(float("nan")), float("nan"), tol, "match").ok
    assert not compare_float(np.array(float("nan")), float("nan"), tol, "reject").ok


def _answers(sub):
    return {k: (None if a.value is None else (a.value.dtype.str, repr(a.value.tolist())), a.error, a.notes, a.where,
                a.missing) for k, a in sub.answers.items()}


@pytest.mark.parametrize("path", sorted(p for p in (Path(__file__).parent / "grader_data").rglob("*")
                                        if p.suffix in (".yaml", ".json", ".npz") and "assignment" not in p.name),
                         ids=lambda p: p.name)
def test_an_upload_is_read_exactly_as_the_same_file(path):
    """parse_submission (the service's uploads) reads bytes as load_submission reads the file: same answers,
    same errors, same notes and positions; only answers naming other files differ (an upload is one file)."""
    from cnnspec.errors import DataError
    from grader.submission import load_submission, parse_submission
    try:
        from_file = load_submission(path)
    except DataError as exc:
        with pytest.raises(DataError) as got:
            parse_submission(path.read_bytes(), str(path))
        assert str(got.value) == str(exc)
        return
    upload = parse_submission(path.read_bytes(), str(path))
    assert upload.student_id == from_file.student_id and upload.path == from_file.path
    names_files = {k for k, a in from_file.answers.items() if isinstance(a.raw, str) and a.raw.strip().endswith(".npy")}
    want, got = _answers(from_file), _answers(upload)
    assert {k: v for k, v in got.items() if k not in names_files} == {k: v for k, v in want.items()
                                                                       if k not in names_files}
    for k in names_files:
        assert "cannot name other files" in upload.answers[k].error


def test_an_upload_over_the_size_limit_or_naming_a_file_is_refused_clearly():
    from cnnspec.errors import DataError
    from grader.submission import MAX_TEXT_BYTES, parse_submission
    with pytest.raises(DataError, match="larger than the limit"):
        parse_submission(b"q1: 1\n" + b" " * MAX_TEXT_BYTES, "answers.yaml")
    sub = parse_submission(b"q1: ../../etc/passwd.npy\nq2: [1, 2]\n", "answers.yaml")
    assert "cannot name other files" in sub.answers["q1"].error and sub.answers["q2"].value.tolist() == [1, 2]


def test_the_graders_isclose_is_numpys_isclose():
    """grader.compare.isclose is numpy.isclose's formula without its argument handling: the same answer for
    every pair, infinities, NaN, signed zeros, huge and tiny numbers included."""
    from hypothesis import given, settings, strategies as st
    from grader.compare import isclose
    special = st.sampled_from([0.0, -0.0, np.inf, -np.inf, np.nan, 1e308, -1e308, 5e-324, 1.0, 1.0 + 1e-9])
    number = st.one_of(special, st.floats(allow_nan=True, allow_infinity=True))
    tol = st.sampled_from([0.0, 1e-12, 1e-6, 1e-3, 0.5, 1e300])

    @settings(max_examples=400, deadline=None, derandomize=True)
    @given(st.lists(st.tuples(number, number), min_size=1, max_size=8), tol, tol)
    def check(pairs, rtol, atol):
        a, e = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        with np.errstate(over="ignore"):     # numpy's own warns where the bound overflows; ours is quiet
            want = np.isclose(a, e, rtol=rtol, atol=atol).tolist()
        assert isclose(a, e, rtol, atol).tolist() == want
    check()


def test_answers_packed_by_another_engine_are_computed_again(monkeypatch):
    """After an upgrade, answers an older engine packed are not trusted: the reference computes its own, and
    an old pack (a header without the engine's stamp) is ignored the same way."""
    import json

    from grader import reference as reference_mod
    from grader.grading import Grader
    root = Path(__file__).resolve().parents[1]
    a = grader.load_assignment(root / "specs" / "assignments" / "bn_pool_ce.yaml")
    packed = Grader(a, check_copying=False).reference("s1").pack_expected()
    n = int.from_bytes(packed[:4], "little")
    head = json.loads(packed[4:4 + n])
    assert head["engine"] == reference_mod.engine_stamp() and head["answers"]
    # the same pack with every float answer doubled: loaded only when the stamps agree
    doubled = bytearray(packed)
    for item in head["answers"]:
        if item["dtype"] in ("<f8", "<f4"):
            dt = np.dtype(item["dtype"])
            count = int(np.prod(item["shape"], dtype=np.int64))
            start = 4 + n + item["offset"]
            doubled[start:start + count * dt.itemsize] = (np.frombuffer(packed, dt, count, start) * 2).tobytes()
    fresh = Grader(a, check_copying=False).reference("s1")
    trusting = Grader(a, check_copying=False).reference("s1")
    assert trusting.load_expected(bytes(doubled))
    assert any(not np.array_equal(trusting.expected(q), fresh.expected(q)) for q in a.questions)  # it was used
    monkeypatch.setattr(reference_mod, "engine_stamp", lambda: "another engine")
    upgraded = Grader(a, check_copying=False).reference("s1")
    assert upgraded.load_expected(bytes(doubled)) is False and upgraded.loaded
    old_format = json.dumps(head["answers"]).encode()
    legacy = Grader(a, check_copying=False).reference("s1")
    assert legacy.load_expected(len(old_format).to_bytes(4, "little") + old_format + packed[4 + n:]) is False
    for ref in (upgraded, legacy):
        for q in a.questions:
            assert np.array_equal(np.asarray(ref.expected(q)), np.asarray(fresh.expected(q))), q.id


@pytest.mark.parametrize("name", ["lecture", "bn_pool_ce"])
def test_grading_with_packed_expected_answers_is_grading_without(name):
    """A reference whose expected answers come from another process's pack_expected (the service's web
    processes load what the publish job computed) grades every submission exactly as a fresh one: same
    scores, messages, diagnoses and carried-forward credit, right and wrong answers alike."""
    from grader.grading import Grader
    from grader.tools import solution_text
    root = Path(__file__).resolve().parents[1]
    a = grader.load_assignment(root / "specs" / "assignments" / f"{name}.yaml")
    if name == "lecture":
        cases = [(p.read_bytes(), p.name, None) for p in sorted((root / "tests" / "grader_data" / "lecture").iterdir())
                 if p.suffix in (".yaml", ".npz") and p.name != "npy_answers.yaml"]
    else:
        cases = []
        for sid in ("s1", "s2", "a-x7"):
            right = solution_text(a, sid)
            cases += [(right.encode(), "right.yaml", sid),
                      (right.replace("1.", "2.").replace("[2, ", "[3, ").encode(), "wrong.yaml", sid),
                      ("\n".join(right.splitlines()[:-5]).encode(), "partial.yaml", sid)]
    fresh, loaded = Grader(a, check_copying=False), Grader(a, check_copying=False)
    packer = Grader(a, check_copying=False)
    for data, filename, sid in cases:
        loaded.reference(sid).load_expected(packer.reference(sid).pack_expected())
        want = fresh.grade_bytes(data, filename, sid).model_dump(exclude={"seconds", "graded_at"})
        got = loaded.grade_bytes(data, filename, sid).model_dump(exclude={"seconds", "graded_at"})
        assert got == want, filename
    assert any(q.status != "passed" for data, f, sid in cases for q in fresh.grade_bytes(data, f, sid).questions)
