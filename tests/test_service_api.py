"""The service's API against real databases: SQLite (a file, WAL) and PostgreSQL (127.0.0.1:5432)."""
from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest

pytest.importorskip("fastapi")

from service_helpers import (BN, LECTURE, SLIPS, T0, build_world, database, make_token, upload)  # noqa: F401,E402

SOLUTION = None


def solution_bytes(path=LECTURE, student=None) -> bytes:
    import grader
    from grader.tools import solution_text
    return solution_text(grader.load_assignment(path), student).encode()


@pytest.fixture
def world(database):
    return build_world(database)


def url(w, tail=""):
    return f"/api/v1/courses/{w.course_id}/assignments/{w.assignment_id}{tail}"


def test_submission_graded_in_request_with_student_and_staff_views(world):
    w = world
    r = w.submit("alice", SLIPS.read_bytes(), key="k1")
    assert r.status_code == 201, r.text
    body = r.json()
    fb = body["feedback"]
    assert fb["status"] == "graded" and fb["view"] == "student"
    qs = {q["id"]: q for q in fb["result"]["questions"]}
    assert qs["conv1_shape"]["expected"] == [98, 98, 6] and qs["conv1_shape"]["status"] == "failed"
    assert qs["w1_new_lr1"]["status"] == "withheld" and qs["w1_new_lr1"]["expected"] is None   # hidden
    assert qs["conv2_params"]["status"] == "withheld"                                           # before due
    assert body["received_at"].startswith("2030-03-01T12:00:00")
    # The same text as `cnnspec grade` (student view), from the feedback route.
    text = w.client.get(f"/api/v1/submissions/{body['id']}/feedback", headers=w.h("alice")).text
    assert "FAIL   1. conv1_shape" in text and "expected [98, 98, 6], got [97, 97, 6]" in text
    assert "3.644" not in text
    staff = w.client.get(f"/api/v1/submissions/{body['id']}", headers=w.h("prof")).json()["feedback"]
    sq = {q["id"]: q for q in staff["result"]["questions"]}
    assert staff["view"] == "staff" and sq["w1_new_lr1"]["expected"] == pytest.approx(3.644)
    # Exactly one grade, from the request; the safety-net job is a no-op.
    w.clock.set(T0 + timedelta(minutes=5))
    w.drain()
    from grader.service import models as m
    with w.svc.sessions() as s:
        grades = s.query(m.Grade).filter(m.Grade.submission_id == body["id"]).all()
        assert [g.how for g in grades] == ["request"]
        sub = s.get(m.Submission, body["id"])
        assert sub.payload == SLIPS.read_bytes()


def test_idempotent_retry_returns_the_stored_submission(world):
    w = world
    data = solution_bytes()
    first = w.submit("amy", data, key="retry-1")
    assert first.status_code == 201
    again = w.submit("amy", data, key="retry-1")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"] and again.json()["replayed"]
    assert again.json()["feedback"]["score"] == first.json()["feedback"]["score"]
    other = w.submit("amy", data + b"\n# changed\n", key="retry-1")
    assert other.status_code == 422
    listing = w.client.get(url(w, "/submissions"), headers=w.h("amy")).json()
    assert len(listing) == 1 and listing[0]["number"] == 1
    # Another student's identical key is their own submission.
    assert w.submit("alice", data, key="retry-1").status_code == 201


def test_concurrent_retries_with_one_key_make_one_submission(world):
    """Four uploads of the same answers with the same key at once: one 201, three replays (200) of it, one
    stored submission, one grade (the student's membership row is locked while a submission is stored)."""
    from concurrent.futures import ThreadPoolExecutor
    w = world
    data = solution_bytes()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: w.submit("amy", data, key="same-key"), range(4)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200, 200, 200, 201], [r.text[:200] for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    from grader.service import models as m
    with w.svc.sessions() as s:
        assert s.query(m.Submission).filter(m.Submission.idempotency_key == "same-key").count() == 1
        assert s.query(m.Grade).join(m.Submission, m.Submission.id == m.Grade.submission_id).filter(
            m.Submission.idempotency_key == "same-key").count() == 1


def test_per_student_data_not_ready_answers_202_and_the_job_grades_it(world):
    w = world
    r = upload(w, BN)
    assert r.status_code == 201, r.text
    aid = r.json()["id"]
    w.client.post(f"/api/v1/courses/{w.course_id}/assignments/{aid}/publish", headers=w.h("prof"), json={})
    # No job ran yet: alice's reference is not ready, so the request only stores and queues.
    import grader
    from grader.tools import solution_text
    key = key_of(w, "alice")
    assert key.startswith("a-")
    answers = solution_text(grader.load_assignment(BN), key)
    r = w.submit("alice", answers.encode(), key="bn-1", assignment_id=aid)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/api/v1/submissions/{r.json()['id']}"
    assert r.json()["feedback"]["status"] == "pending"
    w.drain()
    got = w.client.get(f"/api/v1/submissions/{r.json()['id']}", headers=w.h("alice")).json()
    assert got["feedback"]["status"] == "graded"
    # Graded with alice's own variant (her roster student_id), whatever the file claims.
    assert got["feedback"]["result"]["variant"].startswith("student:a-")
    w.drain()
    from grader.service import models as m
    with w.svc.sessions() as s:
        assert s.query(m.Grade).filter(m.Grade.submission_id == r.json()["id"]).count() == 1
    # Now that the references are prepared, the next submission is graded in the request: by a process that
    # never computed alice's reference (a fresh pool), from the answers the job packed, running no model.
    from grader.service import grading
    grading.POOL.clear()
    r2 = w.submit("alice", answers.encode(), key="bn-2", assignment_id=aid)
    assert r2.status_code == 201 and r2.json()["feedback"]["status"] == "graded"
    assert r2.json()["feedback"]["score"] == got["feedback"]["score"]
    with w.svc.sessions() as s:
        version = s.get(m.Assignment, aid).current_version_id
        assert s.query(m.Variant).filter(m.Variant.version_id == version, m.Variant.answers.isnot(None)).count() >= 1
        ref = grading.POOL.get(s, version).grader.reference(key)
    assert ref._runs == {}


def test_stored_but_ungraded_submissions_are_graded_by_a_job_or_the_sweep(database):
    """Grading in the request fails: the submission is still stored (202) and a job grades it. A submission
    stored by a process that died before grading it (no grade, no job): the sweep grades it, once."""
    from grader.service import grading, models as m
    failing = {"left": 1}

    def flaky_grade(*args):
        if failing["left"]:
            failing["left"] -= 1
            raise RuntimeError("grading crashed")
        return grading.grade_payload(*args)
    w = build_world(database, grade=flaky_grade)
    r = w.submit("alice", SLIPS.read_bytes(), key="flaky")
    assert r.status_code == 202 and r.json()["feedback"]["status"] == "pending", r.text
    w.drain()
    got = w.client.get(f"/api/v1/submissions/{r.json()['id']}", headers=w.h("alice")).json()["feedback"]
    assert got["status"] == "graded" and got["score"] > 0
    # A crash between storing and grading: the submission row alone.
    with w.svc.sessions() as s, s.begin():
        version = s.get(m.Assignment, w.assignment_id).current_version_id
        lost = m.Submission(assignment_id=w.assignment_id, user_id=w.users["bob"], number=1, version_id=version,
                            received_at=T0, idempotency_key="lost", filename="answers.yaml",
                            payload=solution_bytes(), sha256="0" * 64, size=1)
        s.add(lost)
    ctx = w.svc.queue.ctx
    assert ctx.sweep() == 0                              # received just now: the request may still be grading
    w.clock.set(T0 + timedelta(seconds=w.svc.settings.sweep_after_seconds + 1))
    assert ctx.sweep() == 1 and ctx.sweep() == 0
    with w.svc.sessions() as s:
        grades = s.query(m.Grade).filter(m.Grade.submission_id == lost.id).all()
        assert [g.how for g in grades] == ["sweep"] and grades[0].score == grades[0].max_score
        assert s.query(m.Grade).filter(m.Grade.submission_id == r.json()["id"]).count() == 1


def test_check_format_spends_no_attempt_and_rate_limit_answers_429(world):
    w = world
    r = w.client.patch(url(w), headers=w.h("prof"), json={"rate_limit_count": 2, "rate_limit_window_minutes": 60})
    assert r.status_code == 200
    for _ in range(3):
        c = w.client.post(url(w, "/check"), headers=w.h("bob"), files={"answers": ("a.yaml", b"y_hat: [1, 2\n")})
        assert c.status_code == 200 and c.json()["ok"] is False and "a.yaml:2:1" in c.json()["error"]
    c = w.client.post(url(w, "/check"), headers=w.h("bob"), files={"answers": ("a.yaml", b"y_hat: 0.38\nloss: x\n")})
    st = {q["id"]: q["status"] for q in c.json()["questions"]}
    assert st["y_hat"] == "readable" and st["loss"] == "unreadable" and st["conv1_shape"] == "missing"
    assert "\"expected\":" not in json.dumps(c.json()) and "0.38" not in json.dumps(c.json()).replace("0.38\\n", "")
    assert w.submit("bob", b"y_hat: 0.38\n").status_code == 201
    w.clock.set(T0 + timedelta(minutes=10))
    assert w.submit("bob", b"y_hat: 0.38\n").status_code == 201
    w.clock.set(T0 + timedelta(minutes=20))
    r = w.submit("bob", b"y_hat: 0.38\n")
    assert r.status_code == 429 and r.headers["retry-after"] == str(40 * 60)
    w.clock.set(T0 + timedelta(minutes=60, seconds=1))
    assert w.submit("bob", b"y_hat: 0.38\n").status_code == 201


def test_payload_over_the_limit_is_413_before_parsing(database):
    w = build_world(database, max_submission_bytes=1000)
    big = b"y_hat: 0.38\n" + b"#" * 200_000 + b"\n"
    r = w.submit("alice", big)
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    def chunks():   # no Content-Length: counted as it arrives
        yield b"--x\r\nContent-Disposition: form-data; name=\"answers\"; filename=\"a.yaml\"\r\n\r\n"
        for _ in range(100):
            yield b"#" * 10_000
    r = w.client.post(url(w, "/submissions"), headers={**w.h("alice"), "Content-Type": "multipart/form-data; boundary=x"},
                      content=chunks())
    assert r.status_code == 413
    assert w.client.get(url(w, "/submissions"), headers=w.h("alice")).json() == []
    # Just under the limit is fine.
    assert w.submit("alice", b"y_hat: 0.38\n").status_code == 201


def test_deadline_boundary_grace_penalty_cap_extension_and_close(world):
    w = world
    due = T0 + timedelta(days=1)
    r = w.client.patch(url(w), headers=w.h("prof"), json={
        "late_grace_minutes": 10, "late_percent_per_day": 10, "late_max_percent": 25,
        "close_at": (due + timedelta(days=5)).isoformat()})
    assert r.status_code == 200
    data = solution_bytes()

    def at(t, who="alice", key=None):
        w.clock.set(t)
        r = w.submit(who, data, key=key or f"{who}-{t.isoformat()}")
        assert r.status_code == 201, r.text
        return r.json()["feedback"]

    fb = at(due)                                           # exactly at the due date: on time
    assert fb["late"]["seconds_late"] == 0 and fb["late"]["penalty_percent"] == 0
    fb = at(due + timedelta(minutes=10))                   # the last second of the grace period
    assert fb["late"]["seconds_late"] == 600 and fb["late"]["penalty_percent"] == 0
    fb = at(due + timedelta(minutes=10, seconds=1))        # one second after: one started day late
    assert fb["late"]["days_late"] == 1 and fb["late"]["penalty_percent"] == 10
    assert fb["score_after_penalty"] == pytest.approx(fb["score"] * 0.9)
    fb = at(due + timedelta(days=3, seconds=1))            # four started days: 40%, capped at 25%
    assert fb["late"]["days_late"] == 4 and fb["late"]["penalty_percent"] == 25
    # An extension moves this student's due date (and close date), judged by receipt time.
    w.clock.set(T0)
    r = w.client.put(url(w, f"/extensions/{w.users['amy']}"), headers=w.h("prof"),
                     json={"due_at": (due + timedelta(days=7)).isoformat(), "reason": "illness"})
    assert r.status_code == 200, r.text
    fb = at(due + timedelta(days=6), who="amy")
    assert fb["late"]["penalty_percent"] == 0 and fb["late"]["due_at"].startswith("2030-03-09")
    # After the close date: refused for bob, still open for amy (her extension is later).
    w.clock.set(due + timedelta(days=5, seconds=1))
    assert w.submit("bob", data, key="late-bob").status_code == 409
    assert w.submit("amy", data, key="late-amy").status_code == 201
    # The gradebook counts alice's best submission after penalties (the on-time one).
    book = w.client.get(url(w, "/gradebook"), headers=w.h("prof")).json()
    row = next(r for r in book["rows"] if r["user_id"] == w.users["alice"])
    assert row["penalty_percent"] == 0 and row["final_score"] == row["raw_score"] and row["submissions"] == 4


def test_lateness_is_receipt_time_not_grading_time(world):
    """A submission received before the due date but graded by a job after it is on time."""
    w = world
    r = upload(w, BN)
    aid = r.json()["id"]
    due = T0 + timedelta(hours=1)
    w.client.patch(f"/api/v1/courses/{w.course_id}/assignments/{aid}", headers=w.h("prof"),
                   json={"due_at": due.isoformat(), "late_percent_per_day": 50})
    w.client.post(f"/api/v1/courses/{w.course_id}/assignments/{aid}/publish", headers=w.h("prof"), json={})
    w.clock.set(due - timedelta(seconds=1))
    r = w.submit("bob", b"conv_shape: [2, 4, 4]\n", key="b1", assignment_id=aid)
    assert r.status_code == 202
    w.clock.set(due + timedelta(days=2))
    w.drain()
    fb = w.client.get(f"/api/v1/submissions/{r.json()['id']}", headers=w.h("bob")).json()["feedback"]
    assert fb["status"] == "graded" and fb["late"]["penalty_percent"] == 0


def test_roster_signup_login_cookie_csrf_and_login_rate_limit(world):
    w = world
    r = w.client.post(f"/api/v1/courses/{w.course_id}/roster", headers=w.h("prof"),
                      files={"roster": ("r.csv", b"username,name,section\nnewbie-1,New Bie,A\n")})
    assert r.status_code == 201
    link = r.json()[0]["signup_url"]
    token = link.split("token=")[1]
    assert w.client.post("/api/v1/auth/signup", json={"token": token, "password": "short"}).status_code == 422
    assert w.client.post("/api/v1/auth/signup", json={"token": token, "password": "a good password"}).status_code == 200
    assert w.client.post("/api/v1/auth/signup", json={"token": token, "password": "again again"}).status_code == 404
    r = w.client.post("/api/v1/auth/login", json={"username": "newbie-1", "password": "a good password"})
    assert r.status_code == 200 and "cnnspec_session" in r.cookies
    csrf = r.json()["csrf_token"]
    me = w.client.get("/api/v1/me")
    assert me.status_code == 200 and me.json()["user"]["username"] == "newbie-1"
    no_csrf = w.client.post("/api/v1/me/tokens", json={"name": "ci"})
    assert no_csrf.status_code == 401
    tok = w.client.post("/api/v1/me/tokens", json={"name": "ci", "scopes": ["read", "submit"]},
                        headers={"X-CSRF-Token": csrf})
    assert tok.status_code == 201 and tok.json()["token"].startswith("cns_t_")
    w.client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf})
    w.client.cookies.clear()
    assert w.client.get("/api/v1/me").status_code == 401
    assert w.client.get("/api/v1/me", headers={"Authorization": f"Bearer {tok.json()['token']}"}).status_code == 200
    for _ in range(w.svc.settings.login_failures):
        assert w.client.post("/api/v1/auth/login", json={"username": "newbie-1", "password": "wrong!"}).status_code == 401
    r = w.client.post("/api/v1/auth/login", json={"username": "newbie-1", "password": "a good password"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    w.clock.set(T0 + timedelta(hours=1))
    w.client.cookies.clear()
    assert w.client.post("/api/v1/auth/login", json={"username": "newbie-1",
                                                      "password": "a good password"}).status_code == 200
    w.client.cookies.clear()


def test_gradebook_formats_sections_and_stats(world):
    w = world
    w.submit("alice", SLIPS.read_bytes(), key="a")
    w.submit("bob", solution_bytes(), key="b")
    book = w.client.get(url(w, "/gradebook"), headers=w.h("prof")).json()
    rows = {r["username"].rsplit("-", 1)[0]: r for r in book["rows"]}
    assert set(rows) == {"alice", "amy", "bob"} and rows["amy"]["status"] == "no submission"
    assert rows["bob"]["final_score"] == book["assignment"]["max_score"]
    assert rows["alice"]["questions"]["conv1_shape"] == 0
    ta = w.client.get(url(w, "/gradebook"), headers=w.h("ta_b")).json()
    assert [r["username"].rsplit("-", 1)[0] for r in ta["rows"]] == ["bob"]
    text = w.client.get(url(w, "/gradebook?format=csv"), headers=w.h("prof")).text
    table = list(csv.DictReader(io.StringIO(text)))
    assert {r["student_id"] for r in table} >= {rows["bob"]["student_id"]} and "w1_new_lr1" in table[0]
    canvas = list(csv.reader(io.StringIO(w.client.get(url(w, "/gradebook?format=canvas"), headers=w.h("prof")).text)))
    assert canvas[0][:5] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
    assert canvas[1][0] == "Points Possible" and float(canvas[1][5]) == book["assignment"]["max_score"]
    moodle = list(csv.reader(io.StringIO(w.client.get(url(w, "/gradebook?format=moodle"), headers=w.h("prof")).text)))
    assert moodle[0][:3] == ["ID number", "Email address", "Full name"]
    st = w.client.get(url(w, "/stats"), headers=w.h("prof")).json()
    conv = next(q for q in st["questions"] if q["id"] == "conv1_shape")
    assert st["graded"] == 2 and conv["diagnoses"].get("no_plus_one") == 1 and conv["full_points"] == 1


def upload_version_2(w, tmp_path, number=2, points=4):
    """Version 2 of the lecture assignment: conv1_shape is worth 4 points instead of 2 (not yet current)."""
    import shutil
    root = tmp_path / f"v{number}"
    shutil.copytree(LECTURE.parent.parent, root, ignore=shutil.ignore_patterns("*.onnx"))
    main = root / "assignments" / "lecture.yaml"
    main.write_text(main.read_text().replace("    points: 2\n", f"    points: {points}\n", 1))
    r = upload(w, main, assignment_id=w.assignment_id)
    assert r.status_code == 201 and r.json()["number"] == number and r.json()["current"] is False, r.text


def test_regrade_preview_then_apply_appends_grades(world, tmp_path):
    w = world
    a = w.submit("alice", SLIPS.read_bytes(), key="a").json()
    b = w.submit("bob", solution_bytes(), key="b").json()
    upload_version_2(w, tmp_path)
    r = w.client.post(url(w, "/versions/2/regrade"), headers=w.h("prof"), json={"apply": False})
    pv = r.json()
    assert r.status_code == 200 and pv["complete"] and pv["graded"] == pv["submissions"] == 2, pv
    changes = {c["username"].rsplit("-", 1)[0]: c for c in pv["changes"]}
    assert set(changes) == {"bob"} and changes["bob"]["new_score"] == changes["bob"]["old_score"] + 2
    assert w.client.get(url(w), headers=w.h("prof")).json()["version"] == 1      # preview changed nothing
    fb = w.client.get(f"/api/v1/submissions/{b['id']}", headers=w.h("bob")).json()["feedback"]
    assert fb["version"] == 1 and fb["score"] == b["feedback"]["score"]          # nor what bob sees
    ap = w.client.post(url(w, "/versions/2/regrade"), headers=w.h("prof"), json={"apply": True}).json()
    assert ap["applied"] and ap["submissions"] == 2 and ap["complete"]    # the preview's grades are version 2's
    w.drain()
    from grader.service import models as m
    with w.svc.sessions() as s:
        for sub in (a, b):
            hows = [g.how for g in s.query(m.Grade).filter(m.Grade.submission_id == sub["id"]).order_by(m.Grade.id)]
            assert hows == ["request", "regrade"]    # history kept, nothing graded twice (the preview's, applied)
    fb = w.client.get(f"/api/v1/submissions/{b['id']}", headers=w.h("bob")).json()["feedback"]
    assert fb["version"] == 2 and fb["current_version"]
    audit = w.client.get(f"/api/v1/courses/{w.course_id}/audit", headers=w.h("prof")).json()
    actions = [e["action"] for e in audit]
    assert "assignment.regrade" in actions and "assignment.publish" in actions and "member.add" in actions
    regrade = next(e for e in audit if e["action"] == "assignment.regrade")
    assert regrade["actor"].startswith("prof-") and regrade["before"] == {"version": 1}


def test_grade_overrides_by_staff_are_audited_and_counted_and_students_see_the_score_not_the_reason(world):
    w = world
    sid = w.submit("alice", SLIPS.read_bytes(), key="o1").json()["id"]
    base = w.client.get(f"/api/v1/submissions/{sid}", headers=w.h("alice")).json()["feedback"]
    staff_base = w.client.get(f"/api/v1/submissions/{sid}", headers=w.h("prof")).json()["feedback"]
    ov = f"/api/v1/submissions/{sid}/overrides"
    secret_reason = "accepted the notes' 97 after the exam review"
    body = {"question": "conv1_shape", "score": 2, "reason": secret_reason}
    # Only the instructor and the TA of alice's section: the other section's TA and students get 404.
    for who in ("ta_b", "amy", "alice", "olga"):
        r = w.client.post(ov, headers=w.h(who), json=body)
        assert r.status_code == 404 and secret_reason not in r.text, (who, r.text)
    assert w.client.post(ov, headers=w.h("ta_a"), json={**body, "score": 3}).status_code == 422      # > points
    assert w.client.post(ov, headers=w.h("ta_a"), json={**body, "question": "nope"}).status_code == 422
    assert w.client.post(ov, headers=w.h("ta_a"), json={**body, "reason": "  "}).status_code == 422
    assert w.client.post(ov, headers=w.h("ta_a"), json={**body, "question": None, "score": None}).status_code == 422
    r = w.client.post(ov, headers=w.h("ta_a"), json=body)
    assert r.status_code == 201, r.text
    assert r.json()["by"].startswith("ta_a-") and r.json()["feedback"]["score"] == staff_base["score"] + 2
    # The student sees the new score and that staff set it, not the reason.
    r = w.client.get(f"/api/v1/submissions/{sid}", headers=w.h("alice"))
    fb = r.json()["feedback"]
    q = {x["id"]: x for x in fb["result"]["questions"]}["conv1_shape"]
    assert fb["score"] == base["score"] + 2 and q["score"] == 2 and q["status"] == "passed"
    assert secret_reason not in r.text and fb["overrides"] == [
        {"id": fb["overrides"][0]["id"], "submission_id": sid, "question": "conv1_shape", "score": 2.0,
         "created_at": fb["overrides"][0]["created_at"]}]
    text = w.client.get(f"/api/v1/submissions/{sid}/feedback", headers=w.h("alice")).text
    assert "PASS   1. conv1_shape" in text and "score set to 2 (graded 0) by the course staff" in text
    assert secret_reason not in text
    staff = w.client.get(f"/api/v1/submissions/{sid}", headers=w.h("prof")).text
    assert secret_reason in staff
    # An override of a hidden question stays hidden from the student.
    r = w.client.post(ov, headers=w.h("prof"), json={"question": "w1_new_lr1", "score": 1, "reason": "lenient",
                                                      "show_reason": True})
    assert r.status_code == 201
    r = w.client.get(f"/api/v1/submissions/{sid}", headers=w.h("alice"))
    assert "lenient" not in r.text and len(r.json()["feedback"]["overrides"]) == 1
    # The whole submission's score, with the reason shown: the student sees both.
    r = w.client.post(ov, headers=w.h("prof"), json={"score": 10, "reason": "oral exam", "show_reason": True})
    assert r.status_code == 201
    r = w.client.get(f"/api/v1/submissions/{sid}", headers=w.h("alice"))
    assert r.json()["feedback"]["score"] == 10 and "oral exam" in r.text
    book = w.client.get(url(w, "/gradebook"), headers=w.h("prof")).json()
    row = next(x for x in book["rows"] if x["user_id"] == w.users["alice"])
    assert row["raw_score"] == 10 and row["overridden"] and row["questions"]["conv1_shape"] == 2
    stats = w.client.get(url(w, "/stats"), headers=w.h("prof")).json()
    assert next(x for x in stats["questions"] if x["id"] == "conv1_shape")["full_points"] == 1
    # Taken back (appended, not deleted): the questions' sum counts again; the history keeps everything.
    assert w.client.post(ov, headers=w.h("prof"), json={"score": None, "reason": "oral exam cancelled"}
                         ).status_code == 201
    fb = w.client.get(f"/api/v1/submissions/{sid}", headers=w.h("alice")).json()["feedback"]
    assert fb["score"] == base["score"] + 2
    history = w.client.get(ov, headers=w.h("ta_a")).json()
    assert [(h["question"], h["score"]) for h in history] == [("conv1_shape", 2.0), ("w1_new_lr1", 1.0), (None, 10.0),
                                                              (None, None)]
    assert w.client.get(ov, headers=w.h("ta_b")).status_code == 404
    assert w.client.get(ov, headers=w.h("alice")).status_code == 404
    audit = w.client.get(f"/api/v1/courses/{w.course_id}/audit", headers=w.h("prof")).json()
    first = next(e for e in audit if e["action"] == "grade.override" and e["after"]["question"] == "conv1_shape")
    assert first["actor"].startswith("ta_a-") and first["object_id"] == sid
    assert first["before"] == {"question": "conv1_shape", "score": 0.0, "overridden": False}
    assert first["after"]["reason"] == secret_reason and first["after"]["student"].startswith("alice-")
    assert any(e["action"] == "grade.override_removed" for e in audit)


def test_upload_errors_name_file_line_col_and_versions_are_immutable(world, tmp_path):
    w = world
    bad = tmp_path / "hw" / "bad.yaml"
    bad.parent.mkdir()
    bad.write_text("cnnspec_assignment: 1\nname: bad\nmodel:\n  spec: {cnnspec: 1, name: m, input: {shape: [4]}, "
                   "layers: [{name: r, type: relu}]}\nquestions:\n  - {id: q1, kind: output_shape, layr: r}\n")
    r = upload(w, bad)
    assert r.status_code == 422 and "bad.yaml:6:" in r.json()["detail"], r.text
    assert str(tmp_path) not in r.text and "cnnspec-upload" not in r.text
    r = w.client.post(f"/api/v1/courses/{w.course_id}/assignments", headers=w.h("prof"),
                      files=[("files", ("../evil.yaml", b"x: 1"))])
    assert r.status_code == 422
    info = w.client.get(url(w), headers=w.h("prof")).json()
    v1 = info["versions"][0]
    f = w.client.get(url(w, "/versions/1/files/assignments/lecture.yaml"), headers=w.h("prof"))
    assert f.status_code == 200 and f.content == LECTURE.read_bytes() and len(v1["sha256"]) == 64
    import hashlib
    assert f.headers["x-content-sha256"] == hashlib.sha256(LECTURE.read_bytes()).hexdigest()


def test_errors_are_json_without_tracebacks(world):
    w = world
    r = w.client.get("/api/v1/no/such/route", headers=w.h("prof"))
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    r = w.client.post("/api/v1/courses", headers={**w.h("prof"), "Content-Type": "application/json"}, content=b"{")
    assert r.status_code == 422 and "detail" in r.json()

    def boom():
        raise RuntimeError("secret internals /etc/passwd")
    w.client.app.add_api_route("/api/v1/test-boom", boom)
    r = w.client.get("/api/v1/test-boom")
    assert r.status_code == 500 and r.json()["detail"] == "internal error" and "error_id" in r.json()
    assert "Traceback" not in r.text and "secret" not in r.text
    assert w.client.get("/healthz").json()["status"] == "ok"
    assert "cnnspec_queue_depth" in w.client.get("/metrics").text
    spec = w.client.get("/api/v1/openapi.json").json()
    assert "/api/v1/courses/{course_id}/assignments/{assignment_id}/submissions" in spec["paths"]


def test_template_for_a_student_has_their_data_and_no_answers(world):
    w = world
    r = upload(w, BN)
    aid = r.json()["id"]
    w.client.post(f"/api/v1/courses/{w.course_id}/assignments/{aid}/publish", headers=w.h("prof"), json={})
    t = w.client.get(f"/api/v1/courses/{w.course_id}/assignments/{aid}/template", headers=w.h("bob"))
    assert t.status_code == 200 and "conv_shape" in t.text and key_of(w, "bob") in t.text
    import grader
    from grader.tools import solution
    _, sol = solution(grader.load_assignment(BN), key_of(w, "bob"))
    assert json.dumps(sol["logits"].tolist() if hasattr(sol["logits"], "tolist") else sol["logits"])[:12] not in t.text


def key_of(w, name):
    members = w.client.get(f"/api/v1/courses/{w.course_id}/members", headers=w.h("prof")).json()
    return next(x["student_key"] for x in members if x["user_id"] == w.users[name])


def test_migrations_create_exactly_the_models_schema(database):
    """migrations/versions (written by hand, e.g. 0002 for grade overrides) and models.py describe one schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from grader.service import models as m
    from grader.service.app import Service
    from grader.service.settings import Settings

    _, url, data_dir = database
    svc = Service(Settings(database=url, data_dir=data_dir, inline_worker=False))
    try:
        with svc.engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), m.Base.metadata)
        assert [d for d in diffs if "procrastinate" not in str(d)] == []
    finally:
        svc.engine.dispose()


def test_a_large_regrade_preview_is_computed_by_jobs_and_counts_only_once_applied(world, tmp_path, monkeypatch):
    """More submissions than a request grades: the preview answers 202 with its progress, jobs grade them
    (behind students' grading), GET shows the changes when complete. Until applied, the preview's grades
    show nowhere: not in feedback, not in the gradebook, not in /metrics' latency."""
    from grader.service import models as m
    from grader.service.api import assignments
    w = world
    monkeypatch.setattr(assignments, "PREVIEW_IN_REQUEST", 1)
    a = w.submit("alice", SLIPS.read_bytes(), key="a").json()
    b = w.submit("bob", solution_bytes(), key="b").json()
    upload_version_2(w, tmp_path)

    def bobs_row():
        rows = w.client.get(url(w, "/gradebook"), headers=w.h("prof")).json()["rows"]
        return next(row for row in rows if row["user_id"] == w.users["bob"])
    def latency_count():
        return next(line for line in w.client.get("/metrics").text.splitlines()
                    if line.startswith("cnnspec_grading_latency_seconds_count"))
    before, counted = bobs_row(), latency_count()
    r = w.client.post(url(w, "/versions/2/regrade"), headers=w.h("prof"), json={"apply": False})
    assert r.status_code == 202 and r.json()["complete"] is False and r.json()["changes"] is None, r.text
    progress = w.client.get(r.json()["links"]["self"], headers=w.h("prof")).json()
    assert progress["graded"] == 0 and progress["submissions"] == 2
    assert w.client.get(r.json()["links"]["self"], headers=w.h("alice")).status_code == 404
    w.drain()
    done = w.client.get(r.json()["links"]["self"], headers=w.h("prof")).json()
    assert done["complete"] and [c["new_score"] - c["old_score"] for c in done["changes"]] == [2]
    assert latency_count() == counted                          # the preview's grades are no students' grades
    # Not applied: bob's feedback and the gradebook still show version 1's score.
    fb = w.client.get(f"/api/v1/submissions/{b['id']}", headers=w.h("bob")).json()["feedback"]
    assert fb["version"] == 1 and fb["score"] == b["feedback"]["score"]
    assert bobs_row() == before
    ap = w.client.post(url(w, "/versions/2/regrade"), headers=w.h("prof"), json={"apply": True}).json()
    assert ap["complete"]                                    # nothing left to grade: the preview's grades count
    w.drain()                                                # (the new version's references are prepared)
    fb = w.client.get(f"/api/v1/submissions/{b['id']}", headers=w.h("bob")).json()["feedback"]
    assert fb["version"] == 2 and fb["score"] == b["feedback"]["score"] + 2
    assert bobs_row()["raw_score"] == before["raw_score"] + 2
    with w.svc.sessions() as s:
        assert s.query(m.Grade).filter(m.Grade.submission_id == a["id"]).count() == 2


def test_metrics_count_stored_but_ungraded_submissions(world):
    from grader.service import models as m
    w = world

    def gauges():   # the module's tests share one database: compare before and after
        lines = dict(line.split(" ", 1) for line in w.client.get("/metrics").text.splitlines()
                     if not line.startswith("#"))
        return int(lines["cnnspec_ungraded_submissions"]), float(lines["cnnspec_oldest_ungraded_seconds"])
    before, _ = gauges()
    with w.svc.sessions() as s, s.begin():
        version = s.get(m.Assignment, w.assignment_id).current_version_id
        s.add(m.Submission(assignment_id=w.assignment_id, user_id=w.users["bob"], number=1, version_id=version,
                           received_at=T0 - timedelta(seconds=90), idempotency_key="lost", filename="answers.yaml",
                           payload=solution_bytes(), sha256="0" * 64, size=1))
    after, oldest = gauges()
    assert after == before + 1 and oldest >= (w.clock.now() - (T0 - timedelta(seconds=90))).total_seconds()


def test_metrics_quantiles_are_the_same_on_both_databases(world):
    """Ten grades made 1..10 s after their submissions arrived: the p50 is 5 s and the p95 and p99 are 10 s,
    whichever database computes them (PostgreSQL in SQL, SQLite in Python)."""
    from grader.service import models as m
    w = world
    later = T0 + timedelta(days=30)     # the module's other tests graded at T0: outside the last 15 minutes
    w.clock.set(later)
    with w.svc.sessions() as s, s.begin():
        version = s.get(m.Assignment, w.assignment_id).current_version_id
        for i in range(1, 11):
            sub = m.Submission(assignment_id=w.assignment_id, user_id=w.users["bob"], number=i, version_id=version,
                               received_at=later - timedelta(seconds=i), idempotency_key=f"q{i}",
                               filename="a.yaml", payload=b"x", sha256="0" * 64, size=1)
            s.add(sub)
            s.flush()
            s.add(m.Grade(submission_id=sub.id, version_id=version, score=0, max_score=1, error=False, result={},
                          how="request", grading_seconds=i / 100, created_at=later))
    lines = dict(line.rsplit(" ", 1) for line in w.client.get("/metrics").text.splitlines() if not line.startswith("#"))
    assert lines["cnnspec_grading_latency_seconds_count"] == "10"
    assert [float(lines[f'cnnspec_grading_latency_seconds{{quantile="{q}"}}']) for q in (0.5, 0.95, 0.99)] == [5, 10, 10]
    assert [float(lines[f'cnnspec_grading_work_seconds{{quantile="{q}"}}']) for q in (0.5, 0.95, 0.99)] == \
        [0.05, 0.1, 0.1]


def test_a_browser_session_submits_with_its_csrf_token_only_while_it_lasts(world):
    """The web page's submit (session cookie + X-CSRF-Token; on PostgreSQL the one-query path): graded like a
    token's; without or with a wrong CSRF header 401, after the session ended 401, for a course the user is
    not in 404, and nothing is stored by a refused request."""
    from grader.service import models as m
    from grader.service.api.common import SESSION_COOKIE
    from grader.service.security import digest, new_secret
    w = world
    sessions = {}
    with w.svc.sessions() as s, s.begin():
        for who in ("alice", "olga"):
            cookie, csrf = new_secret("s"), new_secret("c")
            s.add(m.Session(user_id=w.users[who], token_hash=digest(cookie), csrf_token=csrf, created_at=T0,
                            expires_at=T0 + timedelta(hours=1)))
            sessions[who] = (cookie, csrf)

    def submit(who, csrf=None, key="web-1"):
        cookie, right = sessions[who]
        headers = {"Idempotency-Key": key, **({"X-CSRF-Token": csrf} if csrf else {})}
        w.client.cookies.clear()
        w.client.cookies.set(SESSION_COOKIE, cookie)
        try:
            return w.client.post(url(w, "/submissions"), headers=headers,
                                 files={"answers": ("answers.yaml", SLIPS.read_bytes())})
        finally:
            w.client.cookies.clear()
    assert submit("alice").status_code == 401
    assert submit("alice", csrf="c-wrong").status_code == 401
    assert submit("olga", csrf=sessions["olga"][1]).status_code == 404
    r = submit("alice", csrf=sessions["alice"][1])
    assert r.status_code == 201 and r.json()["feedback"]["status"] == "graded", r.text
    assert r.json()["user_id"] == w.users["alice"]
    w.clock.set(T0 + timedelta(hours=2))
    assert submit("alice", csrf=sessions["alice"][1], key="web-2").status_code == 401
    with w.svc.sessions() as s:
        assert s.query(m.Submission).filter(m.Submission.idempotency_key.like("web-%")).count() == 1


def test_grades_of_an_applied_preview_keep_counting_after_the_next_version_is_applied(world, tmp_path):
    """v2 applied through its preview, then v3 applied: until v3's regrade runs, bob sees v2's grade (the
    newest one that counted), not v1's, in his feedback and in the gradebook (a red-team finding)."""
    w = world
    b = w.submit("bob", solution_bytes(), key="b").json()
    upload_version_2(w, tmp_path)
    assert w.client.post(url(w, "/versions/2/regrade"), headers=w.h("prof"), json={"apply": False}).json()["complete"]
    w.client.post(url(w, "/versions/2/regrade"), headers=w.h("prof"), json={"apply": True})
    w.drain()

    def bobs_row():
        rows = w.client.get(url(w, "/gradebook"), headers=w.h("prof")).json()["rows"]
        return next(row for row in rows if row["user_id"] == w.users["bob"])
    v2_score = bobs_row()["raw_score"]
    upload_version_2(w, tmp_path, number=3, points=6)
    assert w.client.post(url(w, "/versions/3/regrade"), headers=w.h("prof"), json={"apply": True}).json()["applied"]
    fb = w.client.get(f"/api/v1/submissions/{b['id']}", headers=w.h("bob")).json()["feedback"]
    assert fb["version"] == 2 and fb["score"] == b["feedback"]["score"] + 2 and not fb["current_version"]
    assert bobs_row()["raw_score"] == v2_score and bobs_row()["status"] == "pending regrade"
    w.drain()
    assert bobs_row()["raw_score"] == v2_score + 2


def test_a_preview_job_that_finishes_after_the_apply_counts_as_the_versions_grade(world, tmp_path, monkeypatch):
    from grader.service import models as m
    from grader.service.api import assignments
    w = world
    monkeypatch.setattr(assignments, "PREVIEW_IN_REQUEST", 0)
    b = w.submit("bob", solution_bytes(), key="b").json()
    upload_version_2(w, tmp_path)
    assert w.client.post(url(w, "/versions/2/regrade"), headers=w.h("prof"), json={"apply": False}).status_code == 202
    w.client.post(url(w, "/versions/2/regrade"), headers=w.h("prof"), json={"apply": True})   # before the jobs ran
    w.drain()
    with w.svc.sessions() as s:
        hows = [g.how for g in s.query(m.Grade).filter(m.Grade.submission_id == b["id"]).order_by(m.Grade.id)]
    assert hows == ["request", "regrade"]


def test_packed_answers_are_loaded_again_when_the_reference_cache_dropped_them(world, monkeypatch):
    """A class larger than the Grader's reference cache: a student graded again after their reference was
    dropped still gets the packed answers, not a model run (a red-team finding)."""
    import grader
    from grader.service import grading, models as m
    from grader.tools import solution_text
    w = world
    aid = upload(w, BN).json()["id"]
    w.client.post(f"/api/v1/courses/{w.course_id}/assignments/{aid}/publish", headers=w.h("prof"), json={})
    w.drain()
    grading.POOL.clear()
    a = grader.load_assignment(BN)
    with w.svc.sessions() as s:
        version = s.get(m.Assignment, aid).current_version_id
        lv = grading.POOL.get(s, version)
    monkeypatch.setattr(lv.grader, "reference_cache", 1)     # one student's reference at a time
    for i, who in enumerate(("alice", "bob", "alice")):
        r = w.submit(who, solution_text(a, key_of(w, who)).encode(), key=f"bn-{i}", assignment_id=aid)
        assert r.status_code == 201 and r.json()["feedback"]["score"] == r.json()["feedback"]["max_score"], r.text
        assert lv.grader.reference(key_of(w, who))._runs == {}


def test_asking_for_a_preview_again_queues_only_what_arrived_since(world, tmp_path, monkeypatch):
    """Each submission gets one preview job, however often the preview is asked for; a submission that
    arrives later gets its own; the apply queues nothing the preview's jobs will grade (a red-team finding)."""
    from grader.service import models as m
    from grader.service.api import assignments
    w = world
    monkeypatch.setattr(assignments, "PREVIEW_IN_REQUEST", 0)
    w.submit("alice", SLIPS.read_bytes(), key="a")
    b = w.submit("bob", solution_bytes(), key="b").json()
    upload_version_2(w, tmp_path)

    def depth():
        with w.svc.sessions() as s:
            return w.svc.queue.depth(s)
    base = depth()
    for _ in range(3):
        assert w.client.post(url(w, "/versions/2/regrade"), headers=w.h("prof"),
                             json={"apply": False}).status_code == 202
    assert depth() == base + 2
    w.submit("bob", SLIPS.read_bytes(), key="b2")
    w.client.post(url(w, "/versions/2/regrade"), headers=w.h("prof"), json={"apply": False})
    assert depth() == base + 3
    w.client.post(url(w, "/versions/2/regrade"), headers=w.h("prof"), json={"apply": True})
    assert depth() == base + 4                                   # the version's reference preparation only
    w.drain()
    with w.svc.sessions() as s:
        version = s.get(m.Assignment, w.assignment_id).current_version_id
        subs = [x.id for x in s.query(m.Submission).filter(m.Submission.assignment_id == w.assignment_id)]
        for sub in subs:
            assert s.query(m.Grade).filter(m.Grade.submission_id == sub, m.Grade.version_id == version).count() == 1
    assert w.client.get(f"/api/v1/submissions/{b['id']}", headers=w.h("bob")).json()["feedback"]["version"] == 2
