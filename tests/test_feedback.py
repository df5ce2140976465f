"""Feedback that never contradicts itself, and copying between students (docs/grading.md).

- Error carried forward is checked first: an answer right for the student's own wrong upstream answer is
  explained by it, and no detector's diagnosis (which presumes the upstream answer was right) is added.
- Carried-forward dependencies follow the graph through layers that keep the shape or the values' meaning
  (conv -> relu -> pool), and a layer's parameter count depends on the shape feeding it.
- Lecture-specific wording lives in the lecture's assignment (`hints:`), validated like every other key.
- A detector that cannot tell two causes apart names both as possible. The pairs of detectors that can fire
  on one wrong answer (found by going through diagnose.py) are each tested below; the ones that cannot:
    kernel_shape: layout_swapped / kernel_depth_forgotten / depth_from_filters / all_kernels differ in length
      or in the depth they put where (f != c is required for depth_from_filters);
    weight_shape: layout_swapped [f,kh,kw,c] vs tensorflow_order [kh,kw,c,f] or in_out_swapped [c,f,kh,kw]
      only coincide when every size is equal (then it is the right answer); one_kernel_only has 3 sizes;
    output_shape: batch_dim_included has one size more; stride_ignored and dilation_ignored make the output
      larger, padding_ignored / padding_one_side / no_plus_one smaller (rounded_up either way: tested);
    bn_mean: one_sample_only vs channels_pooled (one number vs one per channel); prediction: scores_not_class
      has the output's shape; param_count: one_bias_for_all (e - f + 1) never equals e - f (bias_forgotten),
      and equals one_filter_only or kernel_depth_forgotten only for f = 1 (excluded);
    loss (cross-entropy): log_base vs sign (a positive vs a negative number).
  The value detectors (activation, bn statistics, loss, gradient, update) can coincide when the numbers
  happen to agree; each pair that a small example reproduces is tested, the mechanism is the same for all.
- Chains of three dependent questions, including one whose middle answer is right for a wrong first answer
  and whose third is right for the middle one.
- Copying: with per-student data, a wrong answer that matches another student's reference is flagged for
  staff (JSON, instructor reports, gradebook) and never shown to the student; carried-forward credit is not
  given for a copied chain.
"""
from __future__ import annotations

import csv
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

import grader
from cnnspec import shapes
from cnnspec.cli import main
from cnnspec.errors import SpecError
from grader.compare import Tolerance, matches
from grader.diagnose import CODES
from grader.grading import CopyCheck, _Near, find_copying, flag_copying
from grader.reference import Reference
from grader.report import for_student, render
from grader.submission import Submission, parse_answer

ROOT = Path(__file__).resolve().parents[1]
LECTURE = ROOT / "specs" / "assignments" / "lecture.yaml"
BN = ROOT / "specs" / "assignments" / "bn_pool_ce.yaml"
FB = ROOT / "tests" / "grader_data" / "feedback"
CRP = FB / "conv_relu_pool.yaml"


def by_id(result):
    return {q.id: q for q in result.questions}


def submit(answers: dict, student: str | None = None, path: str = "<test>") -> Submission:
    return Submission(path, student, {k: parse_answer(v, Path(".")) for k, v in answers.items()})


def codes(q):
    return [d.code for d in q.diagnoses]


def tolist(v):
    return v if isinstance(v, (list, int, float)) else np.asarray(v).tolist()


@pytest.fixture(scope="module")
def lecture():
    return grader.load_assignment(LECTURE)


@pytest.fixture(scope="module")
def crp():
    return grader.load_assignment(CRP)


@pytest.fixture(scope="module")
def bn():
    return grader.load_assignment(BN)


def run_of(a, student=None):
    run = Reference(a, a.variant(student)).run("model")
    run.ensure_computed()
    return run


# ============================================================================ carried forward before diagnoses


def test_pool_right_for_a_conv_shape_without_padding_is_carried_forward_not_a_missing_plus_one(crp):
    # conv [2, 4, 4] (padding ignored; right [2, 6, 6]) -> relu -> pool [2, 2, 2]: right for [2, 4, 4].
    # It used to be told 'the "+1" is missing' (3 - 1 = 2) and got no carried-forward credit at all.
    r = by_id(grader.Grader(crp).grade_file(FB / "padding_chain.yaml"))
    assert codes(r["conv_shape"]) == ["padding_ignored"]
    pool = r["pool_shape"]
    assert pool.outcome == "carried_forward" and pool.carried_forward.from_questions == ["conv_shape"]
    assert pool.diagnoses == [] and pool.score == pytest.approx(0.5)
    # ... and the dense layer's parameters, 3 x (2*2*2) + 3 = 27, are right for that pool shape: three in a row.
    fc = r["fc_params"]
    assert fc.outcome == "carried_forward" and fc.carried_forward.from_questions == ["pool_shape"]
    assert fc.diagnoses == []


def test_no_uphill_step_next_to_right_for_your_own_gradient(lecture):
    r = by_id(grader.grade(lecture, submit({"grad_w1": 3.144, "w1_new": 0.46856})))
    assert codes(r["grad_w1"]) == ["wrong_sign"]
    w = r["w1_new"]                         # 0.5 - 0.01 * 3.144: a correct step with the student's gradient
    assert w.outcome == "carried_forward" and w.diagnoses == []
    text = render([grader.grade(lecture, submit({"grad_w1": 3.144, "w1_new": 0.46856}))], "text")
    block = text.split("w1_new")[1].split("w1_new_lr1")[0]
    assert "uphill" not in block and "right for your own answer to 'grad_w1'" in block


def test_diagnosed_as_before_when_the_upstream_answer_was_right(lecture):
    r = by_id(grader.grade(lecture, submit({"grad_w1": -3.144, "w1_new": 0.46856})))
    assert codes(r["w1_new"]) == ["wrong_sign"] and r["w1_new"].carried_forward is None


def test_chain_of_three_middle_right_for_first_third_right_for_middle(lecture):
    # y_hat 5.62 is wrong (0.38); the loss (5.62 - 3)^2 = 6.8644 happens to be right; dL/dw1 = 2(5.62 - 3)(0.6)
    # = 3.144 is right for 5.62, and w1 = 0.5 - 0.01 * 3.144 = 0.46856 is right for that gradient. Before, the
    # gradient was also told "the sign is flipped" and the update "the step went uphill".
    r = by_id(grader.grade(lecture, submit({"y_hat": 5.62, "loss": 6.8644, "grad_w1": 3.144, "w1_new": 0.46856})))
    assert r["y_hat"].status == "failed" and r["loss"].status == "passed"
    g, w = r["grad_w1"], r["w1_new"]
    assert g.outcome == "carried_forward" and g.carried_forward.from_questions == ["y_hat"] and g.diagnoses == []
    assert w.outcome == "carried_forward" and w.carried_forward.from_questions == ["grad_w1"] and w.diagnoses == []


def test_value_chain_output_loss_gradient_update(crp):
    # logits without fc's bias; loss, dL/db and the new bias computed right from them.
    r = by_id(grader.Grader(crp).grade_file(FB / "value_chain.yaml"))
    assert r["logits"].status == "failed"
    for qid, up in (("loss", "logits"), ("grad_b", "logits"), ("b_new", "grad_b")):
        assert r[qid].outcome == "carried_forward" and r[qid].carried_forward.from_questions == [up], qid
        assert r[qid].diagnoses == [], (qid, codes(r[qid]))


def test_a_chain_whose_middle_is_wrong_for_both_stops_there(crp):
    run = run_of(crp, "s101")
    wrong = run.output - run.initial_params["fc.bias"]
    g = run.grads_for_output(wrong)[0]["fc.bias"]
    g_bad = g * 3                                            # wrong for the reference and for the logits
    b_new = run.step_from_grad("fc.bias", g_bad)              # but the step is right for that gradient
    r = by_id(grader.grade(crp, submit({"logits": wrong.tolist(), "grad_b": g_bad.tolist(),
                                        "b_new": b_new.tolist()}, "s101")))
    assert r["grad_b"].outcome == "wrong" and r["grad_b"].carried_forward is None
    assert r["b_new"].outcome == "carried_forward" and r["b_new"].carried_forward.from_questions == ["grad_b"]


# ============================================================================ dependencies through the graph


def test_upstream_follows_relu_batchnorm_and_flatten(crp, bn):
    up = crp.upstream
    assert up["pool_shape"] == ["conv_shape"]         # conv -> relu -> pool
    assert up["fc_params"] == ["pool_shape"]          # pool -> flatten -> dense: 3 x in_features + 3
    assert up["pool_out"] == ["conv_out"]             # values through the relu
    assert up["logits"] == ["pool_out"]               # through flatten
    up = bn.upstream
    assert up["pool_shape"] == ["conv_shape"]         # conv -> bn -> relu -> pool
    assert up["pool_out"] == ["bn_out"]               # bn -> relu -> pool
    assert up["logits"] == ["pool_out"]
    assert up["n_params"] == []                       # the whole model's count: no single feeding shape


def test_pool_values_carried_forward_through_relu(crp):
    run = run_of(crp, "s103")
    conv = run.activation("conv1") - run.initial_params["conv1.bias"].reshape(1, -1, 1, 1)   # bias forgotten
    pool = run.layer_forward("pool1", conv, src="conv1")      # relu then max pool of the student's values
    r = by_id(grader.grade(crp, submit({"conv_out": conv.tolist(), "pool_out": pool.tolist()}, "s103")))
    assert "bias_forgotten" in codes(r["conv_out"])
    p = r["pool_out"]
    assert p.outcome == "carried_forward" and p.carried_forward.from_questions == ["conv_out"] and p.diagnoses == []


def test_pool_values_carried_forward_through_relu_from_batch_norm(bn):
    run = run_of(bn, "s5")
    bn_out = run.activation("bn1") * 2.0
    pool = np.maximum(bn_out, 0).reshape(2, 2, 2, 2, 2, 2).max(axis=(3, 5))
    r = by_id(grader.grade(bn, submit({"bn_out": bn_out.tolist(), "pool_out": pool.tolist()}, "s5")))
    assert r["pool_out"].outcome == "carried_forward" and r["pool_out"].carried_forward.from_questions == ["bn_out"]


DROPOUT = """
cnnspec_assignment: 1
name: drop
model:
  spec:
    cnnspec: 1
    name: m
    input: {shape: [1, 4, 4]}
    layers:
      - {name: c, type: conv2d, filters: 2, kernel: 3, padding: 1}
      - {name: drop, type: dropout, rate: 0.5}
      - {name: pool, type: maxpool, kernel: 2}
    weights: {c.weight: [[[[1, 0, 0], [0, 1, 0], [0, 0, 1]]], [[[0, 1, 0], [1, 0, 1], [0, 1, 0]]]], c.bias: [0, 0]}
  input: x
  train: TRAIN
data:
  x: [[[[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]]]
questions:
  - {id: c_shape, kind: output_shape, layer: c}
  - {id: p_shape, kind: output_shape, layer: pool}
  - {id: c_out, kind: activation, layer: c}
  - {id: p_out, kind: activation, layer: pool}
"""


def test_dropout_is_followed_for_shapes_and_for_values_only_in_eval_mode():
    a = grader.loads_assignment(DROPOUT.replace("TRAIN", "true"), "d.yaml")
    assert a.upstream["p_shape"] == ["c_shape"] and a.upstream["p_out"] == []   # a random mask: no recompute
    a = grader.loads_assignment(DROPOUT.replace("TRAIN", "false"), "d.yaml")
    assert a.upstream["p_out"] == ["c_out"]
    run = run_of(a)
    wrong = run.activation("c") + 1.0
    pool = run.layer_forward("pool", wrong, src="c")
    r = by_id(grader.grade(a, submit({"c_out": wrong.tolist(), "p_out": pool.tolist()})))
    assert r["p_out"].outcome == "carried_forward"


def test_depends_on_empty_still_turns_inference_off(crp, tmp_path):
    text = CRP.read_text().replace("{id: pool_shape, kind: output_shape, layer: pool1}",
                                   "{id: pool_shape, kind: output_shape, layer: pool1, depends_on: []}")
    a = grader.loads_assignment(text, str(FB / "x.yaml"))
    assert a.upstream["pool_shape"] == []
    r = by_id(grader.grade(a, submit({"conv_shape": [2, 4, 4], "pool_shape": [2, 2, 2]}, "s101")))
    assert r["pool_shape"].carried_forward is None and codes(r["pool_shape"]) == ["no_plus_one"]


# ============================================================================ hints: the assignment's words


def test_lecture_wording_comes_from_the_lecture_assignment(lecture):
    q = by_id(grader.grade(lecture, submit({"conv1_shape": [97, 97, 6]})))["conv1_shape"]
    d = q.diagnoses[0]
    assert d.code == "no_plus_one" and "lecture" not in d.message
    assert d.hint == "a classic slip - the lecture notes write 97 for 98"
    text = render([grader.grade(lecture, submit({"conv1_shape": [97, 97, 6]}))], "text")
    assert "you gave 97 (a classic slip - the lecture notes write 97 for 98)" in text


SHAPES = """
cnnspec_assignment: 1
name: shapes
AHINTS
model:
  spec:
    cnnspec: 1
    name: s
    input: {shape: [3, 32, 32]}
    layers:
      - {name: c1, type: conv2d, filters: 8, kernel: 3}
      - {name: c2, type: conv2d, filters: 8, kernel: 3}
questions:
  - {id: c1, kind: output_shape, layer: c1}
  - id: c2
    kind: output_shape
    layer: c2
QHINTS
"""


def test_no_lecture_wording_in_other_assignments():
    a = grader.loads_assignment(SHAPES.replace("AHINTS", "").replace("QHINTS", ""), "s.yaml")
    q = by_id(grader.grade(a, submit({"c1": [8, 29, 29]})))["c1"]
    assert codes(q) == ["no_plus_one"] and "lecture" not in q.diagnoses[0].message and q.diagnoses[0].hint is None


def test_assignment_and_question_hints():
    text = (SHAPES.replace("AHINTS", 'hints: {no_plus_one: "see week 2, slide 14"}')
            .replace("QHINTS", '    hints: {no_plus_one: "the second layer: same rule"}'))
    a = grader.loads_assignment(text, "s.yaml")
    r = by_id(grader.grade(a, submit({"c1": [8, 29, 29], "c2": [8, 27, 27]})))
    assert r["c1"].diagnoses[0].hint == "see week 2, slide 14"
    assert r["c2"].outcome == "carried_forward" and r["c2"].diagnoses == []   # 27 is right for c1's 29
    r = by_id(grader.grade(a, submit({"c1": [8, 30, 30], "c2": [8, 27, 27]})))
    assert r["c2"].diagnoses[0].hint == "the second layer: same rule"     # the question's overrides
    doc = json.loads(render([grader.grade(a, submit({"c1": [8, 29, 29]}))], "json"))
    assert doc["results"][0]["questions"][0]["diagnoses"][0]["hint"] == "see week 2, slide 14"


@pytest.mark.parametrize("hints,qhints,needles", [
    ('hints: {no_plus1: "x"}', "", ["s.yaml:4:9:", "unknown diagnosis code 'no_plus1'", "did you mean 'no_plus_one'"]),
    ("", '    hints: {wrong_sign: "x"}', ["s.yaml:18:", "question 2 ('c2', output_shape): hints:",
                                          "'wrong_sign' is not a diagnosis of output_shape questions"]),
    ("", '    hints: {padding_ignord: "x"}', ["s.yaml:18:", "did you mean 'padding_ignored'"]),
    ('hints: {no_plus_one: ""}', "", ["s.yaml:4:", "at least 1 character"]),
    ('hints: {no_plus_one: 3}', "", ["s.yaml:4:", "expected a string"]),
])
def test_hints_are_validated_with_positions(hints, qhints, needles):
    with pytest.raises(SpecError) as exc:
        grader.loads_assignment(SHAPES.replace("AHINTS", hints).replace("QHINTS", qhints), "s.yaml")
    for n in needles:
        assert n in str(exc.value), str(exc.value)


def test_codes_table_lists_every_code_in_the_detectors():
    source = (ROOT / "grader" / "diagnose.py").read_text()
    found = set(re.findall(r'Diagnosis\(\s*"([a-z_]+)"', source))
    found |= set(re.findall(r'^\s*\(\s*"([a-z_]+)",\s', source, flags=re.M))
    listed = {c for cs in CODES.values() for c in cs}
    assert found and found <= listed, found - listed
    docs = (ROOT / "docs" / "grading.md").read_text()
    assert all(f"`{c}`" in docs for c in listed), [c for c in listed if f"`{c}`" not in docs]


# ============================================================================ two causes, one answer


def diag(text: str, answers: dict, qid: str):
    a = grader.loads_assignment(text, "t.yaml")
    return by_id(grader.grade(a, submit(answers)))[qid]


def assert_possible(q, expected: set):
    assert set(codes(q)) == expected, (codes(q), q.message)
    for d in q.diagnoses:
        assert set(d.alternatives) == expected - {d.code}
        assert d.message.startswith("possibly (") and f"of {len(expected)} causes" in d.message


def one_layer(layer: str, shape: str, question: str, extra: str = "") -> str:
    return f"""
cnnspec_assignment: 1
name: t
model:
  spec:
    cnnspec: 1
    name: m
    input: {{shape: {shape}}}
    layers:
      - {layer}
{extra}
questions:
  - {question}
"""


@pytest.mark.parametrize("layer,shape,answer,expected", [
    # stride 2, padding 1: (32 + 2 - 3)//2 + 1 = 16; no +1: 15; padding ignored: (32 - 3)//2 + 1 = 15
    ("{name: c, type: conv2d, filters: 8, kernel: 3, stride: 2, padding: 1}", "[3, 32, 32]", [8, 15, 15],
     {"no_plus_one", "padding_ignored"}),
    # 33: right 17; 16 is no +1, padding ignored ((33 - 3)//2 + 1) and padding on one side ((33 + 1 - 3)//2 + 1)
    ("{name: c, type: conv2d, filters: 8, kernel: 3, stride: 2, padding: 1}", "[3, 33, 33]", [8, 16, 16],
     {"no_plus_one", "padding_ignored", "padding_one_side"}),
    # stride 1, padding 1: right 6; no +1: 5; one side: 6 + 1 - 3 + 1 = 5 (padding ignored: 4)
    ("{name: c, type: conv2d, filters: 2, kernel: 3, padding: 1}", "[1, 6, 6]", [2, 5, 5],
     {"no_plus_one", "padding_one_side"}),
    # ceil_mode pool on 5: right ceil(3/2) + 1 = 3; floor: 2; no +1: 2
    ("{name: p, type: maxpool, kernel: 2, stride: 2, ceil_mode: true}", "[1, 5, 5]", [1, 2, 2],
     {"no_plus_one", "rounded_up"}),
    # 4, kernel 3, stride 2: right (4 - 3)//2 + 1 = 1; stride ignored: 2; rounded up: ceil(1/2) + 1 = 2
    ("{name: c, type: conv2d, filters: 2, kernel: 3, stride: 2}", "[1, 4, 4]", [2, 2, 2],
     {"stride_ignored", "rounded_up"}),
    # 10, kernel 3 dilation 2 (spans 5), stride 2: right 5//2 + 1 = 3; dilation ignored 7//2 + 1 = 4; ceil: 4
    ("{name: c, type: conv2d, filters: 2, kernel: 3, stride: 2, dilation: 2}", "[1, 10, 10]", [2, 4, 4],
     {"dilation_ignored", "rounded_up"}),
])
def test_shape_causes_that_coincide_are_all_named(layer, shape, answer, expected):
    name = re.search(r"name: (\w+)", layer).group(1)
    q = diag(one_layer(layer, shape, f"{{id: q, kind: output_shape, layer: {name}}}"), {"q": answer}, "q")
    assert_possible(q, expected)


def _single_mistakes(n, k, s, p, d, ceil):
    """{answer size: codes} for one axis, recomputed here with cnnspec.shapes (independently of diagnose.py)."""
    right = shapes.window_out(n, k, s, p, p, d, ceil)
    cands = {"no_plus_one": right - 1, "rounded_up": shapes.window_out(n, k, s, p, p, d, not ceil)}
    if p:
        cands["padding_ignored"] = shapes.window_out(n, k, s, 0, 0, d, ceil)
        cands["padding_one_side"] = shapes.window_out(n, k, s, p, 0, d, ceil)
    if s > 1:
        cands["stride_ignored"] = shapes.window_out(n, k, 1, p, p, d, ceil)
    if d > 1:
        cands["dilation_ignored"] = shapes.window_out(n, k, s, p, p, 1, ceil)
    out: dict[int, set] = {}
    for code, size in cands.items():
        if size != right:
            out.setdefault(size, set()).add(code)
    return right, out


def test_every_coincidence_of_shape_mistakes_is_named_in_full():
    """For many conv and pool configurations: every wrong size a single slip gives is diagnosed with exactly the
    slips that give it - one named when one does, all named (as possible causes) when several coincide."""
    configs = [(n, k, s, p, d) for n, k, s, p, d in itertools.product((5, 6, 7, 9, 12), (2, 3, 5), (1, 2, 3),
                                                                      (0, 1, 2), (1, 2))
               if d * (k - 1) + 1 <= n and 2 * p < k * (1 if d == 1 else 2)]
    seen_pairs = set()
    for n, k, s, p, d in configs[::3]:
        layer = f"{{name: c, type: conv2d, filters: 4, kernel: {k}, stride: {s}, padding: {p}, dilation: {d}}}"
        a = grader.loads_assignment(one_layer(layer, f"[4, {n}, {n}]", "{id: q, kind: output_shape, layer: c}"),
                                    "t.yaml")
        g = grader.Grader(a, check_copying=False)
        right, wrong = _single_mistakes(n, k, s, p, d, False)
        for size, expected in wrong.items():
            q = by_id(g.grade(submit({"q": [4, size, size]})))["q"]
            assert set(codes(q)) == expected, ((n, k, s, p, d), size, codes(q))
            if len(expected) > 1:
                seen_pairs.add(frozenset(expected))
                assert all(set(dd.alternatives) == expected - {dd.code} for dd in q.diagnoses)
            else:
                assert q.diagnoses[0].alternatives == [] and not q.diagnoses[0].message.startswith("possibly")
    assert len(seen_pairs) >= 3     # the sweep does meet coincidences


NEURON = """
cnnspec_assignment: 1
name: n
model:
  spec:
    cnnspec: 1
    name: m
    input: {shape: [2]}
    layers:
      - {name: fc, type: dense, units: 1, bias: false}
    loss: {type: mse, reduction: RED}
    optimizer: {type: sgd, lr: LR}
    weights: {fc.weight: [[0.5, 0.0]]}
  input: x
  target: y
data:
  x: XX
  y: YY
questions:
  - {id: loss, kind: loss}
  - {id: g, kind: gradient, param: fc.weight, index: [0, 0], depends_on: []}
  - {id: w, kind: param_after_steps, param: fc.weight, index: [0, 0], depends_on: []}
"""
# MSE with reduction sum over 2 elements: the mean is half the sum, like the 1/2 of "half MSE".
SUM2 = NEURON.replace("RED", "sum").replace("LR", "0.1").replace("XX", "[[1.0, 0.0], [2.0, 1.0]]") \
    .replace("YY", "[[0.0], [3.0]]")                       # loss 4.25, dL/dw1 -7
# w1 = 0.5, dL/dw1 = 2 (0.5 - 0) (1) = 1, lr 0.5: w1 = (1 - lr) g, so w - g = -lr g and w + lr g = g.
HALF = NEURON.replace("RED", "mean").replace("LR", "0.5").replace("XX", "[[1.0, 0.0]]").replace("YY", "[[0.0]]")


@pytest.mark.parametrize("text,qid,answer,expected", [
    (SUM2, "loss", 2.125, {"sum_vs_mean", "half_mse"}),
    (SUM2, "g", -3.5, {"factor_two", "sum_vs_mean"}),
    (HALF, "w", -0.5, {"no_learning_rate", "step_not_weight"}),
    (HALF, "w", 1.0, {"wrong_sign", "gradient_not_weight"}),
])
def test_value_causes_that_coincide_are_all_named(text, qid, answer, expected):
    assert_possible(diag(text, {qid: answer}, qid), expected)


def test_not_squared_or_rmse_for_one_output(lecture):
    # |0.38 - 3| = 2.62 = sqrt((0.38 - 3)^2): for one output the two slips cannot be told apart.
    q = by_id(grader.grade(lecture, submit({"loss": 2.62})))["loss"]
    assert_possible(q, {"not_squared", "rmse"})


@pytest.mark.parametrize("layer,shape,question,answer,expected", [
    # 1x1 conv, 2 input channels, 4 filters: 12; without biases 8 = 4 kernels of 1x1 (depth forgotten) + 4
    ("{name: c, type: conv2d, filters: 4, kernel: 1}", "[2, 5, 5]", "{id: q, kind: param_count, layer: c}", 8,
     {"bias_forgotten", "kernel_depth_forgotten"}),
    # 1 input channel, 2 filters of 1x1: 4; without biases 2 = one filter with its bias
    ("{name: c, type: conv2d, filters: 2, kernel: 1}", "[1, 5, 5]", "{id: q, kind: param_count, layer: c}", 2,
     {"bias_forgotten", "one_filter_only"}),
    # 3 input channels, 2 filters of 1x1: one filter 3 + 1 = 4 = depth forgotten 2 + 2
    ("{name: c, type: conv2d, filters: 2, kernel: 1}", "[3, 5, 5]", "{id: q, kind: param_count, layer: c}", 4,
     {"one_filter_only", "kernel_depth_forgotten"}),
    # a 3x4 kernel on 3 channels, 4 filters: (4, 3, 3, 4); TensorFlow order (3, 4, 3, 4) = in/out swapped
    ("{name: c, type: conv2d, filters: 4, kernel: [3, 4]}", "[3, 8, 8]", "{id: q, kind: weight_shape, param: c.weight}",
     [3, 4, 3, 4], {"tensorflow_order", "in_out_swapped"}),
])
def test_count_and_weight_causes_that_coincide(layer, shape, question, answer, expected):
    assert_possible(diag(one_layer(layer, shape, question), {"q": answer}, "q"), expected)


def test_biases_or_batch_norm_parameters_forgotten():
    # conv 4 filters (4 biases) + dense 4 units (4 biases) = 8 = batch norm's 2 x 4 gamma and beta
    text = one_layer("{name: c, type: conv2d, filters: 4, kernel: 3}\n      - {name: bn, type: batchnorm}\n"
                     "      - {name: f, type: flatten}\n      - {name: d, type: dense, units: 4}", "[1, 4, 4]",
                     "{id: q, kind: param_count}")
    total = 4 * 9 + 4 + 8 + 16 * 4 + 4
    assert_possible(diag(text, {"q": total - 8}, "q"), {"bias_forgotten", "bn_params_forgotten"})


def test_bn_variance_with_n_minus_1_or_without_the_mean():
    # channel values 0 and 2: mean 1, variance 1; with n-1: 2; mean of squares: 2
    text = one_layer("{name: bn, type: batchnorm}", "[1]", "{id: q, kind: bn_var, layer: bn}",
                     "  input: x\ndata:\n  x: [[0.0], [2.0]]")
    assert_possible(diag(text, {"q": [2.0]}, "q"), {"bn_unbiased_variance", "mean_not_subtracted"})


def test_one_based_or_argmin():
    # every sample's class is 0 of 2: 1-based gives 1, and so does the argmin
    text = one_layer("{name: fc, type: dense, units: 2, bias: false}", "[2]", "{id: q, kind: prediction}",
                     "    weights: {fc.weight: [[1.0, 0.0], [0.0, 1.0]]}\n  input: x\n"
                     "data:\n  x: [[2.0, 1.0], [3.0, -1.0], [0.5, 0.0]]")
    assert_possible(diag(text, {"q": [1, 1, 1]}, "q"), {"one_based", "argmin"})


def test_bias_forgotten_or_kernel_flipped():
    # a 2x1 kernel [1; 0] with bias 1 on [2; 1]: 3. Without the bias: 2; flipped ([0; 1]) with the bias: 2.
    text = one_layer("{name: c, type: conv2d, filters: 1, kernel: [2, 1]}", "[1, 2, 1]",
                     "{id: q, kind: activation, layer: c}",
                     "    weights: {c.weight: [[[[1.0], [0.0]]]], c.bias: [1.0]}\n  input: x\n"
                     "data:\n  x: [[[[2.0], [1.0]]]]")
    assert_possible(diag(text, {"q": [[[[2.0]]]]}, "q"), {"bias_forgotten", "kernel_flipped"})


def test_gradient_or_unchanged_weight():
    text = one_layer("{name: fc, type: dense, units: 1, bias: false}", "[1]",
                     "{id: q, kind: param_after_steps, param: fc.weight}",
                     "    loss: {type: mse}\n    optimizer: {type: sgd, lr: 0.1}\n    weights: {fc.weight: [[1.0]]}\n"
                     "  input: x\n  target: y\ndata:\n  x: [[1.0]]\n  y: [[0.5]]")   # w = 1, dL/dw = 2 (1 - 0.5) = 1
    assert_possible(diag(text, {"q": [[1.0]]}, "q"), {"gradient_not_weight", "unchanged"})


def test_a_single_cause_is_stated_plainly(lecture):
    q = by_id(grader.grade(lecture, submit({"conv1_shape": [97, 97, 6]})))["conv1_shape"]
    assert q.diagnoses[0].alternatives == [] and q.diagnoses[0].message.startswith('the "+1"')


# ============================================================================ copying between students


def copied_batch(crp, order=("s101_own.yaml", "s102_copied.yaml")):
    g = grader.Grader(crp, check_copying=True)
    return g, [g.grade_file(FB / name) for name in order]


def test_find_copying_names_the_questions_and_whose_reference(crp):
    g = grader.Grader(crp, check_copying=False)
    results = [g.grade_file(FB / "s101_own.yaml"), g.grade_file(FB / "s102_copied.yaml")]
    found = find_copying(results, g)
    assert found[0] == []
    assert [(m.question, m.student_id) for m in found[1]] == [
        (q, "s101") for q in ("conv_out", "pool_out", "logits", "loss", "grad_b", "b_new")]
    assert found[1][0].submissions == [str(FB / "s101_own.yaml")] and found[1][0].values == 144
    assert all(r.copying == [] for r in results)          # find_copying changes nothing
    # shapes and counts are the same for everyone: never compared
    assert not {m.question for m in found[1]} & {"conv_shape", "pool_shape", "fc_params"}


def test_flag_copying_for_staff_never_for_the_student(crp):
    g = grader.Grader(crp, check_copying=False)
    results = flag_copying([g.grade_file(FB / "s101_own.yaml"), g.grade_file(FB / "s102_copied.yaml")], g)
    copier = results[1]
    assert [m.question for m in copier.copying][:2] == ["conv_out", "pool_out"]
    assert by_id(copier)["logits"].matches_other_students == ["s101"]
    staff = render(results, "text", audience="instructor")
    assert "possible copying: s101: conv_out, pool_out, logits, loss, grad_b, b_new" in staff
    assert "possible copying" in render(results, "markdown", audience="instructor")
    assert "possible copying" in render(results, "junit", audience="instructor")
    doc = json.loads(render(results, "json", audience="instructor"))
    assert doc["results"][1]["copying"][0]["student_id"] == "s101"
    for fmt in ("text", "json", "markdown", "junit"):
        student = render(results, fmt, audience="student")
        assert "copying" not in student.replace('"copying": []', "") and "s101:" not in student, fmt
        assert "matches the reference" not in student and "not credited" not in student, fmt
    mine = for_student(copier)
    assert mine.copying == [] and all(q.matches_other_students == [] for q in mine.questions)
    gs = render([copier], "gradescope")
    assert "copying" not in gs and "s101" not in gs


def test_no_carried_forward_credit_for_a_copied_chain(crp):
    g, (own, copier) = copied_batch(crp)
    q = by_id(copier)
    # s102's copied logits are wrong for s102's data; the copied gradient happens to be right for them
    # (carried forward), but the logits match s101's reference: no credit, and the score follows.
    for qid in ("grad_b", "b_new", "pool_out"):
        cf = q[qid].carried_forward
        assert cf is not None and cf.withdrawn and cf.credit == 0, qid
    assert q["grad_b"].score == 0 and q["grad_b"].outcome == "wrong"
    assert "'logits' matches the reference answer of s101" in q["grad_b"].carried_forward.withdrawn
    assert q["pool_out"].score == pytest.approx(6 / 36)          # partial credit stays
    assert q["pool_out"].outcome == "partially_correct"
    assert copier.score == pytest.approx(sum(x.score for x in copier.questions))
    assert for_student(copier).questions[7].carried_forward is None
    # the same answers from a student who worked them out alone keep their carried-forward credit
    alone = grader.Grader(crp).grade_file(FB / "s102_copied.yaml")
    assert by_id(alone)["grad_b"].outcome == "carried_forward" and by_id(alone)["grad_b"].score == 0.5
    assert alone.copying == [] and alone.score > copier.score


def test_the_rule_follows_the_chain(crp):
    # s104 copies s101's logits but computes the loss, gradient and update honestly from them: the gradient's
    # credit comes from the copied logits, and the update's from that gradient: neither is given.
    run = run_of(crp, "s104")
    logits = run_of(crp, "s101").output
    grads = run.grads_for_output(logits)[0]["fc.bias"]
    sub = {"logits": logits.tolist(), "grad_b": grads.tolist(),
           "b_new": run.step_from_grad("fc.bias", grads).tolist()}
    g = grader.Grader(crp, check_copying=True)
    g.grade_file(FB / "s101_own.yaml")
    q = by_id(g.grade(submit(sub, "s104")))
    assert q["logits"].matches_other_students == ["s101"]
    assert q["grad_b"].matches_other_students == []             # not s101's: computed from the copied logits
    assert q["grad_b"].carried_forward.withdrawn and q["b_new"].carried_forward.withdrawn
    assert "'grad_b' was itself carried forward" in q["b_new"].carried_forward.withdrawn
    assert q["grad_b"].score == q["b_new"].score == 0


def test_order_of_the_batch_does_not_matter(crp):
    _, (a1, b1) = copied_batch(crp)
    _, (b2, a2) = copied_batch(crp, order=("s102_copied.yaml", "s101_own.yaml"))
    assert b1.model_dump(exclude={"graded_at", "seconds"}) == b2.model_dump(exclude={"graded_at", "seconds"})
    assert a1.copying == a2.copying == []
    # flagging again (a service re-running the batch) gives the same
    again = flag_copying([b2, a2], grader.Grader(crp, check_copying=False))
    assert again[0].score == b2.score and again[0].copying == b2.copying


def test_a_resubmission_or_shared_data_is_not_copying(crp, lecture):
    g = grader.Grader(crp, check_copying=True)
    first = g.grade_file(FB / "s102_copied.yaml")
    second = g.grade(submit({"logits": by_id(first)["logits"].answer}, "S102 "))   # the same student again
    assert first.copying == second.copying == []
    gl = grader.Grader(lecture)
    rs = [gl.grade_file(ROOT / "tests" / "grader_data" / "lecture" / n) for n in ("correct.yaml", "lecture_slips.yaml")]
    assert all(r.copying == [] for r in rs) and find_copying(rs, gl) == [[], []]


def test_gradebook_has_a_copying_column(capsys, tmp_path):
    book = tmp_path / "grades.csv"
    code = main(["grade", str(CRP), str(FB / "s101_own.yaml"), str(FB / "s102_copied.yaml"), "--gradebook",
                 str(book), "--format", "json", "-o", str(tmp_path / "report.json")])
    capsys.readouterr()
    assert code == 1
    rows = list(csv.DictReader(book.open()))
    assert rows[0]["possible_copying"] == ""
    assert rows[1]["possible_copying"] == "s101: conv_out, pool_out, logits, loss, grad_b, b_new"
    assert rows[1]["grad_b"] == "0"
    student = json.loads((tmp_path / "report.json").read_text())      # the student-facing report: nothing
    assert all(r["copying"] == [] for r in student["results"])


def test_gradebook_copying_cell_cannot_become_a_formula(crp):
    from grader.cli import gradebook_csv
    from grader.report import CopyMatch
    r = grader.Grader(crp, check_copying=False).grade_file(FB / "s101_own.yaml")
    r.copying = [CopyMatch(question="loss", student_id="=cmd()", values=1)]
    row = list(csv.reader(gradebook_csv([r], crp).splitlines()))[1]
    assert row[7] == "'=cmd(): loss"


def test_near_index_finds_every_match():
    """The bucketed index never misses an array within the tolerance (it may return extra candidates)."""
    rng = np.random.default_rng(0)
    for rtol, atol in ((1e-3, 1e-6), (1e-2, 0.0), (0.0, 1e-3), (0.2, 1e-4)):
        tol = Tolerance(rtol, atol)
        refs = [rng.normal(0, 10.0 ** rng.integers(-4, 3), size=3) for _ in range(100)]
        refs += [np.zeros(3), np.full(3, 1e-7)]
        index = _Near(tol, 3)
        for i, r in enumerate(refs):
            index.add(r, i)
        for i, r in enumerate(refs):
            for scale in (1.0, 1 + rtol * 0.99, 1 - rtol * 0.99):
                a = r * scale + atol * 0.5 * rng.choice([-1, 1], size=3)
                truth = {j for j, x in enumerate(refs) if matches(a, x, tol)}
                near = set(index.near(a))
                assert truth <= near, (rtol, atol, a)
                if atol < 1e-4 and rtol < 0.1:   # values spread far wider than the tolerance: few extra
                    assert len(near - truth) < 10


def test_copy_check_work_is_bounded(crp):
    """Each submission is looked up once per question: the number of element-wise comparisons grows with the
    candidates the index returns, not with the number of students squared."""
    g = grader.Grader(crp, check_copying=False)
    check = CopyCheck(g)
    calls = {"n": 0}
    import grader.grading as grading
    real = grading.cmp.matches

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    grading.cmp.matches = counting
    try:
        for i in range(40):
            sid = f"t{i:03d}"
            sol = {k: tolist(v) for k, v in Reference(crp, crp.variant(sid)).solution().items()}
            sol["loss"] = sol["loss"] * 1.5                       # one wrong answer each, copied from nobody
            sol["b_new"] = (np.asarray(sol["b_new"]) * 1.5).tolist()
            check.add(g.grade(submit(sol, sid)))
    finally:
        grading.cmp.matches = real
    # One number may match some other student's by chance (a loss within 0.1%): never reported alone.
    assert all(check.reported(e) == {} for e in check.entries)
    assert calls["n"] < 40 * 4                                  # not 40 x 39 comparisons


def test_cli_names_every_possible_cause(capsys):
    code = main(["grade", str(FB / "ambiguous_shapes.yaml"), str(FB / "ambiguous_answer.yaml")])
    out = capsys.readouterr().out
    assert code == 1
    assert [line.split("(")[1][:6] for line in out.splitlines() if "why: possibly" in line] == \
        ["1 of 3", "2 of 3", "3 of 3"]
    assert "lecture" not in out
