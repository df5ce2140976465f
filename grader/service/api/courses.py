"""Courses, memberships (instructor, ta limited to a section, student), roster import, the audit trail."""
from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Literal, Optional

from fastapi import APIRouter, Depends, File, HTTPException, Request, UploadFile
from pydantic import BaseModel, Field
from sqlalchemy import select

from .. import models as m
from ..jobs import PRIORITY
from ..security import digest, new_secret
from .common import (Principal, audit, db, instructor, iso, manager, membership, not_found, now, reader,
                     sees_student, service, staff)

router = APIRouter(tags=["courses"])

Role = Literal["instructor", "ta", "student"]


class CourseIn(BaseModel):
    code: str = Field(min_length=1, max_length=100)
    title: str = Field("", max_length=300)


class MemberIn(BaseModel):
    username: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.@+-]+$")
    role: Role = "student"
    section: str = Field("", max_length=100)
    student_key: str = Field("", max_length=200)
    display_name: str = Field("", max_length=200)
    email: str = Field("", max_length=320)


class MemberPatch(BaseModel):
    role: Optional[Role] = None
    section: Optional[str] = Field(None, max_length=100)
    student_key: Optional[str] = Field(None, max_length=200)


def course_json(c: m.Course, mem: m.Membership) -> dict:
    return {"id": c.id, "code": c.code, "title": c.title, "role": mem.role, "section": mem.section}


def member_json(mem: m.Membership) -> dict:
    u = mem.user
    return {"user_id": u.id, "username": u.username, "display_name": u.display_name, "email": u.email,
            "role": mem.role, "section": mem.section, "student_key": mem.student_key or u.username,
            "signed_up": u.password_hash is not None}


def signup_url(request: Request, secret: str) -> str:
    base = service(request).settings.base_url or str(request.base_url).rstrip("/")
    return f"{base}/signup?token={secret}"


@router.post("/courses", status_code=201, summary="Create a course (administrators); the creator is its instructor")
def create_course(body: CourseIn, request: Request, p: Principal = Depends(manager), s=Depends(db)):
    if not p.user.is_admin:
        raise not_found()
    at = now(request)
    c = m.Course(code=body.code, title=body.title, created_at=at)
    s.add(c)
    s.flush()
    mem = m.Membership(course_id=c.id, user_id=p.user.id, role="instructor", created_at=at)
    s.add(mem)
    audit(s, p.user, c.id, "course.create", "course", c.id, at, after=body.model_dump())
    s.commit()
    return course_json(c, mem)


@router.get("/courses", summary="My courses")
def list_courses(p: Principal = Depends(reader), s=Depends(db)):
    rows = s.execute(select(m.Course, m.Membership).join(m.Membership, m.Membership.course_id == m.Course.id)
                     .where(m.Membership.user_id == p.user.id).order_by(m.Course.id)).all()
    return [course_json(c, mem) for c, mem in rows]


@router.get("/courses/{course_id}", summary="One of my courses")
def get_course(course_id: int, p: Principal = Depends(reader), s=Depends(db)):
    mem = membership(s, p.user, course_id)
    return course_json(s.get(m.Course, course_id), mem)


@router.get("/courses/{course_id}/members", summary="Members (staff; a TA sees the staff and their section)")
def list_members(course_id: int, p: Principal = Depends(reader), s=Depends(db)):
    me = staff(s, p.user, course_id)
    rows = s.scalars(select(m.Membership).where(m.Membership.course_id == course_id).order_by(m.Membership.id))
    return [member_json(x) for x in rows if x.role != "student" or sees_student(me, x)]


def enroll(s, request: Request, actor: m.User, course_id: int, rows: list[MemberIn]) -> list[dict]:
    """Add or update members; users that do not exist yet are created with a one-time sign-up link."""
    at = now(request)
    days = service(request).settings.signup_link_days
    out, new_students = [], []
    for row in rows:
        u = s.scalar(select(m.User).where(m.User.username == row.username))
        link = None
        if u is None:
            secret = new_secret("u")
            u = m.User(username=row.username, display_name=row.display_name, email=row.email,
                       signup_token_hash=digest(secret), signup_expires_at=at + timedelta(days=days), created_at=at)
            s.add(u)
            s.flush()
            link = signup_url(request, secret)
        mem = s.scalar(select(m.Membership).where(m.Membership.course_id == course_id, m.Membership.user_id == u.id))
        before = member_json(mem) if mem else None
        if mem is None:
            mem = m.Membership(course_id=course_id, user_id=u.id, role=row.role, section=row.section,
                               student_key=row.student_key, created_at=at)
            s.add(mem)
        else:
            mem.role, mem.section, mem.student_key = row.role, row.section, row.student_key or mem.student_key
        s.flush()
        mem.user = u
        if row.role == "student":
            new_students.append(mem.student_key or u.username)
        audit(s, actor, course_id, "member.add" if before is None else "member.update", "user", u.id, at,
              before=before, after=member_json(mem))
        out.append({**member_json(mem), "signup_url": link})
    if new_students:   # their references for every published assignment, before they submit
        svc = service(request)
        for asg in s.scalars(select(m.Assignment).where(m.Assignment.course_id == course_id,
                                                        m.Assignment.publish_at.is_not(None))):
            svc.queue.enqueue(s, "prepare", {"version_id": asg.current_version_id, "keys": new_students},
                              PRIORITY["prepare"])
    return out


@router.post("/courses/{course_id}/members", status_code=201,
             summary="Add a member (instructors); a new user gets a one-time sign-up link (nothing is e-mailed)")
def add_member(course_id: int, body: MemberIn, request: Request, p: Principal = Depends(manager), s=Depends(db)):
    instructor(s, p.user, course_id)
    out = enroll(s, request, p.user, course_id, [body])
    s.commit()
    service(request).queue.notify()
    return out[0]


@router.patch("/courses/{course_id}/members/{user_id}", summary="Change a member's role, section or student id")
def patch_member(course_id: int, user_id: int, body: MemberPatch, request: Request,
                 p: Principal = Depends(manager), s=Depends(db)):
    instructor(s, p.user, course_id)
    mem = s.scalar(select(m.Membership).where(m.Membership.course_id == course_id, m.Membership.user_id == user_id))
    if mem is None:
        raise not_found("member not found")
    before = member_json(mem)
    for k, v in body.model_dump(exclude_none=True).items():
        setattr(mem, k, v)
    audit(s, p.user, course_id, "member.update", "user", user_id, now(request), before=before, after=member_json(mem))
    s.commit()
    return member_json(mem)


@router.delete("/courses/{course_id}/members/{user_id}", summary="Remove a member (their submissions are kept)")
def remove_member(course_id: int, user_id: int, request: Request, p: Principal = Depends(manager), s=Depends(db)):
    instructor(s, p.user, course_id)
    mem = s.scalar(select(m.Membership).where(m.Membership.course_id == course_id, m.Membership.user_id == user_id))
    if mem is None or user_id == p.user.id:
        raise not_found("member not found")
    audit(s, p.user, course_id, "member.remove", "user", user_id, now(request), before=member_json(mem))
    s.delete(mem)
    s.commit()
    return {"ok": True}


ROSTER_COLUMNS = ("username", "name", "email", "section", "role", "student_id")


@router.post("/courses/{course_id}/roster", status_code=201,
             summary="Import a roster CSV (username[,name,email,section,role,student_id]); answers sign-up links")
def import_roster(course_id: int, request: Request, roster: UploadFile = File(...),
                  p: Principal = Depends(manager), s=Depends(db)):
    instructor(s, p.user, course_id)
    try:
        text = roster.file.read().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HTTPException(422, "the roster is not UTF-8 text") from None
    reader_ = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() for f in (reader_.fieldnames or [])]
    if "username" not in fields:
        raise HTTPException(422, f"the roster's first line names the columns; 'username' is required (columns: "
                                 f"{', '.join(ROSTER_COLUMNS)})")
    rows, problems = [], []
    for n, raw in enumerate(reader_, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if k}
        try:
            rows.append(MemberIn(username=row.get("username", ""), role=row.get("role") or "student",
                                 section=row.get("section", ""), student_key=row.get("student_id", ""),
                                 display_name=row.get("name", ""), email=row.get("email", "")))
        except ValueError as exc:
            problems.append(f"line {n}: {exc.errors()[0]['loc'][-1]}: {exc.errors()[0]['msg']}"
                            if hasattr(exc, "errors") else f"line {n}: {exc}")
    if problems:
        raise HTTPException(422, "; ".join(problems[:20]))
    out = enroll(s, request, p.user, course_id, rows)
    s.commit()
    service(request).queue.notify()
    return out


@router.get("/courses/{course_id}/audit", summary="The audit trail of staff actions (instructors)")
def audit_trail(course_id: int, limit: int = 200, p: Principal = Depends(reader), s=Depends(db)):
    instructor(s, p.user, course_id)
    rows = s.execute(select(m.AuditEvent, m.User.username).join(m.User, m.User.id == m.AuditEvent.actor_id,
                                                                 isouter=True)
                     .where(m.AuditEvent.course_id == course_id).order_by(m.AuditEvent.id.desc())
                     .limit(max(1, min(limit, 5000)))).all()
    return [{"id": e.id, "at": iso(e.at), "actor": name, "action": e.action, "object_type": e.object_type,
             "object_id": e.object_id, "before": e.before, "after": e.after} for e, name in rows]
