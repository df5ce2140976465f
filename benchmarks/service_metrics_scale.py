"""What /metrics and the sweep cost the database as the tables grow (a benchmark, not a test; loopback only).

    python benchmarks/service_metrics_scale.py [--rows 300000]

Creates a scratch PostgreSQL database on 127.0.0.1:5432 with the service's schema, a course and the lecture
assignment (benchmarks/service_load.setup), then N submissions received over 300 days, each with its grade,
and times each query a /metrics scrape runs (the counters, the ungraded gauge over the last day, the latency
quantiles over the last 15 minutes, the queue depth) and the worker sweep's query for ungraded submissions.
Drops the database at the end.
"""
from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=300_000, help="submissions (and grades) to store (default 300000)")
    args = ap.parse_args(argv)
    import psycopg
    from sqlalchemy import func, select

    import service_load
    from grader.service import grading, models as m
    from grader.service.app import latency_quantiles

    name = f"cnnspec_scale_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(service_load.ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres@{service_load.HOST}:5432/{name}"
    svc = None
    try:
        svc, _, aid, _, _ = service_load.setup(url, 10)
        t = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            uid, vid = conn.execute("SELECT mb.user_id, a.current_version_id FROM memberships mb JOIN assignments a "
                                    "ON a.course_id = mb.course_id WHERE a.id = %s AND mb.role = 'student' LIMIT 1",
                                    (aid,)).fetchone()
            conn.execute("INSERT INTO submissions (assignment_id, user_id, number, version_id, received_at, "
                         "idempotency_key, filename, payload, sha256, size) SELECT %s, %s, g + 1000, %s, "
                         "now() - interval '300 days' + g * (interval '300 days' / %s), 'scale-' || g, 'a.yaml', "
                         "'x', 'h', 1 FROM generate_series(1, %s) g", (aid, uid, vid, args.rows, args.rows))
            conn.execute("INSERT INTO grades (submission_id, version_id, score, max_score, error, result, how, "
                         "grading_seconds, created_at) SELECT s.id, %s, 1, 1, false, '{}', 'request', 0.002, "
                         "s.received_at + interval '10 ms' FROM submissions s "
                         "WHERE NOT EXISTS (SELECT 1 FROM grades g WHERE g.submission_id = s.id)", (vid,))
            conn.execute("ANALYZE")
        print(f"{args.rows:,} submissions and grades stored ({time.perf_counter() - t:.1f} s)")
        now = datetime.now(timezone.utc)
        queries = [
            ("/metrics: submissions counter (newest id)", lambda s: s.scalar(select(func.max(m.Submission.id)))),
            ("/metrics: grades counter (newest id)", lambda s: s.scalar(select(func.max(m.Grade.id)))),
            ("/metrics: ungraded in the last day", lambda s: grading.ungraded_count(s, now - timedelta(days=1))),
            ("/metrics: latency quantiles, 15 min", lambda s: latency_quantiles(s, now - timedelta(minutes=15))),
            ("/metrics: queue depth", lambda s: svc.queue.depth(s)),
            ("for comparison: count(*) of submissions", lambda s: s.scalar(select(func.count()).select_from(
                m.Submission))),
            ("worker sweep: ungraded submissions (every 30 s)", lambda s: grading.ungraded(s, now, 500)),
        ]
        for label, run in queries:
            with svc.sessions() as s:
                run(s)   # warm
                times = []
                for _ in range(5):
                    t = time.perf_counter()
                    run(s)
                    times.append(time.perf_counter() - t)
            print(f"{label}: {1000 * sorted(times)[2]:.1f} ms (median of 5)")
        return 0
    finally:
        if svc is not None:
            svc.engine.dispose()
        with psycopg.connect(service_load.ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
