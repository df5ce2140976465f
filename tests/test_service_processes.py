"""Real processes: `cnnspec serve` killed with SIGKILL right after acknowledging a submission, a `cnnspec worker`
killed mid-job, and `cnnspec submit` against a running server (same output and exit codes as `cnnspec grade`).
Servers listen on free ports of 127.0.0.1; every wait polls with a deadline; every process started is stopped."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from service_helpers import (BN, LECTURE, ROOT, SLIPS, build_world, cnnspec_cmd, create_pg_database,  # noqa: E402
                             drop_pg_database, free_port, make_token, pg_available, pg_url, service_env,
                             start_process, stop_process, upload, wait_until)


def real_world(database):
    from grader.service.settings import Clock
    return build_world(database, clock=Clock())


SLOW = Path(__file__).resolve().parent / "service_helpers" / "slow_cnnspec.py"


def slow_cmd(delay: float, *args) -> list[str]:
    """`cnnspec serve|worker ...` whose grading sleeps `delay` seconds first (a test-only entry point)."""
    import sys
    return [sys.executable, str(SLOW), "--grade-delay", str(delay), *args]


def serve(data_dir: Path, port: int, log: Path, grade_delay: float | None = None, **env) -> subprocess.Popen:
    args = ("serve", "--data-dir", str(data_dir), "--port", str(port))
    cmd = cnnspec_cmd(*args) if grade_delay is None else slow_cmd(grade_delay, *args)
    p = start_process(cmd, service_env(**env), log)
    base = f"http://127.0.0.1:{port}"

    def up():
        if p.poll() is not None:
            raise AssertionError(f"serve exited with {p.returncode}: {log.read_text()[-2000:]}")
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False
    wait_until(up, 60, "the server to answer /healthz")
    return p


def kill9(p: subprocess.Popen) -> None:
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(10)


def bn_answers(key: str) -> bytes:
    import grader
    from grader.tools import solution_text
    return solution_text(grader.load_assignment(BN), key).encode()


def key_of(w, name):
    members = w.client.get(f"/api/v1/courses/{w.course_id}/members", headers=w.h("prof")).json()
    return next(x["student_key"] for x in members if x["user_id"] == w.users[name])


def unprepared_bn(w):
    """The per-student assignment, published, with its reference-preparation job removed: every submission to it
    is stored and queued (202), and graded only by a job."""
    r = upload(w, BN)
    aid = r.json()["id"]
    w.client.post(f"/api/v1/courses/{w.course_id}/assignments/{aid}/publish", headers=w.h("prof"), json={})
    from sqlalchemy import text
    with w.svc.sessions() as s, s.begin():
        if w.backend == "sqlite":
            s.execute(text("DELETE FROM jobs WHERE task = 'prepare'"))
        else:
            s.execute(text("DELETE FROM procrastinate_jobs WHERE task_name = 'prepare'"))
    return aid


def test_kill9_of_the_web_process_after_acknowledgement_loses_nothing(tmp_path):
    w = real_world(("sqlite", None, tmp_path / "data"))
    aid = unprepared_bn(w)
    answers = bn_answers(key_of(w, "alice"))
    w.svc.engine.dispose()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    # The first server's grading dawdles, so it is killed with the grading job queued or running.
    p = serve(tmp_path / "data", port, log, grade_delay=30)
    try:
        headers = {**w.h("alice"), "Idempotency-Key": "crash-1"}
        url = f"{base}/api/v1/courses/{w.course_id}/assignments/{aid}/submissions"
        r = httpx.post(url, headers=headers, files={"answers": ("answers.yaml", answers)}, timeout=30)
        kill9(p)   # right after the acknowledgement
        assert r.status_code == 202, r.text
        sid = r.json()["id"]
    finally:
        stop_process(p)
    p = serve(tmp_path / "data", port, log)
    try:
        def graded():
            got = httpx.get(f"{base}/api/v1/submissions/{sid}", headers=w.h("alice"), timeout=5).json()
            return got if got["feedback"]["status"] == "graded" else None
        got = wait_until(graded, 60, "the restarted server to grade the stored submission")
        assert got["feedback"]["score"] == got["feedback"]["max_score"] > 0
        again = httpx.post(url, headers=headers, files={"answers": ("answers.yaml", answers)}, timeout=30)
        assert again.status_code == 200 and again.json()["id"] == sid and again.json()["replayed"]
    finally:
        stop_process(p)
    from grader.service import models as m
    with w.svc.sessions() as s:
        assert s.query(m.Submission).filter(m.Submission.assignment_id == aid).count() == 1
        assert s.query(m.Grade).filter(m.Grade.submission_id == sid).count() == 1
    w.svc.engine.dispose()


def test_kill9_while_grading_in_the_request_is_graded_by_the_sweep_after_restart(tmp_path):
    """A submission whose reference is ready is graded in its request, with no job. Killed after storing it and
    before its grade: the restarted server's sweep grades it (one grade), and the client's retry gets it."""
    w = real_world(("sqlite", None, tmp_path / "data"))
    w.svc.engine.dispose()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    p = serve(tmp_path / "data", port, log, grade_delay=60)
    url = f"{base}/api/v1/courses/{w.course_id}/assignments/{w.assignment_id}/submissions"
    headers = {**w.h("amy"), "Idempotency-Key": "sweep-1"}
    import threading
    outcome = {}

    def post():
        try:
            outcome["r"] = httpx.post(url, headers=headers, files={"answers": ("a.yaml", SLIPS.read_bytes())},
                                      timeout=90)
        except httpx.HTTPError as exc:
            outcome["error"] = exc
    t = threading.Thread(target=post, daemon=True)
    from grader.service import models as m
    try:
        t.start()

        def stored():
            with w.svc.sessions() as s:
                return s.query(m.Submission).filter(m.Submission.idempotency_key == "sweep-1").one_or_none()
        sub = wait_until(stored, 60, "the submission to be stored")
        kill9(p)      # grading in the request: stored, not graded, no job
        t.join(30)
        assert "error" in outcome          # the client never got an answer
        with w.svc.sessions() as s:
            assert s.query(m.Grade).filter(m.Grade.submission_id == sub.id).count() == 0
            assert s.query(m.Job).count() == s.query(m.Job).filter(m.Job.task == "prepare").count()
        w.svc.engine.dispose()
    finally:
        stop_process(p)
    p = serve(tmp_path / "data", port, log)
    try:
        def graded():
            with w.svc.sessions() as s:
                return s.query(m.Grade).filter(m.Grade.submission_id == sub.id).all()
        grades = wait_until(graded, 60, "the restarted server's sweep to grade the stored submission")
        assert [g.how for g in grades] == ["sweep"]
        again = httpx.post(url, headers=headers, files={"answers": ("a.yaml", SLIPS.read_bytes())}, timeout=30)
        assert again.status_code == 200 and again.json()["id"] == sub.id and again.json()["replayed"]
        assert again.json()["feedback"]["status"] == "graded"
    finally:
        stop_process(p)
    with w.svc.sessions() as s:
        assert s.query(m.Grade).filter(m.Grade.submission_id == sub.id).count() == 1
    w.svc.engine.dispose()


@pytest.mark.skipif(not pg_available(), reason="PostgreSQL is not reachable on 127.0.0.1:5432 (.ci/run starts it)")
def test_kill9_of_a_worker_mid_job_gives_exactly_one_grade(tmp_path):
    name = create_pg_database()
    procs = []
    try:
        w = real_world(("postgresql", pg_url(name), tmp_path))
        aid = unprepared_bn(w)
        r = w.submit("alice", bn_answers(key_of(w, "alice")), key="w-1", assignment_id=aid)
        assert r.status_code == 202, r.text
        sid = r.json()["id"]
        from sqlalchemy import text

        def job_state():
            with w.svc.sessions() as s:
                return s.execute(text("SELECT status, worker_id FROM procrastinate_jobs WHERE task_name = 'grade' "
                                      "AND (args->>'submission_id')::int = :sid"), {"sid": sid}).one()

        args = ["worker", "--database", pg_url(name), "--heartbeat", "0.5", "--stalled", "2"]
        first = start_process(slow_cmd(60, *args), service_env(), tmp_path / "worker1.log")
        procs.append(first)
        wait_until(lambda: job_state()[0] == "doing", 60, "the first worker to start the grading job")
        kill9(first)
        assert job_state()[0] == "doing"          # the job died with its worker
        second = start_process(cnnspec_cmd(*args), service_env(), tmp_path / "worker2.log")
        procs.append(second)
        from grader.service import models as m

        def grades():
            with w.svc.sessions() as s:
                return s.query(m.Grade).filter(m.Grade.submission_id == sid).count()
        wait_until(grades, 90, "the second worker to retry the stalled job")
        wait_until(lambda: job_state()[0] == "succeeded", 30, "the job to be marked done")
        stop_process(second)
        assert grades() == 1
        fb = w.client.get(f"/api/v1/submissions/{sid}", headers=w.h("alice")).json()["feedback"]
        assert fb["status"] == "graded" and fb["score"] == fb["max_score"]
    finally:
        for p in procs:
            stop_process(p)
        from service_helpers import _dispose_all
        _dispose_all()
        drop_pg_database(name)


def run_cli(*args, token: str):
    env = service_env(CNNSPEC_TOKEN=token, NO_COLOR="1")
    return subprocess.run(cnnspec_cmd(*args), capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def test_cnnspec_submit_prints_what_grade_prints_with_the_same_exit_codes(tmp_path):
    w = real_world(("sqlite", None, tmp_path / "data"))
    # The YAML's own due date, so after_due_date questions are shown by both commands.
    w.client.patch(f"/api/v1/courses/{w.course_id}/assignments/{w.assignment_id}", headers=w.h("prof"),
                   json={"due_at": "2024-12-15T23:59:00+00:00"})
    w.svc.engine.dispose()
    port = free_port()
    p = serve(tmp_path / "data", port, tmp_path / "serve.log")
    server = f"http://127.0.0.1:{port}"
    token = w.tokens["alice"]
    try:
        target = f"{w.course_id}/{w.assignment_id}"
        r = run_cli("submit", target, str(SLIPS), "--server", server, token=token)
        g = subprocess.run(cnnspec_cmd("grade", str(LECTURE), str(SLIPS)), capture_output=True, text=True,
                           env=service_env(NO_COLOR="1"), cwd=ROOT, timeout=120)
        assert r.returncode == g.returncode == 1, r.stderr
        ours, theirs = r.stdout.splitlines(), g.stdout.splitlines()
        assert ours[0] == theirs[0] and ours[2:] == theirs[2:], (r.stdout, g.stdout)
        assert ours[1].startswith("submission lecture_slips.yaml")
        assert "received" in r.stderr and "day(s) late" not in r.stderr
        good = tmp_path / "good.yaml"
        import grader
        from grader.tools import solution_text
        good.write_text(solution_text(grader.load_assignment(LECTURE), None))
        assert run_cli("submit", "lecture-2024-12-08", str(good), "--server", server, token=token).returncode == 0
        bad = tmp_path / "bad.yaml"
        bad.write_text("y_hat: [1, 2\n")
        r = run_cli("submit", target, str(bad), "--server", server, token=token)
        assert r.returncode == 2 and "bad.yaml:2:1" in r.stdout
        r = run_cli("submit", target, str(bad), "--server", server, "--check", token=token)
        assert r.returncode == 2 and "no attempt" not in r.stdout
        assert run_cli("submit", target, str(good), "--server", server, "--check", token=token).returncode == 0
        r = run_cli("submit", target, str(good), "--server", server, token="cns_t_wrong")
        assert r.returncode == 2 and "401" in r.stderr
        r = run_cli("submit", "no-such-assignment", str(good), "--server", server, token=token)
        assert r.returncode == 2
        listing = httpx.get(f"{server}/api/v1/courses/{w.course_id}/assignments/{w.assignment_id}/submissions",
                            headers=w.h("alice")).json()
        assert len(listing) == 3       # slips, good, bad: checks spent no attempt
    finally:
        stop_process(p)
