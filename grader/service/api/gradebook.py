"""Gradebook (JSON, CSV, Canvas- and Moodle-importable CSV) and per-question statistics (staff).

Each student's counted submission is their best one after the late penalty (or their last one, per the
assignment's `counted`), graded against the current version, with the staff's grade overrides applied before
the penalty; a TA sees their section only.
"""
from __future__ import annotations

import csv
import io
import statistics
from collections import Counter
from typing import Literal, Optional

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import select

from .. import models as m, overrides, policy
from .common import Principal, assignment_for, db, iso, now, reader, sees_student, staff

router = APIRouter(tags=["gradebook"])


def counted_rows(s, a: m.Assignment, viewer: m.Membership, override: Optional[dict] = None) -> list[dict]:
    """One row per student the viewer may see. override: {submission id: raw score} (a regrade preview)."""
    members = [x for x in s.scalars(select(m.Membership).where(m.Membership.course_id == a.course_id,
                                                               m.Membership.role == "student")
                                    .order_by(m.Membership.id)) if sees_student(viewer, x)]
    subs: dict[int, list[m.Submission]] = {}
    for sub in s.scalars(select(m.Submission).where(m.Submission.assignment_id == a.id).order_by(m.Submission.id)):
        subs.setdefault(sub.user_id, []).append(sub)
    grades: dict[int, m.Grade] = {}
    for g in s.scalars(select(m.Grade).join(m.Submission, m.Submission.id == m.Grade.submission_id)
                       .where(m.Submission.assignment_id == a.id).order_by(m.Grade.id)):
        if g.how == "preview" and g.version_id != a.current_version_id:
            continue   # a regrade preview's grade counts only once its version is applied
        current = grades.get(g.submission_id)
        if current is None or current.version_id != a.current_version_id:
            grades[g.submission_id] = g
    exts = {e.user_id: e for e in s.scalars(select(m.Extension).where(m.Extension.assignment_id == a.id))}
    found = overrides.latest(s, assignment_id=a.id)
    rows = []
    for mem in members:
        u = mem.user
        row = {"user_id": u.id, "username": u.username, "name": u.display_name, "email": u.email,
               "student_id": mem.student_key or u.username, "section": mem.section,
               "submissions": len(subs.get(u.id, [])), "status": "no submission", "submission_id": None,
               "received_at": None, "days_late": None, "penalty_percent": None, "raw_score": None,
               "final_score": None, "max_score": None, "questions": {}, "extension_due_at": None,
               "overridden": False, "_grade": None, "_result": None}
        ext = exts.get(u.id)
        if ext is not None:
            row["extension_due_at"] = iso(ext.due_at)
        best = None
        for sub in subs.get(u.id, []):
            g = grades.get(sub.id)
            if override is not None and sub.id in override:
                raw = override[sub.id]
            elif g is not None:
                raw = overrides.score(g.result, found.get(sub.id))
            else:
                row["status"] = "pending"
                continue
            late = policy.lateness(a, ext, sub.received_at)
            cand = (late.apply(raw), sub, g, late, raw)
            if best is None or (a.counted == "last") or cand[0] > best[0]:
                best = cand
        if best is not None:
            final, sub, g, late, raw = best
            pending = g is None or g.version_id != a.current_version_id
            row.update(status="pending regrade" if pending and override is None else "graded",
                       submission_id=sub.id, received_at=iso(sub.received_at),
                       days_late=late.days_late, penalty_percent=late.penalty_percent, raw_score=raw,
                       final_score=final, max_score=g.max_score if g else None, _grade=g,
                       overridden=bool(found.get(sub.id)))
            if g is not None and override is None:
                row["_result"] = overrides.apply(g.result, found.get(sub.id))
                row["questions"] = {q["id"]: q["score"] for q in row["_result"].get("questions", [])}
        rows.append(row)
    return rows


def _cell(value) -> str:
    """A CSV cell no spreadsheet runs as a formula (OWASP CSV injection)."""
    text = "" if value is None else (f"{value:g}" if isinstance(value, float) else str(value))
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _csv(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([_cell(h) for h in header])
    for r in rows:
        w.writerow([_cell(v) for v in r])
    return buf.getvalue()


@router.get("/courses/{course_id}/assignments/{assignment_id}/gradebook",
            summary="Gradebook: json, csv, or CSV for Canvas or Moodle import (staff; TAs: their section)")
def gradebook(course_id: int, assignment_id: int, request: Request,
              format: Literal["json", "csv", "canvas", "moodle"] = "json",
              p: Principal = Depends(reader), s=Depends(db)):
    mem = staff(s, p.user, course_id)
    a = assignment_for(s, mem, assignment_id, now(request))
    version = s.get(m.AssignmentVersion, a.current_version_id)
    qids = [q["id"] for q in version.questions]
    max_score = sum(q["points"] for q in version.questions)
    rows = counted_rows(s, a, mem)
    for r in rows:
        r.pop("_grade")
        r.pop("_result")
    if format == "json":
        return {"assignment": {"id": a.id, "name": a.name, "title": a.title, "version": version.number,
                               "max_score": max_score, "questions": version.questions}, "rows": rows}
    name = a.title or a.name
    if format == "csv":
        header = ["student_id", "username", "name", "email", "section", "status", "submissions", "submission_id",
                  "received_at", "days_late", "penalty_percent", "raw_score", "final_score", "max_score", *qids]
        body = _csv(header, [[r["student_id"], r["username"], r["name"], r["email"], r["section"], r["status"],
                              r["submissions"], r["submission_id"], r["received_at"], r["days_late"],
                              r["penalty_percent"], r["raw_score"], r["final_score"], max_score,
                              *(r["questions"].get(q) for q in qids)] for r in rows])
    elif format == "canvas":
        # Canvas' gradebook import: Student, ID, SIS User ID, SIS Login ID, Section, then one column per
        # assignment; the second row gives the points possible.
        column = f"{name} ({a.id})"
        body = _csv(["Student", "ID", "SIS User ID", "SIS Login ID", "Section", column],
                    [["Points Possible", "", "", "", "", max_score]] +
                    [[r["name"] or r["username"], "", r["student_id"], r["username"], r["section"], r["final_score"]]
                     for r in rows])
    else:
        # Moodle's grade import (CSV): map "ID number" (or "Email address") to the user, one column per item.
        body = _csv(["ID number", "Email address", "Full name", name],
                    [[r["student_id"], r["email"], r["name"] or r["username"], r["final_score"]] for r in rows])
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{a.name}-{format}.csv"'})


@router.get("/courses/{course_id}/assignments/{assignment_id}/stats",
            summary="Per-question statistics and how often each named mistake occurred (staff)")
def stats(course_id: int, assignment_id: int, request: Request, p: Principal = Depends(reader), s=Depends(db)):
    mem = staff(s, p.user, course_id)
    a = assignment_for(s, mem, assignment_id, now(request))
    version = s.get(m.AssignmentVersion, a.current_version_id)
    rows = [r for r in counted_rows(s, a, mem) if r["_result"] is not None]
    per_q = {q["id"]: {"id": q["id"], "points": q["points"], "scores": [], "status": Counter(),
                       "outcome": Counter(), "diagnoses": Counter()} for q in version.questions}
    for r in rows:
        for q in r["_result"].get("questions", []):
            st = per_q.get(q["id"])
            if st is None:
                continue
            st["scores"].append(q["score"] or 0.0)
            st["status"][q["status"]] += 1
            st["outcome"][q["outcome"]] += 1
            for d in q.get("diagnoses", []):
                st["diagnoses"][d["code"]] += 1
    out = []
    for st in per_q.values():
        scores = st.pop("scores")
        out.append({**st, "graded": len(scores), "mean": statistics.fmean(scores) if scores else None,
                    "full_points": sum(1 for x in scores if x >= st["points"] > 0),
                    "status": dict(st["status"]), "outcome": dict(st["outcome"]),
                    "diagnoses": dict(st["diagnoses"].most_common())})
    finals = [r["final_score"] for r in rows]
    return {"students": len(counted_rows(s, a, mem)), "graded": len(rows),
            "mean": statistics.fmean(finals) if finals else None,
            "median": statistics.median(finals) if finals else None, "questions": out}
