"""Staff grade overrides: a question's or a whole submission's score set by hand, with a reason.

Rows are only appended (models.GradeOverride); the newest one per (submission, question) counts, and one with
score None takes the override back. An override applies to the submission's current grade (so it outlives a
regrade), before the late penalty; the gradebook, statistics, feedback and rendered reports all read scores
through apply(). Students see the overridden score, and the reason only when the staff member chose to show
it (show_reason); staff see who set it, when and why.
"""
from __future__ import annotations

from typing import Iterable, Optional

from sqlalchemy import select

from . import models as m

WHOLE = ""    # the key of a submission-level override in latest()'s dictionaries


def latest(s, submission_ids: Iterable[int] = (), assignment_id: Optional[int] = None
           ) -> dict[int, dict[str, m.GradeOverride]]:
    """{submission id: {question id ('' for the whole submission): the override in force}}, for these
    submissions or for every submission of an assignment."""
    O = m.GradeOverride
    if assignment_id is not None:
        q = select(O).join(m.Submission, m.Submission.id == O.submission_id).where(
            m.Submission.assignment_id == assignment_id)
    else:
        ids = list(submission_ids)
        if not ids:
            return {}
        q = select(O).where(O.submission_id.in_(ids))
    out: dict[int, dict[str, m.GradeOverride]] = {}
    for o in s.scalars(q.order_by(O.id)):
        out.setdefault(o.submission_id, {})[o.question_id or WHOLE] = o
    return {sid: {k: o for k, o in found.items() if o.score is not None} for sid, found in out.items()
            if any(o.score is not None for o in found.values())}


def history(s, submission_id: int) -> list[m.GradeOverride]:
    return list(s.scalars(select(m.GradeOverride).where(m.GradeOverride.submission_id == submission_id)
                          .order_by(m.GradeOverride.id)))


def _g(x: float) -> str:
    return f"{x:g}"


def note(o: m.GradeOverride, was: Optional[float], staff: bool, who: str = "") -> str:
    if staff:
        text = f"score set to {_g(o.score)}" + (f" (graded {_g(was)})" if was is not None else "")
        text += f" by {who or 'staff'} on {o.created_at:%Y-%m-%d %H:%M} UTC: {o.reason}"
        return text + ("" if o.show_reason else " (reason not shown to the student)")
    text = f"score set to {_g(o.score)}" + (f" (graded {_g(was)})" if was is not None else "") + \
        " by the course staff"
    return text + (f": {o.reason}" if o.show_reason else "")


def _status(score: float, points: float) -> str:
    return "passed" if score >= points else ("partial" if score > 0 else "failed")


def apply(doc: dict, found: Optional[dict[str, m.GradeOverride]], staff: bool = True,
          names: Optional[dict[int, str]] = None) -> dict:
    """The instructor-view result `doc` with these overrides applied (a copy; `doc` is left alone): each
    overridden question gets its score, status and a note; the total is the questions' sum, or the
    submission-level override. staff: notes name who and why; else the reason only where it is shown."""
    if not found:
        return doc
    names = names or {}
    doc = dict(doc)
    qs = []
    for q in doc.get("questions", []):
        o = found.get(q["id"])
        if o is not None:
            q = dict(q)
            was = q.get("score")
            q["score"] = o.score
            q["status"] = _status(o.score, q["points"])
            q["notes"] = list(q.get("notes", [])) + [note(o, was, staff, names.get(o.created_by, ""))]
        qs.append(q)
    doc["questions"] = qs
    total = round(sum(q.get("score") or 0.0 for q in qs), 9)
    whole = found.get(WHOLE)
    if whole is not None:
        doc["warnings"] = list(doc.get("warnings", [])) + [
            "total " + note(whole, total, staff, names.get(whole.created_by, ""))]
        total = whole.score
    doc["score"] = total
    doc["percent"] = round(100.0 * total / doc["max_score"], 2) if doc.get("max_score") else 100.0
    doc["passed"] = all(q["status"] == "passed" for q in qs) if whole is None else total >= doc.get("max_score", 0)
    return doc


def fix_student_total(view: dict, applied: dict, found: Optional[dict[str, m.GradeOverride]]) -> dict:
    """A submission-level override is the total the student sees too (the student view otherwise sums the
    questions it shows)."""
    if not found or found.get(WHOLE) is None:
        return view
    view = dict(view)
    view["score"], view["max_score"] = applied["score"], applied["max_score"]
    view["percent"] = applied["percent"]
    view["withheld_points"] = 0.0
    return view


def score(doc: dict, found: Optional[dict[str, m.GradeOverride]]) -> float:
    """The raw score (before the late penalty) with these overrides."""
    return apply(doc, found)["score"] if found else doc["score"]


def as_json(o: m.GradeOverride, staff: bool, who: str = "") -> dict:
    out = {"id": o.id, "submission_id": o.submission_id, "question": o.question_id, "score": o.score,
           "created_at": o.created_at.isoformat()}
    if staff:
        out.update(reason=o.reason, show_reason=o.show_reason, by=who)
    elif o.show_reason:
        out["reason"] = o.reason
    return out
