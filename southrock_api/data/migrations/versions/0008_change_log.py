"""change log

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 08:00:00.000000

The change feed's tables (docs/architecture.md, "Exact copies"): enrolment_changes, one row per
enrolment an import changed, positioned by one site-wide sequence that never goes back, with its
place in the unit trees before and after (unit_paths);
change_imports, one row per import that recorded changes (retention prunes by it); and
change_log_state, whose random key seals the feed's tokens. An existing database starts its log
empty: a client takes its first snapshot after this migration.
"""

from __future__ import annotations

import secrets

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

POSITION = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
CODE = sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql")


def upgrade() -> None:
    """Apply this revision."""
    op.create_table('unit_paths',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('units', sa.Text(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_unit_paths')),
    sa.UniqueConstraint('digest', name=op.f('uq_unit_paths_digest'))
    )
    op.create_table('enrolment_changes',
    sa.Column('position', POSITION, autoincrement=True, nullable=False),
    sa.Column('sch_id', CODE, nullable=False),
    sa.Column('units_before', sa.Integer(), nullable=True),
    sa.Column('units_after', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('position', name=op.f('pk_enrolment_changes')),
    sqlite_autoincrement=True,
    )
    op.create_index('ix_enrolment_changes_sch_id', 'enrolment_changes', ['sch_id', 'position'], unique=False)
    op.create_table('change_imports',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('last_position', POSITION, nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('changes', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_change_imports'))
    )
    op.create_index(op.f('ix_change_imports_recorded_at'), 'change_imports', ['recorded_at'], unique=False)
    op.create_table('change_log_state',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('seal_key', sa.String(length=64), nullable=False),
    sa.Column('pruned_through', POSITION, server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_change_log_state'))
    )
    op.execute(
        sa.text("INSERT INTO change_log_state (id, seal_key, pruned_through) VALUES (1, :key, 0)").bindparams(
            key=secrets.token_hex(32)
        )
    )


def downgrade() -> None:
    """Undo this revision."""
    op.drop_table('change_log_state')
    op.drop_index(op.f('ix_change_imports_recorded_at'), table_name='change_imports')
    op.drop_table('change_imports')
    op.drop_index('ix_enrolment_changes_sch_id', table_name='enrolment_changes')
    op.drop_table('enrolment_changes')
    op.drop_table('unit_paths')
