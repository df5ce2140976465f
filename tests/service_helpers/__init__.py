"""Shared set-up for the service tests: real databases (SQLite files, and databases created on the PostgreSQL
server at 127.0.0.1:5432), a frozen clock, a course with sections, staff, students and API tokens."""
from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LECTURE = ROOT / "specs" / "assignments" / "lecture.yaml"
BN = ROOT / "specs" / "assignments" / "bn_pool_ce.yaml"
SLIPS = ROOT / "tests" / "grader_data" / "lecture" / "lecture_slips.yaml"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
T0 = datetime(2030, 3, 1, 12, 0, tzinfo=timezone.utc)


def pg_available() -> bool:
    try:
        import psycopg
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except Exception:  # noqa: BLE001
        return False


def create_pg_database() -> str:
    import psycopg
    name = f"cnnspec_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_pg_database(name: str) -> None:
    import psycopg
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_url(name: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request, tmp_path_factory):
    """A database URL (None = SQLite in the data directory) shared by one test module's tests."""
    if request.param == "sqlite":
        yield request.param, None, tmp_path_factory.mktemp("svc")
        return
    if not pg_available():
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (.ci/run starts it)")
    name = create_pg_database()
    try:
        yield request.param, pg_url(name), tmp_path_factory.mktemp("svc")
    finally:
        from grader.service import grading
        grading.POOL.clear()
        _dispose_all()
        drop_pg_database(name)


_services: list = []


def _dispose_all():
    while _services:
        svc = _services.pop()
        svc.engine.dispose()


@dataclass
class World:
    svc: object
    client: object
    clock: object
    backend: str
    course_id: int = 0
    other_course_id: int = 0
    users: dict = field(default_factory=dict)      # name -> user id
    tokens: dict = field(default_factory=dict)     # name -> bearer token
    assignment_id: int = 0

    def h(self, who: str, **extra) -> dict:
        return {"Authorization": f"Bearer {self.tokens[who]}", **extra}

    def drain(self) -> int:
        """Run every queued job that is due now (the in-process queue, or a procrastinate worker pass)."""
        if self.backend == "sqlite":
            return self.svc.queue.run_pending()
        from grader.service.jobs import Context, QUEUE, make_app
        from grader.service.settings import libpq_url

        app = make_app(libpq_url(self.svc.settings.url), Context(self.svc.settings, self.svc.sessions))

        async def run():
            async with app.open_async():
                await app.run_worker_async(queues=[QUEUE], wait=False, install_signal_handlers=False,
                                           fetch_job_polling_interval=0.1)
        asyncio.run(run())
        return 0

    def submit(self, who: str, data: bytes, key: str | None = None, name: str = "answers.yaml",
               assignment_id: int | None = None):
        headers = self.h(who)
        if key:
            headers["Idempotency-Key"] = key
        return self.client.post(f"/api/v1/courses/{self.course_id}/assignments/{assignment_id or self.assignment_id}"
                                "/submissions", headers=headers, files={"answers": (name, data)})


def make_token(svc, user_id: int, scopes: str = "read submit manage", expires: datetime | None = None) -> str:
    from grader.service import models as m
    from grader.service.security import digest, new_secret

    secret = new_secret("t")
    with svc.sessions() as s, s.begin():
        s.add(m.ApiToken(user_id=user_id, name="test", token_hash=digest(secret), scopes=scopes,
                         created_at=svc.settings.clock.now(), expires_at=expires or T0 + timedelta(days=365)))
    return secret


def make_user(svc, username: str, admin: bool = False) -> int:
    from grader.service import models as m
    with svc.sessions() as s, s.begin():
        u = m.User(username=username, is_admin=admin, created_at=svc.settings.clock.now())
        s.add(u)
        s.flush()
        return u.id


def upload(world: World, path: Path, who: str = "prof", course_id: int | None = None, assignment_id=None):
    from grader.service.store import assignment_files
    files, main = assignment_files(path)
    url = f"/api/v1/courses/{course_id or world.course_id}/assignments"
    if assignment_id:
        url += f"/{assignment_id}/versions"
    return world.client.post(url, headers=world.h(who), data={"main": main},
                             files=[("files", (p, d)) for p, d in files.items()])


def build_world(database, clock=None, grade=None, **settings_overrides) -> World:
    """A course (sections A and B): instructor prof, TAs ta_a and ta_b, students alice and amy (A) and bob (B);
    another course with its own student olga; the lecture assignment uploaded and published, due at T0 + 1 day."""
    from fastapi.testclient import TestClient

    from grader.service.app import Service, create_app
    from grader.service.settings import FrozenClock, Settings

    backend, url, data_dir = database
    clock = clock or FrozenClock(T0)
    settings = Settings(database=url, data_dir=data_dir, inline_worker=False, clock=clock, **settings_overrides)
    svc = Service(settings, grade=grade)
    _services.append(svc)
    client = TestClient(create_app(settings, svc), raise_server_exceptions=False)
    w = World(svc, client, clock, backend)
    tag = secrets.token_hex(3)
    prof = make_user(svc, f"prof-{tag}", admin=True)
    w.users["prof"] = prof
    w.tokens["prof"] = make_token(svc, prof)
    r = client.post("/api/v1/courses", json={"code": f"cnn-{tag}", "title": "CNN"}, headers=w.h("prof"))
    assert r.status_code == 201, r.text
    w.course_id = r.json()["id"]
    r = client.post("/api/v1/courses", json={"code": f"other-{tag}"}, headers=w.h("prof"))
    w.other_course_id = r.json()["id"]
    roster = ("username,name,email,section,role,student_id\n"
              f"alice-{tag},Alice,alice@x.org,A,student,a-{tag}\n"
              f"amy-{tag},Amy,amy@x.org,A,student,\n"
              f"bob-{tag},Bob,bob@x.org,B,student,\n"
              f"ta_a-{tag},TA A,,A,ta,\n"
              f"ta_b-{tag},TA B,,B,ta,\n")
    r = client.post(f"/api/v1/courses/{w.course_id}/roster", headers=w.h("prof"),
                    files={"roster": ("roster.csv", roster.encode())})
    assert r.status_code == 201, r.text
    for row in r.json():
        name = row["username"].rsplit("-", 1)[0]
        w.users[name] = row["user_id"]
        w.tokens[name] = make_token(svc, row["user_id"])
    r = client.post(f"/api/v1/courses/{w.other_course_id}/members", headers=w.h("prof"),
                    json={"username": f"olga-{tag}", "role": "student"})
    w.users["olga"] = r.json()["user_id"]
    w.tokens["olga"] = make_token(svc, w.users["olga"])
    r = upload(w, LECTURE)
    assert r.status_code == 201, r.text
    w.assignment_id = r.json()["id"]
    r = client.patch(f"/api/v1/courses/{w.course_id}/assignments/{w.assignment_id}", headers=w.h("prof"),
                     json={"due_at": (clock.now() + timedelta(days=1)).isoformat()})
    assert r.status_code == 200, r.text
    r = client.post(f"/api/v1/courses/{w.course_id}/assignments/{w.assignment_id}/publish", headers=w.h("prof"),
                    json={})
    assert r.status_code == 200, r.text
    w.drain()
    return w


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def cnnspec_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "cnnspec", *args]


def service_env(**extra) -> dict:
    env = dict(os.environ)
    env.pop("CNNSPEC_DATABASE", None)
    env.update({k: str(v) for k, v in extra.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_process(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    f = open(log, "ab")
    return subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)


def stop_process(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
