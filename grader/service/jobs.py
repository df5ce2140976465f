"""Grading jobs: procrastinate on PostgreSQL (`cnnspec worker` processes), an in-process thread on SQLite.

Either way a job is inserted in the same transaction as what it works on (a submission and its grading job
commit together or not at all), and tasks are idempotent (see grading.grade_stored), so a job run twice -
a killed worker's job retried, a job racing the sweep - still makes one grade.

A submission graded inside its request has no job at all. What if its process dies between storing it and
storing its grade (or grading it fails)? The process that runs jobs also sweeps: at start-up and every
`sweep_seconds` it grades every stored submission that has no grade for its version and was received more
than `sweep_after_seconds` ago (grading.sweep). So every stored submission ends graded, with one job per
submission only where the request could not grade it.

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
SWEEP_LOCK = 0x636E6E77  # 'cnnw': held by the worker that sweeps


def run_task(ctx, task: str, args: dict) -> None:
    from . import grading

    if task == "grade":
        grading.grade_stored(ctx.sessions, int(args["submission_id"]), int(args["version_id"]),
                             args.get("how", "job"), ctx.settings.clock, grade=ctx.grade)
    elif task == "prepare":
        grading.prepare_variants(ctx.sessions, int(args["version_id"]), args.get("keys"), ctx.settings.clock)
    else:
        raise ValueError(f"unknown task {task!r}")


class Context:
    """What a task needs: the settings (clock), a session factory, and the grading function (None: the
    grader's, grading.grade_payload)."""

    def __init__(self, settings, sessions, grade=None):
        self.settings = settings
        self.sessions = sessions
        self.grade = grade

    def sweep(self, older_than: Optional[float] = None) -> int:
        from . import grading
        after = self.settings.sweep_after_seconds if older_than is None else older_than
        return grading.sweep(self.sessions, self.settings.clock, after, grade=self.grade)


# ------------------------------------------------------------------------ SQLite: an in-process queue


class LocalQueue:
    def __init__(self, ctx: Context, threads: int = 1):
        self.ctx = ctx
        self.threads = threads
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._next_sweep = 0.0
        self._sweep_all = True

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
        # One process owns a SQLite database: nothing is being graded now, so every ungraded submission is
        # graded (in the first job thread, before its jobs).
        self._next_sweep = 0.0
        self._sweep_all = True
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

    def sweep_if_due(self, first_thread: bool) -> None:
        if not first_thread or time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + self.ctx.settings.sweep_seconds
        older_than = 0.0 if self._sweep_all else None
        self._sweep_all = False
        self.ctx.sweep(older_than)

    def _loop(self) -> None:
        first = threading.current_thread().name.endswith("-0")
        while not self._stop.is_set():
            try:
                self.sweep_if_due(first)
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
               stalled: float = 20.0, grade=None) -> None:
    """`cnnspec worker`: run grading jobs until interrupted; retry jobs of workers that stopped heartbeating;
    sweep (at start-up, then every settings.sweep_seconds) for stored submissions left without a grade."""
    ctx = Context(settings, sessions, grade)
    app = make_app(conninfo, ctx)

    def sweep_once() -> None:
        # One sweeper at a time across workers: a transaction-level advisory lock, held (with its connection)
        # while this worker sweeps and released when that transaction ends; the others skip this round.
        with sessions() as s, s.begin():
            if s.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": SWEEP_LOCK}):
                ctx.sweep()

    async def sweeper():
        while True:
            try:
                await asyncio.to_thread(sweep_once)
            except Exception:  # noqa: BLE001
                log.exception("sweeping for ungraded submissions")
            await asyncio.sleep(max(0.5, settings.sweep_seconds))

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
            helpers = [asyncio.create_task(retry_stalled()), asyncio.create_task(sweeper())]
            try:
                await app.run_worker_async(queues=[QUEUE], concurrency=concurrency, wait=True,
                                           update_heartbeat_interval=heartbeat, stalled_worker_timeout=stalled,
                                           fetch_job_polling_interval=1.0)
            finally:
                for task in helpers:
                    task.cancel()

    asyncio.run(main())


def make_queue(settings, sessions, grade=None):
    ctx = Context(settings, sessions, grade)
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
