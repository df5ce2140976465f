"""Grading jobs: procrastinate on PostgreSQL (`cnnspec worker` processes), an in-process thread on SQLite.

Either way a job is inserted in the same transaction as what it works on (a submission and its grading job
commit together or not at all), and tasks are idempotent (see grading.grade_stored), so a job run twice -
a killed worker's job retried, a job racing the request that graded in-line - still makes one grade.

Tasks: `grade` {submission_id, version_id, how} and `prepare` {version_id, keys}. Priorities: interactive
grading 10, reference preparation 5, regrades 0 (a big regrade never blocks students who submit now).

PostgreSQL: procrastinate's jobs are deferred through the SQLAlchemy session's own psycopg connection; a
worker heartbeats, and every worker looks for jobs of workers whose heartbeat stopped and retries them.
SQLite: one process owns the database; a job marked `doing` at start-up belonged to a process that died,
and is run again.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import timedelta
from typing import Optional

from sqlalchemy import func, select, text, update

from . import models as m

log = logging.getLogger("cnnspec.service.jobs")

PRIORITY = {"grade": 10, "prepare": 5, "regrade": 0}
QUEUE = "cnnspec-grading"


def run_task(ctx, task: str, args: dict) -> None:
    from . import grading

    if task == "grade":
        grading.grade_stored(ctx.sessions, int(args["submission_id"]), int(args["version_id"]),
                             args.get("how", "job"), ctx.settings.clock)
    elif task == "prepare":
        grading.prepare_variants(ctx.sessions, int(args["version_id"]), args.get("keys"), ctx.settings.clock)
    else:
        raise ValueError(f"unknown task {task!r}")


class Context:
    """What a task needs: the settings (clock) and a session factory."""

    def __init__(self, settings, sessions):
        self.settings = settings
        self.sessions = sessions


# ------------------------------------------------------------------------ SQLite: an in-process queue


class LocalQueue:
    def __init__(self, ctx: Context, threads: int = 1):
        self.ctx = ctx
        self.threads = threads
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def enqueue(self, session, task: str, args: dict, priority: int, delay: float = 0.0) -> None:
        now = self.ctx.settings.clock.now()
        session.add(m.Job(task=task, args=args, priority=priority, status="todo",
                          run_after=now + timedelta(seconds=delay), created_at=now))

    def notify(self) -> None:
        self._wake.set()

    def depth(self, session) -> int:
        return session.scalar(select(func.count()).select_from(m.Job).where(m.Job.status.in_(("todo", "doing"))))

    def start(self) -> None:
        with self.ctx.sessions() as s, s.begin():    # jobs a killed process was running are run again
            s.execute(update(m.Job).where(m.Job.status == "doing").values(status="todo"))
        for i in range(self.threads):
            t = threading.Thread(target=self._loop, name=f"cnnspec-jobs-{i}", daemon=True)
            t.start()
            self._workers.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._workers:
            t.join(timeout)

    def _claim(self) -> Optional[m.Job]:
        now = self.ctx.settings.clock.now()
        from datetime import datetime, timezone
        wall = datetime.now(timezone.utc)
        with self.ctx.sessions() as s, s.begin():
            job = s.scalar(select(m.Job).where(m.Job.status == "todo", m.Job.run_after <= max(now, wall))
                           .order_by(m.Job.priority.desc(), m.Job.id).limit(1))
            if job is None:
                return None
            job.status, job.attempts = "doing", job.attempts + 1
        return job

    def run_pending(self) -> int:
        """Run every job that is due now (tests call this; the threads call it in a loop)."""
        n = 0
        while not self._stop.is_set():
            job = self._claim()
            if job is None:
                return n
            n += 1
            try:
                run_task(self.ctx, job.task, job.args)
                status, error = "done", ""
            except Exception as exc:  # noqa: BLE001 - recorded on the job; retried up to 3 times
                log.exception("job %s (%s) failed", job.id, job.task)
                status, error = ("todo" if job.attempts < 3 else "failed"), f"{type(exc).__name__}: {exc}"[:2000]
            with self.ctx.sessions() as s, s.begin():
                row = s.get(m.Job, job.id)
                row.status, row.error = status, error
                row.finished_at = self.ctx.settings.clock.now() if status in ("done", "failed") else None
                if status == "todo":
                    row.run_after = self.ctx.settings.clock.now() + timedelta(seconds=2 ** row.attempts)
        return n

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_pending()
            except Exception:  # noqa: BLE001 - a database hiccup: wait and try again
                log.exception("job loop")
            self._wake.wait(0.5)
            self._wake.clear()


# ------------------------------------------------------------------------ PostgreSQL: procrastinate


def procrastinate_schema() -> str:
    from procrastinate.schema import SchemaManager
    return SchemaManager.get_schema()


def make_app(conninfo: str, ctx: Optional[Context] = None):
    """The procrastinate app with our tasks (their bodies need ctx: only workers pass one)."""
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))

    def task(name):
        @app.task(name=name, queue=QUEUE, pass_context=False)
        def body(**args):
            if ctx is None:
                raise RuntimeError("tasks run in `cnnspec worker`")
            run_task(ctx, name, args)
        return body

    app._cnnspec_tasks = {name: task(name) for name in ("grade", "prepare")}
    return app


class PostgresQueue:
    def __init__(self, ctx: Context, conninfo: str):
        self.ctx = ctx
        self.app = make_app(conninfo)

    def enqueue(self, session, task: str, args: dict, priority: int, delay: float = 0.0) -> None:
        raw = session.connection().connection.driver_connection   # this transaction's psycopg connection
        options = {"connection": raw, "priority": priority}
        if delay:
            options["schedule_in"] = {"seconds": int(delay)}
        self.app._cnnspec_tasks[task].configure(**options).defer(**args)

    def notify(self) -> None:
        pass  # procrastinate's workers LISTEN for new jobs

    def depth(self, session) -> int:
        return session.scalar(text("SELECT count(*) FROM procrastinate_jobs WHERE queue_name = :q "
                                   "AND status IN ('todo', 'doing')"), {"q": QUEUE})

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 10.0) -> None:
        pass


def run_worker(settings, sessions, conninfo: str, concurrency: int = 2, heartbeat: float = 5.0,
               stalled: float = 20.0) -> None:
    """`cnnspec worker`: run grading jobs until interrupted; retry jobs of workers that stopped heartbeating."""
    ctx = Context(settings, sessions)
    app = make_app(conninfo, ctx)

    async def retry_stalled():
        while True:
            try:
                for job in await app.job_manager.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=stalled):
                    log.warning("retrying job %s of a stalled worker", job.id)
                    await app.job_manager.retry_job(job)
            except Exception:  # noqa: BLE001
                log.exception("looking for stalled jobs")
            await asyncio.sleep(max(0.5, stalled / 4))

    async def main():
        async with app.open_async():
            checker = asyncio.create_task(retry_stalled())
            try:
                await app.run_worker_async(queues=[QUEUE], concurrency=concurrency, wait=True,
                                           update_heartbeat_interval=heartbeat, stalled_worker_timeout=stalled,
                                           fetch_job_polling_interval=1.0)
            finally:
                checker.cancel()

    asyncio.run(main())


def make_queue(settings, sessions):
    ctx = Context(settings, sessions)
    if settings.is_sqlite:
        return LocalQueue(ctx, settings.worker_threads)
    from .settings import libpq_url
    return PostgresQueue(ctx, libpq_url(settings.url))


def wait_for(predicate, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
