"""A deadline rush against the grading service (a benchmark, not a test; loopback only, bounded in time).

    python benchmarks/service_load.py [--students 2000] [--seconds 60] [--rate 100] [--web-processes 2]

Creates a scratch PostgreSQL database on 127.0.0.1:5432, a course with N students (each with an API token
and a browser session) and the lecture assignment published (references prepared; at most 5 graded submissions per student per
hour, so every submission goes through the rate-limit count), starts `cnnspec serve --web-processes 2` on a
free loopback port and one `cnnspec worker`, then sends rate x seconds submissions (the students in turn, so
with the defaults each of the 2,000 students submits 3 times within the 60 s; half the notes' slips, half
right answers, each file with its student's id and attempt, so no two uploads are the same bytes) as an open
loop: arrival times are drawn in advance (a Poisson process, seeded) and a slow server never slows the
arrivals. A request's latency runs from its arrival time (waiting for a free connection counts), so a server
that falls behind shows it.

Reports throughput, latency p50/p95/p99/max, errors, and accepted = stored = graded (from the database,
after the queue drained); the CPU time each part used per submission (web processes, worker, PostgreSQL,
this load generator) and what the rest of the machine used meanwhile, with os.getloadavg() before and after:
numbers measured on a busy machine are flagged. The load generator is a small HTTP/1.1 client on asyncio
streams with keep-alive connections (about half a millisecond of CPU per request, so it takes little from
the 2 cores it shares with the server). Every wait has a deadline and the whole run stops itself after
--max-minutes; everything it started is stopped and the database dropped.

Variations: --assignment per-student (bn_pool_ce.yaml: every student's own data, so each web process computes
a student's reference the first time it grades them), --browser-share 0.5 (half the students submit from the
web page: session cookie and CSRF header instead of an API token), --scrape-metrics 1 (GET /metrics every
second during the rush, as a monitoring server would).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
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
HOST = "127.0.0.1"            # loopback only: the server listens here and the load goes nowhere else
BOUNDARY = "cnnspec-bench-7f3a9"
TICKS = os.sysconf("SC_CLK_TCK")
KEEP_IDLE = 4.0               # seconds a client keeps an idle connection (uvicorn closes them after 5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------ set-up


ASSIGNMENTS = {"lecture": ROOT / "specs" / "assignments" / "lecture.yaml",           # one data set for everyone
               "per-student": ROOT / "specs" / "assignments" / "bn_pool_ce.yaml"}  # each student's own data


def setup(url: str, students: int, rate_limit: int = 5, assignment: str = "lecture"):
    """Course, students, an API token and a browser session (cookie and CSRF token) each, the assignment published
    with its references ready (in-process: every student's, for per-student data). -> (service, course id,
    assignment id, [(token, (session cookie, csrf token), student key)], the instructor's token)."""
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
    files, main = assignment_files(ASSIGNMENTS[assignment])
    aid = client.post(f"/api/v1/courses/{cid}/assignments", headers=h, data={"main": main},
                      files=[("files", (p, d)) for p, d in files.items()]).json()["id"]
    client.patch(f"/api/v1/courses/{cid}/assignments/{aid}", headers=h,
                 json={"due_at": (now + timedelta(hours=1)).isoformat(), "rate_limit_count": rate_limit,
                       "rate_limit_window_minutes": 60}).raise_for_status()
    client.post(f"/api/v1/courses/{cid}/assignments/{aid}/publish", headers=h, json={}).raise_for_status()
    app = make_app(libpq_url(svc.settings.url), Context(svc.settings, svc.sessions))

    async def drain():
        async with app.open_async():
            await app.run_worker_async(queues=[QUEUE], wait=False, install_signal_handlers=False)
    asyncio.run(drain())
    students_ = []
    with svc.sessions() as s, s.begin():
        for u, key in (s.query(m.User, m.Membership.student_key).join(m.Membership, m.Membership.user_id == m.User.id)
                       .filter(m.User.username.like("s%"), m.Membership.course_id == cid).order_by(m.User.id)):
            t, cookie, csrf = new_secret("t"), new_secret("s"), new_secret("c")
            s.add(m.ApiToken(user_id=u.id, token_hash=digest(t), scopes="read submit", created_at=now,
                             expires_at=now + timedelta(days=1)))
            s.add(m.Session(user_id=u.id, token_hash=digest(cookie), csrf_token=csrf, created_at=now,
                            expires_at=now + timedelta(days=1)))
            students_.append((t, (cookie, csrf), key or u.username))
    return svc, cid, aid, students_, secret


def answer_files(assignment: str, keys: list[str], n: int):
    """-> answers(i): the i-th submission's file before answers_of() marks it. Even i: wrong (the lecture's slips;
    for per-student data, the student's own solution without its last four answers), odd i: right."""
    import grader
    from grader.tools import solution_text
    a = grader.load_assignment(ASSIGNMENTS[assignment])
    if assignment == "lecture":
        slips = (ROOT / "tests" / "grader_data" / "lecture" / "lecture_slips.yaml").read_bytes()
        right = solution_text(a, None).encode()
        return lambda i: (slips, right)[i % 2]
    files = {}
    for key in keys[:n]:   # each student's own solution
        text = solution_text(a, key).encode()
        files[key] = (b"\n".join(text.rstrip(b"\n").split(b"\n")[:-4]) + b"\n", text)
    return lambda i: files[keys[i % len(keys)]][i % 2]


# ------------------------------------------------------------------------ the load generator


def arrivals(n: int, seconds: float, kind: str, seed: int) -> list[float]:
    """n arrival times within [0, seconds): a seeded Poisson process conditioned on n arrivals (uniform order
    statistics), or evenly spaced."""
    if kind == "uniform":
        return [i * seconds / n for i in range(n)]
    rng = random.Random(seed)
    return sorted(rng.uniform(0.0, seconds) for _ in range(n))


def answers_of(student: int, attempt: int, base: bytes) -> bytes:
    """Every submission's bytes differ (its student's id and attempt), as in a real class: nothing in the
    service can profit from identical uploads."""
    lines = [line for line in base.split(b"\n") if not line.startswith(b"student_id:")]
    return f"# attempt {attempt + 1}\nstudent_id: s{student:05d}\n".encode() + b"\n".join(lines)


def request_bytes(path: str, port: int, token, key: str, answers: bytes, keep_alive: bool = False) -> bytes:
    """token: an API token (as `cnnspec submit` sends it), or (session cookie, CSRF token) as a browser sends them."""
    if isinstance(token, tuple):
        auth = f"Cookie: cnnspec_session={token[0]}\r\nX-CSRF-Token: {token[1]}\r\n"
    else:
        auth = f"Authorization: Bearer {token}\r\n"
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"answers\"; filename=\"answers.yaml\"\r\n"
            f"Content-Type: application/x-yaml\r\n\r\n").encode() + answers + f"\r\n--{BOUNDARY}--\r\n".encode()
    close = "" if keep_alive else "Connection: close\r\n"
    head = (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{auth}"
            f"Idempotency-Key: {key}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n{close}"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    line = await reader.readline()
    if not line:
        raise ConnectionResetError("the server closed the connection")
    status = int(line.split(b" ", 2)[1])
    length, close = 0, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    body = await reader.readexactly(length) if length else b""
    return (status if not close else -status), body


async def rush(port: int, schedule: list[tuple[float, bytes]], connections: int, timeout: float,
               keep_alive: bool = False):
    """Send each request at its time (seconds from the start), at most `connections` at once. Without
    keep_alive each request has its own connection (as 2,000 students' separate `cnnspec submit` runs would);
    with it, idle connections are reused in turn. -> [(latency from the arrival time, status or error name,
    body)], wall seconds."""
    idle: list = []
    opened = 0
    free = asyncio.Condition()
    results: list = [None] * len(schedule)
    start = time.perf_counter() + 0.2

    async def connection(fresh: bool = False):
        nonlocal opened
        async with free:
            while idle and time.perf_counter() - idle[0][2] > KEEP_IDLE:   # the server closes them at 5 s
                opened -= 1
                idle.pop(0)[1].close()
            while not fresh and not idle and opened >= connections:
                await free.wait()
            if idle and not fresh:
                reader, writer, _ = idle.pop(0)          # in turn: the one idle longest
                return reader, writer
            opened += 1
        try:
            return await asyncio.open_connection(HOST, port)
        except Exception:
            async with free:
                opened -= 1
                free.notify()
            raise

    async def release(conn, ok: bool):
        nonlocal opened
        async with free:
            if ok and keep_alive:
                idle.append((*conn, time.perf_counter()))
            else:
                opened -= 1
                conn[1].close()
            free.notify()

    async def send(conn, data: bytes):
        reader, writer = conn
        writer.write(data)
        return await asyncio.wait_for(read_response(reader), timeout)

    async def one(i: int, at: float, data: bytes):
        due = start + at
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        conn = None
        try:
            conn = await asyncio.wait_for(connection(), timeout)
            try:
                status, body = await send(conn, data)
            except (ConnectionError, asyncio.IncompleteReadError, IndexError, ValueError):
                if not keep_alive:
                    raise
                # The server closed an idle keep-alive connection before it read this request (as any HTTP
                # client does, retry once on a new one; the Idempotency-Key makes that safe anyway).
                await release(conn, False)
                conn = None
                conn = await asyncio.wait_for(connection(fresh=True), timeout)
                status, body = await send(conn, data)
            await release(conn, status > 0)
            conn = None
            results[i] = (time.perf_counter() - due, abs(status), body)
        except Exception as exc:  # noqa: BLE001 - counted as an error
            if conn is not None:
                await release(conn, False)
            results[i] = (time.perf_counter() - due, type(exc).__name__, b"")

    await asyncio.gather(*(one(i, at, data) for i, (at, data) in enumerate(schedule)))
    wall = time.perf_counter() - start
    for writer in (w for _, w, _ in idle):
        writer.close()
    return results, wall


async def scrape_metrics(port: int, every: float, stop: asyncio.Event, timeout: float) -> list:
    """GET /metrics every `every` seconds until `stop` (as a Prometheus server would during the rush).
    -> [(latency, status, cnnspec_ungraded_submissions or None)]."""
    out = []
    while not stop.is_set():
        t = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(f"GET /metrics HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode())
            status, body = await asyncio.wait_for(read_response(reader), timeout)
            writer.close()
            gauge = next((float(line.split()[1]) for line in body.decode().splitlines()
                          if line.startswith("cnnspec_ungraded_submissions ")), None)
            out.append((time.perf_counter() - t, abs(status), gauge))
        except Exception as exc:  # noqa: BLE001 - counted
            out.append((time.perf_counter() - t, type(exc).__name__, None))
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, every - (time.perf_counter() - t)))
        except asyncio.TimeoutError:
            pass
    return out


async def rush_and_scrape(port: int, schedule, connections: int, timeout: float, keep_alive: bool,
                          every: float | None):
    stop = asyncio.Event()
    scraper = asyncio.ensure_future(scrape_metrics(port, every, stop, timeout)) if every else None
    results, wall = await rush(port, schedule, connections, timeout, keep_alive)
    stop.set()
    return results, wall, (await scraper if scraper else [])


# ------------------------------------------------------------------------ CPU accounting (Linux /proc)


def cpu_seconds(pids) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])          # utime + stime of the process
        except (OSError, IndexError, ValueError):
            pass
    return total / TICKS


def group_pids(pgid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int(p.joinpath("stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    out.append(int(p.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def postgres_pids() -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if p.joinpath("comm").read_text().strip() in ("postgres", "postmaster"):
                    out.append(int(p.name))
            except OSError:
                pass
    return out


def machine_busy_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, elapsed CPU seconds of all cores) from /proc/stat."""
    v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]   # guest time is in user
    idle = v[3] + v[4]
    return (sum(v) - idle) / TICKS, sum(v) / TICKS


class CpuMeter:
    """CPU seconds used by the web processes, the worker, PostgreSQL, this process and the whole machine."""

    def __init__(self, web_pgid: int, worker_pgid: int):
        self.web_pgid, self.worker_pgid = web_pgid, worker_pgid

    def read(self) -> dict:
        busy, total = machine_busy_seconds()
        return {"web": cpu_seconds(group_pids(self.web_pgid)), "worker": cpu_seconds(group_pids(self.worker_pgid)),
                "postgres": cpu_seconds(postgres_pids()), "client": time.process_time(), "machine": busy,
                "all": total}


# ------------------------------------------------------------------------ the run


def quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--students", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=60.0, help="the rush's length (default: 60)")
    ap.add_argument("--rate", type=float, default=100.0, help="submissions per second offered (default: 100)")
    ap.add_argument("--arrivals", choices=("poisson", "uniform"), default="poisson")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--web-processes", type=int, default=2)
    ap.add_argument("--connections", type=int, default=256, help="client connections at most (default: 256)")
    ap.add_argument("--keep-alive", action="store_true", help="reuse connections (default: one per submission, "
                    "as separate `cnnspec submit` runs make)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds one request may take (default: 30)")
    ap.add_argument("--max-minutes", type=float, default=15.0, help="the whole run stops itself after this")
    ap.add_argument("--assignment", choices=sorted(ASSIGNMENTS), default="lecture", help="lecture: one data set "
                    "for the class (default); per-student: bn_pool_ce.yaml, every student's own data and reference")
    ap.add_argument("--browser-share", type=float, default=0.0, metavar="F", help="the share of students who "
                    "submit from the web page (session cookie and CSRF header) instead of with an API token "
                    "(default: 0)")
    ap.add_argument("--scrape-metrics", type=float, default=None, metavar="S", help="also GET /metrics every S "
                    "seconds during the rush, as a monitoring server would (default: off)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)
    import psycopg

    def out_of_time(*_):
        raise TimeoutError(f"--max-minutes {args.max_minutes:g} reached: stopping")
    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(int(args.max_minutes * 60))
    load_at_start = os.getloadavg()
    name = f"cnnspec_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres@{HOST}:5432/{name}"
    procs = []
    try:
        t = time.perf_counter()
        svc, cid, aid, students, staff_token = setup(url, args.students, assignment=args.assignment)
        print(f"set-up: {len(students)} students, {ASSIGNMENTS[args.assignment].name} published, references "
              f"ready ({time.perf_counter() - t:.1f} s)")
        port = free_port()
        env = {**os.environ, "CNNSPEC_DATABASE": url, "PYTHONUNBUFFERED": "1"}
        log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"{name}.log", "w")
        procs.append(subprocess.Popen([sys.executable, "-m", "cnnspec", "serve", "--host", HOST, "--port", str(port),
                                       "--web-processes", str(args.web_processes)], env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))
        procs.append(subprocess.Popen([sys.executable, "-m", "cnnspec", "worker"], env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))
        import httpx
        base = f"http://{HOST}:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.2)
        path = f"/api/v1/courses/{cid}/assignments/{aid}/submissions"
        n = int(round(args.rate * args.seconds))
        times = arrivals(n, args.seconds, args.arrivals, args.seed)
        answers = answer_files(args.assignment, [key for _, _, key in students], n)
        browser = int(round(args.browser_share * len(students)))   # students 0 .. browser-1 use the web page
        schedule = [(at, request_bytes(path, port, students[i % len(students)][1 if i % len(students) < browser else 0],
                                       f"bench-{i}", answers_of(i % len(students), i // len(students), answers(i)),
                                       args.keep_alive))
                    for i, at in enumerate(times)]
        # Warm-up, not counted: the instructor submits a few times, so each web process has loaded the
        # assignment, computed its reference and prepared its statements before the rush (as after its first
        # few requests in a real rush).
        warm = [(0.05 * i, request_bytes(path, port, staff_token, f"warm-{i}", answers_of(i, 0, answers(i))))
                for i in range(8 * args.web_processes)]
        asyncio.run(rush(port, warm, 2, 30))
        time.sleep(1.0)
        meter = CpuMeter(procs[0].pid, procs[1].pid)
        load_before = os.getloadavg()
        cpu0 = meter.read()
        results, wall, scrapes = asyncio.run(rush_and_scrape(port, schedule, args.connections, args.timeout,
                                                             args.keep_alive, args.scrape_metrics))
        cpu1 = meter.read()
        load_after = os.getloadavg()
        lat = sorted(x for x, _, _ in results)
        codes: dict = {}
        graded_in_request = 0
        for _, c, body in results:
            codes[c] = codes.get(c, 0) + 1
            if c == 201 and b'"status":"graded"' in body.replace(b" ", b""):
                graded_in_request += 1
        accepted = sum(v for c, v in codes.items() if c in (200, 201, 202))
        errors = len(results) - accepted
        from grader.service import models as m
        deadline = time.monotonic() + 120
        while True:
            with svc.sessions() as s:
                rush_subs = s.query(m.Submission.id).filter(m.Submission.idempotency_key.like("bench-%"))
                stored = rush_subs.count()
                graded = s.query(m.Grade.submission_id).filter(m.Grade.submission_id.in_(rush_subs)).distinct().count()
                grades = s.query(m.Grade).filter(m.Grade.submission_id.in_(rush_subs)).count()
            if graded >= stored or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        used = {k: cpu1[k] - cpu0[k] for k in cpu0}
        ours = used["web"] + used["worker"] + used["postgres"] + used["client"]
        others = max(0.0, used["machine"] - ours)
        cores = os.cpu_count() or 1
        per = {k: 1000 * used[k] / max(1, len(results)) for k in ("web", "worker", "postgres", "client")}
        summary = {
            "students": len(students), "submissions": len(results), "seconds": args.seconds, "rate": args.rate,
            "arrivals": args.arrivals, "web_processes": args.web_processes, "keep_alive": args.keep_alive,
            "throughput": accepted / wall, "p50_ms": 1000 * quantile(lat, 0.5), "p95_ms": 1000 * quantile(lat, 0.95),
            "p99_ms": 1000 * quantile(lat, 0.99), "max_ms": 1000 * (lat[-1] if lat else 0.0), "errors": errors,
            "accepted": accepted, "graded_in_request": graded_in_request, "stored": stored, "graded": graded,
            "grades": grades, "codes": {str(k): v for k, v in codes.items()},
            "cpu_ms_per_submission": per, "cpu_busy_percent": 100 * used["machine"] / max(1e-9, used["all"]),
            "others_cpu_percent": 100 * others / max(1e-9, used["all"]),
            "loadavg": {"start": load_at_start, "before": load_before, "after": load_after}, "cores": cores,
            "uvloop": _installed("uvloop"), "httptools": _installed("httptools"),
            "assignment": args.assignment, "browser_share": browser / len(students),
        }
        if scrapes:
            scrape_lat = sorted(x for x, _, _ in scrapes)
            gauges = [g for _, _, g in scrapes if g is not None]
            summary["metrics"] = {"scrapes": len(scrapes), "errors": sum(c != 200 for _, c, _ in scrapes),
                                  "p50_ms": 1000 * quantile(scrape_lat, 0.5), "max_ms": 1000 * scrape_lat[-1],
                                  "ungraded_max": max(gauges) if gauges else None}
        print(f"| submissions | students | offered | web processes | throughput | p50 | p95 | p99 | max | errors | "
              f"accepted | stored | graded (grades) |\n"
              f"|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
              f"| {len(results)} | {len(students)} | {args.rate:g}/s for {args.seconds:g} s ({args.arrivals}) | "
              f"{args.web_processes} | {summary['throughput']:.1f}/s | {summary['p50_ms']:.0f} ms | "
              f"{summary['p95_ms']:.0f} ms | {summary['p99_ms']:.0f} ms | {summary['max_ms']:.0f} ms | {errors} | "
              f"{accepted} | {stored} | {graded} ({grades}) |")
        print(f"status codes: {codes}; graded in the request: {graded_in_request}; assignment {args.assignment}"
              f"{f', {browser} of {len(students)} students from the web page' if browser else ''}")
        if scrapes:
            mt = summary["metrics"]
            print(f"/metrics every {args.scrape_metrics:g} s: {mt['scrapes']} scrapes, {mt['errors']} errors, p50 "
                  f"{mt['p50_ms']:.0f} ms, max {mt['max_ms']:.0f} ms; ungraded submissions at most {mt['ungraded_max']}")
        slowest = sorted(((lat_i, at) for (lat_i, _, _), (at, _) in zip(results, schedule)), reverse=True)[:5]
        print("slowest: " + ", ".join(f"{1000 * x:.0f} ms at {at:.1f} s" for x, at in slowest))
        print(f"CPU per submission: web {per['web']:.1f} ms, worker {per['worker']:.1f} ms, PostgreSQL "
              f"{per['postgres']:.1f} ms, load generator {per['client']:.1f} ms; the machine ({cores} cores) was "
              f"{summary['cpu_busy_percent']:.0f}% busy, {summary['others_cpu_percent']:.0f}% of it by other "
              f"processes")
        print(f"load average (1/5/15 min): {_load(load_at_start)} at start, {_load(load_before)} before the rush, "
              f"{_load(load_after)} after; uvloop {'yes' if summary['uvloop'] else 'no'}, httptools "
              f"{'yes' if summary['httptools'] else 'no'}")
        # The load average before the rush counts this run's own set-up; the one at start and the CPU other
        # processes used during the rush tell whether something else was running.
        if load_at_start[0] > cores or summary["others_cpu_percent"] > 10:
            print(f"WARNING: the machine was busy with other work (load {load_at_start[0]:.2f} on {cores} cores at "
                  f"start, {summary['others_cpu_percent']:.0f}% of its CPU used by other processes during the rush): "
                  "these numbers understate the service", file=sys.stderr)
            summary["busy_warning"] = True
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=1))
        svc.engine.dispose()
        ok = accepted == stored == graded == grades == len(results)
        return 0 if ok else 1
    finally:
        signal.alarm(0)
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _load(values) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def _installed(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    sys.exit(main())
