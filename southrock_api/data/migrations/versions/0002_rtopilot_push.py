"""rtopilot push state

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 11:21:04.458316
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table('rtopilot_pushes',
    sa.Column('enrolment_id', sa.Integer(), nullable=False),
    sa.Column('pushed_progress', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('attempted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('pushed_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint('pushed_progress BETWEEN 0 AND 100', name=op.f('ck_rtopilot_pushes_pushed_progress')),
    sa.ForeignKeyConstraint(['enrolment_id'], ['enrolments.id'], name=op.f('fk_rtopilot_pushes_enrolment_id_enrolments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('enrolment_id', name=op.f('pk_rtopilot_pushes'))
    )


def downgrade() -> None:
    """Undo this revision."""
    op.drop_table('rtopilot_pushes')
