"""Service-side grading: stored submissions graded through the grader's public API (never a copy of it).

- GraderPool: one grader.Grader per assignment version in this process (it caches reference answers per
  data variant); a lock per version, as a Grader is not made for threads. Versions never change, so what the
  pool knows about one (its Grader, its number) is kept without asking the database again.
- grade_payload(): grade answers' bytes against a loaded version -> the result (instructor view) as JSON.
  It is what a process calls to grade; Service(grade=...) can put another function with its signature in
  its place (a test entry point does, to hold a job open while its process is killed).
- insert_grade(): append a grade; unique per (submission, version), so a second attempt (a retried job, a
  sweep racing the request) inserts nothing and there is exactly one grade per submission and version.
- grade_stored(): grade a stored submission and append the grade (jobs and the sweep).
- sweep(): grade every stored submission that has no grade for its version (a process killed between
  storing and grading, a failed in-request grading): run at start-up and periodically by the process that
  runs jobs, so "stored" always ends as "graded" without a job per submission.
- prepare_variants(): compute the reference answers of students' variants (at publish and enrolment time),
  and store them packed (Reference.pack_expected); a submission whose variant is ready is graded inside
  the request, by a Grader that loaded those answers instead of running the models again.
- views: the student view is grader.report.for_student of the stored result, with the after_due_date
  questions released at the assignment's release date (and not before the student's own due date).
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Optional

from sqlalchemy import exists, func, select
from sqlalchemy.exc import IntegrityError

from cnnspec.text import printable

from . import models as m
from .store import UNPACKED

log = logging.getLogger("cnnspec.service.grading")

ANSWER_SUFFIXES = (".yaml", ".yml", ".json", ".npz")


class LoadedVersion:
    def __init__(self, assignment, grader_obj):
        self.assignment = assignment
        self.grader = grader_obj
        self.lock = threading.Lock()
        # variant key -> its packed reference answers (Reference.pack_expected), from any database: a variant's
        # answers follow from the version's content and the student's id alone. grade_payload loads them into
        # the Grader's reference whenever it has none (also after the reference cache dropped it).
        self.packed: dict[str, bytes] = {}


class GraderPool:
    """Loaded assignment versions of this process (LRU), each with its Grader (references cached per variant)."""

    def __init__(self, size: int = 32, reference_cache: int = 4096):
        self.size = size
        self.reference_cache = reference_cache
        self._versions: OrderedDict[str, LoadedVersion] = OrderedDict()
        # Per database (its URL: a process may serve several, as tests do): version id -> (content key,
        # number), immutable rows; and the (version id, variant key) pairs known to be ready.
        self._ids: dict[tuple, tuple[str, int]] = {}
        self._ready: set[tuple] = set()
        self._lock = threading.Lock()

    def _key(self, session, version_id: int) -> tuple[str, int, Optional[m.AssignmentVersion]]:
        where = (session.get_bind().url, version_id)
        known = self._ids.get(where)
        if known is not None:
            return known[0], known[1], None
        version = session.get(m.AssignmentVersion, version_id)
        key = f"{version.sha256}/{version.main_path}"
        self._ids[where] = (key, version.number)
        return key, version.number, version

    def number(self, session, version_id: int) -> int:
        """The version's number (1, 2, ...)."""
        return self._key(session, version_id)[1]

    def get(self, session, version_id: int) -> LoadedVersion:
        """Keyed by the version's content hash: versions never change, and neither does their Grader."""
        key, _, version = self._key(session, version_id)
        with self._lock:
            lv = self._versions.get(key)
            if lv is not None:
                self._versions.move_to_end(key)
                return lv
        if version is None:
            version = session.get(m.AssignmentVersion, version_id)

        def files():
            rows = session.scalars(select(m.AssignmentFile).where(m.AssignmentFile.version_id == version_id))
            return {r.path: r.content for r in rows}

        import grader
        from grader.grading import Grader

        path = UNPACKED.path(version.sha256, version.main_path, files)
        a = grader.load_assignment(path)
        lv = LoadedVersion(a, Grader(a, check_copying=False, reference_cache=self.reference_cache))
        with self._lock:
            lv = self._versions.setdefault(key, lv)
            while len(self._versions) > self.size:
                self._versions.popitem(last=False)
        return lv

    def variant_ready(self, session, lv: LoadedVersion, version_id: int, vkey: str) -> bool:
        """Are this variant's reference answers prepared? (A ready variant stays ready: only yes is kept.)
        Their packed form goes to `lv.packed`, for grade_payload to load instead of running the models."""
        where = (session.get_bind().url, version_id, vkey)
        if where in self._ready:
            return True
        row = session.execute(select(m.Variant.answers).where(m.Variant.version_id == version_id,
                                                              m.Variant.key == vkey)).first()
        if row is None:
            return False
        if row.answers:
            lv.packed.setdefault(vkey, row.answers)
        self._ready.add(where)
        return True

    def clear(self) -> None:
        with self._lock:
            self._versions.clear()
            self._ids.clear()
            self._ready.clear()


POOL = GraderPool()


def safe_filename(name: str) -> str:
    base = os.path.basename((name or "").replace("\\", "/")) or "answers.yaml"
    suffix = Path(base).suffix.lower()
    if suffix not in ANSWER_SUFFIXES:
        suffix = ".yaml"
    stem = "".join(c for c in Path(base).stem if c.isalnum() or c in "-_.")[:80] or "answers"
    return stem + suffix


def student_key(session, submission: m.Submission) -> str:
    mem = session.scalar(select(m.Membership).join(m.Assignment, m.Assignment.course_id == m.Membership.course_id)
                         .where(m.Assignment.id == submission.assignment_id,
                                m.Membership.user_id == submission.user_id))
    if mem is not None and mem.student_key:
        return mem.student_key
    return session.get(m.User, submission.user_id).username


def grade_payload(lv: LoadedVersion, filename: str, payload: bytes, key: str, now: datetime):
    """-> (SubmissionResult (instructor view) as JSON, seconds)."""
    started = time.perf_counter()

    # Per-student data: the roster's id picks the variant, whatever the file claims. Shared data: graded as
    # `cnnspec grade` would (the file's own student_id, no warning about it).
    sid = key if lv.assignment.has_variants else None

    shown = safe_filename(filename)
    packed = lv.packed.get(variant_key(lv, key) if lv.assignment.has_variants else "shared")
    with lv.lock:
        lv.grader.now = now
        if packed is not None:
            ref = lv.grader.reference(sid)
            if not ref.loaded:
                try:   # instead of running the models (bit for bit the same answers)
                    if not ref.load_expected(packed):
                        log.info("packed reference answers of another engine version (packed before an "
                                 "upgrade); computing them")
                except Exception:  # noqa: BLE001 - then the reference is computed when grading, as without
                    log.exception("loading packed reference answers failed; computing them")
        result = lv.grader.grade_bytes(payload, shown, sid)
    doc = result.model_dump(mode="json")
    doc["submission"] = shown
    return doc, time.perf_counter() - started


GradeFunction = Callable[..., tuple]   # grade_payload's signature


def check_format(lv: LoadedVersion, filename: str, payload: bytes) -> dict:
    """Read the answers as grading would, without grading them (no attempt spent, no expected value)."""
    from cnnspec.errors import DataError
    import grader

    try:
        sub = grader.parse_submission(payload, safe_filename(filename))
    except DataError as exc:
        return {"ok": False, "error": str(exc), "questions": [], "unknown": []}
    a = lv.assignment
    qs = []
    for q in a.questions:
        ans = sub.answers.get(q.id)
        if ans is None:
            qs.append({"id": q.id, "status": "missing", "message": f"no answer for '{q.id}'"})
        elif ans.error is not None:
            msg = ans.error + (f" ({ans.where})" if ans.where else "")
            qs.append({"id": q.id, "status": "missing" if ans.missing else "unreadable", "message": msg})
        else:
            qs.append({"id": q.id, "status": "readable", "message": "", "shape": list(ans.value.shape),
                       "notes": list(ans.notes)})
    ids = {q.id for q in a.questions}
    unknown = [printable(k) for k in sub.answers if k not in ids]
    return {"ok": all(q["status"] == "readable" for q in qs), "error": None, "questions": qs, "unknown": unknown}


def variant_key(lv: LoadedVersion, key: str) -> str:
    try:
        return lv.assignment.variant_key(key)
    except Exception:  # noqa: BLE001 - no usable id: the grader reports it when grading
        return "invalid"


def variant_ready(session, lv: LoadedVersion, version_id: int, vkey: str) -> bool:
    return POOL.variant_ready(session, lv, version_id, vkey)


def prepare_variants(session_factory, version_id: int, keys: Optional[list[str]], clock) -> int:
    """Compute and record the reference answers of these students' variants (None: every enrolled student's,
    or the one shared variant). Returns how many were computed."""
    import numpy as np

    with session_factory() as session:
        lv = POOL.get(session, version_id)
        a = lv.assignment
        if keys is None:
            if a.has_variants:
                version = session.get(m.AssignmentVersion, version_id)
                asg = session.get(m.Assignment, version.assignment_id)
                keys = []
                for mem in session.scalars(select(m.Membership).where(m.Membership.course_id == asg.course_id,
                                                                     m.Membership.role == "student")):
                    keys.append(mem.student_key or mem.user.username)
            else:
                keys = ["shared"]
        done = set(session.scalars(select(m.Variant.key).where(m.Variant.version_id == version_id)))
    count = 0
    for key in keys:
        vkey = variant_key(lv, key) if a.has_variants else "shared"
        if vkey in done or vkey == "invalid":
            continue
        problem, ok, answers = "", True, None
        h = hashlib.sha256()
        try:
            with lv.lock:
                ref = lv.grader.reference(None if vkey == "shared" else key)
                for name in sorted(ref.variant.data):
                    arr = np.ascontiguousarray(ref.variant.data[name])
                    h.update(name.encode() + b"\0" + str(arr.dtype).encode() + str(arr.shape).encode() + arr.tobytes())
                for q in a.questions:
                    try:
                        ref.expected(q)
                    except Exception as exc:  # noqa: BLE001 - recorded: that question cannot be graded
                        problem += f"{q.id}: {printable(str(exc))[:300]}\n"
                answers = ref.pack_expected()   # web processes load these instead of running the models
        except Exception as exc:  # noqa: BLE001
            ok, problem = False, printable(str(exc))[:1000]
        with session_factory() as session, session.begin():
            session.add(m.Variant(version_id=version_id, key=vkey, data_sha256=h.hexdigest(), ok=ok,
                                  problem=problem, computed_at=clock.now(), answers=answers))
            try:
                session.flush()
            except IntegrityError:
                session.rollback()
                continue
        done.add(vkey)
        count += 1
    return count


_INSERT_GRADE: dict = {}


def _insert_grade_statement(dialect: str):
    """INSERT INTO grades ... ON CONFLICT (submission_id, version_id) DO NOTHING RETURNING id, built once per
    dialect (Core: no ORM bookkeeping for a row nobody reads back)."""
    stmt = _INSERT_GRADE.get(dialect)
    if stmt is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        table = m.Grade.__table__
        stmt = _INSERT_GRADE[dialect] = (insert(table).on_conflict_do_nothing(
            index_elements=["submission_id", "version_id"]).returning(table.c.id))
    return stmt


def insert_grade(session, submission_id: int, version_id: int, doc: dict, how: str, seconds: float,
                 at: datetime) -> Optional[int]:
    """Append a grade in the session's transaction; its id, or None when that (submission, version) has one."""
    stmt = _insert_grade_statement(session.get_bind().dialect.name)
    return session.execute(stmt, {"submission_id": submission_id, "version_id": version_id, "score": doc["score"],
                                  "max_score": doc["max_score"], "error": bool(doc.get("error")), "result": doc,
                                  "how": how, "grading_seconds": seconds, "created_at": at}).scalar()


def grade_stored(session_factory, submission_id: int, version_id: int, how: str, clock,
                 lv: Optional[LoadedVersion] = None, grade: Optional[GradeFunction] = None) -> bool:
    """Grade a stored submission against a version and append the grade; False when it already had one."""
    with session_factory() as session:
        if session.scalar(select(m.Grade.id).where(m.Grade.submission_id == submission_id,
                                                   m.Grade.version_id == version_id)) is not None:
            return False
        sub = session.get(m.Submission, submission_id)
        if sub is None:
            return False
        key = student_key(session, sub)
        lv = lv or POOL.get(session, version_id)
        filename, payload = sub.filename, sub.payload
    doc, seconds = (grade or grade_payload)(lv, filename, payload, key, clock.now())
    with session_factory() as session, session.begin():
        if how == "preview" and session.scalar(
                select(m.Assignment.current_version_id).join(m.AssignmentVersion,
                                                             m.AssignmentVersion.assignment_id == m.Assignment.id)
                .where(m.AssignmentVersion.id == version_id)) == version_id:
            how = "regrade"   # applied meanwhile: a grade of the current version, as the apply made the others
        return insert_grade(session, submission_id, version_id, doc, how, seconds, clock.now()) is not None


def ungraded(session, before: datetime, limit: int) -> list[tuple[int, int]]:
    """(submission id, version id) of stored submissions received before `before` that have no grade for the
    version that was current when they arrived, oldest first."""
    S, G = m.Submission, m.Grade
    graded = exists().where(G.submission_id == S.id, G.version_id == S.version_id)
    return [tuple(r) for r in session.execute(select(S.id, S.version_id).where(S.received_at <= before, ~graded)
                                              .order_by(S.id).limit(limit)).all()]


def ungraded_count(session, since: datetime) -> tuple[int, Optional[datetime]]:
    """(how many submissions received after `since` have no grade for the version they were received under,
    the oldest one's receipt time or None): what /metrics reports, so a stuck sweep or missing worker shows.
    A window, so a scrape does not join every submission ever stored (150 ms at 300,000 on PostgreSQL)."""
    S, G = m.Submission, m.Grade
    graded = exists().where(G.submission_id == S.id, G.version_id == S.version_id)
    count, oldest = session.execute(select(func.count(), func.min(S.received_at))
                                    .where(S.received_at > since, ~graded)).one()
    return count, (oldest.replace(tzinfo=timezone.utc) if oldest is not None and oldest.tzinfo is None else oldest)


def sweep(session_factory, clock, older_than: float, grade: Optional[GradeFunction] = None,
          limit: int = 500) -> int:
    """Grade stored submissions received more than `older_than` seconds ago that have no grade yet (their
    grading in the request never finished, or failed). Returns how many it graded. A submission graded
    meanwhile by anyone else is skipped (grades are unique per submission and version)."""
    count = 0
    while True:
        with session_factory() as session:
            todo = ungraded(session, clock.now() - timedelta(seconds=older_than), limit)
            session.rollback()
        before = count
        for submission_id, version_id in todo:
            try:
                if grade_stored(session_factory, submission_id, version_id, "sweep", clock, grade=grade):
                    count += 1
            except Exception:  # noqa: BLE001 - one submission never stops the sweep; the next one retries it
                log.exception("sweep: grading submission %s failed", submission_id)
        if len(todo) < limit or count == before:
            break
    if count:
        log.warning("sweep: graded %d stored submission(s) that had no grade", count)
    return count


# ------------------------------------------------------------------------ views


def student_view(doc: dict, release: Optional[datetime], now: datetime) -> dict:
    from grader.report import SubmissionResult, for_student

    r = SubmissionResult.model_validate(doc)
    r = r.model_copy(update={"due_date": release.isoformat() if release else None})
    return for_student(r, now).model_dump(mode="json")


def render(doc: dict, fmt: str) -> str:
    from grader.report import SubmissionResult, render as render_results

    return render_results([SubmissionResult.model_validate(doc)], fmt, audience="instructor")
