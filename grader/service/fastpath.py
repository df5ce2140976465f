"""The submission route's statements on PostgreSQL, run on the session's own psycopg connection (the same
transaction as everything else the request does).

Why: during a deadline rush every submission runs these five statements, and through SQLAlchemy each one
costs about 0.4 ms of the web process's CPU more than the statement itself (building parameters, the result
wrapper, ORM objects); on the 2 cores that also run PostgreSQL and the grader that is a fifth of a request's
CPU. SQLite, and every other route, use SQLAlchemy (models.py is the schema; these statements name its
tables and columns, and the API tests run them on PostgreSQL).
"""
from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Optional


def _utc(t: Optional[datetime]) -> Optional[datetime]:
    """As models.UTC gives them: aware, in UTC (whatever the server's TimeZone setting)."""
    return t.astimezone(timezone.utc) if t is not None else None

_ASSIGNMENT_COLUMNS = ("id", "course_id", "name", "title", "current_version_id", "publish_at", "due_at", "close_at",
                       "release_at", "late_grace_minutes", "late_percent_per_day", "late_max_percent",
                       "rate_limit_count", "rate_limit_window_minutes", "counted")

# The caller (an API token, or a browser session: the same columns, a session's CSRF token in the third),
# their membership, the assignment and their extension, in one query that locks the membership row.
_CONTEXT = """
SELECT {credential}, u.id, u.username, u.display_name, u.email, u.is_admin,
       mb.id, mb.role, mb.section, mb.student_key,
       {assignment},
       e.id, e.due_at
  FROM {table} t
  JOIN users u ON u.id = t.user_id
  JOIN memberships mb ON mb.user_id = u.id AND mb.course_id = %(course_id)s
  JOIN assignments a ON a.id = %(assignment_id)s AND a.course_id = mb.course_id
  LEFT JOIN extensions e ON e.assignment_id = a.id AND e.user_id = u.id
 WHERE t.token_hash = %(token_hash)s
   FOR UPDATE OF mb"""
_ASSIGNMENT = ', '.join('a.' + c for c in _ASSIGNMENT_COLUMNS)
CONTEXT = {"token": _CONTEXT.format(credential="t.revoked_at, t.expires_at, t.scopes", assignment=_ASSIGNMENT,
                                   table="api_tokens"),
           "session": _CONTEXT.format(credential="NULL, t.expires_at, t.csrf_token", assignment=_ASSIGNMENT,
                                      table="sessions")}

COUNTS = """
SELECT max(number), count(*) FILTER (WHERE received_at > %(since)s),
       min(received_at) FILTER (WHERE received_at > %(since)s), max(id) FILTER (WHERE idempotency_key = %(key)s)
  FROM submissions WHERE user_id = %(user_id)s AND assignment_id = %(assignment_id)s"""

INSERT_SUBMISSION = """
INSERT INTO submissions (assignment_id, user_id, number, version_id, received_at, idempotency_key, filename,
                         payload, sha256, size)
VALUES (%(assignment_id)s, %(user_id)s, %(number)s, %(version_id)s, %(received_at)s, %(idempotency_key)s,
        %(filename)s, %(payload)s, %(sha256)s, %(size)s)
RETURNING id"""

INSERT_GRADE = """
INSERT INTO grades (submission_id, version_id, score, max_score, error, result, how, grading_seconds, created_at)
VALUES (%(submission_id)s, %(version_id)s, %(score)s, %(max_score)s, %(error)s, %(result)s, %(how)s,
        %(grading_seconds)s, %(created_at)s)
ON CONFLICT (submission_id, version_id) DO NOTHING
RETURNING id"""


def integrity_errors() -> tuple:
    """What a unique violation raises here (psycopg's own exception: these statements bypass SQLAlchemy)."""
    import psycopg
    return (psycopg.errors.IntegrityError,)


def _cursor(s):
    return s.connection().connection.driver_connection.cursor()


def caller_and_context(s, token_hash: str, course_id: int, assignment_id: int, via: str = "token"):
    """-> (credential row: revoked_at, expires_at, scopes (a token) or csrf_token (a session), User; membership;
    assignment; extension or None), or None when the token or session is unknown or its user is not in that
    course or the assignment is not there. via: "token" or "session". Locks the membership row."""
    with _cursor(s) as cur:
        row = cur.execute(CONTEXT[via], {"token_hash": token_hash, "course_id": course_id,
                                         "assignment_id": assignment_id}).fetchone()
    if row is None:
        return None
    revoked_at, expires_at, scopes, uid, username, display_name, email, is_admin = row[:8]
    mem_id, role, section, student_key = row[8:12]
    a = SimpleNamespace(**{c: (_utc(v) if c.endswith("_at") else v)
                           for c, v in zip(_ASSIGNMENT_COLUMNS, row[12:12 + len(_ASSIGNMENT_COLUMNS)])})
    ext_id, ext_due = row[12 + len(_ASSIGNMENT_COLUMNS):]
    revoked_at, expires_at, ext_due = _utc(revoked_at), _utc(expires_at), _utc(ext_due)
    user = SimpleNamespace(id=uid, username=username, display_name=display_name, email=email, is_admin=is_admin)
    token = SimpleNamespace(revoked_at=revoked_at, expires_at=expires_at, User=user,
                            **({"scopes": scopes} if via == "token" else {"csrf_token": scopes}))
    mem = SimpleNamespace(id=mem_id, course_id=course_id, user_id=uid, role=role, section=section,
                          student_key=student_key)
    ext = SimpleNamespace(id=ext_id, due_at=ext_due) if ext_id is not None else None
    return token, mem, a, ext


def counts(s, user_id: int, assignment_id: int, since, key: str) -> tuple:
    """(last number, submissions since `since`, the oldest of those, the id stored under this key)."""
    with _cursor(s) as cur:
        last, recent, oldest, same = cur.execute(COUNTS, {"user_id": user_id, "assignment_id": assignment_id,
                                                          "since": since, "key": key}).fetchone()
    return last, recent, _utc(oldest), same


def insert_submission(s, values: dict) -> int:
    with _cursor(s) as cur:
        return cur.execute(INSERT_SUBMISSION, values).fetchone()[0]


def insert_grade(s, values: dict) -> Optional[int]:
    """One statement, committed on its own (autocommit: no BEGIN/COMMIT round trips); None on a conflict."""
    from psycopg.types.json import Json

    s.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    with _cursor(s) as cur:
        row = cur.execute(INSERT_GRADE, {**values, "result": Json(values["result"])}).fetchone()
    return row[0] if row else None
