"""The web application: /api/v1 (OpenAPI at /api/v1/openapi.json), /healthz, /metrics, /signup.

Bounds and errors: a request body over the limit answers 413 before anything parses it (by Content-Length,
and by counting the bytes of a body without one); every error is JSON {"detail": ...}; an unexpected
exception is logged with an id and answers 500 {"detail": "internal error", "error_id": ...} - never a
traceback; unknown routes are 404.
"""
from __future__ import annotations

import logging
import math
import time
import uuid
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from sqlalchemy import func, select, text
from starlette.exceptions import HTTPException as StarletteHTTPException

import cnnspec

from . import db as dbmod, grading, models as m
from .jobs import make_queue
from .security import digest, new_secret
from .settings import Settings

log = logging.getLogger("cnnspec.service")
API = "/api/v1"
UPLOAD_ROUTES = ("/assignments", "/versions")


class Service:
    """Everything a process shares between requests: settings, engine, sessions, the job queue, and the
    grading function (grading.grade_payload, the grader's; another one with its signature may be given)."""

    def __init__(self, settings: Settings, migrate: bool = True, grade=None):
        from . import grading

        self.settings = settings
        if settings.is_sqlite:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = dbmod.make_engine(settings.url, pool_size=settings.request_threads + 2)
        if migrate:
            dbmod.migrate(self.engine)
        self.sessions = dbmod.session_factory(self.engine)
        self.grade = grade or grading.grade_payload
        grading.POOL.reference_cache = settings.reference_cache
        self.queue = make_queue(settings, self.sessions, grade)
        self.requests = 0
        self.started = time.time()

    def start(self):
        if self.settings.run_inline_worker:
            self.queue.start()

    def stop(self):
        self.queue.stop()

    def bootstrap_link(self, base_url: str) -> str | None:
        """A one-time link creating the first instructor, while no administrator has signed up."""
        at = self.settings.clock.now()
        with self.sessions() as s, s.begin():
            if s.scalar(select(m.User.id).where(m.User.is_admin.is_(True), m.User.password_hash.is_not(None))):
                return None
            u = s.scalar(select(m.User).where(m.User.is_admin.is_(True)).order_by(m.User.id))
            if u is None:
                u = m.User(username="instructor", display_name="Instructor", is_admin=True, created_at=at)
                s.add(u)
            secret = new_secret("u")
            u.signup_token_hash, u.signup_expires_at = digest(secret), at + timedelta(days=7)
        return f"{base_url.rstrip('/')}/signup?token={secret}"


class BodyLimit:
    """ASGI middleware: 413 for a body over the limit, before the application reads (and parses) it."""

    def __init__(self, app, settings: Settings, service: "Service"):
        self.app = app
        self.settings = settings
        self.service = service

    def limit_for(self, path: str) -> int:
        s = self.settings
        if path.endswith(UPLOAD_ROUTES) or path.endswith("/roster"):
            return s.max_assignment_bytes
        return s.max_submission_bytes + 64 * 1024     # room for the multipart framing

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.service.requests += 1
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope["path"])
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = True
                if too_big:
                    return await _too_large(send, limit)
        seen = 0
        answered = False

        async def counted_receive():
            nonlocal seen, answered
            if answered:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:   # answer 413 now; the application sees the client go away
                    answered = True
                    await _too_large(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not answered:
                await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not answered:
                raise


async def _too_large(send, limit: int):
    body = JSONResponse({"detail": f"request body larger than the limit of {limit:,} bytes"}, status_code=413)
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                            (b"content-length", str(len(body.body)).encode())]})
    await send({"type": "http.response.body", "body": body.body})


SIGNUP_PAGE = """<!doctype html><meta charset="utf-8"><title>cnnspec: sign up</title>
<style>body{font-family:sans-serif;max-width:32em;margin:3em auto}input{display:block;margin:.5em 0;width:100%}</style>
<h1>Set your password</h1>
<form id="f"><label>Password (8 characters or more)<input type="password" id="pw" minlength="8" required></label>
<button>Sign up</button></form><p id="out"></p>
<script>
document.getElementById('f').onsubmit = async (e) => {
  e.preventDefault();
  const token = new URLSearchParams(location.search).get('token');
  const r = await fetch('/api/v1/auth/signup', {method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({token, password: document.getElementById('pw').value})});
  const j = await r.json();
  document.getElementById('out').textContent = r.ok ? ('Signed up as ' + j.username + '. You can log in now.')
    : ('Could not sign up: ' + JSON.stringify(j.detail));
};
</script>"""


QUANTILES = (0.5, 0.95, 0.99)
_PG_QUANTILES = text(
    "SELECT count(*),"
    " percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP"
    "   (ORDER BY greatest(0, extract(epoch FROM g.created_at - s.received_at))),"
    " percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY g.grading_seconds)"
    " FROM grades g JOIN submissions s ON s.id = g.submission_id"
    " WHERE g.created_at > :since AND g.how NOT IN ('regrade', 'preview')")


def latency_quantiles(s, since) -> tuple[int, list[float], list[float]]:
    """(how many students' grades were made since `since`, the QUANTILES of their receipt-to-grade seconds,
    those of their grading seconds); regrades and previews left out. A quantile q is the smallest value with
    at least a share q of the values at or below it (percentile_disc). PostgreSQL computes them, so a scrape
    reads six numbers, not every grade of the last minutes (reading 6,000 rows cost a web process 100 ms in a
    rush); SQLite (one process, a small course) counts them all and takes the quantiles of the newest 10,000."""
    if s.get_bind().dialect.name == "postgresql":
        count, latency, work = s.execute(_PG_QUANTILES, {"since": since}).one()
        zero = [0.0] * len(QUANTILES)
        return count, [float(v) for v in latency or zero], [float(v) for v in work or zero]
    where = (m.Grade.created_at > since, m.Grade.how.not_in(("regrade", "preview")))
    count = s.scalar(select(func.count()).select_from(m.Grade).where(*where))
    rows = s.execute(select(m.Grade.created_at, m.Submission.received_at, m.Grade.grading_seconds)
                     .join(m.Submission, m.Submission.id == m.Grade.submission_id)
                     .where(*where).order_by(m.Grade.id.desc()).limit(10000)).all()

    def quantiles(values: list[float]) -> list[float]:
        values.sort()
        return [values[max(0, math.ceil(q * len(values)) - 1)] if values else 0.0 for q in QUANTILES]
    return (count, quantiles([max(0.0, (g - r).total_seconds()) for g, r, _ in rows]),
            quantiles([x for _, _, x in rows]))


def create_app(settings: Settings | None = None, service: Service | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    svc = service or Service(settings)

    @asynccontextmanager
    async def lifespan(app):
        # Requests run in threads; as many at once as the pool has connections for (each request holds one
        # connection while it runs). More threads would only queue on the GIL and the pool.
        import anyio.to_thread
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.request_threads
        # What start-up allocated (modules, the app, the ORM's mappings) lives as long as the process: out of
        # the garbage collector's full passes, which would otherwise walk it now and then in some request.
        import gc
        gc.collect()
        gc.freeze()
        svc.start()
        try:
            yield
        finally:
            svc.stop()

    app = FastAPI(title="cnnspec grading service", version=cnnspec.__version__, lifespan=lifespan,
                  openapi_url=f"{API}/openapi.json", docs_url=f"{API}/docs", redoc_url=None,
                  description="Courses, assignments, submissions graded on receipt, feedback, gradebook. "
                              "See docs/service.md.")
    app.state.service = svc

    from .api import assignments, auth, courses, gradebook, submissions

    api = APIRouter(prefix=API)
    for module in (auth, courses, assignments, submissions, gradebook):
        api.include_router(module.router)
    app.include_router(api)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        error_id = uuid.uuid4().hex[:12]
        log.error("internal error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal error", "error_id": error_id}, status_code=500)

    @app.get("/healthz", tags=["operations"], summary="Liveness and database reachability")
    def healthz():
        try:
            with svc.sessions() as s:
                s.execute(text("SELECT 1"))
            return {"status": "ok", "database": svc.engine.dialect.name, "version": cnnspec.__version__}
        except Exception:  # noqa: BLE001
            return JSONResponse({"status": "error", "database": "unreachable"}, status_code=503)

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse,
             summary="Prometheus metrics: queue depth, grading latency (receipt to grade), counts")
    def metrics():
        now = settings.clock.now()
        with svc.sessions() as s:
            depth = svc.queue.depth(s)
            # Counters from the newest ids (one index read each, where count(*) read every row: 30 ms each at
            # 300,000 submissions); they never go down, also when a course's rows are deleted.
            submissions = s.scalar(select(func.coalesce(func.max(m.Submission.id), 0)))
            grades = s.scalar(select(func.coalesce(func.max(m.Grade.id), 0)))
            graded, latency, work = latency_quantiles(s, now - timedelta(minutes=15))
            ungraded, oldest = grading.ungraded_count(s, now - timedelta(days=1))
            s.rollback()
        lines = ["# HELP cnnspec_queue_depth Grading jobs waiting or running.", "# TYPE cnnspec_queue_depth gauge",
                 f"cnnspec_queue_depth {depth}",
                 "# HELP cnnspec_ungraded_submissions Submissions received in the last 24 hours without a grade "
                 "for the version they were received under (grading in a request or a job, or waiting for the "
                 "sweep).",
                 "# TYPE cnnspec_ungraded_submissions gauge", f"cnnspec_ungraded_submissions {ungraded}",
                 "# HELP cnnspec_oldest_ungraded_seconds Age of the oldest of them (0 when there is none).",
                 "# TYPE cnnspec_oldest_ungraded_seconds gauge",
                 f"cnnspec_oldest_ungraded_seconds {max(0.0, (now - oldest).total_seconds()) if oldest else 0.0:.3f}",
                 "# HELP cnnspec_submissions_total Submissions stored (ids issued).",
                 "# TYPE cnnspec_submissions_total counter", f"cnnspec_submissions_total {submissions}",
                 "# HELP cnnspec_grades_total Grades stored (ids issued).",
                 "# TYPE cnnspec_grades_total counter", f"cnnspec_grades_total {grades}",
                 "# HELP cnnspec_grading_latency_seconds Receipt to grade, last 15 minutes.",
                 "# TYPE cnnspec_grading_latency_seconds summary"]
        for name, values in (("cnnspec_grading_latency_seconds", latency), ("cnnspec_grading_work_seconds", work)):
            for qt, v in zip(QUANTILES, values):
                lines.append(f'{name}{{quantile="{qt}"}} {v:.6f}')
            lines.append(f"{name}_count {graded}")
        lines += ["# TYPE cnnspec_process_requests_total counter", f"cnnspec_process_requests_total {svc.requests}"]
        return "\n".join(lines) + "\n"

    @app.get("/signup", response_class=HTMLResponse, include_in_schema=False)
    def signup_page():
        return SIGNUP_PAGE

    app.add_middleware(BodyLimit, settings=settings, service=svc)   # before any parsing
    return app
