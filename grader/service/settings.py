"""Service configuration (command-line options and CNNSPEC_* environment variables) and the clock.

The clock is an object so that tests can freeze it: every receipt time, deadline and rate-limit window
reads `settings.clock.now()`, never datetime.now() directly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional


class Clock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class FrozenClock(Clock):
    """A clock that stands still until moved (tests)."""

    def __init__(self, at: datetime):
        self.at = at

    def now(self) -> datetime:
        return self.at

    def set(self, at: datetime) -> None:
        self.at = at


MiB = 1024 * 1024


@dataclass
class Settings:
    database: Optional[str] = None            # SQLAlchemy-style URL; None: SQLite in data_dir
    data_dir: Path = Path("cnnspec-data")
    max_submission_bytes: int = 4 * MiB       # a request body beyond this answers 413 before it is parsed
    max_assignment_bytes: int = 32 * MiB
    session_hours: float = 24 * 7
    login_failures: int = 10                  # failed logins per username (and per address) per window
    login_window_seconds: int = 900
    signup_link_days: float = 14
    inline_worker: Optional[bool] = None      # run jobs in this process (default: on SQLite only)
    worker_threads: int = 1
    request_threads: int = 8                  # requests handled at once per web process (and its pool size)
    sweep_seconds: float = 30.0               # how often stored-but-ungraded submissions are looked for
    sweep_after_seconds: float = 30.0         # ... once they were received this long ago
    reference_cache: int = 4096               # variants whose reference answers a process keeps per version
    cookie_secure: bool = False
    base_url: str = ""                        # how clients reach us (sign-up links); default from the request
    clock: Clock = field(default_factory=Clock)

    @property
    def url(self) -> str:
        return database_url(self.database, self.data_dir)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def run_inline_worker(self) -> bool:
        return self.is_sqlite if self.inline_worker is None else self.inline_worker

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        s = cls()
        env = os.environ
        if env.get("CNNSPEC_DATABASE"):
            s.database = env["CNNSPEC_DATABASE"]
        if env.get("CNNSPEC_DATA_DIR"):
            s.data_dir = Path(env["CNNSPEC_DATA_DIR"])
        if env.get("CNNSPEC_MAX_SUBMISSION_BYTES"):
            s.max_submission_bytes = int(env["CNNSPEC_MAX_SUBMISSION_BYTES"])
        if env.get("CNNSPEC_BASE_URL"):
            s.base_url = env["CNNSPEC_BASE_URL"].rstrip("/")
        if env.get("CNNSPEC_REQUEST_THREADS"):
            s.request_threads = max(1, int(env["CNNSPEC_REQUEST_THREADS"]))
        if env.get("CNNSPEC_COOKIE_SECURE"):
            s.cookie_secure = env["CNNSPEC_COOKIE_SECURE"] not in ("0", "false", "")
        for k, v in overrides.items():
            if v is not None:
                setattr(s, k, v)
        s.data_dir = Path(s.data_dir)
        return s


def database_url(database: Optional[str], data_dir: Path) -> str:
    """'postgresql://...' -> SQLAlchemy's psycopg 3 URL; None -> SQLite in data_dir; a path -> SQLite there."""
    if not database:
        return f"sqlite:///{Path(data_dir).resolve() / 'cnnspec.db'}"
    if database.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + database.split("://", 1)[1]
    if database.startswith(("sqlite:", "postgresql+")):
        return database
    return f"sqlite:///{Path(database).resolve()}"


def libpq_url(url: str) -> str:
    """The SQLAlchemy URL in the form libpq (and procrastinate) takes."""
    return "postgresql://" + url.split("://", 1)[1]
