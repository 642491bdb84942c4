"""covering report indexes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 11:40:00.000000

ix_enrolments_report gains every column a report page reads after its sort key
(completed_on, score_hundredths, learner_id, course_id) and ix_enrolments_completed_on
every column the per-unit counts read; both gain `status`, the column of their own
WHERE, without which SQLite never treats an index as covering. Pages and counts are
then read from the indexes alone (see docs/architecture.md).
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

COMPLETED = sa.text("status = 'COMPLETED'")
INDEXES = {
    'ix_enrolments_report': (
        ['work_unit_id', 'crs_code', 'lr_id', 'sch_id'],
        ['completed_on', 'score_hundredths', 'learner_id', 'course_id', 'status'],
    ),
    'ix_enrolments_completed_on': (['work_unit_id', 'completed_on'], ['status']),
}


def _replace(with_covered_columns: bool) -> None:
    with op.batch_alter_table('enrolments', schema=None) as batch_op:
        for name, (key, covered) in INDEXES.items():
            batch_op.drop_index(name, sqlite_where=COMPLETED, postgresql_where=COMPLETED)
            columns = key + covered if with_covered_columns else key
            batch_op.create_index(name, columns, unique=False, sqlite_where=COMPLETED, postgresql_where=COMPLETED)


def upgrade() -> None:
    """Apply this revision."""
    _replace(with_covered_columns=True)


def downgrade() -> None:
    """Undo this revision."""
    _replace(with_covered_columns=False)
