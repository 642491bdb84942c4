"""codes sort by code point on PostgreSQL

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 15:10:00.000000

The report is ordered by ORG_CODE, CRS_CODE, LR_ID and SCH_ID. SQLite compares text by code
point (BINARY); PostgreSQL uses the database's default collation, which many installations
create linguistic (en_US.UTF-8, ICU), where 'crs-b' < 'CRS-C' < 'crs_a' in an order no client
could predict. The code columns take the "C" collation on PostgreSQL, so the report's order is
the same on every database and every server locale. PostgreSQL rebuilds the indexes on these
columns; SQLite is left as it is.
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

CODE_COLUMNS = (
    ('business_units', 'code'),
    ('work_units', 'code'),
    ('courses', 'code'),
    ('learners', 'lr_id'),
    ('enrolments', 'sch_id'),
    ('enrolments', 'crs_code'),
    ('enrolments', 'lr_id'),
)


def _collate(collation: str | None) -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    for table, column in CODE_COLUMNS:
        op.alter_column(
            table,
            column,
            type_=sa.String(length=64, collation=collation),
            existing_type=sa.String(length=64),
            existing_nullable=False,
        )


def upgrade() -> None:
    """Apply this revision."""
    _collate('C')


def downgrade() -> None:
    """Undo this revision."""
    _collate('default')
