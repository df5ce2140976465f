"""Alembic environment: run by db.migrate() with an open connection (never from alembic's own CLI config)."""
from alembic import context

from grader.service.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                  compare_type=True)
with context.begin_transaction():
    context.run_migrations()
