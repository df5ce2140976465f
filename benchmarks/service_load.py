"""A deadline rush against the grading service (a benchmark, not a test; loopback only, bounded in time).

    python benchmarks/service_load.py [--students 2000] [--seconds 60] [--web-processes 2]

Creates a scratch PostgreSQL database on 127.0.0.1:5432, a course with N students (each with an API token)
and the lecture assignment published (references prepared), starts `cnnspec serve --web-processes 2` on a
free loopback port and `cnnspec worker`, then every student submits once (the notes' slips or the right
answers), arrivals spread evenly over the given seconds (open loop: a slow server does not slow the arrivals).
Reports throughput, latency p50/p95/p99, errors, and accepted = stored = graded (from the database after the
queue drains). Everything it started is stopped and the database dropped.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(url: str, students: int):
    """Course, students, tokens, the lecture assignment published with its reference ready (in-process)."""
    from fastapi.testclient import TestClient

    from grader.service import models as m
    from grader.service.app import Service, create_app
    from grader.service.jobs import Context, QUEUE, make_app
    from grader.service.security import digest, new_secret
    from grader.service.settings import Settings, libpq_url
    from grader.service.store import assignment_files

    settings = Settings(database=url, inline_worker=False)
    svc = Service(settings)
    now = settings.clock.now()
    with svc.sessions() as s, s.begin():
        prof = m.User(username="prof", is_admin=True, created_at=now)
        s.add(prof)
        s.flush()
        secret = new_secret("t")
        s.add(m.ApiToken(user_id=prof.id, token_hash=digest(secret), scopes="read submit manage", created_at=now,
                         expires_at=now + timedelta(days=1)))
    client = TestClient(create_app(settings, svc))
    h = {"Authorization": f"Bearer {secret}"}
    cid = client.post("/api/v1/courses", json={"code": "rush"}, headers=h).json()["id"]
    roster = "username,section\n" + "".join(f"s{i:05d},{'AB'[i % 2]}\n" for i in range(students))
    client.post(f"/api/v1/courses/{cid}/roster", headers=h, files={"roster": ("r.csv", roster.encode())})
    files, main = assignment_files(ROOT / "specs" / "assignments" / "lecture.yaml")
    aid = client.post(f"/api/v1/courses/{cid}/assignments", headers=h, data={"main": main},
                      files=[("files", (p, d)) for p, d in files.items()]).json()["id"]
    client.patch(f"/api/v1/courses/{cid}/assignments/{aid}", headers=h,
                 json={"due_at": (now + timedelta(hours=1)).isoformat()})
    client.post(f"/api/v1/courses/{cid}/assignments/{aid}/publish", headers=h, json={})
    app = make_app(libpq_url(svc.settings.url), Context(svc.settings, svc.sessions))

    async def drain():
        async with app.open_async():
            await app.run_worker_async(queues=[QUEUE], wait=False, install_signal_handlers=False)
    asyncio.run(drain())
    tokens = []
    with svc.sessions() as s, s.begin():
        for u in s.query(m.User).filter(m.User.username.like("s%")).order_by(m.User.id):
            t = new_secret("t")
            s.add(m.ApiToken(user_id=u.id, token_hash=digest(t), scopes="read submit", created_at=now,
                             expires_at=now + timedelta(days=1)))
            tokens.append(t)
    return svc, cid, aid, tokens


async def rush(base: str, cid: int, aid: int, tokens: list[str], seconds: float, bodies: list[bytes]):
    import httpx

    url = f"{base}/api/v1/courses/{cid}/assignments/{aid}/submissions"
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    results = []
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        start = time.perf_counter()

        async def one(i: int, token: str):
            await asyncio.sleep(max(0.0, start + i * seconds / len(tokens) - time.perf_counter()))
            t0 = time.perf_counter()
            try:
                r = await client.post(url, headers={"Authorization": f"Bearer {token}",
                                                    "Idempotency-Key": str(uuid.uuid4())},
                                      files={"answers": ("answers.yaml", bodies[i % len(bodies)])})
                results.append((time.perf_counter() - t0, r.status_code))
            except Exception as exc:  # noqa: BLE001
                results.append((time.perf_counter() - t0, type(exc).__name__))
        await asyncio.gather(*(one(i, t) for i, t in enumerate(tokens)))
        wall = time.perf_counter() - start
    return results, wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--students", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--web-processes", type=int, default=2)
    args = ap.parse_args()
    import psycopg

    name = f"cnnspec_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    procs = []
    try:
        t = time.perf_counter()
        svc, cid, aid, tokens = setup(url, args.students)
        print(f"set-up: {len(tokens)} students, lecture assignment published ({time.perf_counter() - t:.1f} s)")
        port = free_port()
        env = {**os.environ, "CNNSPEC_DATABASE": url, "PYTHONUNBUFFERED": "1"}
        log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"{name}.log", "w")
        procs.append(subprocess.Popen([sys.executable, "-m", "cnnspec", "serve", "--port", str(port),
                                       "--web-processes", str(args.web_processes)], env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))
        procs.append(subprocess.Popen([sys.executable, "-m", "cnnspec", "worker"], env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))
        import httpx
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.2)
        slips = (ROOT / "tests" / "grader_data" / "lecture" / "lecture_slips.yaml").read_bytes()
        import grader
        from grader.tools import solution_text
        right = solution_text(grader.load_assignment(ROOT / "specs" / "assignments" / "lecture.yaml"), None).encode()
        base = f"http://127.0.0.1:{port}"
        for w in range(2):   # warm both web processes (each loads the assignment once)
            httpx.get(f"{base}/healthz")
        results, wall = asyncio.run(rush(base, cid, aid, tokens, args.seconds, [slips, right]))
        lat = sorted(x for x, _ in results)
        codes: dict = {}
        for _, c in results:
            codes[c] = codes.get(c, 0) + 1
        accepted = sum(n for c, n in codes.items() if c in (200, 201, 202))
        from grader.service import models as m
        deadline = time.monotonic() + 120
        while True:
            with svc.sessions() as s:
                stored = s.query(m.Submission).count()
                graded = s.query(m.Grade.submission_id).distinct().count()
                grades = s.query(m.Grade).count()
            if graded >= stored or time.monotonic() > deadline:
                break
            time.sleep(0.5)

        def q(p):
            return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000

        print(f"| students | window | web processes | throughput | p50 | p95 | p99 | errors | accepted | stored | "
              f"graded (grades) |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
              f"| {len(tokens)} | {args.seconds:g} s | {args.web_processes} | {len(results) / wall:.1f}/s | "
              f"{q(0.5):.0f} ms | {q(0.95):.0f} ms | {q(0.99):.0f} ms | "
              f"{sum(n for c, n in codes.items() if c not in (200, 201, 202))} | {accepted} | {stored} | "
              f"{graded} ({grades}) |")
        print(f"status codes: {codes}")
        svc.engine.dispose()
        return 0 if accepted == stored == graded == grades == len(tokens) else 1
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
