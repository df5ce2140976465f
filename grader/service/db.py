"""Engine, sessions and migrations.

SQLite: one file in the data directory, WAL journal (readers never wait for the writer), synchronous=FULL
(a commit survives a power cut, not only a killed process), foreign keys on, and every transaction begins
IMMEDIATE (takes the write lock at BEGIN, so two transactions never deadlock upgrading a read lock; the
submission count a rate limit reads cannot change before the insert). PostgreSQL: psycopg 3, a connection
pool, and row locks (SELECT ... FOR UPDATE) where a student's data changes.

Migrations (Alembic, migrations/versions) run at start-up, programmatically; on PostgreSQL under an advisory
lock, so several processes starting together migrate once. procrastinate's schema is applied there too.
"""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_ID = 0x636E6E73  # 'cnns': the advisory lock held while migrating


def make_engine(url: str, pool_size: int = 8) -> Engine:
    """pool_size: a web process's request threads (each request uses one connection, from its first query to
    its end); a few more may be opened (overflow) for the process's own work. PostgreSQL connections are not
    pinged before use (that costs a round trip per checkout): after the server restarts, the first use of each
    old connection fails and SQLAlchemy drops the whole pool, so a restart costs at most one failed request."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection, _record):
            dbapi_connection.isolation_level = None   # we issue BEGIN ourselves
            cur = dbapi_connection.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=4, pool_timeout=30, pool_recycle=1800)


def session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


def _alembic_config(connection):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (and, on PostgreSQL, install procrastinate's schema)."""
    from alembic import command

    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            command.upgrade(_alembic_config(conn), "head")
            conn.commit()
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_ID})
        try:
            conn.commit()
            command.upgrade(_alembic_config(conn), "head")
            conn.commit()
            if not inspect(conn).has_table("procrastinate_jobs"):
                from .jobs import procrastinate_schema
                with conn.connection.driver_connection.cursor() as cur:   # no parameters: '%' is literal
                    cur.execute(procrastinate_schema())
                conn.commit()
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_ID})
            conn.commit()


def current_revision(engine: Engine):
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
