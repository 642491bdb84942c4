"""tokens version

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 14:00:00.000000

data_state.tokens_version changes with every token created, revoked or rotated. Each API
request reads it with the data version (one statement) and authenticates from a per-process
cache of tokens while it is unchanged, so a revocation still takes effect on the next request.
The single data_state row is created here if no import has created it yet.
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table('data_state', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('tokens_version', sa.String(length=32), server_default='initial', nullable=False)
        )
    # The one row exists from here on, so the first token change and the first import never
    # race to insert it ('empty' is the version an empty database always reported).
    op.execute(
        "INSERT INTO data_state (id, version, tokens_version) "
        "SELECT 1, 'empty', 'initial' WHERE NOT EXISTS (SELECT 1 FROM data_state WHERE id = 1)"
    )


def downgrade() -> None:
    """Undo this revision."""
    with op.batch_alter_table('data_state', schema=None) as batch_op:
        batch_op.drop_column('tokens_version')
