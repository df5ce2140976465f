"""Assignments: upload (immutable, hashed versions), dates and policies, publish, template, extensions,
regrade (preview, then apply)."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal, Optional

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import func, select, update

from .. import grading, models as m, overrides, policy
from ..jobs import PRIORITY
from ..store import UploadError, find_main, manifest_sha, unpack, validate
from .common import (Principal, assignment_for, audit, db, instructor, iso, manager, membership, not_found, now,
                     reader, sees_student, service, staff)

router = APIRouter(tags=["assignments"])

POLICY_FIELDS = ("publish_at", "due_at", "close_at", "release_at", "late_grace_minutes", "late_percent_per_day",
                 "late_max_percent", "rate_limit_count", "rate_limit_window_minutes", "counted")


class AssignmentPatch(BaseModel):
    """Dates are ISO 8601 with a time zone; null clears one."""

    publish_at: Optional[datetime] = None
    due_at: Optional[datetime] = None
    close_at: Optional[datetime] = None
    release_at: Optional[datetime] = None
    late_grace_minutes: Optional[float] = Field(None, ge=0)
    late_percent_per_day: Optional[float] = Field(None, ge=0, le=100)
    late_max_percent: Optional[float] = Field(None, ge=0, le=100)
    rate_limit_count: Optional[int] = Field(None, ge=0, le=100000)
    rate_limit_window_minutes: Optional[float] = Field(None, gt=0, le=525600)
    counted: Optional[Literal["best", "last"]] = None


class PublishIn(BaseModel):
    at: Optional[datetime] = Field(None, description="when students see it (default: now)")


class ExtensionIn(BaseModel):
    due_at: datetime
    reason: str = Field("", max_length=2000)


class RegradeIn(BaseModel):
    apply: bool = Field(False, description="false: preview who changes; true: make this version current and "
                        "regrade every stored submission (grades are appended)")


def _policy(a: m.Assignment) -> dict:
    return {k: (iso(getattr(a, k)) if k.endswith("_at") else getattr(a, k)) for k in POLICY_FIELDS}


def version_json(v: m.AssignmentVersion) -> dict:
    return {"number": v.number, "sha256": v.sha256, "main": v.main_path, "created_at": iso(v.created_at)}


def assignment_json(s, a: m.Assignment, mem: m.Membership, ext: Optional[m.Extension] = None) -> dict:
    v = s.get(m.AssignmentVersion, a.current_version_id)
    out = {"id": a.id, "course_id": a.course_id, "name": a.name, "title": a.title, **_policy(a),
           "version": v.number, "questions": v.questions, "max_score": sum(q["points"] for q in v.questions),
           "per_student_data": v.has_variants}
    if mem.role == "student":
        out["your_due_at"] = iso(policy.student_due(a, ext))
        out["your_close_at"] = iso(policy.student_close(a, ext))
    else:
        out["versions"] = [version_json(x) for x in s.scalars(select(m.AssignmentVersion).where(
            m.AssignmentVersion.assignment_id == a.id).order_by(m.AssignmentVersion.number))]
    return out


def _read_upload(request: Request, files: list[UploadFile], main: Optional[str]):
    limit = service(request).settings.max_assignment_bytes
    try:
        tree = unpack([(f.filename or "", f.file.read()) for f in files], limit)
        main_path = find_main(tree, main)
        summary = validate(tree, main_path)
    except UploadError as exc:
        raise HTTPException(422, str(exc)) from None
    return tree, main_path, summary


def _store_version(s, a: m.Assignment, tree, main_path, summary, user: m.User, at: datetime) -> m.AssignmentVersion:
    from ..security import sha256_bytes

    number = (s.scalar(select(func.max(m.AssignmentVersion.number)).where(
        m.AssignmentVersion.assignment_id == a.id)) or 0) + 1
    v = m.AssignmentVersion(assignment_id=a.id, number=number, main_path=main_path, sha256=manifest_sha(tree),
                            questions=summary["questions"], has_variants=summary["has_variants"],
                            created_by=user.id, created_at=at)
    s.add(v)
    s.flush()
    for path, data in sorted(tree.items()):
        s.add(m.AssignmentFile(version_id=v.id, path=path, sha256=sha256_bytes(data), content=data))
    return v


@router.post("/courses/{course_id}/assignments", status_code=201,
             summary="Upload an assignment: its YAML and the spec/data files it names (or one zip of them)")
def create_assignment(course_id: int, request: Request, files: list[UploadFile] = File(...),
                      main: Optional[str] = Form(None), p: Principal = Depends(manager), s=Depends(db)):
    mem = instructor(s, p.user, course_id)
    tree, main_path, summary = _read_upload(request, files, main)
    if s.scalar(select(m.Assignment).where(m.Assignment.course_id == course_id,
                                           m.Assignment.name == summary["name"])) is not None:
        raise HTTPException(409, f"the course has an assignment named '{summary['name']}'; upload a new version of it "
                                 "(POST .../assignments/{id}/versions)")
    at = now(request)
    due = None
    if summary["due_date"]:
        from grader.assignment import parse_due_date
        due = parse_due_date(summary["due_date"])
    a = m.Assignment(course_id=course_id, name=summary["name"], title=summary["title"], due_at=due, created_at=at)
    s.add(a)
    s.flush()
    v = _store_version(s, a, tree, main_path, summary, p.user, at)
    a.current_version_id = v.id
    audit(s, p.user, course_id, "assignment.create", "assignment", a.id, at,
          after={"name": a.name, "version": 1, "sha256": v.sha256})
    s.commit()
    return assignment_json(s, a, mem)


@router.post("/courses/{course_id}/assignments/{assignment_id}/versions", status_code=201,
             summary="Upload a new version; it counts once applied with a regrade (at once if nothing was submitted)")
def add_version(course_id: int, assignment_id: int, request: Request, files: list[UploadFile] = File(...),
                main: Optional[str] = Form(None), p: Principal = Depends(manager), s=Depends(db)):
    mem = instructor(s, p.user, course_id)
    a = assignment_for(s, mem, assignment_id, now(request))
    tree, main_path, summary = _read_upload(request, files, main)
    if summary["name"] != a.name:
        raise HTTPException(422, f"this is assignment '{summary['name']}', not '{a.name}'")
    at = now(request)
    v = _store_version(s, a, tree, main_path, summary, p.user, at)
    submitted = s.scalar(select(func.count()).select_from(m.Submission).where(m.Submission.assignment_id == a.id))
    if not submitted:
        a.current_version_id = v.id
        a.title = summary["title"]
        if a.publish_at is not None:
            service(request).queue.enqueue(s, "prepare", {"version_id": v.id, "keys": None}, PRIORITY["prepare"])
    audit(s, p.user, course_id, "assignment.version", "assignment", a.id, at,
          after={"version": v.number, "sha256": v.sha256, "current": a.current_version_id == v.id})
    s.commit()
    service(request).queue.notify()
    return {**version_json(v), "current": a.current_version_id == v.id}


@router.get("/courses/{course_id}/assignments", summary="Assignments (students: the published ones)")
def list_assignments(course_id: int, request: Request, p: Principal = Depends(reader), s=Depends(db)):
    mem = membership(s, p.user, course_id)
    at = now(request)
    out = []
    for a in s.scalars(select(m.Assignment).where(m.Assignment.course_id == course_id).order_by(m.Assignment.id)):
        if mem.role == "student" and (a.publish_at is None or a.publish_at > at):
            continue
        ext = _extension(s, a.id, p.user.id)
        out.append(assignment_json(s, a, mem, ext))
    return out


def _extension(s, assignment_id: int, user_id: int) -> Optional[m.Extension]:
    return s.scalar(select(m.Extension).where(m.Extension.assignment_id == assignment_id,
                                              m.Extension.user_id == user_id))


@router.get("/courses/{course_id}/assignments/{assignment_id}", summary="One assignment: questions, dates, policy")
def get_assignment(course_id: int, assignment_id: int, request: Request, p: Principal = Depends(reader),
                   s=Depends(db)):
    mem = membership(s, p.user, course_id)
    a = assignment_for(s, mem, assignment_id, now(request))
    return assignment_json(s, a, mem, _extension(s, a.id, p.user.id))


@router.patch("/courses/{course_id}/assignments/{assignment_id}", summary="Set dates and policies (instructors)")
def patch_assignment(course_id: int, assignment_id: int, body: AssignmentPatch, request: Request,
                     p: Principal = Depends(manager), s=Depends(db)):
    mem = instructor(s, p.user, course_id)
    a = assignment_for(s, mem, assignment_id, now(request))
    before = _policy(a)
    for k in body.model_fields_set:
        v = getattr(body, k)
        if isinstance(v, datetime) and v.tzinfo is None:
            raise HTTPException(422, f"{k}: give a time zone (e.g. 2025-01-31T23:59:00+01:00 or ...Z)")
        if v is None and k not in ("publish_at", "due_at", "close_at", "release_at"):
            continue
        setattr(a, k, v)
    audit(s, p.user, course_id, "assignment.update", "assignment", a.id, now(request), before=before, after=_policy(a))
    was_published = before["publish_at"] is not None
    if a.publish_at is not None and not was_published:
        service(request).queue.enqueue(s, "prepare", {"version_id": a.current_version_id, "keys": None},
                                       PRIORITY["prepare"])
    s.commit()
    service(request).queue.notify()
    return assignment_json(s, a, mem)


@router.post("/courses/{course_id}/assignments/{assignment_id}/publish",
             summary="Publish: students see it from `at` (default now); every student's reference is computed")
def publish(course_id: int, assignment_id: int, request: Request, body: PublishIn = PublishIn(),
            p: Principal = Depends(manager), s=Depends(db)):
    mem = instructor(s, p.user, course_id)
    a = assignment_for(s, mem, assignment_id, now(request))
    before = _policy(a)
    a.publish_at = body.at or now(request)
    service(request).queue.enqueue(s, "prepare", {"version_id": a.current_version_id, "keys": None},
                                   PRIORITY["prepare"])
    audit(s, p.user, course_id, "assignment.publish", "assignment", a.id, now(request), before=before,
          after=_policy(a))
    s.commit()
    service(request).queue.notify()
    return assignment_json(s, a, mem)


@router.get("/courses/{course_id}/assignments/{assignment_id}/template", response_class=PlainTextResponse,
            summary="My answers template: the questions and my data, never an answer")
def template(course_id: int, assignment_id: int, request: Request, p: Principal = Depends(reader), s=Depends(db)):
    mem = membership(s, p.user, course_id)
    a = assignment_for(s, mem, assignment_id, now(request))
    from grader.tools import template as make_template

    lv = grading.POOL.get(s, a.current_version_id)
    key = mem.student_key or p.user.username
    text, arrays = make_template(lv.assignment, key if lv.assignment.has_variants else None, None)
    if arrays:
        raise HTTPException(422, "this assignment's data is too large for a one-file template")
    return PlainTextResponse(text, media_type="text/yaml; charset=utf-8")


@router.get("/courses/{course_id}/assignments/{assignment_id}/versions/{number}/files/{path:path}",
            summary="A file of a version (staff)")
def version_file(course_id: int, assignment_id: int, number: int, path: str, request: Request,
                 p: Principal = Depends(reader), s=Depends(db)):
    mem = staff(s, p.user, course_id)
    a = assignment_for(s, mem, assignment_id, now(request))
    v = s.scalar(select(m.AssignmentVersion).where(m.AssignmentVersion.assignment_id == a.id,
                                                   m.AssignmentVersion.number == number))
    f = v and s.scalar(select(m.AssignmentFile).where(m.AssignmentFile.version_id == v.id,
                                                      m.AssignmentFile.path == path))
    if f is None:
        raise not_found("file not found")
    return Response(f.content, media_type="application/octet-stream", headers={"X-Content-SHA256": f.sha256})


# ------------------------------------------------------------------------ extensions


def _student_member(s, viewer: m.Membership, user_id: int) -> m.Membership:
    target = s.scalar(select(m.Membership).where(m.Membership.course_id == viewer.course_id,
                                                 m.Membership.user_id == user_id))
    if not sees_student(viewer, target) or target.role != "student":
        raise not_found("student not found")
    return target


def extension_json(e: m.Extension, username: str) -> dict:
    return {"user_id": e.user_id, "username": username, "due_at": iso(e.due_at), "reason": e.reason,
            "created_at": iso(e.created_at)}


@router.get("/courses/{course_id}/assignments/{assignment_id}/extensions", summary="Extensions (staff)")
def list_extensions(course_id: int, assignment_id: int, request: Request, p: Principal = Depends(reader),
                    s=Depends(db)):
    mem = staff(s, p.user, course_id)
    a = assignment_for(s, mem, assignment_id, now(request))
    out = []
    for e in s.scalars(select(m.Extension).where(m.Extension.assignment_id == a.id).order_by(m.Extension.id)):
        target = s.scalar(select(m.Membership).where(m.Membership.course_id == course_id,
                                                     m.Membership.user_id == e.user_id))
        if sees_student(mem, target):
            out.append(extension_json(e, target.user.username))
    return out


@router.put("/courses/{course_id}/assignments/{assignment_id}/extensions/{user_id}",
            summary="Give a student their own due date (instructors, and TAs for their section)")
def put_extension(course_id: int, assignment_id: int, user_id: int, body: ExtensionIn, request: Request,
                  p: Principal = Depends(manager), s=Depends(db)):
    mem = staff(s, p.user, course_id)
    a = assignment_for(s, mem, assignment_id, now(request))
    target = _student_member(s, mem, user_id)
    if body.due_at.tzinfo is None:
        raise HTTPException(422, "due_at: give a time zone")
    e = _extension(s, a.id, user_id)
    before = extension_json(e, target.user.username) if e else None
    at = now(request)
    if e is None:
        e = m.Extension(assignment_id=a.id, user_id=user_id, due_at=body.due_at, reason=body.reason,
                        granted_by=p.user.id, created_at=at)
        s.add(e)
    else:
        e.due_at, e.reason, e.granted_by = body.due_at, body.reason, p.user.id
    s.flush()
    after = extension_json(e, target.user.username)
    audit(s, p.user, course_id, "extension.grant", "assignment", a.id, at, before=before, after=after)
    s.commit()
    return after


@router.delete("/courses/{course_id}/assignments/{assignment_id}/extensions/{user_id}",
               summary="Withdraw an extension")
def delete_extension(course_id: int, assignment_id: int, user_id: int, request: Request,
                     p: Principal = Depends(manager), s=Depends(db)):
    mem = staff(s, p.user, course_id)
    a = assignment_for(s, mem, assignment_id, now(request))
    target = _student_member(s, mem, user_id)
    e = _extension(s, a.id, user_id)
    if e is None:
        raise not_found("no extension")
    audit(s, p.user, course_id, "extension.withdraw", "assignment", a.id, now(request),
          before=extension_json(e, target.user.username))
    s.delete(e)
    s.commit()
    return {"ok": True}


# ------------------------------------------------------------------------ regrade


# A preview grades every stored submission against the version. Up to this many missing grades are computed in
# the request (milliseconds each); more are computed by jobs (priority of regrades, behind students' grading)
# and the preview is read with GET until it is complete.
PREVIEW_IN_REQUEST = 25
# A preview's jobs are queued once: asking again queues only submissions that arrived since, unless the last
# request is this old (then whatever is still missing is queued again, should a job have failed for good).
PREVIEW_REQUEUE_MINUTES = 10


@router.post("/courses/{course_id}/assignments/{assignment_id}/versions/{number}/regrade",
             summary="Replay every stored submission against a version: preview who changes, or apply",
             responses={202: {"description": "a preview is being computed by jobs: GET the same path until "
                                             "`complete`"}})
def regrade(course_id: int, assignment_id: int, number: int, body: RegradeIn, request: Request,
            p: Principal = Depends(manager), s=Depends(db)):
    mem = instructor(s, p.user, course_id)
    a = assignment_for(s, mem, assignment_id, now(request))
    v = _version(s, a, number)
    svc = service(request)
    at = now(request)
    subs = s.scalars(select(m.Submission).where(m.Submission.assignment_id == a.id).order_by(m.Submission.id)).all()
    graded = _graded_against(s, a, v)
    missing = [sub for sub in subs if sub.id not in graded]
    if not body.apply:
        if 0 < len(missing) <= PREVIEW_IN_REQUEST:
            lv = grading.POOL.get(s, v.id)
            for sub in missing:
                doc, seconds = svc.grade(lv, sub.filename, sub.payload, grading.student_key(s, sub), at)
                grading.insert_grade(s, sub.id, v.id, doc, "preview", seconds, at)
            s.commit()
        elif missing:
            queued_up_to = _preview_queued_up_to(s, a, v, at)
            queue = [sub for sub in missing if sub.id > queued_up_to]
            for sub in queue:
                svc.queue.enqueue(s, "grade", {"submission_id": sub.id, "version_id": v.id, "how": "preview"},
                                  PRIORITY["regrade"])
            if queue:
                audit(s, p.user, course_id, "assignment.regrade_preview", "assignment", a.id, at,
                      after={"version": number, "queued": len(queue), "up_to_submission": subs[-1].id})
            s.commit()
            svc.queue.notify()
        body = _preview(s, a, mem, v, subs)
        return JSONResponse(body, status_code=200 if body["complete"] else 202)
    before = {"version": s.get(m.AssignmentVersion, a.current_version_id).number}
    a.current_version_id = v.id
    # A preview's grades are this version's grades now: they count, also once a later version is applied
    # and they are what a submission shows until its regrade (grading.grade_stored does the same for a
    # preview job that finishes after this).
    s.execute(update(m.Grade).where(m.Grade.version_id == v.id, m.Grade.how == "preview").values(how="regrade"))
    queued_up_to = _preview_queued_up_to(s, a, v, at)   # a recent preview's jobs grade those (as regrades)
    for sub in (x for x in missing if x.id > queued_up_to):
        svc.queue.enqueue(s, "grade", {"submission_id": sub.id, "version_id": v.id, "how": "regrade"},
                          PRIORITY["regrade"])
    if a.publish_at is not None:
        svc.queue.enqueue(s, "prepare", {"version_id": v.id, "keys": None}, PRIORITY["prepare"])
    audit(s, p.user, course_id, "assignment.regrade", "assignment", a.id, at, before=before,
          after={"version": number, "submissions": len(subs)})
    s.commit()
    svc.queue.notify()
    return {"version": number, "applied": True, "complete": not missing, "submissions": len(subs),
            "graded": len(subs) - len(missing), "changes": None}


@router.get("/courses/{course_id}/assignments/{assignment_id}/versions/{number}/regrade",
            summary="A regrade preview's progress, and who changes once every submission is graded against it")
def regrade_preview(course_id: int, assignment_id: int, number: int, request: Request,
                    p: Principal = Depends(reader), s=Depends(db)):
    mem = instructor(s, p.user, course_id)
    a = assignment_for(s, mem, assignment_id, now(request))
    v = _version(s, a, number)
    subs = s.scalars(select(m.Submission).where(m.Submission.assignment_id == a.id).order_by(m.Submission.id)).all()
    return _preview(s, a, mem, v, subs)


def _version(s, a: m.Assignment, number: int) -> m.AssignmentVersion:
    v = s.scalar(select(m.AssignmentVersion).where(m.AssignmentVersion.assignment_id == a.id,
                                                   m.AssignmentVersion.number == number))
    if v is None:
        raise not_found("version not found")
    return v


def _preview_queued_up_to(s, a: m.Assignment, v: m.AssignmentVersion, at) -> int:
    """The newest submission id a recent preview request of version v queued jobs up to (0: none recent)."""
    since = at - timedelta(minutes=PREVIEW_REQUEUE_MINUTES)
    for e in s.scalars(select(m.AuditEvent).where(m.AuditEvent.object_type == "assignment",
                                                  m.AuditEvent.object_id == a.id,
                                                  m.AuditEvent.action == "assignment.regrade_preview",
                                                  m.AuditEvent.at > since).order_by(m.AuditEvent.id.desc())):
        if (e.after or {}).get("version") == v.number:
            return int(e.after.get("up_to_submission", 0))
    return 0


def _graded_against(s, a: m.Assignment, v: m.AssignmentVersion) -> dict[int, m.Grade]:
    """{submission id: its grade against version v} for the assignment's submissions."""
    G, S = m.Grade, m.Submission
    return {g.submission_id: g for g in s.scalars(select(G).join(S, S.id == G.submission_id)
                                                   .where(S.assignment_id == a.id, G.version_id == v.id))}


def _preview(s, a: m.Assignment, mem: m.Membership, v: m.AssignmentVersion, subs: list) -> dict:
    """Progress (graded of submissions) and, when every submission has a grade against v, every student whose
    counted score would change, old and new (staff overrides hold, late penalties apply)."""
    from .gradebook import counted_rows

    graded = _graded_against(s, a, v)
    done = sum(sub.id in graded for sub in subs)
    body = {"version": v.number, "applied": v.id == a.current_version_id, "complete": done == len(subs),
            "submissions": len(subs), "graded": done, "changes": None,
            "links": {"self": f"/api/v1/courses/{a.course_id}/assignments/{a.id}/versions/{v.number}/regrade"}}
    if done < len(subs):
        return body
    found = overrides.latest(s, assignment_id=a.id)     # staff overrides hold after a regrade
    new_scores = {sub.id: overrides.score(graded[sub.id].result, found.get(sub.id)) for sub in subs}
    old_rows = {r["user_id"]: r for r in counted_rows(s, a, mem)}
    changes = []
    for new in counted_rows(s, a, mem, override=new_scores):
        old = old_rows.get(new["user_id"], {})
        if old.get("final_score") != new.get("final_score"):
            changes.append({"user_id": new["user_id"], "username": new["username"],
                            "old_score": old.get("final_score"), "new_score": new.get("final_score")})
    body["changes"] = changes
    return body
