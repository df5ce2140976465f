"""Grading: compare each answer, explain wrong ones, and carry errors forward.

Questions are graded in dependency order, one at a time: a missing, unreadable or wrong answer affects only
its own question (and offers its value to the questions that carry it forward). The reference answers of
each variant are computed once and cached (LRU) across submissions.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

import numpy as np

import cnnspec
from cnnspec.errors import CnnspecError, DataError
from cnnspec.schema import INPUT_NAME
from cnnspec.text import printable

from . import compare as cmp
from cnnspec.schema import did_you_mean

from .assignment import FLOAT_KINDS, Assignment, normalize_student_id
from .diagnose import Context, diagnose, rounding_mistake
from .reference import Reference, bn_axes
from .report import CarriedForward, Diagnosis, QuestionResult, SubmissionResult, to_json
from .submission import Answer, Submission, load_submission

REFERENCE_CACHE = 64


@dataclass
class _State:
    """What later questions may carry forward: the student's value (at the question's shape) and whether
    it was right."""

    value: Any
    ok: bool


def question_text(q, a: Assignment) -> str:
    if q.text:
        return q.text.strip()
    m = f" (model '{a.model_of[q.id]}')" if len(a.refs) > 1 else ""
    k = q.kind
    text = {
        "output_shape": lambda: f"Output shape of layer '{q.layer}' (one sample)",
        "param_count": lambda: f"Trainable parameters of '{q.layer}'" if q.layer else "Trainable parameters of the model",
        "kernel_shape": lambda: f"Shape of one kernel of '{q.layer}'",
        "weight_shape": lambda: f"Shape of '{q.param}'",
        "activation": lambda: f"Output values of '{q.layer}'",
        "bn_mean": lambda: f"Batch mean per channel at '{q.layer}'",
        "bn_var": lambda: f"Batch variance per channel at '{q.layer}'",
        "output": lambda: "Model output",
        "prediction": lambda: "Predicted class of each sample",
        "loss": lambda: "Loss",
        "gradient": lambda: "Gradient of the loss w.r.t. the input" if q.param == INPUT_NAME
        else f"Gradient of the loss w.r.t. '{q.param}'",
        "param_after_steps": lambda: f"'{q.param}' after {q.steps} optimizer step{'s' if q.steps > 1 else ''}",
    }[k]()
    index = getattr(q, "index", None)
    return text + (f", element {index}" if index is not None else "") + m


def dependency_order(a: Assignment) -> list:
    """Questions in file order, except that every question comes after the ones it carries forward from."""
    done: set[str] = set()
    out = []

    def visit(q):
        if q.id in done:
            return
        done.add(q.id)
        for dep in a.upstream.get(q.id, []):
            visit(a.question(dep))
        out.append(q)

    for q in a.questions:
        visit(q)
    return out


class Grader:
    """Grades submissions of one assignment; reference answers are computed once per variant."""

    def __init__(self, assignment: Assignment, now: Optional[datetime] = None):
        self.assignment = assignment
        self.now = now
        self._refs: OrderedDict[str, Reference] = OrderedDict()
        self._order = dependency_order(assignment)

    def reference(self, student_id: Optional[str] = None) -> Reference:
        a = self.assignment
        key = a.variant_key(student_id)
        ref = self._refs.pop(key, None)
        if ref is None:
            ref = Reference(a, a.variant(student_id))
        self._refs[key] = ref
        while len(self._refs) > REFERENCE_CACHE:
            self._refs.popitem(last=False)
        return ref

    # ------------------------------------------------------------------ entry points
    def grade_file(self, path, student_id: Optional[str] = None) -> SubmissionResult:
        """Grade a submission file. Never raises for one submission: an unreadable file gives a result with
        `error` set (score 0), and a failure inside cnnspec one with `internal_error` set as well, so the other
        submissions of a batch are still graded and reported."""
        label = printable(str(path))
        try:
            sub = load_submission(path)
        except DataError as exc:
            return self._error_result(label, student_id, str(exc))
        except Exception as exc:  # noqa: BLE001 - one submission must never spoil the batch
            return self._internal_error(label, student_id, exc)
        try:
            return self.grade(sub, student_id)
        except Exception as exc:  # noqa: BLE001
            return self._internal_error(label, student_id, exc)

    def _internal_error(self, label: str, sid: Optional[str], exc: Exception) -> SubmissionResult:
        r = self._error_result(label, sid, f"internal error while grading this submission ({type(exc).__name__}: "
                                           f"{printable(str(exc))[:200]}); this is a bug in cnnspec, not a "
                                           "mistake in the answers: please tell the instructor")
        r.internal_error = True
        return r

    def grade(self, sub: Submission, student_id: Optional[str] = None) -> SubmissionResult:
        a = self.assignment
        warnings: list[str] = []
        student_id = printable(student_id) if student_id and student_id.strip() else None
        sid = student_id or sub.student_id
        if student_id and sub.student_id and normalize_student_id(student_id) != normalize_student_id(sub.student_id):
            warnings.append(f"the submission says student_id '{sub.student_id}'; graded as '{student_id}' (given "
                            "on the command line)")
        try:
            ref = self.reference(sid)
        except DataError as exc:
            return self._error_result(sub.path, sid, str(exc))
        started = time.perf_counter()
        states: dict[str, _State] = {}
        results: dict[str, QuestionResult] = {}
        for q in self._order:
            results[q.id] = self._question(q, sub.answers.get(q.id), ref, states)
        ids = [q.id for q in a.questions]
        for key in sub.answers:
            if key not in results:
                warnings.append(f"answer for unknown question '{key}' ignored{did_you_mean(key, ids)}")
        qs = [results[q.id] for q in a.questions]
        score = round(sum(r.score for r in qs), 9)
        return SubmissionResult(
            audience="instructor", assignment=a.name, title=a.title, submission=sub.path,
            student_id=sid, variant=ref.variant.key, score=score, max_score=a.max_score,
            percent=round(100.0 * score / a.max_score, 2) if a.max_score else 100.0,
            passed=all(r.status == "passed" for r in qs), questions=qs, warnings=warnings,
            graded_at=(self.now or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
            seconds=round(time.perf_counter() - started, 4), grader_version=cnnspec.__version__,
            due_date=a.file.due_date)

    def _error_result(self, path: str, sid: Optional[str], message: str) -> SubmissionResult:
        a = self.assignment
        qs = [QuestionResult(id=q.id, number=i + 1, text=question_text(q, a), kind=q.kind, points=q.points,
                             score=0.0, status="failed", outcome="invalid", visibility=q.visibility,
                             message="not graded: the submission could not be read")
              for i, q in enumerate(a.questions)]
        return SubmissionResult(
            audience="instructor", assignment=a.name, title=a.title, submission=path, student_id=sid, variant=None,
            score=0.0, max_score=a.max_score, percent=0.0, passed=False, questions=qs, warnings=[], error=message,
            graded_at=(self.now or datetime.now(timezone.utc)).isoformat(timespec="seconds"), seconds=0.0,
            grader_version=cnnspec.__version__, due_date=a.file.due_date)

    # ------------------------------------------------------------------ one question
    def _question(self, q, ans: Optional[Answer], ref: Reference, states: dict[str, _State]) -> QuestionResult:
        a = self.assignment
        number = a.questions.index(q) + 1
        r = QuestionResult(id=q.id, number=number, text=question_text(q, a), kind=q.kind, points=q.points,
                           score=0.0, status="failed", outcome="wrong", visibility=q.visibility)
        tol = None
        if q.kind in FLOAT_KINDS:
            tol = cmp.Tolerance(a.setting(q, "rtol"), a.setting(q, "atol"))
            r.tolerance = {"rtol": tol.rtol, "atol": tol.atol}
        try:
            expected = ref.expected(q)
        except CnnspecError as exc:
            states[q.id] = _State(None, False)
            r.outcome = "error"
            r.message = f"the reference answer could not be computed (a problem in the assignment): {exc}"
            return r
        r.expected = to_json(expected)
        if ans is None:
            states[q.id] = _State(None, False)
            r.outcome, r.message = "missing", f"no answer for '{q.id}'"
            return r
        r.answer = to_json(ans.value) if ans.value is not None else to_json(ans.raw)
        r.notes = list(ans.notes)
        if ans.error is not None:
            states[q.id] = _State(None, False)
            r.outcome = "missing" if ans.missing else "invalid"
            r.message = (ans.error if ans.missing else f"could not read the answer: {ans.error}") + \
                (f" ({ans.where})" if ans.where else "")
            return r
        c = self._compare(q, ans.value, expected, tol)
        r.notes += c.notes
        r.message = c.message
        r.details = list(c.details)
        if c.shape_ok and np.size(expected) > 1:
            r.fraction_correct = round(c.fraction, 6)
        states[q.id] = _State(c.value if c.shape_ok else None, c.ok)
        if c.ok:
            r.score, r.status, r.outcome = float(q.points), "passed", "correct"
            return r
        score = 0.0
        if a.setting(q, "partial_credit") and c.shape_ok and c.fraction > 0 and np.size(expected) > 1:
            score = q.points * c.fraction
            r.outcome = "partially_correct"
        try:
            run = ref.run_for(q)
            ctx = Context(q, ans.value, expected, ref.full(q), run, tol)
            diags = diagnose(ctx)
            if tol is not None and not diags:
                d = rounding_mistake(ctx)
                diags = [d] if d else []
        except CnnspecError:
            diags = []
        r.diagnoses = [Diagnosis(code=d.code, message=d.message) for d in diags]
        credit = float(a.setting(q, "carry_forward"))
        cf = self._carry_forward(q, ans.value, ref, states, tol) if credit > 0 else None  # 0 turns it off
        if cf is not None:
            cf.credit = credit
            cf.message += f"; {credit:.0%} of the points"
            r.carried_forward = cf
            if q.points * credit > score:
                score = q.points * credit
                r.outcome = "carried_forward"
        r.score = round(score, 9)
        # A wrong answer to a 0-point question has "full points" (0 of 0) but did not pass.
        r.status = "passed" if r.score >= q.points > 0 else "partial" if r.score > 0 else "failed"
        return r

    def _compare(self, q, value: np.ndarray, expected, tol) -> cmp.Comparison:
        if q.kind in ("output_shape", "kernel_shape", "weight_shape"):
            return cmp.compare_shape(value, expected)
        if q.kind == "param_count":
            return cmp.compare_count(value, expected)
        if q.kind == "prediction":
            return cmp.compare_labels(value, np.asarray(expected))
        return cmp.compare_float(value, expected, tol, self.assignment.setting(q, "nonfinite"))

    # ------------------------------------------------------------------ error carried forward
    def _carry_forward(self, q, value, ref: Reference, states: dict[str, _State], tol) -> Optional[CarriedForward]:
        a = self.assignment
        ups = a.upstream.get(q.id, [])
        given = {u: states[u] for u in ups if u in states and states[u].value is not None}
        wrong = [u for u, s in given.items() if not s.ok]
        if not wrong:
            return None
        try:
            full = {u: self._full_value(a.question(u), s.value, ref) for u, s in given.items()}
            cand = self._recompute(q, full, ref)
            if cand is None:
                return None
            index = getattr(q, "index", None)
            if index is not None:
                cand = np.asarray(cand)[tuple(index)]
        except (CnnspecError, ValueError, IndexError, KeyError):
            return None
        if q.kind in ("output_shape", "kernel_shape", "weight_shape", "param_count", "prediction"):
            ok = cmp.matches(value, np.asarray(cand), None)
        else:
            ok = cmp.matches(value, cand, tol)
        if not ok:
            return None
        shown = ", ".join(f"'{u}' ({cmp.fmt_array(np.asarray(given[u].value))})" for u in wrong)
        return CarriedForward(from_questions=wrong, credit=0.0,
                              message=f"error carried forward: right for your own answer to {shown}, which was "
                                      "wrong")

    @staticmethod
    def _full_value(q_up, value, ref: Reference):
        index = getattr(q_up, "index", None)
        if index is None:
            return value
        full = np.array(ref.full(q_up), dtype=np.float64, copy=True)
        full[tuple(index)] = value
        return full

    def _recompute(self, q, ups: dict[str, Any], ref: Reference):
        """The question's quantity computed from the student's own upstream answers (None: not possible)."""
        a = self.assignment
        run = ref.run_for(q)
        by_kind: dict[str, Any] = {}
        for u, v in ups.items():
            by_kind.setdefault(a.question(u).kind, (a.question(u), v))
        k = q.kind
        act = by_kind.get("activation")
        out = by_kind.get("output") or (act if act and act[0].layer == run.graph.output else None)
        if k == "output_shape" and "output_shape" in by_kind:
            return run.shape_from(q.layer, list(by_kind["output_shape"][1]))
        if k == "activation" and act:
            return run.layer_forward(q.layer, act[1])
        if k == "output" and act:
            return run.layer_forward(run.graph.output, act[1])
        if k in ("bn_mean", "bn_var"):
            x = act[1] if act else run.bn_input(q.layer)
            axes = bn_axes(np.ndim(x), run.layout)
            if k == "bn_mean":
                return np.mean(x, axis=axes) if act else None
            mu = by_kind["bn_mean"][1] if "bn_mean" in by_kind else np.mean(x, axis=axes)
            shape = [1] * np.ndim(x)
            shape[1 if (np.ndim(x) == 2 or run.layout == "CHW") else -1] = -1
            return np.mean((x - np.reshape(mu, shape)) ** 2, axis=axes)
        if k == "loss" and out:
            return run.loss_of(out[1])
        if k == "prediction" and out:
            return np.argmax(np.asarray(out[1]), axis=1)
        if k == "gradient" and out:
            grads, dx = run.grads_for_output(out[1])
            return dx if q.param == INPUT_NAME else grads[q.param]
        if k == "param_after_steps" and q.steps == 1 and "gradient" in by_kind:
            gq, g = by_kind["gradient"]
            if gq.param == q.param:
                return run.sgd_from_grad(q.param, g)
        return None


def grade(assignment: Assignment, submission: Submission, student_id: Optional[str] = None,
          now: Optional[datetime] = None) -> SubmissionResult:
    """Grade one submission (see Grader for many)."""
    return Grader(assignment, now).grade(submission, student_id)
