"""Variants keep their packed reference answers (grader.reference.Reference.pack_expected), computed once by
the publish/enrolment job, so a web process grading a student for the first time loads them instead of
running the models.

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('variants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('answers', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('variants', schema=None) as batch_op:
        batch_op.drop_column('answers')
