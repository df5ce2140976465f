"""The service's tables (SQLAlchemy 2). One schema for SQLite and PostgreSQL; migrations/ creates it.

Rules the schema enforces rather than the code: an idempotency key is unique per student and assignment
(a retried upload finds its submission); a submission is graded at most once per assignment version
(grades: unique (submission, version) - a job run twice, or a job racing the in-request grading, cannot make
two grades); assignment versions are immutable rows with a sha256 of their files; grades, grade overrides and
audit events are only ever inserted.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary,
                        String, Text, TypeDecorator, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTC(TypeDecorator):
    """Timezone-aware UTC datetimes on both databases (SQLite stores naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


Id = BigInteger().with_variant(Integer, "sqlite")   # SQLite autoincrements only INTEGER PRIMARY KEY


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTC, dict: JSON}


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    username: Mapped[str] = mapped_column(String(200), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str] = mapped_column(String(320), default="")
    password_hash: Mapped[Optional[str]] = mapped_column(String(200))     # argon2id; None until signed up
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)        # may create courses
    signup_token_hash: Mapped[Optional[str]] = mapped_column(String(64), unique=True)
    signup_expires_at: Mapped[Optional[datetime]]
    created_at: Mapped[datetime]


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)      # sha256 of the secret
    scopes: Mapped[str] = mapped_column(String(200))                      # space-separated: read submit manage
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[Optional[datetime]]


class Session(Base):
    __tablename__ = "sessions"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class LoginAttempt(Base):
    __tablename__ = "login_attempts"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    username: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(100))
    ok: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime]
    __table_args__ = (Index("ix_login_attempts_username_at", "username", "at"),
                      Index("ix_login_attempts_address_at", "address", "at"))


class Course(Base):
    __tablename__ = "courses"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    code: Mapped[str] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime]


class Membership(Base):
    __tablename__ = "memberships"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(20))                         # instructor | ta | student
    section: Mapped[str] = mapped_column(String(100), default="")
    student_key: Mapped[str] = mapped_column(String(200), default="")     # the id that picks the data variant
    created_at: Mapped[datetime]
    __table_args__ = (UniqueConstraint("course_id", "user_id"),)
    user: Mapped[User] = relationship(lazy="joined")


class Assignment(Base):
    __tablename__ = "assignments"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))                        # the YAML's `name`
    title: Mapped[str] = mapped_column(String(300), default="")
    current_version_id: Mapped[Optional[int]] = mapped_column(Id)         # the version grades count for
    publish_at: Mapped[Optional[datetime]]     # students see it and may submit from then on (None: draft)
    due_at: Mapped[Optional[datetime]]
    close_at: Mapped[Optional[datetime]]       # no submissions after it (None: late ones accepted forever)
    release_at: Mapped[Optional[datetime]]     # after_due_date questions shown from then (None: due_at)
    late_grace_minutes: Mapped[float] = mapped_column(Float, default=0.0)
    late_percent_per_day: Mapped[float] = mapped_column(Float, default=0.0)
    late_max_percent: Mapped[float] = mapped_column(Float, default=100.0)
    rate_limit_count: Mapped[int] = mapped_column(Integer, default=0)     # graded submissions per window; 0: none
    rate_limit_window_minutes: Mapped[float] = mapped_column(Float, default=60.0)
    counted: Mapped[str] = mapped_column(String(10), default="best")      # best | last submission counts
    created_at: Mapped[datetime]
    __table_args__ = (UniqueConstraint("course_id", "name"),)


class AssignmentVersion(Base):
    """Immutable: the files one upload held, and their hash."""

    __tablename__ = "assignment_versions"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    main_path: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))                       # of the manifest (path + sha256 of each file)
    questions: Mapped[dict] = mapped_column(JSON)                         # [{id, kind, points, visibility, text}]
    has_variants: Mapped[bool] = mapped_column(Boolean)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime]
    __table_args__ = (UniqueConstraint("assignment_id", "number"),)


class AssignmentFile(Base):
    __tablename__ = "assignment_files"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("assignment_versions.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    __table_args__ = (UniqueConstraint("version_id", "path"),)


class Variant(Base):
    """A student's data variant of a version, with its reference answers computed (a job does it at publish
    and enrolment time): grading this student's submission then costs comparisons only."""

    __tablename__ = "variants"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("assignment_versions.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(250))                         # 'shared' or 'student:<id>'
    data_sha256: Mapped[str] = mapped_column(String(64))
    ok: Mapped[bool] = mapped_column(Boolean)
    problem: Mapped[str] = mapped_column(Text, default="")
    computed_at: Mapped[datetime]
    answers: Mapped[Optional[bytes]] = mapped_column(LargeBinary)   # Reference.pack_expected (None: recompute)
    __table_args__ = (UniqueConstraint("version_id", "key"),)


class Extension(Base):
    __tablename__ = "extensions"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    due_at: Mapped[datetime]                                              # this student's own due date
    reason: Mapped[str] = mapped_column(Text, default="")
    granted_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime]
    __table_args__ = (UniqueConstraint("assignment_id", "user_id"),)


class Submission(Base):
    __tablename__ = "submissions"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)                          # 1, 2, ... per student and assignment
    version_id: Mapped[int] = mapped_column(ForeignKey("assignment_versions.id"))  # current at receipt
    received_at: Mapped[datetime]                                         # the server's clock, on receipt
    idempotency_key: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(String(200))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    __table_args__ = (UniqueConstraint("user_id", "assignment_id", "idempotency_key"),
                      UniqueConstraint("user_id", "assignment_id", "number"),
                      Index("ix_submissions_assignment_user_received", "assignment_id", "user_id", "received_at"),
                      Index("ix_submissions_received_at", "received_at"))   # /metrics' window of recent ones


class Grade(Base):
    """Append-only: one row per (submission, assignment version)."""

    __tablename__ = "grades"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"))
    version_id: Mapped[int] = mapped_column(ForeignKey("assignment_versions.id"))
    score: Mapped[float] = mapped_column(Float)                           # raw points, before any late penalty
    max_score: Mapped[float] = mapped_column(Float)
    error: Mapped[bool] = mapped_column(Boolean, default=False)           # the submission could not be read
    result: Mapped[dict] = mapped_column(JSON)                            # the instructor view (SubmissionResult)
    how: Mapped[str] = mapped_column(String(20))        # request | job | sweep | regrade | preview
    grading_seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime]
    __table_args__ = (UniqueConstraint("submission_id", "version_id"),
                      Index("ix_grades_created_at", "created_at"))                # /metrics' latency window


class GradeOverride(Base):
    """Append-only: a staff member sets a question's score (question_id) or the whole submission's (question_id
    None), with a reason. The newest row per (submission, question) counts; score None takes the override
    back (the graded score counts again). It applies to whichever grade is current, so it outlives regrades."""

    __tablename__ = "grade_overrides"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"), index=True)
    question_id: Mapped[Optional[str]] = mapped_column(String(200))
    score: Mapped[Optional[float]] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)
    show_reason: Mapped[bool] = mapped_column(Boolean, default=False)    # the student sees the reason too
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime]


class Job(Base):
    """The in-process queue (SQLite). On PostgreSQL, procrastinate's own tables hold the jobs."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    task: Mapped[str] = mapped_column(String(100))
    args: Mapped[dict] = mapped_column(JSON)
    priority: Mapped[int] = mapped_column(Integer, default=0)             # higher first: interactive > regrade
    status: Mapped[str] = mapped_column(String(10), default="todo")       # todo | doing | done | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_after: Mapped[datetime]
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]
    finished_at: Mapped[Optional[datetime]]
    __table_args__ = (Index("ix_jobs_status_run_after", "status", "run_after"),)


class AuditEvent(Base):
    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    at: Mapped[datetime]
    actor_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))
    course_id: Mapped[Optional[int]] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"), index=True)
    action: Mapped[str] = mapped_column(String(100))
    object_type: Mapped[str] = mapped_column(String(50))
    object_id: Mapped[Optional[int]] = mapped_column(Id)
    before: Mapped[Optional[dict]] = mapped_column(JSON)
    after: Mapped[Optional[dict]] = mapped_column(JSON)
