"""Who may see what: every route x (another student, a TA of another section, a student of another course,
an expired token, a token without the route's scope, no login) answers 401 or 404 and none of the victim's
data; and every student-facing response of an assignment with hidden questions is scanned for their values."""
from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

pytest.importorskip("fastapi")

from service_helpers import SLIPS, T0, build_world, database, make_token  # noqa: F401,E402

PUBLIC = {("POST", "/api/v1/auth/signup"), ("POST", "/api/v1/auth/login")}
# Routes a member may call for their OWN things (they succeed; the victim's data must still be absent).
OWN = {("GET", "/api/v1/me"), ("GET", "/api/v1/me/tokens"), ("POST", "/api/v1/me/tokens"),
       ("POST", "/api/v1/auth/logout"), ("GET", "/api/v1/courses")}
COURSE_MEMBER = {("GET", "/api/v1/courses/{course_id}"), ("GET", "/api/v1/courses/{course_id}/assignments"),
                 ("GET", "/api/v1/courses/{course_id}/assignments/{assignment_id}"),
                 ("GET", "/api/v1/courses/{course_id}/assignments/{assignment_id}/template"),
                 ("GET", "/api/v1/courses/{course_id}/assignments/{assignment_id}/submissions"),
                 ("POST", "/api/v1/courses/{course_id}/assignments/{assignment_id}/submissions"),
                 ("POST", "/api/v1/courses/{course_id}/assignments/{assignment_id}/check")}
SECTION_STAFF_READ = {("GET", "/api/v1/courses/{course_id}/members"),
                      ("GET", "/api/v1/courses/{course_id}/assignments/{assignment_id}/gradebook"),
                      ("GET", "/api/v1/courses/{course_id}/assignments/{assignment_id}/stats"),
                      ("GET", "/api/v1/courses/{course_id}/assignments/{assignment_id}/extensions"),
                      ("GET", "/api/v1/courses/{course_id}/assignments/{assignment_id}/versions/{number}/files/"
                              "{path}")}
ALLOWED = {"amy": OWN | COURSE_MEMBER, "ta_b": OWN | COURSE_MEMBER | SECTION_STAFF_READ, "olga": OWN}

MARK = "0.123456789"       # alice's answer: it appears only in responses about her submission


def api_routes(client):
    """Every route of the API, from its OpenAPI document (so a new route joins the matrix by itself)."""
    spec = client.get("/api/v1/openapi.json").json()
    return sorted((method.upper(), path) for path, ops in spec["paths"].items() if path.startswith("/api/v1")
                  for method in ops)


def needed_scope(method: str, path: str) -> str:
    if method == "POST" and path.endswith(("/submissions", "/check")):
        return "submit"
    if method == "GET" or path.startswith("/api/v1/me") or path == "/api/v1/auth/logout":
        return "read"
    return "manage"


def request_kwargs(method: str, path: str) -> dict:
    if path.endswith(("/submissions", "/check")):
        return {"files": {"answers": ("answers.yaml", b"y_hat: 0.5\n")}}
    if path.endswith("/roster"):
        return {"files": {"roster": ("r.csv", b"username\nintruder\n")}}
    if path.endswith(("/assignments", "/versions")) and method == "POST":
        return {"files": [("files", ("x.yaml", b"cnnspec_assignment: 1\n"))]}
    bodies = {"/me/tokens": {"name": "x"}, "/courses": {"code": "x"}, "/members": {"username": "intruder"},
              "/publish": {}, "/regrade": {"apply": True},
              "/overrides": {"question": "y_hat", "score": 1, "reason": "intruder"}}
    for tail, body in bodies.items():
        if path.endswith(tail) and method == "POST":
            return {"json": body}
    if method == "PUT":
        return {"json": {"due_at": (T0 + timedelta(days=9)).isoformat()}}
    if method == "PATCH":
        return {"json": {"role": "instructor"} if "/members/" in path else {"due_at": None}}
    return {}


@pytest.fixture
def world(database):
    w = build_world(database)
    tag = w.client.get("/api/v1/me", headers=w.h("alice")).json()["user"]["username"].rsplit("-", 1)[1]
    w.victim = {"alice-" + tag, "alice@x.org", MARK}
    answers = SLIPS.read_bytes().replace(b"y_hat: 0.38", f"y_hat: {MARK}".encode())
    r = w.submit("alice", answers, key="alice-1")
    assert r.status_code == 201
    w.submission_id = r.json()["id"]
    r = w.client.put(f"/api/v1/courses/{w.course_id}/assignments/{w.assignment_id}/extensions/{w.users['alice']}",
                     headers=w.h("prof"), json={"due_at": (T0 + timedelta(days=3)).isoformat()})
    assert r.status_code == 200
    w.tokens["expired"] = make_token(w.svc, w.users["prof"], expires=T0 - timedelta(seconds=1))
    for scope in ("read", "submit", "manage"):
        rest = " ".join(x for x in ("read", "submit", "manage") if x != scope)
        w.tokens[f"no-{scope}"] = make_token(w.svc, w.users["prof"], scopes=rest)
    return w


def concrete(w, path: str) -> str:
    with w.svc.sessions() as s:
        from grader.service import models as m
        token_id = s.query(m.ApiToken.id).filter(m.ApiToken.user_id == w.users["alice"]).first()[0]
    values = {"course_id": w.course_id, "assignment_id": w.assignment_id, "submission_id": w.submission_id,
              "user_id": w.users["alice"], "token_id": token_id, "number": 1, "path": "assignments/lecture.yaml"}
    return re.sub(r"\{(\w+)\}", lambda mt: str(values[mt.group(1)]), path)


def test_access_matrix(world):
    w = world
    routes = api_routes(w.client)
    assert len(routes) >= 30
    checked = 0
    for method, template in routes:
        if (method, template) in PUBLIC:
            continue
        path = concrete(w, template)
        kwargs = request_kwargs(method, template)
        callers = {"anonymous": {}, "expired": w.h("expired"),
                   "wrong_scope": w.h(f"no-{needed_scope(method, template)}"),
                   "amy": w.h("amy"), "ta_b": w.h("ta_b"), "olga": w.h("olga")}
        for who, headers in callers.items():
            w.client.cookies.clear()
            r = w.client.request(method, path, headers=headers, **kwargs)
            body = r.text
            where = f"{who}: {method} {template} -> {r.status_code} {body[:200]}"
            allowed = (method, template) in ALLOWED.get(who, set())
            if who in ("anonymous", "expired", "wrong_scope"):
                assert r.status_code == 401, where
            elif not allowed:
                assert r.status_code in (401, 404), where
            else:
                assert r.status_code < 500, where
            assert r.status_code != 403, where
            for secret in w.victim:
                assert secret not in body, f"{where}: leaks {secret!r}"
            checked += 1
    assert checked >= 6 * 30
    # The victim's things are untouched: still one submission, her extension, her token.
    r = w.client.get(f"/api/v1/submissions/{w.submission_id}", headers=w.h("alice"))
    assert r.status_code == 200 and MARK in r.text
    assert w.client.get(f"/api/v1/submissions/{w.submission_id}", headers=w.h("ta_a")).status_code == 200


HIDDEN = ("3.644", "18496")     # w1_new_lr1 (hidden) and conv2_params (after_due_date) of the lecture


def test_no_student_facing_response_contains_hidden_values(world):
    w = world
    c, h = w.client, w.h("bob")
    answers = SLIPS.read_bytes().replace(b"conv2_params: 18496", b"conv2_params: 18432")
    base = f"/api/v1/courses/{w.course_id}/assignments/{w.assignment_id}"
    seen = []
    r1 = w.submit("bob", answers, key="b1")
    r2 = w.submit("bob", answers, key="b1")
    r3 = w.submit("bob", b"w1_new_lr1: 3.0\nconv2_params: 1\n", key="b2")
    seen += [r1, r2, r3, c.post(f"{base}/check", headers=h, files={"answers": ("a.yaml", answers)})]
    sid = r1.json()["id"]
    for path in ("/api/v1/me", "/api/v1/courses", f"/api/v1/courses/{w.course_id}", base.rsplit("/", 1)[0], base,
                 f"{base}/template", f"{base}/submissions", f"/api/v1/submissions/{sid}",
                 f"/api/v1/submissions/{sid}?view=staff", f"/api/v1/submissions/{sid}/payload",
                 *(f"/api/v1/submissions/{sid}/feedback?format={f}" for f in ("text", "markdown", "json", "junit")),
                 f"/api/v1/submissions/{r3.json()['id']}/feedback?format=json&view=staff"):
        seen.append(c.get(path, headers=h))
    for r in seen:
        assert r.status_code < 400, (r.request.url, r.text[:300])
        for value in HIDDEN:
            assert value not in r.text, f"{r.request.url} shows the withheld value {value}"
    # Staff see them; and after the release date the after_due_date one is shown to the student.
    staff = c.get(f"/api/v1/submissions/{sid}", headers=w.h("prof")).text
    assert all(v in staff for v in HIDDEN)
    w.clock.set(T0 + timedelta(days=2))
    shown = c.get(f"/api/v1/submissions/{sid}", headers=h).json()["feedback"]["result"]
    qs = {q["id"]: q for q in shown["questions"]}
    assert qs["conv2_params"]["expected"] == 18496 and qs["w1_new_lr1"]["expected"] is None
    assert "3.644" not in json.dumps(shown)
