"""Sign-up (one-time links), login (rate-limited, counted in the database), sessions, API tokens."""
from __future__ import annotations

from datetime import timedelta
from typing import Optional

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from .. import models as m
from ..security import SCOPES, digest, hash_password, new_secret, verify_password
from .common import SESSION_COOKIE, Principal, db, now, not_found, reader, service, unauthorized, iso

router = APIRouter(tags=["auth"])


class SignupIn(BaseModel):
    token: str = Field(max_length=200)
    password: str = Field(min_length=8, max_length=1000)
    display_name: Optional[str] = Field(None, max_length=200)


class LoginIn(BaseModel):
    username: str = Field(max_length=200)
    password: str = Field(max_length=1000)


class TokenIn(BaseModel):
    name: str = Field("", max_length=200)
    scopes: list[str] = Field(default_factory=lambda: ["read", "submit"])
    expires_days: float = Field(90, gt=0, le=366)


def user_json(u: m.User) -> dict:
    return {"id": u.id, "username": u.username, "display_name": u.display_name, "email": u.email,
            "is_admin": u.is_admin, "signed_up": u.password_hash is not None}


@router.post("/auth/signup", summary="Set a password with a one-time sign-up link's token")
def signup(body: SignupIn, request: Request, s=Depends(db)):
    at = now(request)
    u = s.scalar(select(m.User).where(m.User.signup_token_hash == digest(body.token)))
    if u is None or u.signup_expires_at is None or u.signup_expires_at <= at:
        raise not_found("unknown or expired sign-up link; ask the course staff for a new one")
    u.password_hash = hash_password(body.password)
    u.signup_token_hash, u.signup_expires_at = None, None
    if body.display_name:
        u.display_name = body.display_name
    s.commit()
    return user_json(u)


@router.post("/auth/login", summary="Log in: sets the session cookie; answers the CSRF token for unsafe requests")
def login(body: LoginIn, request: Request, response: Response, s=Depends(db)):
    svc = service(request)
    at = now(request)
    address = request.client.host if request.client else "?"
    window = at - timedelta(seconds=svc.settings.login_window_seconds)
    limit = svc.settings.login_failures
    for column, value in ((m.LoginAttempt.username, body.username), (m.LoginAttempt.address, address)):
        failures = s.scalar(select(func.count()).select_from(m.LoginAttempt).where(
            column == value, m.LoginAttempt.ok.is_(False), m.LoginAttempt.at > window))
        if failures >= limit:
            raise HTTPException(429, "too many failed logins; try again later",
                                headers={"Retry-After": str(svc.settings.login_window_seconds)})
    u = s.scalar(select(m.User).where(m.User.username == body.username))
    ok = verify_password(u.password_hash if u else None, body.password)
    s.add(m.LoginAttempt(username=body.username[:200], address=address[:100], ok=ok, at=at))
    if not ok:
        s.commit()
        raise unauthorized("wrong username or password")
    secret, csrf = new_secret("s"), new_secret("c")
    expires = at + timedelta(hours=svc.settings.session_hours)
    s.add(m.Session(user_id=u.id, token_hash=digest(secret), csrf_token=csrf, created_at=at, expires_at=expires))
    s.commit()
    response.set_cookie(SESSION_COOKIE, secret, httponly=True, samesite="lax", secure=svc.settings.cookie_secure,
                        max_age=int(svc.settings.session_hours * 3600), path="/")
    return {"user": user_json(u), "csrf_token": csrf, "expires_at": iso(expires)}


@router.post("/auth/logout", summary="End this session")
def logout(response: Response, p: Principal = Depends(reader), s=Depends(db)):
    if p.session_row is not None:
        s.delete(s.get(m.Session, p.session_row.id))
        s.commit()
    response.delete_cookie(SESSION_COOKIE, path="/")
    return {"ok": True}


@router.get("/me", summary="Who is calling, and their courses")
def me(p: Principal = Depends(reader), s=Depends(db)):
    rows = s.execute(select(m.Membership, m.Course).join(m.Course, m.Course.id == m.Membership.course_id)
                     .where(m.Membership.user_id == p.user.id).order_by(m.Course.id)).all()
    return {"user": user_json(p.user), "via": p.via, "scopes": sorted(p.scopes),
            "csrf_token": p.session_row.csrf_token if p.session_row else None,
            "courses": [{"id": c.id, "code": c.code, "title": c.title, "role": mem.role, "section": mem.section}
                        for mem, c in rows]}


@router.post("/me/tokens", status_code=201, summary="Create an API token (shown once) for the CLI or CI")
def create_token(body: TokenIn, request: Request, p: Principal = Depends(reader), s=Depends(db)):
    bad = [x for x in body.scopes if x not in SCOPES]
    if bad or not body.scopes:
        raise HTTPException(422, f"scopes must be some of {', '.join(SCOPES)}")
    if not set(body.scopes) <= p.scopes:
        raise unauthorized("a token cannot grant more than its creator holds")
    at = now(request)
    secret = new_secret("t")
    tok = m.ApiToken(user_id=p.user.id, name=body.name, token_hash=digest(secret), scopes=" ".join(sorted(set(
        body.scopes))), created_at=at, expires_at=at + timedelta(days=body.expires_days))
    s.add(tok)
    s.commit()
    return {"id": tok.id, "token": secret, "name": tok.name, "scopes": tok.scopes.split(),
            "expires_at": iso(tok.expires_at)}


@router.get("/me/tokens", summary="My API tokens (never their secrets)")
def list_tokens(p: Principal = Depends(reader), s=Depends(db)):
    rows = s.scalars(select(m.ApiToken).where(m.ApiToken.user_id == p.user.id).order_by(m.ApiToken.id))
    return [{"id": t.id, "name": t.name, "scopes": t.scopes.split(), "created_at": iso(t.created_at),
             "expires_at": iso(t.expires_at), "revoked": t.revoked_at is not None} for t in rows]


@router.delete("/me/tokens/{token_id}", summary="Revoke one of my API tokens")
def revoke_token(token_id: int, request: Request, p: Principal = Depends(reader), s=Depends(db)):
    t = s.get(m.ApiToken, token_id)
    if t is None or t.user_id != p.user.id:
        raise not_found("token not found")
    t.revoked_at = now(request)
    s.commit()
    return {"ok": True}
