"""Submissions: stored on receipt (with the server's time and an idempotency key), then graded in the request
when the student's reference is ready, else by a job (202 with a link). Feedback in the student view
(grader.report.for_student) or, for staff, in full. "Check format" reads answers without spending an attempt.
"""
from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Literal, Optional

from fastapi import APIRouter, Depends, File, Header, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from .. import grading, models as m, policy
from ..jobs import PRIORITY
from ..security import sha256_bytes
from .common import (Principal, assignment_for, db, iso, membership, not_found, now, reader, sees_student,
                     service, submitter)

router = APIRouter(tags=["submissions"])
log = logging.getLogger("cnnspec.service")


def submission_json(sub: m.Submission, username: str) -> dict:
    return {"id": sub.id, "number": sub.number, "assignment_id": sub.assignment_id, "user_id": sub.user_id,
            "username": username, "received_at": iso(sub.received_at), "filename": sub.filename, "size": sub.size,
            "sha256": sub.sha256, "idempotency_key": sub.idempotency_key,
            "links": {"self": f"/api/v1/submissions/{sub.id}", "feedback": f"/api/v1/submissions/{sub.id}/feedback"}}


def latest_grade(s, sub: m.Submission, a: m.Assignment) -> Optional[m.Grade]:
    """The grade against the assignment's current version; while a regrade is pending, the newest other one."""
    grades = s.scalars(select(m.Grade).where(m.Grade.submission_id == sub.id).order_by(m.Grade.id.desc())).all()
    for g in grades:
        if g.version_id == a.current_version_id:
            return g
    return grades[0] if grades else None


def feedback_json(s, sub: m.Submission, a: m.Assignment, student_view: bool, at) -> dict:
    g = latest_grade(s, sub, a)
    if g is None:
        return {"status": "pending"}
    ext = s.scalar(select(m.Extension).where(m.Extension.assignment_id == a.id, m.Extension.user_id == sub.user_id))
    late = policy.lateness(a, ext, sub.received_at)
    doc = grading.student_view(g.result, policy.release_time(a, ext), at) if student_view else g.result
    version = s.get(m.AssignmentVersion, g.version_id)
    return {"status": "graded", "view": "student" if student_view else "staff", "version": version.number,
            "current_version": g.version_id == a.current_version_id, "graded_at": iso(g.created_at),
            "score": doc["score"], "max_score": doc["max_score"], "late": late.as_json(),
            "score_after_penalty": late.apply(doc["score"]), "result": doc}


def _find(s, p: Principal, submission_id: int):
    """The submission, its assignment and the caller's membership - or 404 unless the caller may see it."""
    sub = s.get(m.Submission, submission_id)
    if sub is None:
        raise not_found("submission not found")
    a = s.get(m.Assignment, sub.assignment_id)
    viewer = s.scalar(select(m.Membership).where(m.Membership.course_id == a.course_id,
                                                 m.Membership.user_id == p.user.id))
    owner = s.scalar(select(m.Membership).where(m.Membership.course_id == a.course_id,
                                                m.Membership.user_id == sub.user_id))
    if viewer is None or not (sub.user_id == p.user.id or (viewer.role != "student" and sees_student(viewer, owner))):
        raise not_found("submission not found")
    return sub, a, viewer


def _read(request: Request, answers: UploadFile) -> tuple[str, bytes]:
    filename = grading.safe_filename(answers.filename or "answers.yaml")
    if not (answers.filename or "").lower().endswith(grading.ANSWER_SUFFIXES):
        raise HTTPException(422, f"'{filename}': answers are a .yaml, .yml, .json or .npz file")
    limit = service(request).settings.max_submission_bytes
    payload = answers.file.read(limit + 1)
    if len(payload) > limit:
        raise HTTPException(413, f"the answers file is larger than the limit of {limit:,} bytes")
    return filename, payload


@router.post("/courses/{course_id}/assignments/{assignment_id}/submissions", status_code=201,
             summary="Submit answers (YAML, JSON or .npz): stored first, then graded (201) or queued (202)",
             responses={200: {"description": "a retry: the submission stored under this Idempotency-Key"},
                        202: {"description": "stored; grading is queued (poll links.self)"},
                        409: {"description": "the assignment is closed"}, 413: {"description": "too large"},
                        429: {"description": "graded-submission limit reached; see Retry-After"}})
def submit(course_id: int, assignment_id: int, request: Request, answers: UploadFile = File(...),
           idempotency_key: Optional[str] = Header(None, max_length=200),
           p: Principal = Depends(submitter), s=Depends(db)):
    svc = service(request)
    mem = membership(s, p.user, course_id)
    at = now(request)                       # the receipt time: the whole upload has arrived
    a = assignment_for(s, mem, assignment_id, at)
    filename, payload = _read(request, answers)
    key = idempotency_key or f"auto-{uuid.uuid4()}"
    digest = sha256_bytes(payload)

    def existing():
        return s.scalar(select(m.Submission).where(m.Submission.user_id == p.user.id,
                                                   m.Submission.assignment_id == a.id,
                                                   m.Submission.idempotency_key == key))

    def replay(sub):
        if sub.sha256 != digest:
            raise HTTPException(422, "this Idempotency-Key was used for different answers; use a new key")
        body = submission_json(sub, p.user.username)
        body["feedback"] = feedback_json(s, sub, a, True, now(request))
        body["replayed"] = True
        return JSONResponse(body, status_code=200)

    # Lock the student's membership row: their count of submissions cannot change until we commit (on SQLite
    # the IMMEDIATE transaction holds the write lock already).
    s.scalar(select(m.Membership.id).where(m.Membership.id == mem.id).with_for_update())
    sub = existing()
    if sub is not None:
        return replay(sub)
    ext = s.scalar(select(m.Extension).where(m.Extension.assignment_id == a.id, m.Extension.user_id == p.user.id))
    if mem.role == "student":
        close = policy.student_close(a, ext)
        if close is not None and at > close:
            raise HTTPException(409, f"the assignment closed at {iso(close)}; submissions are no longer accepted")
        if a.rate_limit_count:
            since = at - timedelta(minutes=a.rate_limit_window_minutes)
            count, oldest = s.execute(select(func.count(), func.min(m.Submission.received_at)).where(
                m.Submission.user_id == p.user.id, m.Submission.assignment_id == a.id,
                m.Submission.received_at > since)).one()
            if count >= a.rate_limit_count:
                wait = policy.retry_after(oldest, a.rate_limit_window_minutes, at)
                raise HTTPException(429, f"{a.rate_limit_count} graded submission(s) per "
                                         f"{a.rate_limit_window_minutes:g} minutes; the next one in {wait} s "
                                         "(checking the format spends no attempt)",
                                    headers={"Retry-After": str(wait)})
    number = (s.scalar(select(func.max(m.Submission.number)).where(m.Submission.user_id == p.user.id,
                                                                   m.Submission.assignment_id == a.id)) or 0) + 1
    version_id = a.current_version_id
    lv = grading.POOL.get(s, version_id)
    skey = mem.student_key or p.user.username
    vkey = grading.variant_key(lv, skey) if lv.assignment.has_variants else "shared"
    ready = grading.variant_ready(s, version_id, vkey)
    sub = m.Submission(assignment_id=a.id, user_id=p.user.id, number=number, version_id=version_id, received_at=at,
                       idempotency_key=key, filename=filename, payload=payload, sha256=digest, size=len(payload))
    s.add(sub)
    try:
        s.flush()
        # The job commits with the submission. Graded here when ready: then the job is a late no-op safety net.
        svc.queue.enqueue(s, "grade", {"submission_id": sub.id, "version_id": version_id, "how": "job"},
                          PRIORITY["grade"], delay=svc.settings.safety_net_seconds if ready else 0.0)
        s.commit()
    except IntegrityError:            # a concurrent retry with the same key won
        s.rollback()
        sub = existing()
        if sub is None:
            raise
        return replay(sub)
    graded = False
    if ready:
        try:
            grading.grade_stored(svc.sessions, sub.id, version_id, "request", svc.settings.clock, lv)
            graded = True
        except Exception:  # noqa: BLE001 - stored and queued: the job grades it
            log.exception("grading submission %s in the request failed; the job will", sub.id)
    if not graded:
        svc.queue.notify()
    body = submission_json(sub, p.user.username)
    body["feedback"] = feedback_json(s, sub, a, True, now(request))
    body["replayed"] = False
    return JSONResponse(body, status_code=201 if body["feedback"]["status"] == "graded" else 202,
                        headers={"Location": body["links"]["self"]})


@router.post("/courses/{course_id}/assignments/{assignment_id}/check",
             summary="Check the format of answers: read as grading would, not graded, no attempt spent")
def check(course_id: int, assignment_id: int, request: Request, answers: UploadFile = File(...),
          p: Principal = Depends(submitter), s=Depends(db)):
    mem = membership(s, p.user, course_id)
    a = assignment_for(s, mem, assignment_id, now(request))
    filename, payload = _read(request, answers)
    lv = grading.POOL.get(s, a.current_version_id)
    s.rollback()
    return grading.check_format(lv, filename, payload)


@router.get("/courses/{course_id}/assignments/{assignment_id}/submissions",
            summary="Submissions: a student's own; staff see their students'")
def list_submissions(course_id: int, assignment_id: int, request: Request, user_id: Optional[int] = None,
                     p: Principal = Depends(reader), s=Depends(db)):
    mem = membership(s, p.user, course_id)
    at = now(request)
    a = assignment_for(s, mem, assignment_id, at)
    q = select(m.Submission, m.User.username).join(m.User, m.User.id == m.Submission.user_id).where(
        m.Submission.assignment_id == a.id)
    if mem.role == "student":
        q = q.where(m.Submission.user_id == p.user.id)
    elif user_id is not None:
        q = q.where(m.Submission.user_id == user_id)
    members = {x.user_id: x for x in s.scalars(select(m.Membership).where(m.Membership.course_id == course_id))}
    out = []
    for sub, username in s.execute(q.order_by(m.Submission.id)).all():
        if mem.role != "student" and not sees_student(mem, members.get(sub.user_id)):
            continue
        fb = feedback_json(s, sub, a, mem.role == "student", at)
        out.append({**submission_json(sub, username), "status": fb["status"], "score": fb.get("score"),
                    "max_score": fb.get("max_score"), "score_after_penalty": fb.get("score_after_penalty"),
                    "late": fb.get("late")})
    return out


@router.get("/submissions/{submission_id}", summary="A submission and its feedback (student or staff view)")
def get_submission(submission_id: int, request: Request, view: Optional[Literal["student", "staff"]] = None,
                   p: Principal = Depends(reader), s=Depends(db)):
    sub, a, viewer = _find(s, p, submission_id)
    student_view = viewer.role == "student" or view == "student"
    body = submission_json(sub, s.get(m.User, sub.user_id).username)
    body["feedback"] = feedback_json(s, sub, a, student_view, now(request))
    return body


@router.get("/submissions/{submission_id}/feedback", response_class=PlainTextResponse,
            summary="The feedback rendered as `cnnspec grade` prints it (text, markdown, json, junit)")
def get_feedback(submission_id: int, request: Request,
                 format: Literal["text", "markdown", "json", "junit"] = "text",
                 view: Optional[Literal["student", "staff"]] = None, p: Principal = Depends(reader), s=Depends(db)):
    sub, a, viewer = _find(s, p, submission_id)
    fb = feedback_json(s, sub, a, viewer.role == "student" or view == "student", now(request))
    if fb["status"] != "graded":
        return PlainTextResponse("not graded yet\n", status_code=202)
    return PlainTextResponse(grading.render(fb["result"], format))


@router.get("/submissions/{submission_id}/payload", summary="The stored answers file, byte for byte")
def get_payload(submission_id: int, p: Principal = Depends(reader), s=Depends(db)):
    from fastapi.responses import Response
    sub, _, _ = _find(s, p, submission_id)
    return Response(sub.payload, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{sub.filename}"',
                             "X-Content-SHA256": sub.sha256})
