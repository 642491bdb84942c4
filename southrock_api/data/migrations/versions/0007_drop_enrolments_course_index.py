"""drop enrolments course index

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 19:00:00.000000

No statement looks enrolments up by course_id: pages reach courses from the report index's
covered course_id, and a course's id never changes and is never deleted (imports only upsert
descriptions), so neither database's foreign-key check needs the index either. Keeping it cost
every import a 1.25M-entry rebuild (about 4% of a full import) and the database its space.
"""

from __future__ import annotations

from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table('enrolments', schema=None) as batch_op:
        batch_op.drop_index('ix_enrolments_course_id')


def downgrade() -> None:
    """Undo this revision."""
    with op.batch_alter_table('enrolments', schema=None) as batch_op:
        batch_op.create_index('ix_enrolments_course_id', ['course_id'], unique=False)
