"""`cnnspec submit`: send answers to the service, print the feedback exactly as `cnnspec grade` prints it.

Standard library only (urllib), so a student's CI needs nothing beyond cnnspec. The token comes from
CNNSPEC_TOKEN. Every attempt of one run sends the same Idempotency-Key: a retry after a dropped connection
or a server restart returns the submission the server stored, never a second one.

Exit codes (as `cnnspec grade`): 0 every question the student may see passed, 1 some did not, 2 invalid
input (unreadable answers, unknown assignment, closed, too large, over the rate limit, bad token), 3 the
service failed or could not be reached.
"""
from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Optional

from cnnspec.errors import DataError
from cnnspec.files import read_input
from cnnspec.text import printable

EXIT_SERVICE = 3


class ServiceError(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class Client:
    def __init__(self, server: str, token: str, timeout: float = 60.0, retries: int = 4):
        self.base = server.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries

    def request(self, method: str, path: str, body: Optional[bytes] = None, headers: Optional[dict] = None):
        """-> (status, headers, parsed JSON or text). Retries connection failures and 502/503/504."""
        url = self.base + path
        hdrs = {"Authorization": f"Bearer {self.token}", "Accept": "application/json", **(headers or {})}
        delay = 0.5
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(url, data=body, method=method, headers=hdrs)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    return r.status, dict(r.headers), _decode(r.read(), r.headers.get("Content-Type", ""))
            except urllib.error.HTTPError as e:
                data = _decode(e.read(), e.headers.get("Content-Type", "") if e.headers else "")
                if e.code in (502, 503, 504) and attempt < self.retries:
                    time.sleep(delay)
                    delay *= 2
                    continue
                return e.code, dict(e.headers or {}), data
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
                if attempt < self.retries:
                    time.sleep(delay)
                    delay *= 2
                    continue
                reason = getattr(e, "reason", e)
                raise ServiceError(f"cannot reach {self.base}: {reason}", EXIT_SERVICE) from None
        raise AssertionError("unreachable")

    def get(self, path: str):
        return self.request("GET", path)


def _decode(raw: bytes, ctype: str):
    if "json" in ctype:
        try:
            return json.loads(raw.decode("utf-8"))
        except ValueError:
            pass
    return raw.decode("utf-8", "replace")


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{safe}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _detail(body) -> str:
    if isinstance(body, dict) and "detail" in body:
        d = body["detail"]
        if isinstance(d, list):
            return "; ".join(f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg')}" for e in d)
        return str(d)
    return str(body)[:500]


def _fail(status: int, body, what: str) -> ServiceError:
    code = EXIT_SERVICE if status >= 500 else 2
    return ServiceError(f"{what}: HTTP {status}: {printable(_detail(body))}", code)


def resolve(client: Client, assignment: str) -> tuple[int, int]:
    """'COURSE_ID/ASSIGNMENT_ID', or an assignment's name (or title) in one of my courses -> (course, assignment)."""
    parts = assignment.split("/")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    status, _, body = client.get("/api/v1/me")
    if status != 200:
        raise _fail(status, body, "who am I")
    found = []
    for course in body["courses"]:
        if len(parts) == 2 and parts[0] not in (str(course["id"]), course["code"]):
            continue
        status, _, items = client.get(f"/api/v1/courses/{course['id']}/assignments")
        if status != 200:
            continue
        for a in items:
            if parts[-1] in (a["name"], a["title"], str(a["id"])):
                found.append((course["id"], a["id"], f"{course['code']}/{a['name']}"))
    if not found:
        raise ServiceError(f"no assignment '{printable(assignment)}' in your courses (give COURSE_ID/ASSIGNMENT_ID, "
                           "or the assignment's name)", 2)
    if len(found) > 1:
        raise ServiceError(f"'{printable(assignment)}' is ambiguous: {', '.join(f[2] for f in found)}; give "
                           "COURSE/NAME", 2)
    return found[0][0], found[0][1]


def submit(server: str, token: str, assignment: str, answers: str, fmt: str = "text", wait: float = 120.0,
           check_only: bool = False, key: Optional[str] = None, out=None, err=None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        payload = read_input(answers, "answers", 64 * 1024 * 1024)
    except DataError as exc:
        print(str(exc), file=err)
        return 2
    client = Client(server, token)
    try:
        course_id, assignment_id = resolve(client, assignment)
        data, ctype = multipart("answers", Path(answers).name, payload)
        base = f"/api/v1/courses/{course_id}/assignments/{assignment_id}"
        if check_only:
            status, _, body = client.request("POST", f"{base}/check", data, {"Content-Type": ctype})
            if status != 200:
                raise _fail(status, body, "check")
            return _print_check(body, out)
        key = key or f"cli-{uuid.uuid4()}"
        status, headers, body = client.request("POST", f"{base}/submissions", data,
                                               {"Content-Type": ctype, "Idempotency-Key": key})
        if status == 429:
            raise ServiceError(f"{_detail(body)} (Retry-After: {headers.get('Retry-After', '?')} s)", 2)
        if status not in (200, 201, 202):
            raise _fail(status, body, "submit")
        sub = body
        deadline = time.monotonic() + wait
        while sub["feedback"]["status"] != "graded":
            if time.monotonic() > deadline:
                print(f"submission {sub['id']} is stored (received {sub['received_at']}) and queued for grading; "
                      f"see {server.rstrip('/')}{sub['links']['self']}", file=err)
                return EXIT_SERVICE
            time.sleep(0.5)
            status, _, sub = client.get(sub["links"]["self"])
            if status != 200:
                raise _fail(status, sub, "poll")
    except ServiceError as exc:
        print(f"cnnspec submit: {exc}", file=err)
        return exc.code
    return _print_feedback(sub, fmt, out, err)


def _print_check(body: dict, out) -> int:
    if body.get("error"):
        print(f"ERROR  {printable(body['error'])}", file=out)
        return 2
    for q in body["questions"]:
        mark = "ok" if q["status"] == "readable" else q["status"].upper()
        line = f"  {mark:<10} {printable(q['id'])}"
        if q.get("message"):
            line += f"  {printable(q['message'])}"
        print(line, file=out)
    for k in body.get("unknown", []):
        print(f"  warning: answer for unknown question '{printable(k)}'", file=out)
    print("format ok: every answer can be read (not graded; no attempt spent)" if body["ok"] else
          "some answers are missing or cannot be read (not graded; no attempt spent)", file=out)
    return 0 if body["ok"] else 1


def _print_feedback(sub: dict, fmt: str, out, err) -> int:
    from cnnspec.progress import use_color
    from grader.report import SubmissionResult, render

    fb = sub["feedback"]
    result = SubmissionResult.model_validate(fb["result"])
    out.write(render([result], fmt, audience="student", color=fmt == "text" and use_color(out)))
    out.flush()
    late = fb.get("late") or {}
    note = f"submission {sub['id']} (attempt {sub['number']}) received {sub['received_at']}"
    if late.get("penalty_percent"):
        note += (f"; {late['days_late']} day(s) late: -{late['penalty_percent']:g}% -> "
                 f"{fb['score_after_penalty']:g} / {fb['max_score']:g}")
    elif late.get("seconds_late"):
        note += "; late, within the grace period (no penalty)"
    if sub.get("replayed"):
        note += " (already stored: this is the earlier upload with the same key)"
    print(note, file=err)
    if result.error:
        return 2
    failed = any(q.status not in ("passed", "withheld") for q in result.questions)
    return 1 if failed else 0


def token_from_env() -> str:
    token = os.environ.get("CNNSPEC_TOKEN", "").strip()
    if not token:
        raise DataError("set CNNSPEC_TOKEN to an API token (create one with POST /api/v1/me/tokens, or on the "
                        "service's pages)")
    return token
