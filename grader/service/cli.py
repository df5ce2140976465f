"""`cnnspec serve`, `cnnspec worker`, `cnnspec submit`: parse arguments, then import the service stack.

register() imports nothing beyond argparse, so `cnnspec check` stays light; FastAPI, SQLAlchemy and
friends (the `cnnspec[service]` extra) load only when one of these commands runs.
"""
from __future__ import annotations

import argparse
import os
import sys

SERVE_EPILOG = """examples:
  cnnspec serve                                  # SQLite in ./cnnspec-data, http://127.0.0.1:8000
  cnnspec serve --demo                           # with a demo course: the lecture assignment, 3 students
  cnnspec serve --database postgresql://user@db/cnnspec --web-processes 4
On first start it prints a one-time link that creates the first instructor. API: /api/v1 (OpenAPI at
/api/v1/openapi.json, browsable at /api/v1/docs). Documentation: docs/service.md."""

SUBMIT_EPILOG = """examples:
  export CNNSPEC_TOKEN=cns_t_...                 # an API token (POST /api/v1/me/tokens)
  cnnspec submit lecture-2024-12-08 answers.yaml --server https://grader.example.edu
  cnnspec submit 1/3 answers.yaml --server http://127.0.0.1:8000 --check

exit codes: 0 every question you may see passed, 1 some did not, 2 invalid input (answers unreadable,
unknown assignment, closed, over the size or rate limit, bad token), 3 the service failed or is unreachable."""


def register(sub) -> None:
    p = sub.add_parser("serve", help="run the grading service (web API; SQLite by default, or PostgreSQL)",
                       description="Run the grading service: courses, assignments, submissions graded on receipt, "
                       "feedback, gradebook, under /api/v1. Needs the service extra: pip install 'cnnspec[service]'.",
                       epilog=SERVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database", metavar="URL", help="postgresql://... or a SQLite file (default: cnnspec.db in "
                   "--data-dir); also CNNSPEC_DATABASE")
    p.add_argument("--data-dir", metavar="DIR", default=None, help="where the SQLite database lives (default: "
                   "./cnnspec-data; also CNNSPEC_DATA_DIR)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--web-processes", type=int, default=1, metavar="N", help="web processes (default: 1; more need "
                   "PostgreSQL: SQLite is served by one process)")
    p.add_argument("--demo", action="store_true", help="create a demo course with the lecture assignment and "
                   "three students (prints their passwords and a token)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=run_serve)

    w = sub.add_parser("worker", help="run grading jobs from PostgreSQL (any number, on any machine)",
                       description="Run grading jobs (procrastinate) from the service's PostgreSQL database: "
                       "reference answers at publish and enrolment time, submissions not graded in the request, "
                       "regrades. Jobs of a worker that stops heartbeating are retried by the others.")
    w.add_argument("--database", metavar="URL", help="postgresql://... (also CNNSPEC_DATABASE)")
    w.add_argument("--concurrency", type=int, default=2, help="jobs at a time (default: 2)")
    w.add_argument("--heartbeat", type=float, default=5.0, metavar="S", help="heartbeat interval (default: 5 s)")
    w.add_argument("--stalled", type=float, default=20.0, metavar="S", help="retry the jobs of a worker whose last "
                   "heartbeat is older than this (default: 20 s)")
    w.set_defaults(func=run_worker)

    s = sub.add_parser("submit", help="submit answers to a grading service; prints the feedback like `grade`",
                       description="Submit an answers file (YAML, JSON or .npz) to a cnnspec grading service and "
                       "print the feedback as `cnnspec grade` does. The API token comes from CNNSPEC_TOKEN.",
                       epilog=SUBMIT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("assignment", metavar="ASSIGNMENT", help="the assignment's name, COURSE/NAME, or "
                   "COURSE_ID/ASSIGNMENT_ID")
    s.add_argument("answers", metavar="ANSWERS", help="answers file (.yaml/.yml/.json/.npz)")
    s.add_argument("--server", metavar="URL", default=os.environ.get("CNNSPEC_SERVER"),
                   help="the service's address (also CNNSPEC_SERVER)")
    s.add_argument("--format", choices=("text", "json", "markdown", "junit"), default="text",
                   help="feedback format (default: text)")
    s.add_argument("--check", action="store_true", help="only check that every answer can be read (no attempt "
                   "is spent)")
    s.add_argument("--wait", type=float, default=120.0, metavar="S", help="wait this long for a queued grade "
                   "(default: 120 s)")
    s.add_argument("--key", metavar="KEY", help="idempotency key (default: a new one per run; give the same key "
                   "to retry an upload without making a second submission)")
    s.set_defaults(func=run_submit)


def _need_service_extra():
    try:
        import fastapi  # noqa: F401
        import sqlalchemy  # noqa: F401
    except ModuleNotFoundError as exc:
        from cnnspec.errors import DataError
        raise DataError(f"the service needs packages that are not installed ({exc.name}): "
                        "pip install 'cnnspec[service]'") from None


def run_serve(args, grade=None) -> int:
    """grade: the grading function (default grading.grade_payload; a test entry point passes a slow one)."""
    _need_service_extra()
    import uvicorn

    from .app import Service, create_app
    from .settings import Settings

    settings = Settings.from_env(database=args.database, data_dir=args.data_dir)
    if args.web_processes > 1 and settings.is_sqlite:
        from cnnspec.errors import DataError
        raise DataError("--web-processes needs PostgreSQL (--database postgresql://...): one process serves SQLite")
    svc = Service(settings, grade=grade)
    base = settings.base_url or f"http://{args.host}:{args.port}"
    where = "SQLite " + settings.url.split("///", 1)[1] if settings.is_sqlite else "PostgreSQL"
    print(f"cnnspec service on {base} ({where}); API {base}/api/v1/docs", flush=True)
    if args.demo:
        from .demo import load_demo
        for line in load_demo(svc, base):
            print(line, flush=True)
    link = svc.bootstrap_link(base)
    if link:
        print(f"create the first instructor (one-time link, valid 7 days): {link}", flush=True)
    if not settings.is_sqlite and not settings.run_inline_worker:
        print("grading jobs run in `cnnspec worker --database ...` processes", flush=True)
    if args.web_processes > 1:
        os.environ["CNNSPEC_DATABASE"] = settings.database or ""
        svc.engine.dispose()
        uvicorn.run("grader.service.cli:app_from_env", factory=True, host=args.host, port=args.port,
                    workers=args.web_processes, log_level="warning", access_log=args.access_log)
        return 0
    uvicorn.run(create_app(settings, svc), host=args.host, port=args.port, log_level="warning",
                access_log=args.access_log, timeout_graceful_shutdown=5)
    return 0


def app_from_env():
    """uvicorn's factory for several web processes (configuration from CNNSPEC_* variables)."""
    from .app import Service, create_app
    from .settings import Settings

    settings = Settings.from_env()
    return create_app(settings, Service(settings, migrate=False))


def run_worker(args, grade=None) -> int:
    _need_service_extra()
    from cnnspec.errors import DataError

    from .app import Service
    from .jobs import run_worker as work
    from .settings import Settings, libpq_url

    settings = Settings.from_env(database=args.database)
    if settings.is_sqlite:
        raise DataError("cnnspec worker runs jobs from PostgreSQL (--database postgresql://...); with SQLite, "
                        "`cnnspec serve` runs them itself")
    svc = Service(settings)
    print(f"cnnspec worker: {args.concurrency} job(s) at a time, heartbeat {args.heartbeat:g} s", flush=True)
    try:
        work(settings, svc.sessions, libpq_url(settings.url), args.concurrency, args.heartbeat, args.stalled,
             grade=grade)
    except KeyboardInterrupt:
        pass
    return 0


def run_submit(args) -> int:
    from cnnspec.errors import DataError

    from .client import submit, token_from_env

    if not args.server:
        raise DataError("give the service's address: --server URL (or CNNSPEC_SERVER)")
    return submit(args.server, token_from_env(), args.assignment, args.answers, fmt=args.format, wait=args.wait,
                  check_only=args.check, key=args.key, out=sys.stdout, err=sys.stderr)


__all__ = ["register", "run_serve", "run_worker", "run_submit", "app_from_env"]
