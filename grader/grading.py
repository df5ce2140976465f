"""Grading: compare each answer, explain wrong ones, and carry errors forward; flag copying in a batch.

Questions are graded in dependency order, one at a time: a missing, unreadable or wrong answer affects only
its own question (and offers its value to the questions that carry it forward). The reference answers of
each variant are computed once and cached (LRU) across submissions.

A wrong answer is first checked against the student's own upstream answers (error carried forward): if it is
right for them, that is what the feedback says, and no detector runs - their explanations all presume the
upstream answers were right. Otherwise the detectors (diagnose.py) name the mistake.

With per-student data, a wrong answer that matches ANOTHER student's reference answer is a sign of copying:
`find_copying` / `flag_copying` look for it in a batch of results (and a Grader does it as it goes, see
CopyCheck); it is shown to staff only (report.for_student drops it).
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

import numpy as np

import cnnspec
from cnnspec import limits
from cnnspec.errors import CnnspecError, DataError
from cnnspec.schema import INPUT_NAME
from cnnspec.text import printable

from . import compare as cmp
from cnnspec.schema import did_you_mean

from .assignment import FLOAT_KINDS, Assignment, normalize_student_id
from .diagnose import Context, diagnose
from .reference import Reference, bn_axes, layer_chain
from .report import CarriedForward, CopyMatch, Diagnosis, QuestionResult, SubmissionResult, to_json
from .submission import Answer, Submission, load_submission, parse_submission

REFERENCE_CACHE = 64
MAX_UNKNOWN_WARNINGS = 20   # answers for unknown questions named one by one (with a did-you-mean)


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

    def __init__(self, assignment: Assignment, now: Optional[datetime] = None, check_copying: bool = False,
                 reference_cache: int = REFERENCE_CACHE):
        """check_copying: compare every submission this Grader grades with the others it graded (per-student
        data only; see CopyCheck), updating results returned earlier in place when a later submission shows
        that one of their answers matches that student's reference. Off by default: a batch (cnnspec grade, a
        service's gradebook) calls flag_copying on its results instead, which changes nothing in place.
        reference_cache: how many variants' reference answers are kept (least recently used dropped first)."""
        self.assignment = assignment
        self.reference_cache = max(1, int(reference_cache))
        self.now = now
        self._refs: OrderedDict[str, Reference] = OrderedDict()
        self._sizes: dict[str, int] = {}   # bytes of each cached reference, measured once it is complete
        self._bytes = 0                     # their sum
        self._order = dependency_order(assignment)
        self.copy_check: Optional[CopyCheck] = CopyCheck(self) if check_copying else None

    def new_batch(self) -> None:
        """Forget the submissions graded so far (copying is looked for within one batch)."""
        if self.copy_check is not None:
            self.copy_check = CopyCheck(self)

    def reference(self, student_id: Optional[str] = None) -> Reference:
        a = self.assignment
        key = a.variant_key(student_id)
        ref = self._refs.pop(key, None)
        if ref is not None:  # a hit: no new memory, nothing to evict
            self._refs[key] = ref
            return ref
        # Bounded by memory too: a large model's run keeps every activation and gradient (hundreds of MiB),
        # so 64 of them could fill the machine. A reference's arrays are all computed by the time the next one
        # is asked for, so each is measured once, then (O(1) per miss, not a walk over the whole cache).
        if self._refs:
            last_key = next(reversed(self._refs))
            if last_key not in self._sizes:
                self._sizes[last_key] = self._refs[last_key].nbytes()
                self._bytes += self._sizes[last_key]
        ref = Reference(a, a.variant(student_id))
        self._refs[key] = ref
        budget = limits.resolve(None) // 2
        while len(self._refs) > 1 and (len(self._refs) > self.reference_cache or self._bytes > budget):
            old_key, _ = self._refs.popitem(last=False)
            self._bytes -= self._sizes.pop(old_key, 0)
        return ref

    # ------------------------------------------------------------------ entry points
    def grade_file(self, path, student_id: Optional[str] = None) -> SubmissionResult:
        """Grade a submission file. Never raises for one submission: an unreadable file gives a result with
        `error` set (score 0), and a failure inside cnnspec one with `internal_error` set as well, so the other
        submissions of a batch are still graded and reported."""
        return self._grade_read(printable(str(path)), lambda: load_submission(path), student_id)

    def grade_bytes(self, data: bytes, name: str, student_id: Optional[str] = None) -> SubmissionResult:
        """Grade an answers file's bytes (an upload; `name` gives the format and names it), as grade_file grades
        that file; an answer naming another file (.npy) is refused: an upload is one file."""
        return self._grade_read(printable(name), lambda: parse_submission(data, name), student_id)

    def _grade_read(self, label: str, read, student_id: Optional[str]) -> SubmissionResult:
        try:
            sub = read()
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
        unknown = [key for key in sub.answers if key not in results]
        for key in unknown[:MAX_UNKNOWN_WARNINGS]:
            warnings.append(f"answer for unknown question '{key}' ignored{did_you_mean(key, ids)}")
        if len(unknown) > MAX_UNKNOWN_WARNINGS:
            more = len(unknown) - MAX_UNKNOWN_WARNINGS
            warnings.append(f"and {more:,} more answer{'s' if more != 1 else ''} for unknown questions ignored")
        qs = [results[q.id] for q in a.questions]
        score = round(sum(r.score for r in qs), 9)
        result = SubmissionResult(
            audience="instructor", assignment=a.name, title=a.title, submission=sub.path,
            student_id=sid, variant=ref.variant.key, score=score, max_score=a.max_score,
            percent=round(100.0 * score / a.max_score, 2) if a.max_score else 100.0,
            passed=all(r.status == "passed" for r in qs), questions=qs, warnings=warnings,
            graded_at=(self.now or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
            seconds=round(time.perf_counter() - started, 4), grader_version=cnnspec.__version__,
            due_date=a.file.due_date)
        if self.copy_check is not None:
            self.copy_check.add(result, ref)
        return result

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
        r._without_cf = round(score, 9)
        credit = float(a.setting(q, "carry_forward"))
        # Carried forward first: an answer right for the student's own wrong upstream answer is explained by it.
        # Every detector compares with the reference's upstream values, so a diagnosis here would presume the
        # upstream answer was right ("the step went uphill" for a step taken with the student's own gradient).
        cf = self._carry_forward(q, ans.value, ref, states, tol)
        if cf is not None:
            cf.credit = credit
            said = cf.message
            cf.message += (f"; {credit:.0%} of the points" if credit > 0 else
                           "; carried-forward errors earn no points here: correct that answer first")
            r.carried_forward = cf
            if q.points * credit > score:
                score = q.points * credit
                r.outcome = "carried_forward"
        else:
            try:
                run = ref.run_for(q)
                diags = diagnose(Context(q, ans.value, expected, ref.full(q), run, tol))
            except CnnspecError:
                diags = []
            r.diagnoses = [Diagnosis(code=d.code, message=d.message, alternatives=list(d.alternatives),
                                     hint=a.hint(q, d.code)) for d in diags]
        r.score = round(score, 9)
        # A wrong answer to a 0-point question has "full points" (0 of 0) but did not pass.
        r.status = "passed" if r.score >= q.points > 0 else "partial" if r.score > 0 else "failed"
        if cf is not None:
            r._with_cf = (r.score, r.outcome, r.status, cf.credit, cf.message, said)
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
        """The question's quantity computed from the student's own upstream answers (None: not possible).
        An upstream question further up the graph (conv_shape for a pool after a ReLU) is followed through the
        layers between (reference.layer_chain); an explicit depends_on that is not such a chain applies the
        question's layer alone, as for its direct input."""
        a = self.assignment
        run = ref.run_for(q)
        by_kind: dict[str, Any] = {}
        for u, v in ups.items():
            by_kind.setdefault(a.question(u).kind, (a.question(u), v))

        def src(layer, up_layer):
            ok = up_layer in run.graph.nodes and layer_chain(run.graph, up_layer, layer) is not None
            return up_layer if ok else None

        k = q.kind
        act = by_kind.get("activation")
        out = by_kind.get("output") or (act if act and act[0].layer == run.graph.output else None)
        shape = by_kind.get("output_shape")
        if k == "output_shape" and shape:
            return run.shape_from(q.layer, list(shape[1]), src(q.layer, shape[0].layer))
        if k == "param_count" and shape and q.layer:
            return run.param_count_from(q.layer, list(shape[1]), src(q.layer, shape[0].layer))
        if k == "activation" and act:
            return run.layer_forward(q.layer, act[1], src=src(q.layer, act[0].layer))
        if k == "output" and act:
            return run.layer_forward(run.graph.output, act[1], src=src(run.graph.output, act[0].layer))
        if k in ("bn_mean", "bn_var"):
            x = run.bn_input(q.layer)
            if act:
                feed = run.graph.nodes[q.layer].inputs[0]
                x = run.layer_forward(feed, act[1], src=act[0].layer) if src(feed, act[0].layer) else act[1]
                if x is None:
                    return None
            axes = bn_axes(np.ndim(x), run.layout)
            if k == "bn_mean":
                return np.mean(x, axis=axes) if act else None
            mu = by_kind["bn_mean"][1] if "bn_mean" in by_kind else np.mean(x, axis=axes)
            shape_ = [1] * np.ndim(x)
            shape_[1 if (np.ndim(x) == 2 or run.layout == "CHW") else -1] = -1
            return np.mean((x - np.reshape(mu, shape_)) ** 2, axis=axes)
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
                return run.step_from_grad(q.param, g)
        return None


# ---------------------------------------------------------------------------- copying between students


class _Near:
    """Arrays indexed so that the ones within a tolerance of a given array are found without comparing with
    all of them. Each is filed under the buckets of two summaries, its first value and the sum of its absolute
    values: a grid of width 4*atol near zero, log-scaled buckets (ratio 1 + 8*rtol) further out - both wider
    than a tolerance interval, so a lookup visits at most 2 x 2 buckets. The candidates are then compared
    element by element (compare.matches). With rtol >= 0.5 the buckets would be useless: every item is a
    candidate."""

    def __init__(self, tol: cmp.Tolerance, size: int):
        self.tol, self.size = tol, size
        r = max(tol.rtol, 1e-6)
        self.per_octave = 1.0 / math.log2(1.0 + 8.0 * r)
        self.grid = (4.0 * tol.atol, 4.0 * tol.atol * size)           # linear bucket width per summary
        self.linear = tuple(w / (8.0 * r) for w in self.grid)           # |x| below this: the linear grid
        self.indexed = tol.rtol < 0.5
        self.buckets: dict[tuple, list] = {}
        self.items: list = []

    def _bucket(self, x: float, i: int) -> tuple:
        if abs(x) < self.linear[i]:
            return (0, math.floor(x / self.grid[i]))
        if x == 0:
            return (0, 0)
        return (1 if x > 0 else -1, math.floor(math.log2(abs(x)) * self.per_octave))

    def _span(self, lo: float, hi: float, i: int) -> Optional[list[tuple]]:
        """Every bucket a value in [lo, hi] can be in (None: too many to visit)."""
        lin, w = self.linear[i], self.grid[i]
        keys: list[tuple] = []
        if lin > 0 and lo < lin and hi > -lin:
            a, b = math.floor(max(lo, -lin) / w), math.floor(min(hi, lin) / w)
            keys += [(0, k) for k in range(a, b + 1)]
        elif lin == 0 and lo <= 0 <= hi:
            keys.append((0, 0))
        for sign, a, b in ((1, max(lo, lin), hi), (-1, -min(hi, -lin), -lo)):
            a = max(a, 1e-300)
            if b >= a and b > 0:
                ka, kb = (math.floor(math.log2(v) * self.per_octave) for v in (a, b))
                keys += [(sign, k) for k in range(ka, kb + 1)]
            if len(keys) > 64:
                return None
        return keys

    def _summaries(self, v: np.ndarray) -> tuple[float, float]:
        flat = v.reshape(-1)
        return float(flat[0]), float(np.abs(flat).sum())

    def add(self, v: np.ndarray, item) -> None:
        self.items.append(item)
        if self.indexed:
            first, total = self._summaries(v)
            self.buckets.setdefault((self._bucket(first, 0), self._bucket(total, 1)), []).append(item)

    def near(self, v: np.ndarray) -> list:
        """Items that may be within the tolerance of v, in either direction (a superset)."""
        if not self.indexed:
            return list(self.items)
        rtol, atol = self.tol.rtol, self.tol.atol
        first, total = self._summaries(v)
        widen = 1.0 + 1e-9
        t = (atol + rtol * abs(first)) / (1.0 - rtol) * widen
        d = (self.size * atol + rtol * total) / (1.0 - rtol) * widen
        firsts = self._span(first - t, first + t, 0)
        totals = self._span(total - d, total + d, 1)
        if firsts is None or totals is None:
            return list(self.items)
        out = []
        for k0 in firsts:
            for k1 in totals:
                out += self.buckets.get((k0, k1), [])
        return out


def _answer_array(q: QuestionResult) -> Optional[np.ndarray]:
    """A graded wrong answer as an array of finite numbers (None: not one; arrays over 1,000 values are kept in
    results only as a summary and are not compared)."""
    if q.status == "passed" or q.outcome in ("correct", "missing", "invalid", "error", "withheld") or q.answer is None:
        return None
    try:
        a = np.asarray(q.answer, dtype=np.float64)
    except (ValueError, TypeError):
        return None
    return a if _comparable(a) else None


def _comparable(a: np.ndarray) -> bool:
    """Finite values whose magnitudes also sum to a finite number (the index files arrays by that sum); a
    1e308-sized answer is wrong, but not evidence of copying."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(a.size) and bool(np.all(np.isfinite(a))) and bool(np.isfinite(np.abs(a).sum()))


@dataclass
class _Entry:
    result: SubmissionResult
    student: str                                  # the variant key's student id (normalised)
    answers: dict[str, np.ndarray]                # wrong answers to the compared questions
    matches: dict[str, set[str]]                  # question id -> students whose reference the answer matches


class CopyCheck:
    """Wrong answers that match another student's reference answer, within a batch of graded submissions.

    Only assignments with per-student data, only the float kinds (activations, statistics, outputs, losses,
    gradients, updated weights: shapes, counts and class indices are the same for everyone or coincide by
    chance), only the students who have a submission in the batch, and only questions whose reference differs
    between the two students (within the question's tolerance). Two submissions of one student are never
    compared with each other.

    The work is bounded: each student's reference answers are filed once in an index per question (_Near) and
    each wrong answer is looked up there, and each new student's references are looked up among the answers
    filed so far - O(submissions x questions) lookups touching a few candidates each, not the O(n^2)
    comparisons of every answer with every other student's reference.

    One number can match another student's number by chance (in a class of 500, a loss within 0.1% of some
    other student's is likely), so a match is only reported when the answers that match that other student's
    references hold at least MIN_VALUES numbers together (a tensor, or two scalar questions): chance matches of
    two independent numbers with the same student are rare, copying gives many.

    Carried-forward credit does not reward a copied chain: a question's carried-forward credit is withdrawn
    when an upstream answer it was carried forward from matches another student's reference, or itself had its
    carried-forward credit withdrawn (the rule follows the chain: output -> gradient -> update). The question
    then scores what it would without carried-forward credit (partial credit, else 0).
    """

    MIN_VALUES = 2

    def __init__(self, grader: "Grader"):
        self.grader = grader
        a = grader.assignment
        self.questions = [q for q in a.questions if q.kind in FLOAT_KINDS] if a.has_variants else []
        self.tols = {q.id: cmp.Tolerance(a.setting(q, "rtol"), a.setting(q, "atol")) for q in self.questions}
        self.refs: dict[str, dict[str, np.ndarray]] = {}      # student -> question id -> reference answer
        self.names: dict[str, str] = {}                        # student -> the id as the submission gave it
        self.submissions: dict[str, list[str]] = {}            # student -> submission paths
        self._ref_index: dict[str, _Near] = {}
        self._answer_index: dict[str, _Near] = {}
        self.entries: list[_Entry] = []

    def _student_refs(self, student: str, result: SubmissionResult, ref: Optional[Reference]) -> dict:
        if student in self.refs:
            return self.refs[student]
        if ref is None:
            ref = self.grader.reference(result.student_id)
        values: dict[str, np.ndarray] = {}
        for q in self.questions:
            try:
                v = np.asarray(ref.expected(q), dtype=np.float64)
            except (CnnspecError, ValueError, TypeError):
                continue
            if _comparable(v):
                values[q.id] = v
        self.refs[student] = values
        self.names[student] = result.student_id or student
        for qid, v in values.items():
            index = self._ref_index.setdefault(qid, _Near(self.tols[qid], v.size))
            for i in self._answer_index.get(qid, _Near(self.tols[qid], v.size)).near(v):
                self._match(i, qid, student)
            index.add(v, student)
        return values

    def _match(self, i: int, qid: str, other: str) -> None:
        """Record it when entry i's answer to qid matches `other`'s reference (and `other` is someone else, whose
        reference differs from the entry's own)."""
        e = self.entries[i]
        if other == e.student or qid not in e.answers:
            return
        tol = self.tols[qid]
        theirs, own = self.refs[other].get(qid), self.refs[e.student].get(qid)
        if theirs is None or own is None or np.shape(theirs) != np.shape(own):
            return
        if cmp.matches(e.answers[qid], theirs, tol) and not cmp.matches(theirs, own, tol) \
                and not cmp.matches(e.answers[qid], own, tol):
            e.matches.setdefault(qid, set()).add(other)
            self._changed.add(i)

    def add(self, result: SubmissionResult, ref: Optional[Reference] = None, apply: bool = True) -> Optional[_Entry]:
        """File one graded submission; look for matches in both directions; with `apply`, update every result
        whose matches changed (flags and carried-forward credit, in place)."""
        if not self.questions or result.error or not (result.variant or "").startswith("student:"):
            return None
        student = result.variant[len("student:"):]
        self._changed: set[int] = set()
        answers = {}
        by_id = {q.id: q for q in result.questions}
        for q in self.questions:
            a = _answer_array(by_id[q.id]) if q.id in by_id else None
            if a is not None:
                answers[q.id] = a
        i = len(self.entries)
        self.entries.append(_Entry(result, student, answers, {}))
        self.submissions.setdefault(student, []).append(result.submission)
        try:
            self._student_refs(student, result, ref)   # their references against the answers filed so far
        except (CnnspecError, DataError):
            self.refs.setdefault(student, {})
        for qid, a in answers.items():
            own = self.refs[student].get(qid)
            if own is None or a.size != own.size:
                continue
            for other in self._ref_index[qid].near(a):
                self._match(i, qid, other)
            self._answer_index.setdefault(qid, _Near(self.tols[qid], own.size)).add(a, i)
        self._changed.add(i)
        if apply:
            for j in sorted(self._changed):
                self.apply(self.entries[j])
        return self.entries[i]

    def reported(self, entry: _Entry) -> dict[str, set[str]]:
        """The entry's matches with students whose references its answers match in >= MIN_VALUES numbers."""
        values: dict[str, int] = {}
        for qid, others in entry.matches.items():
            for o in others:
                values[o] = values.get(o, 0) + int(entry.answers[qid].size)
        strong = {o for o, n in values.items() if n >= self.MIN_VALUES}
        out = {qid: others & strong for qid, others in entry.matches.items()}
        return {qid: others for qid, others in out.items() if others}

    def copy_matches(self, entry: _Entry) -> list[CopyMatch]:
        order = {q.id: n for n, q in enumerate(self.grader.assignment.questions)}
        matches = self.reported(entry)
        out = []
        for qid in sorted(matches, key=order.get):
            for other in sorted(matches[qid]):
                out.append(CopyMatch(question=qid, student_id=self.names.get(other, other),
                                     submissions=list(self.submissions.get(other, [])),
                                     values=int(entry.answers[qid].size)))
        return out

    def apply(self, entry: _Entry) -> None:
        """Write the flags into the entry's result and give or withdraw carried-forward credit accordingly."""
        r = entry.result
        r.copying = self.copy_matches(entry)
        matches = self.reported(entry)
        by_id = {q.id: q for q in r.questions}
        for q in r.questions:
            q.matches_other_students = sorted(self.names.get(o, o) for o in matches.get(q.id, ()))
        tainted = set(matches)
        for q in self.grader._order:
            qr = by_id.get(q.id)
            cf = qr.carried_forward if qr is not None else None
            if cf is None:
                continue
            if qr._with_cf is None:   # a result read back from JSON: what it says is what grading gave
                if cf.withdrawn:
                    tainted.add(q.id)
                    continue
                qr._with_cf = (qr.score, qr.outcome, qr.status, cf.credit, cf.message, cf.message.rsplit("; ", 1)[0])
                partial = self.grader.assignment.setting(q, "partial_credit") and qr.fraction_correct
                qr._without_cf = (round(qr.points * qr.fraction_correct, 9) if partial else 0.0) \
                    if qr.outcome == "carried_forward" else qr.score
            score, outcome, status, credit, message, said = qr._with_cf
            bad = [u for u in cf.from_questions if u in tainted]
            if not bad:
                qr.score, qr.outcome, qr.status = score, outcome, status
                cf.credit, cf.message, cf.withdrawn = credit, message, None
                continue
            tainted.add(q.id)
            base = qr._without_cf or 0.0
            qr.score = base
            qr.outcome = "wrong" if outcome == "carried_forward" and base == 0 else \
                ("partially_correct" if outcome == "carried_forward" else outcome)
            qr.status = "passed" if base >= qr.points > 0 else "partial" if base > 0 else "failed"
            why = "; ".join(
                f"'{u}' matches the reference answer of {', '.join(sorted(self.names.get(o, o) for o in matches[u]))}"
                if u in matches else f"'{u}' was itself carried forward from such an answer" for u in bad)
            cf.credit = 0.0
            cf.withdrawn = f"{why} (no credit for a copied chain)"
            cf.message = f"{said}; not credited: {cf.withdrawn}"
        qs = r.questions
        r.score = round(sum(q.score or 0.0 for q in qs), 9)
        r.percent = round(100.0 * r.score / r.max_score, 2) if r.max_score else 100.0
        r.passed = all(q.status == "passed" for q in qs)


def find_copying(results: list[SubmissionResult], grader: Grader) -> list[list[CopyMatch]]:
    """For each result (in order): its wrong answers that match the reference answer of ANOTHER student who
    has a submission in `results` - the question, that student and their submissions. The results are not
    changed. `grader` supplies the references (cached per variant); see CopyCheck for what is compared."""
    check = CopyCheck(grader)
    entries = [check.add(r, apply=False) for r in results]
    return [check.copy_matches(e) if e is not None else [] for e in entries]


def flag_copying(results: list[SubmissionResult], grader: Grader) -> list[SubmissionResult]:
    """Copies of `results` with the matches of find_copying written in (SubmissionResult.copying and each
    question's matches_other_students: the instructor view and the gradebook) and carried-forward credit
    withdrawn from copied chains (the scores follow). Student-facing views (report.for_student) drop both
    flags. Idempotent: results flagged before are re-flagged from what grading gave."""
    copies = [r.model_copy(deep=True) for r in results]
    check = CopyCheck(grader)
    for r in copies:
        check.add(r, apply=False)
    for e in check.entries:
        check.apply(e)
    flagged = {id(e.result) for e in check.entries}
    for r in copies:   # results that cannot be compared (shared data, unreadable) carry no flags
        if id(r) not in flagged:
            r.copying = []
    return copies


def grade(assignment: Assignment, submission: Submission, student_id: Optional[str] = None,
          now: Optional[datetime] = None) -> SubmissionResult:
    """Grade one submission (see Grader for many)."""
    return Grader(assignment, now).grade(submission, student_id)
