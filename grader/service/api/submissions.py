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
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy import and_, bindparam, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import lazyload

from .. import fastpath, grading, models as m, overrides, policy
from ..jobs import PRIORITY
from ..security import digest as digest_secret, sha256_bytes
from .common import (SESSION_COOKIE, Principal, assignment_for, audit, bearer_token, db, iso, lookup_caller, manager,
                     membership, not_found, now, reader, require_scope, sees_student, service, session_principal,
                     submitter, token_principal)

router = APIRouter(tags=["submissions"])
log = logging.getLogger("cnnspec.service")


def submission_json(sub: m.Submission, username: str) -> dict:
    return {"id": sub.id, "number": sub.number, "assignment_id": sub.assignment_id, "user_id": sub.user_id,
            "username": username, "received_at": iso(sub.received_at), "filename": sub.filename, "size": sub.size,
            "sha256": sub.sha256, "idempotency_key": sub.idempotency_key,
            "links": {"self": f"/api/v1/submissions/{sub.id}", "feedback": f"/api/v1/submissions/{sub.id}/feedback"}}


def latest_grade(s, sub: m.Submission, a: m.Assignment) -> Optional[m.Grade]:
    """The grade against the assignment's current version; while a regrade is pending, the newest other one
    (never a regrade preview's grade against a version that is not current: it does not count)."""
    grades = s.scalars(select(m.Grade).where(m.Grade.submission_id == sub.id).order_by(m.Grade.id.desc())).all()
    for g in grades:
        if g.version_id == a.current_version_id:
            return g
    return next((g for g in grades if g.how != "preview"), None)


def feedback_json(s, sub: m.Submission, a: m.Assignment, student_view: bool, at) -> dict:
    g = latest_grade(s, sub, a)
    if g is None:
        return {"status": "pending"}
    ext = s.scalar(select(m.Extension).where(m.Extension.assignment_id == a.id, m.Extension.user_id == sub.user_id))
    late = policy.lateness(a, ext, sub.received_at)
    found = overrides.latest(s, [sub.id]).get(sub.id)
    names = _usernames(s, {o.created_by for o in found.values()}) if found and not student_view else {}
    doc = overrides.apply(g.result, found, staff=not student_view, names=names)
    if student_view:
        doc = overrides.fix_student_total(grading.student_view(doc, policy.release_time(a, ext), at), doc, found)
        shown = {q["id"] for q in doc["questions"] if q["status"] != "withheld"} | {overrides.WHOLE}
        listed = [o for key, o in (found or {}).items() if key in shown]
    else:
        listed = list((found or {}).values())
    version = s.get(m.AssignmentVersion, g.version_id)
    return {"status": "graded", "view": "student" if student_view else "staff", "version": version.number,
            "current_version": g.version_id == a.current_version_id, "graded_at": iso(g.created_at),
            "score": doc["score"], "max_score": doc["max_score"], "late": late.as_json(),
            "score_after_penalty": late.apply(doc["score"]), "result": doc,
            "overrides": [overrides.as_json(o, not student_view, names.get(o.created_by, "")) for o in listed]}


def _usernames(s, ids) -> dict[int, str]:
    if not ids:
        return {}
    return dict(s.execute(select(m.User.id, m.User.username).where(m.User.id.in_(list(ids)))).all())


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


def _context(s, p: Principal, course_id: int, assignment_id: int, at):
    """The caller's membership, the assignment and the caller's extension, in one query that also locks the
    membership row (PostgreSQL: SELECT ... FOR UPDATE OF memberships; SQLite's transaction holds the write
    lock already): the caller's submissions cannot change until this transaction ends. 404 as everywhere."""
    M, A, E = m.Membership, m.Assignment, m.Extension
    row = s.execute(select(M, A, E).join(A, and_(A.id == assignment_id, A.course_id == M.course_id))
                    .outerjoin(E, and_(E.assignment_id == A.id, E.user_id == M.user_id))
                    .where(M.course_id == course_id, M.user_id == p.user.id)
                    .options(lazyload(M.user)).with_for_update(of=M)).first()
    if row is None:
        mem = membership(s, p.user, course_id)       # raises "course not found"
        assignment_for(s, mem, assignment_id, at)    # raises "assignment not found"
        raise not_found("assignment not found")
    return _published(row.Membership, row.Assignment, row.Extension, at)


def _published(mem, a, ext, at):
    if mem.role == "student" and (a.publish_at is None or a.publish_at > at):
        raise not_found("assignment not found")
    return mem, a, ext


# The hot path's statements are built once (building and hashing a statement costs more than running it).
_T, _U, _M, _A, _E, _S = m.ApiToken, m.User, m.Membership, m.Assignment, m.Extension, m.Submission
_CALLER_AND_CONTEXT = (
    select(_T.revoked_at, _T.expires_at, _T.scopes, _U, _M, _A, _E)
    .join(_U, _U.id == _T.user_id)
    .join(_M, and_(_M.user_id == _U.id, _M.course_id == bindparam("course_id")))
    .join(_A, and_(_A.id == bindparam("assignment_id"), _A.course_id == _M.course_id))
    .outerjoin(_E, and_(_E.assignment_id == _A.id, _E.user_id == _U.id))
    .where(_T.token_hash == bindparam("token_hash"))
    .options(lazyload(_M.user)).with_for_update(of=_M))
_IN_WINDOW = _S.received_at > bindparam("since", type_=_S.received_at.type)
_COUNTS = (select(func.max(_S.number), func.count().filter(_IN_WINDOW), func.min(_S.received_at).filter(_IN_WINDOW),
                  func.max(_S.id).filter(_S.idempotency_key == bindparam("key")))
           .where(_S.user_id == bindparam("user_id"), _S.assignment_id == bindparam("assignment_id")))
_INSERT = insert(_S.__table__).returning(_S.__table__.c.id)   # Core: no ORM bookkeeping for this row
_COLUMNS = ("assignment_id", "user_id", "number", "version_id", "received_at", "idempotency_key", "filename",
            "payload", "sha256", "size")


def _caller_and_context(s, request: Request, course_id: int, assignment_id: int, at):
    """Who submits (an API token with the 'submit' scope, or a session with its CSRF header), their
    membership, the assignment and their extension, the membership row locked. On PostgreSQL, with a token
    (CI, `cnnspec submit`) or a browser session, that is one query; anything unusual (no such token or
    session, not a member, no such assignment) takes the general path, which answers the same 401s and 404s
    as every other route."""
    secret = bearer_token(request)
    pg = s.get_bind().dialect.name == "postgresql"
    cookie = request.cookies.get(SESSION_COOKIE) if secret is None else None
    if pg and (secret or cookie):
        via = "token" if secret else "session"
        found = fastpath.caller_and_context(s, digest_secret(secret or cookie), course_id, assignment_id, via)
        if found is not None:
            row, mem, a, ext = found
            p = token_principal(row, at) if secret else session_principal(row, row.User, request, at)
            return (require_scope(p, "submit"), *_published(mem, a, ext, at))
    elif secret is not None:
        row = s.execute(_CALLER_AND_CONTEXT, {"token_hash": digest_secret(secret), "course_id": course_id,
                                              "assignment_id": assignment_id}).first()
        if row is not None:
            p = require_scope(token_principal(row, at), "submit")
            return (p, *_published(row.Membership, row.Assignment, row.Extension, at))
    p = require_scope(lookup_caller(request, s), "submit")
    return (p, *_context(s, p, course_id, assignment_id, at))


@router.post("/courses/{course_id}/assignments/{assignment_id}/submissions", status_code=201,
             summary="Submit answers (YAML, JSON or .npz): stored first, then graded (201) or queued (202)",
             responses={200: {"description": "a retry: the submission stored under this Idempotency-Key"},
                        202: {"description": "stored; grading is queued (poll links.self)"},
                        409: {"description": "the assignment is closed"}, 413: {"description": "too large"},
                        429: {"description": "graded-submission limit reached; see Retry-After"}})
async def submit(course_id: int, assignment_id: int, request: Request, answers: UploadFile = File(...),
                 idempotency_key: Optional[str] = Header(None, max_length=200)):
    """The whole submission runs in one worker thread with one database session (no thread hop, no
    connection, between authentication and the work)."""
    return await run_in_threadpool(_submit, course_id, assignment_id, request, answers, idempotency_key)


def _submit(course_id: int, assignment_id: int, request: Request, answers: UploadFile,
            idempotency_key: Optional[str]):
    svc = service(request)
    with svc.sessions() as s:
        return _store_and_grade(svc, s, course_id, assignment_id, request, answers, idempotency_key)


def _store_and_grade(svc, s, course_id: int, assignment_id: int, request: Request, answers: UploadFile,
                     idempotency_key: Optional[str]):
    """One transaction stores the submission (on PostgreSQL: caller, context and lock in one query, the
    caller's counts, the insert, commit); when the student's reference is ready it is graded here and its
    grade stored by one more statement. Nothing else is queued: should this process die in between, the
    sweep grades it."""
    clock = svc.settings.clock
    at = clock.now()                        # the receipt time: the whole upload has arrived
    p, mem, a, ext = _caller_and_context(s, request, course_id, assignment_id, at)
    filename, payload = _read(request, answers)
    key = idempotency_key or f"auto-{uuid.uuid4()}"
    digest = sha256_bytes(payload)

    def replay(sub_id: int):
        sub = s.get(m.Submission, sub_id)
        if sub.sha256 != digest:
            raise HTTPException(422, "this Idempotency-Key was used for different answers; use a new key")
        body = submission_json(sub, p.user.username)
        body["feedback"] = feedback_json(s, sub, a, True, clock.now())
        body["replayed"] = True
        return JSONResponse(body, status_code=200)

    S = m.Submission
    pg = svc.engine.dialect.name == "postgresql"
    since = at - timedelta(minutes=a.rate_limit_window_minutes)
    if pg:
        last_number, recent, oldest, same_key = fastpath.counts(s, p.user.id, a.id, since, key)
    else:
        last_number, recent, oldest, same_key = s.execute(_COUNTS, {"since": since, "key": key, "user_id": p.user.id,
                                                                    "assignment_id": a.id}).one()
    if same_key is not None:
        return replay(same_key)
    if mem.role == "student":
        close = policy.student_close(a, ext)
        if close is not None and at > close:
            raise HTTPException(409, f"the assignment closed at {iso(close)}; submissions are no longer accepted")
        if a.rate_limit_count and recent >= a.rate_limit_count:
            wait = policy.retry_after(oldest, a.rate_limit_window_minutes, at)
            raise HTTPException(429, f"{a.rate_limit_count} graded submission(s) per "
                                     f"{a.rate_limit_window_minutes:g} minutes; the next one in {wait} s "
                                     "(checking the format spends no attempt)",
                                headers={"Retry-After": str(wait)})
    version_id = a.current_version_id
    lv = grading.POOL.get(s, version_id)
    skey = mem.student_key or p.user.username
    vkey = grading.variant_key(lv, skey) if lv.assignment.has_variants else "shared"
    ready = grading.variant_ready(s, lv, version_id, vkey)
    sub = m.Submission(assignment_id=a.id, user_id=p.user.id, number=(last_number or 0) + 1, version_id=version_id,
                       received_at=at, idempotency_key=key, filename=filename, payload=payload, sha256=digest,
                       size=len(payload))
    try:
        values = {c: getattr(sub, c) for c in _COLUMNS}
        sub.id = fastpath.insert_submission(s, values) if pg else s.execute(_INSERT, values).scalar_one()
        if not ready:   # the job commits with the submission
            svc.queue.enqueue(s, "grade", {"submission_id": sub.id, "version_id": version_id, "how": "job"},
                              PRIORITY["grade"])
        s.commit()
    except (IntegrityError, *(fastpath.integrity_errors() if pg else ())):   # a concurrent retry with this key won
        s.rollback()
        found = s.scalar(select(S.id).where(S.user_id == p.user.id, S.assignment_id == a.id,
                                            S.idempotency_key == key))
        if found is None:
            raise
        return replay(found)
    feedback = None
    if ready:
        feedback = _grade_here(svc, s, sub, a, ext, lv, skey)
    if feedback is None:
        svc.queue.notify()
        feedback = feedback_json(s, sub, a, True, clock.now())
    body = submission_json(sub, p.user.username)
    body["feedback"] = feedback
    body["replayed"] = False
    return JSONResponse(body, status_code=201 if feedback["status"] == "graded" else 202,
                        headers={"Location": body["links"]["self"]})


def _grade_here(svc, s, sub: m.Submission, a: m.Assignment, ext, lv, skey: str) -> Optional[dict]:
    """Grade a stored submission in the request and store its grade; its feedback (student view), or None
    when it must be read from the database (someone else graded it first, or grading failed: then a job is
    queued, and the sweep is there should even that fail)."""
    clock = svc.settings.clock
    try:
        doc, seconds = svc.grade(lv, sub.filename, sub.payload, skey, clock.now())
        graded_at = clock.now()
        if svc.engine.dialect.name == "postgresql":
            grade_id = fastpath.insert_grade(s, {
                "submission_id": sub.id, "version_id": sub.version_id, "score": doc["score"],
                "max_score": doc["max_score"], "error": bool(doc.get("error")), "result": doc, "how": "request",
                "grading_seconds": seconds, "created_at": graded_at})
        else:
            grade_id = grading.insert_grade(s, sub.id, sub.version_id, doc, "request", seconds, graded_at)
        s.commit()
    except Exception:  # noqa: BLE001 - stored: a job grades it
        log.exception("grading submission %s in the request failed; a job will", sub.id)
        s.rollback()
        try:
            svc.queue.enqueue(s, "grade", {"submission_id": sub.id, "version_id": sub.version_id, "how": "job"},
                              PRIORITY["grade"])
            s.commit()
        except Exception:  # noqa: BLE001 - the sweep grades it
            log.exception("queueing submission %s failed; the sweep will grade it", sub.id)
            s.rollback()
        return None
    if grade_id is None:
        return None
    late = policy.lateness(a, ext, sub.received_at)
    view = grading.student_view(doc, policy.release_time(a, ext), clock.now())
    return {"status": "graded", "view": "student", "version": grading.POOL.number(s, sub.version_id),
            "current_version": True, "graded_at": iso(graded_at), "score": view["score"],
            "max_score": view["max_score"], "late": late.as_json(), "score_after_penalty": late.apply(view["score"]),
            "result": view}


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


# ------------------------------------------------------------------------ grade overrides


class OverrideIn(BaseModel):
    question: Optional[str] = Field(None, max_length=200, description="a question's id; null: the whole "
                                    "submission's score")
    score: Optional[float] = Field(..., ge=0, description="the score that counts (at most the question's points, "
                                   "or the assignment's maximum); null takes the override back")
    reason: str = Field(min_length=1, max_length=2000, description="why (kept in the audit trail)")
    show_reason: bool = Field(False, description="the student sees the reason too (they always see the score)")


def _staff_find(s, p: Principal, submission_id: int):
    """A submission the caller grades: instructors, and TAs of the student's section; else 404."""
    sub, a, viewer = _find(s, p, submission_id)
    owner = s.scalar(select(m.Membership).where(m.Membership.course_id == a.course_id,
                                                m.Membership.user_id == sub.user_id))
    if viewer.role not in ("instructor", "ta") or not sees_student(viewer, owner):
        raise not_found("submission not found")
    return sub, a, viewer, owner


@router.post("/submissions/{submission_id}/overrides", status_code=201,
             summary="Override a question's or the submission's score, with a reason (instructors; TAs of the "
                     "student's section); appended, audited")
def add_override(submission_id: int, body: OverrideIn, request: Request, p: Principal = Depends(manager),
                 s=Depends(db)):
    sub, a, viewer, owner = _staff_find(s, p, submission_id)
    if not body.reason.strip():
        raise HTTPException(422, "reason: say why the score is set by hand")
    g = latest_grade(s, sub, a)
    if g is None:
        raise HTTPException(409, "the submission is not graded yet; override its score once it is")
    questions = {q["id"]: q for q in g.result.get("questions", [])}
    if body.question is not None and body.question not in questions:
        raise HTTPException(422, f"question: no question '{body.question}' in this assignment (questions: "
                                 f"{', '.join(questions)})")
    limit = questions[body.question]["points"] if body.question is not None else g.result["max_score"]
    if body.score is not None and body.score > limit:
        raise HTTPException(422, f"score: at most {limit:g} points")
    found = overrides.latest(s, [sub.id]).get(sub.id) or {}
    key = body.question or overrides.WHOLE
    previous = found.get(key)
    if body.score is None and previous is None:
        raise HTTPException(422, "score: null takes an override back, and this score has none")
    graded = (questions[body.question]["score"] if body.question is not None else
              overrides.score(g.result, {k: o for k, o in found.items() if k != overrides.WHOLE}))
    at = now(request)
    o = m.GradeOverride(submission_id=sub.id, question_id=body.question, score=body.score, reason=body.reason.strip(),
                        show_reason=body.show_reason, created_by=p.user.id, created_at=at)
    s.add(o)
    s.flush()
    student = owner.user.username if owner is not None else str(sub.user_id)
    audit(s, p.user, a.course_id, "grade.override" if body.score is not None else "grade.override_removed",
          "submission", sub.id, at,
          before={"question": body.question, "score": previous.score if previous else graded,
                  "overridden": previous is not None},
          after={"question": body.question, "score": body.score if body.score is not None else graded,
                 "reason": o.reason, "show_reason": o.show_reason, "student": student,
                 "assignment": a.name, "submission_number": sub.number})
    s.commit()
    out = overrides.as_json(o, True, p.user.username)
    out["feedback"] = feedback_json(s, sub, a, False, at)
    return out


@router.get("/submissions/{submission_id}/overrides",
            summary="Every override of a submission's scores, oldest first, with who and why (staff)")
def list_overrides(submission_id: int, p: Principal = Depends(reader), s=Depends(db)):
    sub, _, _, _ = _staff_find(s, p, submission_id)
    rows = overrides.history(s, sub.id)
    names = _usernames(s, {o.created_by for o in rows})
    return [overrides.as_json(o, True, names.get(o.created_by, "")) for o in rows]
