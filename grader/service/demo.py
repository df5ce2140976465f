"""`cnnspec serve --demo`: a demo course with the lecture assignment (due in a week) and three students, created
through the API itself (the same code path as a real course). The assignment's files come with the package
(demo_assignment.py), so this works from an installed wheel as well as from a source checkout; the notes'
answers are written to the data directory for the `cnnspec submit` command it prints."""
from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import select

from . import demo_assignment, models as m
from .security import hash_password


def load_demo(svc, base: str) -> list[str]:
    from fastapi.testclient import TestClient

    from .app import create_app

    with svc.sessions() as s:
        if s.scalar(select(m.User).where(m.User.username == "demo-instructor")) is not None:
            return ["demo course: already created (log in as demo-instructor / student1..3 with the passwords "
                    "printed the first time)"]
    at = svc.settings.clock.now()
    passwords = {name: secrets.token_urlsafe(9) for name in ("demo-instructor", "student1", "student2", "student3")}
    with svc.sessions() as s, s.begin():
        s.add(m.User(username="demo-instructor", display_name="Demo Instructor", is_admin=True,
                     password_hash=hash_password(passwords["demo-instructor"]), created_at=at))
    app = create_app(svc.settings, svc)
    client = TestClient(app, base_url=base)
    r = client.post("/api/v1/auth/login", json={"username": "demo-instructor", "password": passwords["demo-instructor"]})
    r.raise_for_status()
    h = {"X-CSRF-Token": r.json()["csrf_token"]}
    course = client.post("/api/v1/courses", json={"code": "demo", "title": "cnnspec demo course"}, headers=h).json()
    cid = course["id"]
    r = client.post(f"/api/v1/courses/{cid}/assignments", headers=h, data={"main": demo_assignment.MAIN},
                    files=[("files", (path, text.encode())) for path, text in demo_assignment.FILES.items()])
    r.raise_for_status()
    aid = r.json()["id"]
    due = at + timedelta(days=7)
    client.patch(f"/api/v1/courses/{cid}/assignments/{aid}", headers=h,
                 json={"due_at": due.isoformat(), "close_at": (due + timedelta(days=7)).isoformat(),
                       "late_grace_minutes": 15, "late_percent_per_day": 10, "late_max_percent": 50}).raise_for_status()
    roster = "username,name,section\nstudent1,Student One,A\nstudent2,Student Two,A\nstudent3,Student Three,B\n"
    client.post(f"/api/v1/courses/{cid}/roster", headers=h,
                files={"roster": ("roster.csv", roster.encode())}).raise_for_status()
    with svc.sessions() as s, s.begin():
        for name in ("student1", "student2", "student3"):
            u = s.scalar(select(m.User).where(m.User.username == name))
            u.password_hash, u.signup_token_hash, u.signup_expires_at = hash_password(passwords[name]), None, None
    client.post(f"/api/v1/courses/{cid}/assignments/{aid}/publish", headers=h, json={}).raise_for_status()
    r = client.post("/api/v1/auth/login", json={"username": "student1", "password": passwords["student1"]})
    token = client.post("/api/v1/me/tokens", json={"name": "demo"},
                        headers={"X-CSRF-Token": r.json()["csrf_token"]}).json()["token"]
    answers = svc.settings.data_dir / "demo-answers.yaml"     # the notes' answers, with their two slips
    answers.parent.mkdir(parents=True, exist_ok=True)
    answers.write_text(demo_assignment.ANSWERS, encoding="utf-8")
    lines = [f"demo course {cid} 'demo': assignment {aid} 'lecture-2024-12-08' (due {due:%Y-%m-%d %H:%M} UTC)"]
    lines += [f"  {name:<16} password {pw}" for name, pw in passwords.items()]
    lines += [f"  student1's API token: {token}",
              f"  try: CNNSPEC_TOKEN={token} cnnspec submit {cid}/{aid} {answers} --server {base}"]
    return lines
