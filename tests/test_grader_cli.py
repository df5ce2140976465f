"""`cnnspec grade` and `cnnspec assignment ...`: exit codes, files, bad input, template/solution/bundle."""
from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

import grader
from cnnspec.cli import main
from cnnspec.errors import SpecError

ROOT = Path(__file__).resolve().parents[1]
LECTURE = str(ROOT / "specs" / "assignments" / "lecture.yaml")
BN = str(ROOT / "specs" / "assignments" / "bn_pool_ce.yaml")
DATA = ROOT / "tests" / "grader_data"
SUB = DATA / "lecture"
AS_OF = ["--as-of", "2024-12-10T00:00:00+00:00"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------- grade: exit codes and files


def test_exit_0_when_everything_passes(capsys):
    code, out, err = run(capsys, "grade", LECTURE, SUB / "correct.yaml", "--instructor")
    assert code == 0 and "score 15 / 15 (100%)" in out


def test_exit_1_when_some_question_fails(capsys):
    code, out, _ = run(capsys, "grade", LECTURE, SUB / "lecture_slips.yaml")
    assert code == 1 and '"+1" is missing' in out


def test_exit_2_for_an_unreadable_submission_but_others_graded(capsys, tmp_path):
    book = tmp_path / "grades.csv"
    code, out, err = run(capsys, "grade", LECTURE, SUB / "correct.yaml", SUB / "malformed.yaml",
                         SUB / "classic_mistakes.yaml", "--gradebook", book, "--format", "json")
    assert code == 2
    assert "malformed.yaml:3:13: YAML syntax error" in err
    doc = json.loads(out)
    assert [r["error"] is None for r in doc["results"]] == [True, False, True]
    rows = list(csv.DictReader(book.open()))
    assert [r["student_id"] for r in rows] == ["s001", "", "s003"]
    assert rows[0]["score"] == "15" and rows[0]["conv1_shape"] == "2" and rows[2]["conv1_shape"] == "0"
    assert "YAML syntax error" in rows[1]["error"]
    assert not list(tmp_path.glob(".*tmp"))


def test_gradebook_cells_cannot_become_spreadsheet_formulas(capsys, tmp_path):
    sub = tmp_path / "answers.yaml"
    sub.write_text(SUB.joinpath("correct.yaml").read_text().replace("student_id: s001", 'student_id: "=HYPERLINK(1)"')
                   if "student_id: s001" in SUB.joinpath("correct.yaml").read_text() else
                   'student_id: "=HYPERLINK(1)"\n' + SUB.joinpath("correct.yaml").read_text())
    book = tmp_path / "grades.csv"
    run(capsys, "grade", LECTURE, sub, "--gradebook", book, "--format", "json")
    (row,) = list(csv.DictReader(book.open()))
    assert row["student_id"] == "'=HYPERLINK(1)"


@pytest.mark.parametrize("argv,needle", [
    (["grade", "missing.yaml", SUB / "correct.yaml"], "assignment file not found"),
    (["grade", LECTURE, SUB / "correct.yaml", SUB / "correct.yaml", "--format", "gradescope"], "one results.json"),
    (["grade", LECTURE, SUB / "nope.yaml"], "submission file not found"),
    (["grade", LECTURE, SUB / "correct.yaml", "--as-of", "yesterday"], "--as-of"),
    (["assignment", "check", SUB / "correct.yaml"], "cnnspec_assignment"),
])
def test_exit_2_for_invalid_input(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 2 and needle in err, err


def test_output_file_and_formats(capsys, tmp_path):
    for fmt in ("text", "json", "junit", "gradescope", "markdown"):
        out = tmp_path / f"report.{fmt}"
        code, stdout, err = run(capsys, "grade", LECTURE, SUB / "classic_mistakes.yaml", "--format", fmt, "-o", out)
        assert code == 1 and stdout == "" and out.stat().st_size > 100
        assert "graded 1 submission(s)" in err
    assert json.loads((tmp_path / "report.gradescope").read_text())["score"] == 1.5


def test_submission_directory_like_gradescope(capsys, tmp_path):
    sub = tmp_path / "submission"
    sub.mkdir()
    shutil.copy(SUB / "correct.yaml", sub / "answers.yaml")
    results = tmp_path / "results.json"
    code, _, _ = run(capsys, "grade", LECTURE, sub, "--format", "gradescope", "-o", results)
    doc = json.loads(results.read_text())  # the hidden question's point is not in the total a student sees
    assert code == 0 and doc["score"] == 14 and sum(t["score"] for t in doc["tests"]) == 15


def test_npy_and_npz_answers(capsys):
    g = grader.Grader(grader.load_assignment(LECTURE))
    r = {q.id: q for q in g.grade_file(SUB / "npy_answers.yaml").questions}
    assert r["grad_w"].status == r["relu_out"].status == r["y_hat"].status == "passed"
    r = g.grade_file(SUB / "answers.npz")
    q = {q.id: q for q in r.questions}
    assert r.student_id == "s008" and q["y_hat"].status == q["loss"].status == q["conv1_shape"].status == "passed"


def test_pickles_are_refused(capsys):
    g = grader.Grader(grader.load_assignment(LECTURE))
    r = g.grade_file(SUB / "pickled.npz")           # an npz with one object array: only that answer refused
    q = {q.id: q for q in r.questions}
    assert q["loss"].outcome == "invalid" and "pickled" in q["loss"].message
    assert q["y_hat"].status == "passed"
    r = g.grade_file(SUB / "pickle.npz")            # a raw pickle: the file is refused, nothing executed
    assert r.error and "pickle" in r.error


def test_bad_answers_graded_one_by_one(capsys):
    g = grader.Grader(grader.load_assignment(LECTURE))
    r = g.grade_file(SUB / "bad_answers.yaml")
    q = {q.id: q for q in r.questions}
    assert q["conv1_shape"].outcome == "invalid" and "ninety-eight" in q["conv1_shape"].message
    assert "bad_answers.yaml:3:14" in q["conv1_shape"].message
    assert q["conv1_kernel"].outcome == "missing"
    assert q["conv2_kernel"].outcome == "missing"
    assert "whole number" in q["conv1_params"].message
    assert "rectangular" in q["relu_out"].message
    assert "NaN" in q["y_hat"].message
    assert q["loss"].status == "passed" and "without quotes" in q["loss"].notes[0]
    assert "inside the submission's folder" in q["grad_w1"].message
    assert "expected shape [1, 2]" in q["grad_w"].message
    assert "mapping" in q["w1_new"].message
    for ok in ("conv1_weight", "conv2_shape", "conv2_params"):
        assert q[ok].status == "passed"
    assert any("did you mean 'conv1_shape'" in w for w in r.warnings)


def test_size_limits(tmp_path, monkeypatch):
    from grader import submission
    g = grader.Grader(grader.load_assignment(LECTURE))
    big = tmp_path / "big.yaml"
    big.write_text("y_hat: 0.38\n" + "# padding\n" * 200)
    monkeypatch.setattr(submission, "MAX_TEXT_BYTES", 1000)
    assert "limit" in g.grade_file(big).error
    monkeypatch.undo()
    # A .npy whose header claims 10**9 values is refused before any data is read.
    huge = tmp_path / "huge.npy"
    with open(huge, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**9,)})
    (tmp_path / "a.yaml").write_text("grad_w: huge.npy\nrelu_out: [" + ", ".join(["1"] * 10) + "]\n")
    q = {q.id: q for q in g.grade_file(tmp_path / "a.yaml").questions}
    assert "limit per answer" in q["grad_w"].message
    assert q["relu_out"].outcome == "wrong"


def test_student_option_and_mismatch_warning(capsys):
    code, out, err = run(capsys, "grade", LECTURE, SUB / "correct.yaml", "--student", "someone-else", "--format",
                         "json")
    assert json.loads(out)["results"][0]["warnings"][0].startswith("the submission says student_id 's001'")


# ---------------------------------------------------------------------------- assignment: check, template, ...


def test_check_the_examples(capsys):
    for path in (LECTURE, BN):
        code, out, err = run(capsys, "assignment", "check", path)
        assert code == 0 and ": ok (" in out, err
    code, out, _ = run(capsys, "assignment", "check", BN, "--json")
    assert json.loads(out)["variant"] == "student:sample-student"


BAD_ASSIGNMENTS = [
    ("poinst: 2", "unknown key 'poinst' in question 1 ('a', output_shape); did you mean 'points'?"),
    ("kind: output_shap", "unknown question kind 'output_shap'; did you mean 'output_shape'?"),
    ("layer: conv2", "model 'model' has no layer 'conv2'; did you mean 'conv1'?"),
    ("visibility: secret", "visibility: must be one of visible, hidden, after_due_date; got 'secret' (string)"),
]


@pytest.mark.parametrize("line,message", BAD_ASSIGNMENTS)
def test_assignment_errors_have_positions_and_suggestions(line, message):
    key = line.split(":")[0]
    base = {"poinst": "points: 1", "kind": "kind: output_shape", "layer": "layer: conv1",
            "visibility": "visibility: visible"}[key]
    text = TEMPLATE.replace(base, line)
    with pytest.raises(SpecError) as exc:
        grader.loads_assignment(text, "hw.yaml")
    assert message in str(exc.value)
    assert "hw.yaml:" in str(exc.value) and "^" in str(exc.value)


TEMPLATE = """cnnspec_assignment: 1
name: hw
model:
  spec:
    cnnspec: 1
    name: m
    input: {shape: [1, 4, 4]}
    layers:
      - {name: conv1, type: conv2d, filters: 2, kernel: 3}
      - {name: bn1, type: batchnorm}
    loss: {type: mse}
  input: x
data:
  x: {random: normal, shape: [2, 1, 4, 4], per_student: false}
questions:
  - id: a
    kind: output_shape
    layer: conv1
    points: 1
    visibility: visible
  - {id: b, kind: bn_mean, layer: bn1}
"""


def test_assignment_cross_checks():
    cases = [
        (TEMPLATE.replace("layer: bn1}", "layer: conv1}"), "bn_mean is about batchnorm layers"),
        (TEMPLATE.replace("id: b,", "id: a,"), "duplicate question id 'a'"),
        (TEMPLATE.replace("shape: [2, 1, 4, 4]", "shape: [1, 4, 4]"), "add a batch dimension"),
        (TEMPLATE.replace("  - {id: b, kind: bn_mean, layer: bn1}",
                          "  - {id: b, kind: loss}"), "loss needs a loss target"),
        (TEMPLATE.replace("  - {id: b, kind: bn_mean, layer: bn1}",
                          "  - {id: b, kind: bn_mean, layer: bn1, depends_on: [c]}\n"
                          "  - {id: c, kind: bn_var, layer: bn1, depends_on: [b]}"), "cycle"),
        (TEMPLATE.replace("filters: 2, kernel: 3", "filters: 2, kernel: 9"), "kernel height 9 exceeds"),
        (TEMPLATE.replace("input: x\n", "input: y\n"), "unknown data 'y'"),
    ]
    for text, needle in cases:
        with pytest.raises(SpecError) as exc:
            grader.loads_assignment(text, "hw.yaml")
        assert needle in str(exc.value), (needle, str(exc.value))
    # An inline spec's error points into the assignment file (line 9: the conv layer).
    with pytest.raises(SpecError) as exc:
        grader.loads_assignment(TEMPLATE.replace("kernel: 3}", "kernal: 3}"), "hw.yaml")
    assert "hw.yaml:9:" in str(exc.value) and "did you mean 'kernel'" in str(exc.value)


def test_template_has_no_answers(capsys, tmp_path):
    out = tmp_path / "t.yaml"
    code, _, _ = run(capsys, "assignment", "template", LECTURE, "-o", out)
    text = out.read_text()
    assert code == 0 and "conv1_shape:" in text and "w1_new_lr1:" in text
    for secret in ("98", "97", "168", "3.644", "0.53144", "6.8644", "-3.144", "18496", "14, 14"):
        assert secret not in text, secret
    # An untouched template grades as all-missing, without crashing.
    r = grader.Grader(grader.load_assignment(LECTURE)).grade_file(out)
    assert r.score == 0 and all(q.outcome == "missing" for q in r.questions)


def test_template_for_a_student_has_their_data(capsys, tmp_path):
    out = tmp_path / "s42.yaml"
    code, _, _ = run(capsys, "assignment", "template", BN, "--student", "s42", "-o", out)
    text = out.read_text()
    a = grader.load_assignment(BN)
    labels = a.variant("s42").data["labels"]
    assert f"# labels: shape [2]\n#   {np.array2string(labels, separator=', ')}" in text
    assert 'student_id: "s42"' in text


@pytest.mark.parametrize("assignment,student,ext", [(LECTURE, None, "yaml"), (BN, "s7", "yaml"),
                                                    (BN, "s7", "json"), (LECTURE, None, "npz")])
def test_solution_scores_100(capsys, tmp_path, assignment, student, ext):
    out = tmp_path / f"solution.{ext}"
    extra = ["--student", student] if student else []
    code, _, _ = run(capsys, "assignment", "solution", assignment, "-o", out, *extra)
    assert code == 0
    code, stdout, _ = run(capsys, "grade", assignment, out, "--instructor")
    assert code == 0 and "(100%)" in stdout


def test_bundle_is_a_working_gradescope_autograder(capsys, tmp_path):
    out = tmp_path / "autograder.zip"
    code, _, err = run(capsys, "assignment", "bundle", BN, "-o", out)
    assert code == 0
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        modes = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
        zf.extractall(tmp_path / "src")
    assert {"setup.sh", "run_autograder", "assignment/assignment.yaml", "cnnspec-src/pyproject.toml",
            "cnnspec-src/grader/cli.py", "cnnspec-src/cnnspec/model.py"} <= set(names)
    assert modes["run_autograder"] & stat.S_IXUSR and modes["setup.sh"] & stat.S_IXUSR
    run_sh = (tmp_path / "src" / "run_autograder").read_text()
    assert "/autograder/submission_metadata.json" in run_sh and "--format gradescope" in run_sh
    assert "pip install ./cnnspec-src" in (tmp_path / "src" / "setup.sh").read_text()
    # What run_autograder does, against the bundled assignment: grade a submission dir into results.json.
    sub = tmp_path / "submission"
    sub.mkdir()
    run(capsys, "assignment", "solution", tmp_path / "src" / "assignment" / "assignment.yaml", "--student", "s9",
        "-o", sub / "answers.yaml")
    res = tmp_path / "results.json"
    code, _, _ = run(capsys, "grade", tmp_path / "src" / "assignment" / "assignment.yaml", sub, "--student", "s9",
                     "--format", "gradescope", "-o", res)
    import jsonschema
    doc = json.loads(res.read_text())
    jsonschema.validate(doc, json.loads((DATA / "gradescope_results.schema.json").read_text()))
    visible = sum(t["max_score"] for t in doc["tests"] if t["visibility"] == "visible")
    assert code == 0 and doc["score"] == visible == 15 and sum(t["score"] for t in doc["tests"]) == 17


def test_lecture_bundle_renames_every_file_into_the_bundle(capsys, tmp_path):
    out = tmp_path / "a.zip"
    assert run(capsys, "assignment", "bundle", LECTURE, "-o", out)[0] == 0
    names = zipfile.ZipFile(out).namelist()
    assert "assignment/assignment.yaml" in names and "assignment/specs/conv100.yaml" in names


def test_bundle_with_symlinked_and_absolute_paths_grades_from_another_directory(capsys, tmp_path):
    """Spec files behind symlinks and outside the assignment's folder, an absolute .npy path and spec weights:
    the bundle renames them all, and the unpacked bundle grades from a directory of its own."""
    course = tmp_path / "course"
    (course / "hw").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(ROOT / "specs" / "lecture_linear.yaml", elsewhere / "real_linear.yaml")
    (course / "hw" / "linear.yaml").symlink_to(elsewhere / "real_linear.yaml")
    np.save(elsewhere / "x.npy", np.array([[0.6, 0.8]]))
    np.savez(elsewhere / "w.npz", **{"fc.weight": np.array([[0.5, 0.1]])})
    spec = (ROOT / "specs" / "lecture_linear.yaml").read_text()
    (elsewhere / "weighted.yaml").write_text(spec.replace("name: lecture-linear", "name: weighted")
                                             .split("weights:")[0] + "weights: w.npz\n")
    (course / "hw" / "hw.yaml").write_text(f"""cnnspec_assignment: 1
name: hw
models:
  neuron: {{spec: linear.yaml, input: x, target: y}}
  weighted: {{spec: {elsewhere / 'weighted.yaml'}, input: x, target: y}}
data:
  x: {elsewhere / 'x.npy'}
  y: [[3.0]]
questions:
  - {{id: y_hat, kind: output, model: neuron}}
  - {{id: y_hat2, kind: output, model: weighted}}
""")
    out = tmp_path / "a.zip"
    code, _, err = run(capsys, "assignment", "bundle", course / "hw" / "hw.yaml", "-o", out)
    assert code == 0, err
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(out).extractall(unpacked)
    shutil.rmtree(elsewhere)  # nothing outside the bundle may be needed
    shutil.rmtree(course)
    sub = tmp_path / "sub.yaml"
    sub.write_text("y_hat: [[0.38]]\ny_hat2: [[0.38]]\n")
    code, out_text, err = run(capsys, "grade", unpacked / "assignment" / "assignment.yaml", sub)
    assert code == 0, out_text + err


def test_help_texts(capsys):
    for argv in (["grade", "--help"], ["assignment", "--help"], ["assignment", "bundle", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "exit codes" in out and "gradescope" in out and "setup.sh" in out
    assert main(["assignment"]) == 2


# ---------------------------------------------------------------------------- malformed values never crash grading


def _graded(path):
    g = grader.Grader(grader.load_assignment(LECTURE))
    r = g.grade_file(path)
    return r, {q.id: q for q in r.questions}


def test_json_numbers_too_large_cost_one_question(tmp_path):
    for digits in (400, 5000):            # past float64's range; past Python's int-string limit
        f = tmp_path / f"big{digits}.json"
        f.write_text('{"y_hat": 1' + "0" * digits + ', "relu_out": [[1' + "0" * digits + ', 0, 0.5, 0]], '
                     '"loss": 6.8644}')
        r, q = _graded(f)
        assert r.error is None and q["loss"].status == "passed"
        assert q["y_hat"].status == q["relu_out"].status == "failed"
    from grader.submission import parse_answer
    sub = parse_answer(10**400, tmp_path)
    assert sub.error and "too large" in sub.error
    sub = parse_answer([[10**400, 1]], tmp_path)
    assert sub.error and "too large" in sub.error


def test_npy_names_that_cannot_be_paths_cost_one_question(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"relu_out": "a\u0000b.npy", "grad_w": "x" * 5000 + ".npy",
                                                 "loss": 6.8644}))
    r, q = _graded(tmp_path / "a.json")
    assert q["loss"].status == "passed"
    assert q["relu_out"].outcome == q["grad_w"].outcome == "invalid"


def test_npy_header_with_a_huge_dtype_is_refused_before_loading(tmp_path):
    with open(tmp_path / "u.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<U100000000", "fortran_order": False,
                                                 "shape": (4_000_000,)})
        f.write(b"\0" * 64)
    (tmp_path / "a.yaml").write_text("relu_out: u.npy\nloss: 6.8644\n")
    r, q = _graded(tmp_path / "a.yaml")
    assert q["relu_out"].outcome == "invalid" and "expected numbers" in q["relu_out"].message
    assert q["loss"].status == "passed"


def _npz(path, members: dict):
    import io
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            if isinstance(data, np.ndarray):
                buf = io.BytesIO()
                np.save(buf, data)
                data = buf.getvalue()
            zf.writestr(name, data)


def test_npz_members_are_checked_before_loading(tmp_path):
    import io
    lying = io.BytesIO()                  # a header that claims 10**12 values over 64 bytes of data
    np.lib.format.write_array_header_1_0(lying, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    lying.write(b"\0" * 64)
    _npz(tmp_path / "a.npz", {"relu_out.npy": lying.getvalue(), "grad_w.npy": b"garbage",
                              "notes.txt": b"hello", "loss.npy": np.array(6.8644)})
    r, q = _graded(tmp_path / "a.npz")
    assert r.error is None and q["loss"].status == "passed"
    assert "limit per answer" in q["relu_out"].message
    assert q["grad_w"].outcome == "invalid" and "not a .npy" in q["grad_w"].message
    assert any("notes.txt" in w for w in r.warnings)


def test_npz_student_id_as_bytes_is_the_same_student(tmp_path):
    np.savez(tmp_path / "a.npz", student_id=np.array(b"s123"), loss=np.array(6.8644))
    assert grader.load_submission(tmp_path / "a.npz").student_id == "s123"


def test_template_describes_flat_outputs_as_features():
    from grader.tools import template
    text, _ = template(grader.load_assignment(LECTURE), None, None)
    form = {line.split(":")[0]: prev for prev, line in zip(text.splitlines(), text.splitlines()[1:])
            if line.endswith(":") and not line.startswith("#")}
    assert "CHW" not in form["y_hat"] and "features" in form["y_hat"]
    assert "CHW" not in form["relu_out"] and "features" in form["relu_out"]
    text, _ = template(grader.load_assignment(BN), "s1", None)
    assert "answer: nested lists (batch first, then the CHW layout)" in text     # conv_out: (N, C, H, W)


def test_a_submission_folder_cannot_point_out_of_itself(tmp_path):
    sub = tmp_path / "submission"
    sub.mkdir()
    (tmp_path / "elsewhere.yaml").write_text("loss: 6.8644\n")
    (sub / "answers.yaml").symlink_to(tmp_path / "elsewhere.yaml")
    r = grader.Grader(grader.load_assignment(LECTURE)).grade_file(sub)
    assert r.error and "outside" in r.error


def test_an_unreadable_json_file_is_an_unreadable_submission(tmp_path, monkeypatch):
    f = tmp_path / "a.json"
    f.write_text('{"loss": 6.8644}')
    real = os.open

    def denied(path, *args, **kwargs):
        if str(path) == str(f):
            raise PermissionError(13, "Permission denied")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    r = grader.Grader(grader.load_assignment(LECTURE)).grade_file(f)
    assert r.error and "Permission denied" in r.error


def test_assignment_check_never_says_ok_next_to_a_problem(capsys, tmp_path):
    hw = tmp_path / "hw.yaml"
    hw.write_text(f"""cnnspec_assignment: 1
name: overflow
model: {{spec: {ROOT / 'specs' / 'lecture_linear.yaml'}, input: x, target: y}}
data: {{x: [[1.0e308, 1.0e308]], y: [[3.0]]}}
questions:
  - {{id: loss, kind: loss}}
  - {{id: y_hat, kind: output}}
""")
    code, out, err = run(capsys, "assignment", "check", hw)
    assert code == 1
    first = out.splitlines()[0]
    assert ": ok" not in first and "1 question cannot be graded" in first and "1 model," in first, first
    assert "PROBLEM" in out


def test_template_and_solution_say_what_they_wrote_and_whose_data(capsys, tmp_path):
    code, out, err = run(capsys, "assignment", "template", BN, "-o", tmp_path / "t.yaml")
    assert code == 0 and f"wrote the answer template {tmp_path / 't.yaml'}" in err
    assert "sample student 'sample-student'" in err and "--student" in err
    code, out, err = run(capsys, "assignment", "solution", BN, "--student", "s7", "-o", tmp_path / "s.yaml")
    assert code == 0 and f"wrote the solution {tmp_path / 's.yaml'}" in err and "student s7" in err
    code, out, err = run(capsys, "assignment", "solution", BN)
    assert out.startswith("# Solution") and "sample student" in err  # whose data, even on stdout


def test_bundle_with_hostile_names_stays_self_consistent(capsys, tmp_path):
    """A shell-active assignment file name, a name YAML 1.2 reads as a number, and a model name that is not a
    file name (red team F11): the scripts name a fixed file, strings stay strings, model files get safe names."""
    course = tmp_path / "course"
    course.mkdir()
    np.savez(tmp_path / "w.npz", **{"fc.weight": np.array([[0.5, 0.1]])})
    hw = course / "hw$(touch PWNED).yaml"
    hw.write_text(f"""cnnspec_assignment: 1
name: "1e5"
models:
  "in/line":
    spec:
      cnnspec: 1
      name: "0o17"
      input: {{shape: [2]}}
      layers: [{{name: fc, type: dense, units: 1, bias: false}}]
      weights: {tmp_path / 'w.npz'}
      loss: {{type: mse}}
    input: x
    target: y
data: {{x: [[0.6, 0.8]], y: [[3.0]]}}
questions:
  - {{id: y_hat, kind: output, model: "in/line"}}
""")
    out = tmp_path / "a.zip"
    code, _, err = run(capsys, "assignment", "bundle", hw, "-o", out)
    assert code == 0, err
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(out).extractall(unpacked)
    for script in ("setup.sh", "run_autograder"):
        assert "$(touch" not in (unpacked / script).read_text()
    assert all(".." not in n for n in zipfile.ZipFile(out).namelist())
    shutil.rmtree(course)
    (tmp_path / "w.npz").unlink()
    code, out_text, err = run(capsys, "assignment", "check", unpacked / "assignment" / "assignment.yaml")
    assert code == 0, out_text + err
    assert "1e5" in out_text and not (tmp_path / "PWNED").exists()


def test_a_template_with_data_files_writes_all_of_them_or_none(capsys, tmp_path, monkeypatch):
    import grader.tools
    monkeypatch.setattr(grader.tools, "INLINE_DATA_LIMIT", 1)       # every array goes to a .npy file
    code, _, err = run(capsys, "assignment", "template", BN, "--student", "s42", "-o", tmp_path / "t.yaml")
    data = grader.load_assignment(BN).variant("s42").data
    written = sorted(p.name for p in tmp_path.glob("t.*.npy"))
    assert code == 0 and written and "data files next to it" in err
    for name in written:
        key = name[2:-4]
        np.testing.assert_array_equal(np.load(tmp_path / name), data[key])
        assert f"numpy.load('{name}')" in (tmp_path / "t.yaml").read_text()
    # -o refused (a folder): nothing at all is written, no data file left behind.
    other = tmp_path / "other"
    other.mkdir()
    (other / "u.yaml").mkdir()
    code, _, err = run(capsys, "assignment", "template", BN, "--student", "s42", "-o", other / "u.yaml")
    assert code == 2 and list(other.iterdir()) == [other / "u.yaml"], err
