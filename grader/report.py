"""One result model (pydantic), many renderers: text, JSON, JUnit XML, Gradescope results.json, Markdown.

Results are computed with everything in them (the instructor's view). Student-facing output goes through
`for_student`, which withholds hidden questions always and after_due_date questions until the due date:
no expected value, no message, no score - only that the question exists. Gradescope's format keeps the
scores (Gradescope itself hides the tests by their `visibility`) but never the expected values.
"""
from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from typing import Any, Literal, Optional

import numpy as np
from pydantic import BaseModel, Field, PrivateAttr

from cnnspec.text import printable

RESULT_FORMAT = "cnnspec-grade"
RESULT_VERSION = 1
FORMATS = ("text", "json", "junit", "gradescope", "markdown")
MAX_JSON_ELEMENTS = 1000

Status = Literal["passed", "partial", "failed", "withheld"]
Outcome = Literal["correct", "carried_forward", "partially_correct", "wrong", "missing", "invalid", "error",
                  "withheld"]


class Diagnosis(BaseModel):
    code: str = Field(description="stable identifier of the recognised mistake, e.g. no_plus_one")
    message: str = Field(description="what went wrong, in words a student can act on")
    alternatives: list[str] = Field(default_factory=list, description="codes of other mistakes that give the same "
                                    "answer: this is one possible cause, not the certain one")
    hint: Optional[str] = Field(None, description="the assignment's own words for this mistake (its `hints:`)")


class CarriedForward(BaseModel):
    from_questions: list[str] = Field(description="the upstream questions whose (wrong) answers this one is right for")
    credit: float = Field(description="fraction of the points given for it (the assignment's carry_forward; 0 when "
                          "withdrawn)")
    message: str
    withdrawn: Optional[str] = Field(None, description="instructor view only: why the credit was not given (an "
                                     "upstream answer matches another student's reference answer)")


class CopyMatch(BaseModel):
    """A wrong answer that matches another student's reference answer (per-student data): a sign of copying."""

    question: str = Field(description="question id")
    student_id: str = Field(description="the other student, whose reference answer this answer matches")
    submissions: list[str] = Field(default_factory=list, description="that student's submissions in the batch")
    values: int = Field(description="number of values that match (a single number can match by chance in a "
                        "large class; a tensor hardly)")


class QuestionResult(BaseModel):
    id: str
    number: int = Field(description="1-based position in the assignment")
    text: str
    kind: str
    points: float
    score: Optional[float] = Field(description="points earned; null when withheld from this audience")
    status: Status = Field(description="passed: full points; partial: some; failed: none; withheld: not shown")
    outcome: Outcome
    visibility: Literal["visible", "hidden", "after_due_date"]
    message: str = ""
    details: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    diagnoses: list[Diagnosis] = Field(default_factory=list)
    carried_forward: Optional[CarriedForward] = None
    answer: Any = Field(None, description="the student's answer as read (large arrays summarised)")
    expected: Any = Field(None, description="the reference answer; never present when withheld")
    tolerance: Optional[dict[str, float]] = None
    fraction_correct: Optional[float] = Field(None, description="share of elements within tolerance (tensors)")
    matches_other_students: list[str] = Field(default_factory=list, description="instructor view only: students in "
                                              "the batch whose reference answer this wrong answer matches (copying?)")
    # What grading gave before any copying check (so the check can be re-run on the same results): the score
    # without carried-forward credit, and the carried-forward score, outcome and status.
    _without_cf: Optional[float] = PrivateAttr(None)
    _with_cf: Optional[tuple] = PrivateAttr(None)


class SubmissionResult(BaseModel):
    format: Literal["cnnspec-grade-result"] = "cnnspec-grade-result"
    version: Literal[1] = 1
    audience: Literal["instructor", "student"]
    assignment: str
    title: str
    submission: str
    student_id: Optional[str]
    variant: Optional[str] = Field(description="'shared', or 'student:<id>' for per-student data")
    score: float = Field(description="points earned (student view: in the questions shown)")
    max_score: float = Field(description="points available (student view: in the questions shown)")
    percent: float
    passed: Optional[bool] = Field(description="every question passed; null when some are withheld")
    withheld_points: float = Field(0.0, description="points in questions withheld from this audience")
    questions: list[QuestionResult]
    warnings: list[str] = Field(default_factory=list)
    error: Optional[str] = Field(None, description="why the submission could not be graded at all")
    copying: list[CopyMatch] = Field(default_factory=list, description="instructor view only: wrong answers that "
                                     "match another student's reference answer (see grading.find_copying)")
    internal_error: bool = Field(False, description="the error is a failure inside cnnspec, not in the submission")
    graded_at: str
    seconds: float
    grader_version: str
    due_date: Optional[str] = None


def to_json(value: Any) -> Any:
    """Numbers and (small) arrays as JSON; NaN/Inf as the strings "NaN", "Inf", "-Inf"."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, np.integer)) for v in value):
        return [int(v) for v in value]
    try:
        a = np.asarray(value)
    except ValueError:  # ragged lists as the student wrote them
        text = repr(value)
        return text if len(text) <= 200 else text[:197] + "..."
    if a.dtype.kind not in "fiu":
        text = str(value)
        return text if len(text) <= 200 else text[:197] + "..."
    if a.size > MAX_JSON_ELEMENTS:
        return f"<array of shape {list(a.shape)}>"

    def conv(v):
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, float) and not np.isfinite(v):
            return "NaN" if np.isnan(v) else ("Inf" if v > 0 else "-Inf")
        return v

    return conv(a.tolist())


# ---------------------------------------------------------------------------- audiences


def withheld(q: QuestionResult, due_date: Optional[str], now: Optional[datetime] = None) -> bool:
    if q.visibility == "hidden":
        return True
    if q.visibility == "after_due_date":
        if not due_date:
            return True
        from .assignment import parse_due_date
        return (now or datetime.now(timezone.utc)) < parse_due_date(due_date)
    return False


def _withhold(q: QuestionResult) -> QuestionResult:
    when = "after the due date" if q.visibility == "after_due_date" else "by the instructor"
    return QuestionResult(id=q.id, number=q.number, text=q.text, kind=q.kind, points=q.points, score=None,
                          status="withheld", outcome="withheld", visibility=q.visibility,
                          message=f"graded; the result is shown {when}" if q.visibility == "after_due_date"
                          else "graded; the result is hidden")


def _without_sources(q: QuestionResult, hidden: set[str]) -> QuestionResult:
    """A shown question's carried-forward note must not say that a withheld answer was wrong (or show it), and a
    student never sees that an answer matches another student's (nor a credit withdrawn for it)."""
    if q.matches_other_students or (q.carried_forward is not None and q.carried_forward.withdrawn):
        q = q.model_copy(update={"matches_other_students": [], "carried_forward": None if (
            q.carried_forward is not None and q.carried_forward.withdrawn) else q.carried_forward})
    cf = q.carried_forward
    if cf is None or not hidden.intersection(cf.from_questions):
        return q
    cf = cf.model_copy(update={"from_questions": [u for u in cf.from_questions if u not in hidden],
                               "message": f"error carried forward: right for your own earlier answers; "
                                          f"{cf.credit:.0%} of the points"})
    return q.model_copy(update={"carried_forward": cf})


def for_student(result: SubmissionResult, now: Optional[datetime] = None) -> SubmissionResult:
    """The result as a student may see it: withheld questions keep only their id, text and points."""
    if result.audience == "student":
        return result
    hidden = {q.id for q in result.questions if withheld(q, result.due_date, now)}
    qs = [(_withhold(q) if q.id in hidden else _without_sources(q, hidden)) for q in result.questions]
    shown = [q for q in qs if q.status != "withheld"]
    score = round(sum(q.score for q in shown), 9)
    max_score = float(sum(q.points for q in shown))
    hidden = float(sum(q.points for q in qs if q.status == "withheld"))
    return result.model_copy(update={
        "audience": "student", "questions": qs, "score": score, "max_score": max_score, "copying": [],
        "percent": round(100.0 * score / max_score, 2) if max_score else 100.0,
        "passed": None if hidden else result.passed, "withheld_points": hidden})


def view(results: list[SubmissionResult], audience: str, now: Optional[datetime] = None) -> list[SubmissionResult]:
    return [for_student(r, now) for r in results] if audience == "student" else list(results)


# ---------------------------------------------------------------------------- renderers


def render(results: list[SubmissionResult], fmt: str = "text", audience: str = "student", color: bool = False,
           now: Optional[datetime] = None) -> str:
    """Render results for `audience` ('student' withholds hidden answers; 'instructor' shows all)."""
    if isinstance(results, SubmissionResult):
        results = [results]
    if fmt == "gradescope":
        if len(results) != 1:
            raise ValueError("the gradescope format holds one submission; grade one at a time")
        return render_gradescope(results[0], now)
    renderer = {"text": lambda rs: render_text(rs, color), "json": render_json, "junit": render_junit,
                "markdown": render_markdown}[fmt]
    return renderer([_renderable(r, renderer) for r in view(results, audience, now)])


def _renderable(r: SubmissionResult, renderer) -> SubmissionResult:
    """`r`, or when it cannot be rendered (a bug) an error result in its place: one submission's report never
    takes the others' down with it."""
    try:
        renderer([r])
        return r
    except Exception as exc:  # noqa: BLE001
        return r.model_copy(update={
            "questions": [], "warnings": [], "internal_error": True, "passed": False,
            "error": f"internal error while writing this submission's report ({type(exc).__name__}); this is a bug "
                     "in cnnspec, not a mistake in the answers: please tell the instructor"})


def _score(x: Optional[float]) -> str:
    if x is None:
        return "?"
    return f"{x:g}" if abs(x - round(x, 2)) < 1e-9 else f"{x:.2f}"


_MARK = {"passed": "PASS", "partial": "PART", "failed": "FAIL", "withheld": "----"}
_COLOR = {"passed": "\033[32m", "partial": "\033[33m", "failed": "\033[31m", "withheld": "\033[90m"}


def _feedback_lines(q: QuestionResult) -> list[str]:
    lines = []
    if q.status == "withheld":
        return [q.message]
    if q.outcome == "missing" or q.outcome in ("invalid", "error") or q.status != "passed":
        if q.message:
            lines.append(q.message)
        lines += q.details
    lines += [f"why: {d.message}" + (f" ({d.hint})" if d.hint else "") for d in q.diagnoses]
    if q.carried_forward:
        lines.append(q.carried_forward.message)
    if q.matches_other_students:
        lines.append(f"possible copying: this wrong answer matches the reference answer of "
                     f"{', '.join(q.matches_other_students)} (another student's data), not this student's")
    if q.outcome == "partially_correct":
        lines.append(f"partial credit: {q.fraction_correct:.0%} of the elements are within tolerance")
    lines += [f"note: {n}" for n in q.notes]
    return lines


def copying_summary(r: SubmissionResult) -> str:
    """'s101: logits, loss; s107: grad_b' - whose reference answers this submission's wrong answers match."""
    by: dict[str, list[str]] = {}
    for m in r.copying:
        by.setdefault(m.student_id, []).append(m.question)
    return "; ".join(f"{sid}: {', '.join(qs)}" for sid, qs in by.items())


def _totals(r: SubmissionResult) -> str:
    text = f"score {_score(r.score)} / {_score(r.max_score)} ({r.percent:g}%)"
    if r.withheld_points:
        s = "" if r.withheld_points == 1 else "s"
        text += f"; {_score(r.withheld_points)} more point{s} in questions whose results are not shown yet"
    return text


def _block(text: str, indent: str) -> str:
    """Multi-line text of ours (a message with a snippet) with every line made printable and indented, so
    nothing in it can start a line of its own or reach the terminal as a control sequence."""
    return ("\n" + indent).join(printable(line) for line in str(text).split("\n"))


def render_text(results: list[SubmissionResult], color: bool = False) -> str:
    """The terminal report. Every piece a student controls (ids, file names, keys, values in messages) is
    printed through text.printable: a newline or an escape sequence in it shows as \\n or \\x1b."""
    out = []
    for r in results:
        def paint(s, status):
            return f"{_COLOR[status]}{s}\033[0m" if color else s
        who = f"  student {printable(r.student_id)}" if r.student_id else ""
        out.append(f"{printable(r.title)} ({printable(r.assignment)})")
        out.append(f"submission {printable(r.submission)}{who}")
        if r.error:
            out.append(paint(f"  ERROR  {_block(r.error, '         ')}", "failed"))
        width = max((len(q.id) for q in r.questions), default=4)
        for q in ([] if r.error else r.questions):
            pts = f"{_score(q.score)}/{_score(q.points)}"
            out.append(f"  {paint(_MARK[q.status], q.status)}  {q.number:>2}. {printable(q.id):<{width}}  "
                       f"{printable(q.text)}  [{pts}]")
            for line in _feedback_lines(q):
                out.append("        " + _block(line, "        "))
        for w in r.warnings:
            out.append(f"  warning: {printable(w)}")
        if r.copying:
            out.append(f"  possible copying: {printable(copying_summary(r))}")
        out.append(_totals(r))
        out.append("")
    return "\n".join(out)


def render_json(results: list[SubmissionResult]) -> str:
    doc = {"format": RESULT_FORMAT, "version": RESULT_VERSION,
           "results": [r.model_dump(mode="json") for r in results]}
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def _md(text: str) -> str:
    """Text inside a Markdown table or paragraph: no HTML, no links or emphasis from the text, one line.
    GitHub also turns bare URLs into links (https://..., www....): escaping every ':' and the '.' after 'www'
    stops that (they still read the same; e-mail addresses stay links, as harmless as they are useful)."""
    text = html.escape(printable(str(text).replace("\n", " ")), quote=False)
    text = re.sub(r"([\\`*_\[\]|#!:])", r"\\\1", text)
    return re.sub(r"(?i)\b(www)\.", r"\1\\.", text)


def render_markdown(results: list[SubmissionResult]) -> str:
    icon = {"passed": "✅ passed", "partial": "🟡 partial", "failed": "❌ failed", "withheld": "🔒 not shown yet"}
    out = []
    for r in results:
        head = f"## {_md(r.title)}: {_score(r.score)} / {_score(r.max_score)} ({r.percent:g}%)"
        out += [head, ""]
        meta = f"Submission {_md(r.submission)}" + (f", student {_md(r.student_id)}" if r.student_id else "")
        out += [meta, ""]
        if r.error:
            out += [f"> **Could not grade this submission:** {_md(r.error)}", ""]
        out += ["| # | question | points | result |", "|---:|---|---:|---|"]
        for q in r.questions:
            out.append(f"| {q.number} | `{q.id}` {_md(q.text)} | {_score(q.score)} / {_score(q.points)} | "
                       f"{icon[q.status]} |")
        out.append("")
        if r.withheld_points:
            out += [f"{_score(r.withheld_points)} more points are in questions whose results are not shown yet.", ""]
        feedback = [q for q in r.questions if q.status in ("partial", "failed") and not r.error]
        if feedback:
            out += ["### Feedback", ""]
            for q in feedback:
                out.append(f"**{q.number}. `{q.id}`** ({_score(q.score)} / {_score(q.points)})")
                out.append("")
                out += [f"- {_md(line)}" for line in _feedback_lines(q)]
                out.append("")
        for w in r.warnings:
            out.append(f"> warning: {_md(w)}")
        if r.copying:
            out.append(f"> possible copying: {_md(copying_summary(r))}")
        if r.warnings or r.copying:
            out.append("")
    return "\n".join(out)


_XML_BAD = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _x(text: str) -> str:
    return _XML_BAD.sub("?", text)


def render_junit(results: list[SubmissionResult]) -> str:
    """JUnit XML: one testsuite per submission, one testcase per question (withheld ones are <skipped/>)."""
    root = ET.Element("testsuites", name=_x(f"cnnspec grade {results[0].assignment if results else ''}"))
    total = fails = errors = skipped = 0
    for r in results:
        who = r.student_id or r.submission
        suite = ET.SubElement(root, "testsuite", name=_x(f"{r.assignment} [{who}]"), timestamp=r.graded_at[:19],
                              time=f"{r.seconds:.4f}")
        props = ET.SubElement(suite, "properties")
        for k, v in (("score", _score(r.score)), ("max_score", _score(r.max_score)), ("percent", f"{r.percent:g}"),
                     ("submission", r.submission), ("student_id", r.student_id or "")):
            ET.SubElement(props, "property", name=k, value=_x(v))
        s_fail = s_err = s_skip = 0
        for q in r.questions:
            case = ET.SubElement(suite, "testcase", name=_x(f"{q.number}. {q.id}: {q.text}"),
                                 classname=_x(f"{r.assignment}.{who}"), time="0")
            if q.status == "withheld":
                ET.SubElement(case, "skipped").text = _x(q.message)
                s_skip += 1
                continue
            if r.error:
                e = ET.SubElement(case, "error", message=_x(r.error), type="unreadable_submission")
                e.text = _x(r.error)
                s_err += 1
            elif q.outcome == "error":
                e = ET.SubElement(case, "error", message=_x(q.message), type="reference_error")
                s_err += 1
            elif q.status != "passed":
                f = ET.SubElement(case, "failure", message=_x(q.message or q.outcome), type=q.outcome)
                f.text = _x("\n".join(_feedback_lines(q)))
                s_fail += 1
            out = ET.SubElement(case, "system-out")
            out.text = _x(f"score {_score(q.score)} / {_score(q.points)}")
        suite.set("tests", str(len(r.questions)))
        suite.set("failures", str(s_fail))
        suite.set("errors", str(s_err))
        suite.set("skipped", str(s_skip))
        so = ET.SubElement(suite, "system-out")
        so.text = _x(_totals(r) + "".join(f"\nwarning: {w}" for w in r.warnings)
                     + (f"\npossible copying: {copying_summary(r)}" if r.copying else ""))
        total += len(r.questions)
        fails += s_fail
        errors += s_err
        skipped += s_skip
    root.set("tests", str(total))
    root.set("failures", str(fails))
    root.set("errors", str(errors))
    root.set("time", f"{sum(r.seconds for r in results):.4f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def render_gradescope(r: SubmissionResult, now: Optional[datetime] = None) -> str:
    """Gradescope's results.json. Scores of every test (Gradescope hides tests by `visibility`); feedback
    text only for questions a student may see now - never an expected value of a withheld question; the
    total `score` counts only the questions a student may see now."""
    tests = []
    hidden = {q.id for q in r.questions if withheld(q, r.due_date, now)}
    for q in r.questions:
        if q.id in hidden:
            output = "details are not shown for this question"
        elif r.error:
            output = f"not graded: {r.error}"
        else:
            lines = _feedback_lines(_without_sources(q, hidden))
            output = "\n".join(lines) if lines else "correct"
        tests.append({"name": f"{q.id}: {q.text}", "number": str(q.number), "score": q.score,
                      "max_score": q.points, "status": "passed" if q.status == "passed" else "failed",
                      "output": output, "visibility": q.visibility, "tags": [q.kind]})
    shown = for_student(r, now)  # the summary is visible: its totals must not reveal withheld results
    summary = f"{r.title}: {_score(shown.score)} / {_score(shown.max_score)} points"
    if shown.withheld_points:
        s = "" if shown.withheld_points == 1 else "s"
        summary += f"; {_score(shown.withheld_points)} more point{s} in questions whose results are not shown yet"
    if r.error:
        summary = f"Could not grade the submission: {r.error}"
    if r.warnings:
        summary += "\n" + "\n".join(f"warning: {w}" for w in r.warnings)
    # The top-level score is what Gradescope shows a student as the total: it counts only the questions the
    # student may see now, or a student could test a guess for a hidden answer by watching it.
    doc = {"score": shown.score, "execution_time": max(r.seconds, 0.0), "output": summary, "visibility": "visible",
           "stdout_visibility": "hidden", "tests": tests}
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"
