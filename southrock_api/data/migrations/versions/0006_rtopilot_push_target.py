"""rtopilot push target

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 15:30:00.000000

What was last pushed for an enrolment is only known to hold at the RTOPilot it was pushed to.
rtopilot_pushes.target names that RTOPilot (a digest of its URL and API key, never the key):
after SOUTHROCK_RTOPILOT_URL or the key changes, say from staging to production or to another
organisation, every enrolment is due again. Rows from before this revision have no target, so
the first sync after the upgrade sends every enrolment with progress once more; RTOPilot ignores
values it already holds.
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table('rtopilot_pushes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('target', sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Undo this revision."""
    with op.batch_alter_table('rtopilot_pushes', schema=None) as batch_op:
        batch_op.drop_column('target')
