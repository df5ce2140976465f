"""Every report format, validated (JUnit against an XSD, Gradescope against a JSON Schema); no leaks."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pytest

import grader
from grader.report import SubmissionResult, for_student, render

ROOT = Path(__file__).resolve().parents[1]
LECTURE = ROOT / "specs" / "assignments" / "lecture.yaml"
DATA = ROOT / "tests" / "grader_data"
BEFORE_DUE = datetime(2024, 12, 10, tzinfo=timezone.utc)
AFTER_DUE = datetime(2025, 1, 10, tzinfo=timezone.utc)
KINDS = ("correct", "lecture_slips", "classic_mistakes", "carried_forward", "bad_answers", "malformed")


@pytest.fixture(scope="module")
def results():
    g = grader.Grader(grader.load_assignment(LECTURE), now=BEFORE_DUE)
    return {k: g.grade_file(DATA / "lecture" / f"{k}.yaml") for k in KINDS}


@pytest.fixture(scope="module")
def gradescope_schema():
    return json.loads((DATA / "gradescope_results.schema.json").read_text())


def test_json_is_the_documented_model(results):
    for audience in ("student", "instructor"):
        doc = json.loads(render(list(results.values()), "json", audience=audience, now=BEFORE_DUE))
        assert doc["format"] == "cnnspec-grade" and doc["version"] == 1
        assert len(doc["results"]) == len(KINDS)
        for r in doc["results"]:
            SubmissionResult.model_validate(r)     # round-trips through the pydantic model
            assert r["audience"] == audience
    doc = json.loads(render([results["lecture_slips"]], "json", audience="instructor"))
    q = {q["id"]: q for q in doc["results"][0]["questions"]}
    assert q["conv1_shape"]["expected"] == [98, 98, 6] and q["conv1_shape"]["answer"] == [97, 97, 6]
    assert q["conv1_shape"]["diagnoses"][0]["code"] == "no_plus_one"
    assert q["w1_new"]["carried_forward"]["from_questions"] == ["grad_w1"]
    assert q["loss"]["tolerance"] == {"rtol": 0.001, "atol": 1e-06}


def test_json_schema_of_the_result_model_validates_output(results):
    schema = SubmissionResult.model_json_schema()
    for r in json.loads(render(list(results.values()), "json", audience="student", now=BEFORE_DUE))["results"]:
        jsonschema.validate(r, schema)


def test_student_view_withholds_hidden_and_after_due_date(results):
    r = grader.report.for_student(results["correct"], now=BEFORE_DUE)
    q = {q.id: q for q in r.questions}
    for qid in ("w1_new_lr1", "conv2_params"):
        assert q[qid].status == "withheld" and q[qid].score is None and q[qid].expected is None
        assert q[qid].answer is None and not q[qid].diagnoses
    assert r.withheld_points == 2 and r.max_score == 13 and r.score == 13 and r.passed is None
    after = grader.report.for_student(results["correct"], now=AFTER_DUE)
    assert {q.id: q for q in after.questions}["conv2_params"].status == "passed"
    assert {q.id: q for q in after.questions}["w1_new_lr1"].status == "withheld"


@pytest.mark.parametrize("fmt", ["text", "json", "junit", "markdown"])
def test_hidden_answers_never_leak(results, fmt):
    # 3.644 (w1_new_lr1, hidden) and 18496 / 18,496 (conv2_params, after the due date) must not appear.
    for kind in ("correct", "classic_mistakes", "carried_forward"):
        text = render([results[kind]], fmt, audience="student", now=BEFORE_DUE)
        for secret in ("3.644", "18496", "18,496", "18432", "3.584"):
            assert secret not in text, (fmt, kind, secret)
    full = render([results["classic_mistakes"]], fmt, audience="instructor")
    assert "3.644" in full


def test_gradescope_results_validate_and_hide_expected(results, gradescope_schema):
    for kind, r in results.items():
        doc = json.loads(render([r], "gradescope", now=BEFORE_DUE))
        jsonschema.validate(doc, gradescope_schema)
        # The total a student sees counts only what they may see: never a withheld question's points.
        assert doc["score"] == for_student(r, BEFORE_DUE).score
        withheld_scores = sum(t["score"] for t in doc["tests"] if t["visibility"] != "visible")
        assert doc["score"] == round(r.score - withheld_scores, 9)
        assert sum(t["max_score"] for t in doc["tests"]) == 15
        vis = {t["name"].split(":")[0]: t["visibility"] for t in doc["tests"]}
        assert vis["w1_new_lr1"] == "hidden" and vis["conv2_params"] == "after_due_date"
        blob = json.dumps(doc)
        for secret in ("3.644", "18496", "18,496", "3.584"):
            assert secret not in blob, (kind, secret)
    doc = json.loads(render([results["lecture_slips"]], "gradescope"))
    t = {t["name"].split(":")[0]: t for t in doc["tests"]}
    assert t["conv1_shape"]["status"] == "failed" and "+1" in t["conv1_shape"]["output"]
    assert t["w1_new"]["score"] == 0.5 and "carried forward" in t["w1_new"]["output"]
    assert json.loads(render([results["malformed"]], "gradescope"))["output"].startswith("Could not grade")


def test_junit_validates_against_xsd(results):
    import xmlschema  # a test dependency (pyproject [test])
    schema = xmlschema.XMLSchema(str(DATA / "junit.xsd"))
    for audience in ("student", "instructor"):
        xml = render(list(results.values()), "junit", audience=audience, now=BEFORE_DUE)
        schema.validate(xml)


def test_junit_structure(results):
    xml = render([results["correct"], results["classic_mistakes"], results["malformed"]], "junit",
                 audience="student", now=BEFORE_DUE)
    root = ET.fromstring(xml)
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("tests") for s in suites] == ["14", "14", "14"]
    ok, bad, broken = suites
    assert ok.get("failures") == "0" and ok.get("skipped") == "2"
    assert int(bad.get("failures")) >= 10
    assert broken.get("errors") == "12"       # 14 questions, 2 withheld (skipped)
    case = bad.find("testcase[@name='1. conv1_shape: A 100x100x3 image is convolved with 6 kernels of 3x3 (stride 1, padding 0). Output shape [H, W, C]?']")
    assert case is not None and "HWC" in case.find("failure").text
    assert int(root.get("tests")) == 42


def test_markdown_summary(results):
    md = render([results["lecture_slips"]], "markdown", audience="student", now=BEFORE_DUE)
    assert md.startswith("## CNN flow")
    assert "| # | question | points | result |" in md
    assert "❌ failed" in md and "🔒 not shown yet" in md
    assert "### Feedback" in md and '"+1" is missing' in md
    assert "error carried forward" in md


def test_text_colours_only_when_asked(results):
    plain = render([results["lecture_slips"]], "text", audience="student", now=BEFORE_DUE)
    assert "\033[" not in plain and "FAIL" in plain and "PASS" in plain
    assert "score 9 / 13" in plain and "2 more points" in plain
    coloured = render([results["lecture_slips"]], "text", audience="student", color=True, now=BEFORE_DUE)
    assert "\033[31m" in coloured


def test_gradescope_needs_exactly_one_submission(results):
    with pytest.raises(ValueError):
        render([results["correct"], results["correct"]], "gradescope")


HIDDEN_UPSTREAM = """
cnnspec_assignment: 1
name: neuron
model:
  spec:
    cnnspec: 1
    name: m
    input: {shape: [2]}
    layers:
      - {name: fc, type: dense, units: 1, bias: false}
    loss: {type: mse}
    weights: {fc.weight: [[0.5, -0.25]]}
  input: x
  target: y
data:
  x: [[1.0, 2.0]]
  y: [[1.0]]
questions:
  - {id: out, kind: output, visibility: hidden}
  - {id: loss, kind: loss}
"""


def test_carried_forward_from_a_withheld_question_does_not_say_it_was_wrong(tmp_path):
    a = grader.loads_assignment(HIDDEN_UPSTREAM, "n.yaml")
    (tmp_path / "a.yaml").write_text("out: 0.5\nloss: 0.25\n")   # out is 0: wrong; 0.25 = (0.5 - 1)^2
    r = grader.Grader(a).grade_file(tmp_path / "a.yaml")
    assert {q.id: q for q in r.questions}["loss"].carried_forward.from_questions == ["out"]   # instructor
    for fmt in ("text", "json", "junit", "markdown", "gradescope"):
        text = render([r], fmt, audience="student")
        assert "answer to 'out'" not in text and "which was wrong" not in text and "0.5)" not in text, fmt
        assert "right for your own earlier answers; 50% of the points" in text, fmt
    q = {q.id: q for q in grader.report.for_student(r).questions}["loss"]
    assert q.score == 0.5 and q.carried_forward.from_questions == [] and "50%" in q.carried_forward.message


def test_gradescope_summary_counts_only_what_the_student_may_see(results):
    doc = json.loads(render([results["classic_mistakes"]], "gradescope", now=BEFORE_DUE))
    visible = [t for t in doc["tests"] if t["visibility"] == "visible"]
    shown = sum(t["score"] for t in visible)
    assert doc["output"].startswith(f"{results['classic_mistakes'].title}: {shown:g} / 13 points")
    assert "2 more points" in doc["output"]
    assert doc["score"] == results["classic_mistakes"].score       # Gradescope's own total: every question


def test_markdown_with_hostile_text_renders_on_github_without_links_html_or_formatting(tmp_path):
    """Rendered by cmark-gfm (GitHub's Markdown, with its autolinks): text a student controls (the file name,
    student_id, unknown answer keys) makes no link, no HTML and no table of its own; e-mail addresses may."""
    import re

    cmarkgfm = pytest.importorskip("cmarkgfm")
    hostile = ("https://evil.example/login www.evil.example WWW.Evil.Example ftp://x.y/z [click](https://e.vil) "
               "<img src=x onerror=alert(1)> <a href='https://e.vil'>a</a> | col | **bold** _it_ `code` "
               "![i](https://e.vil/i.png) a@b.co")
    f = tmp_path / "answers.yaml"
    f.write_text(json.dumps({"student_id": hostile, "conv1_shape": [98, 98, 6], hostile: 1}))
    r = grader.Grader(grader.load_assignment(LECTURE), now=BEFORE_DUE).grade_file(f)
    for audience in ("student", "instructor"):
        html = cmarkgfm.github_flavored_markdown_to_html(render([r], "markdown", audience=audience))
        assert hostile.split()[0] in html                     # the student's text is there, as text
        links = re.findall(r"<a [^>]*>", html)
        assert all('href="mailto:a@b.co"' in a for a in links), links
        assert "<img" not in html and "<strong>bold" not in html and "<em>it" not in html, html
        assert "<code>code" not in html and "onerror=alert(1)>" not in html
        rows = [line for line in html.splitlines() if line.startswith("<tr>")]
        assert all(row.count("<td") <= 4 for row in rows)    # no cells of its own in the questions table
