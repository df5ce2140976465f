"""What every route shares: the request's database session, who is calling, and access checks.

Access rule: every lookup is scoped by the caller's membership, and anything the caller may not see is
"not found" (404) - another student's submission, a course one is not in, a staff-only route for a student,
a student of another section for a TA. Missing, expired, revoked or insufficient credentials are 401.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional

from fastapi import Depends, HTTPException, Request
from sqlalchemy import bindparam, select

from .. import models as m
from ..security import SCOPES, digest, same

SESSION_COOKIE = "cnnspec_session"
CSRF_HEADER = "X-CSRF-Token"


def service(request: Request):
    return request.app.state.service


def db(request: Request):
    s = request.app.state.service.sessions()
    try:
        yield s
    finally:
        s.close()


def now(request: Request) -> datetime:
    return request.app.state.service.settings.clock.now()


def not_found(what: str = "not found") -> HTTPException:
    return HTTPException(404, what)


def unauthorized(why: str, scope: Optional[str] = None) -> HTTPException:
    header = 'Bearer realm="cnnspec"' + (f', error="insufficient_scope", scope="{scope}"' if scope else "")
    return HTTPException(401, why, headers={"WWW-Authenticate": header})


@dataclass
class Principal:
    user: m.User
    via: str                              # session | token
    scopes: set = field(default_factory=set)
    session_row: Optional[m.Session] = None


def _authenticate(request: Request, s) -> Principal:
    """One query (the token or session row with its user). The read ends its transaction at once: the route
    runs in another thread and must not find a connection already taken (PostgreSQL reads it in autocommit:
    no BEGIN/COMMIT round trips)."""
    if s.get_bind().dialect.name == "postgresql":
        s.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    try:
        return lookup_caller(request, s)
    finally:
        s.commit()     # keeps the loaded rows (expire_on_commit=False)


_TOKEN_LOOKUP = (select(m.ApiToken.revoked_at, m.ApiToken.expires_at, m.ApiToken.scopes, m.User)
                 .join(m.User, m.User.id == m.ApiToken.user_id).where(m.ApiToken.token_hash == bindparam("token_hash")))


def bearer_token(request: Request) -> Optional[str]:
    """The API token of an 'Authorization: Bearer ...' header (None without that header; 401 if malformed)."""
    auth = request.headers.get("authorization", "")
    if not auth:
        return None
    kind, _, secret = auth.partition(" ")
    if kind.lower() != "bearer" or not secret.strip():
        raise unauthorized("give an API token as 'Authorization: Bearer <token>'")
    return secret.strip()


def token_principal(row, clock_now: datetime) -> Principal:
    """A row (revoked_at, expires_at, scopes, User) of the token's lookup -> its caller, or 401."""
    if row is None or row.revoked_at is not None:
        raise unauthorized("unknown or revoked API token")
    if row.expires_at <= clock_now:
        raise unauthorized("the API token has expired; create a new one")
    return Principal(row.User, "token", set(row.scopes.split()))


def require_scope(p: Principal, scope: str) -> Principal:
    if scope not in p.scopes:
        raise unauthorized(f"this API token lacks the '{scope}' scope", scope)
    return p


def lookup_caller(request: Request, s) -> Principal:
    """The caller of this request (401 when there is none), read in the session's current transaction."""
    clock_now = now(request)
    secret = bearer_token(request)
    if secret is not None:
        row = s.execute(_TOKEN_LOOKUP, {"token_hash": digest(secret)}).first()
        return token_principal(row, clock_now)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        found = s.execute(select(m.Session, m.User).join(m.User, m.User.id == m.Session.user_id)
                          .where(m.Session.token_hash == digest(cookie))).first()
        return session_principal(found.Session if found else None, found.User if found else None, request,
                                 clock_now)
    raise unauthorized("log in, or give an API token")


def session_principal(row, user, request: Request, clock_now: datetime) -> Principal:
    """A browser session's row (expires_at, csrf_token) and user -> its caller, or 401: ended, or an unsafe
    request without the session's CSRF token in its header."""
    if row is None or row.expires_at <= clock_now:
        raise unauthorized("the session has ended; log in again")
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        given = request.headers.get(CSRF_HEADER, "")
        if not given or not same(given, row.csrf_token):
            raise unauthorized(f"missing or wrong {CSRF_HEADER} header (the csrf_token from login)")
    return Principal(user, "session", set(SCOPES), row)


def caller(scope: str):
    """Dependency: the authenticated caller, who must hold `scope` (a session holds every scope)."""
    def dep(request: Request, s=Depends(db)) -> Principal:
        return require_scope(_authenticate(request, s), scope)
    return dep


reader = caller("read")
submitter = caller("submit")
manager = caller("manage")


def membership(s, user: m.User, course_id: int) -> m.Membership:
    mem = s.scalar(select(m.Membership).where(m.Membership.course_id == course_id, m.Membership.user_id == user.id))
    if mem is None:
        raise not_found("course not found")
    return mem


def staff(s, user: m.User, course_id: int) -> m.Membership:
    mem = membership(s, user, course_id)
    if mem.role not in ("instructor", "ta"):
        raise not_found()
    return mem


def instructor(s, user: m.User, course_id: int) -> m.Membership:
    mem = membership(s, user, course_id)
    if mem.role != "instructor":
        raise not_found()
    return mem


def sees_student(viewer: m.Membership, student: Optional[m.Membership]) -> bool:
    """May this member see that member's work? Instructors: everyone; TAs: their section's students (a TA
    without a section: every section); students: themselves."""
    if student is None:
        return False
    if viewer.role == "instructor":
        return True
    if viewer.role == "ta":
        return student.role == "student" and (not viewer.section or viewer.section == student.section)
    return viewer.user_id == student.user_id


def assignment_for(s, mem: m.Membership, assignment_id: int, at: datetime) -> m.Assignment:
    asg = s.get(m.Assignment, assignment_id)
    if asg is None or asg.course_id != mem.course_id:
        raise not_found("assignment not found")
    if mem.role == "student" and (asg.publish_at is None or asg.publish_at > at):
        raise not_found("assignment not found")
    return asg


def audit(s, actor: m.User, course_id: Optional[int], action: str, object_type: str, object_id: Optional[int],
          at: datetime, before: Optional[dict] = None, after: Optional[dict] = None) -> None:
    s.add(m.AuditEvent(at=at, actor_id=actor.id, course_id=course_id, action=action, object_type=object_type,
                       object_id=object_id, before=before, after=after))


def iso(t: Optional[datetime]) -> Optional[str]:
    return t.isoformat() if t else None
