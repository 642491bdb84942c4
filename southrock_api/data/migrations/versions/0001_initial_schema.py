"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 11:15:19.214584
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table('business_units',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['parent_id'], ['business_units.id'], name=op.f('fk_business_units_parent_id_business_units')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_business_units')),
    sa.UniqueConstraint('code', name=op.f('uq_business_units_code'))
    )
    with op.batch_alter_table('business_units', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_business_units_parent_id'), ['parent_id'], unique=False)

    op.create_table('courses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('description', sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_courses')),
    sa.UniqueConstraint('code', name=op.f('uq_courses_code'))
    )
    op.create_table('data_state',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_data_state'))
    )
    op.create_table('token_audit',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=255), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('public_key', sa.String(length=64), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_token_audit'))
    )
    with op.batch_alter_table('token_audit', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_token_audit_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_token_audit_public_key'), ['public_key'], unique=False)

    op.create_table('work_units',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('business_unit_id', sa.Integer(), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['business_unit_id'], ['business_units.id'], name=op.f('fk_work_units_business_unit_id_business_units')),
    sa.ForeignKeyConstraint(['parent_id'], ['work_units.id'], name=op.f('fk_work_units_parent_id_work_units')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_work_units')),
    sa.UniqueConstraint('code', name=op.f('uq_work_units_code'))
    )
    with op.batch_alter_table('work_units', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_work_units_business_unit_id'), ['business_unit_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_work_units_parent_id'), ['parent_id'], unique=False)

    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('public_key', sa.String(length=64), nullable=False),
    sa.Column('private_key_hash', sa.String(length=64), nullable=False),
    sa.Column('business_unit_id', sa.Integer(), nullable=True),
    sa.Column('work_unit_id', sa.Integer(), nullable=True),
    sa.Column('description', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint('(business_unit_id IS NULL) <> (work_unit_id IS NULL)', name=op.f('ck_api_tokens_exactly_one_unit')),
    sa.ForeignKeyConstraint(['business_unit_id'], ['business_units.id'], name=op.f('fk_api_tokens_business_unit_id_business_units')),
    sa.ForeignKeyConstraint(['work_unit_id'], ['work_units.id'], name=op.f('fk_api_tokens_work_unit_id_work_units')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('public_key', name=op.f('uq_api_tokens_public_key'))
    )
    op.create_table('learners',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('lr_id', sa.String(length=64), nullable=False),
    sa.Column('first_name', sa.String(length=255), nullable=False),
    sa.Column('surname', sa.String(length=255), nullable=False),
    sa.Column('email', sa.String(length=255), nullable=False),
    sa.Column('work_unit_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['work_unit_id'], ['work_units.id'], name=op.f('fk_learners_work_unit_id_work_units')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_learners')),
    sa.UniqueConstraint('lr_id', name=op.f('uq_learners_lr_id'))
    )
    with op.batch_alter_table('learners', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_learners_work_unit_id'), ['work_unit_id'], unique=False)

    op.create_table('enrolments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sch_id', sa.String(length=64), nullable=False),
    sa.Column('learner_id', sa.Integer(), nullable=False),
    sa.Column('course_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('completed_on', sa.Date(), nullable=True),
    sa.Column('score_hundredths', sa.Integer(), nullable=True),
    sa.Column('progress', sa.Integer(), nullable=False),
    sa.Column('work_unit_id', sa.Integer(), nullable=False),
    sa.Column('crs_code', sa.String(length=64), nullable=False),
    sa.Column('lr_id', sa.String(length=64), nullable=False),
    sa.CheckConstraint("status <> 'COMPLETED' OR (completed_on IS NOT NULL AND score_hundredths IS NOT NULL)", name=op.f('ck_enrolments_completed_has_date_and_score')),
    sa.CheckConstraint("status IN ('COMPLETED', 'IN_PROGRESS', 'ENROLLED', 'WITHDRAWN')", name=op.f('ck_enrolments_status')),
    sa.CheckConstraint('progress BETWEEN 0 AND 100', name=op.f('ck_enrolments_progress')),
    sa.CheckConstraint('score_hundredths BETWEEN 0 AND 10000', name=op.f('ck_enrolments_score')),
    sa.ForeignKeyConstraint(['course_id'], ['courses.id'], name=op.f('fk_enrolments_course_id_courses')),
    sa.ForeignKeyConstraint(['learner_id'], ['learners.id'], name=op.f('fk_enrolments_learner_id_learners')),
    sa.ForeignKeyConstraint(['work_unit_id'], ['work_units.id'], name=op.f('fk_enrolments_work_unit_id_work_units')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_enrolments')),
    sa.UniqueConstraint('sch_id', name=op.f('uq_enrolments_sch_id'))
    )
    with op.batch_alter_table('enrolments', schema=None) as batch_op:
        batch_op.create_index('ix_enrolments_completed_on', ['work_unit_id', 'completed_on'], unique=False, sqlite_where=sa.text("status = 'COMPLETED'"), postgresql_where=sa.text("status = 'COMPLETED'"))
        batch_op.create_index(batch_op.f('ix_enrolments_course_id'), ['course_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_enrolments_learner_id'), ['learner_id'], unique=False)
        batch_op.create_index('ix_enrolments_report', ['work_unit_id', 'crs_code', 'lr_id', 'sch_id'], unique=False, sqlite_where=sa.text("status = 'COMPLETED'"), postgresql_where=sa.text("status = 'COMPLETED'"))



def downgrade() -> None:
    """Undo this revision."""
    with op.batch_alter_table('enrolments', schema=None) as batch_op:
        batch_op.drop_index('ix_enrolments_report', sqlite_where=sa.text("status = 'COMPLETED'"), postgresql_where=sa.text("status = 'COMPLETED'"))
        batch_op.drop_index(batch_op.f('ix_enrolments_learner_id'))
        batch_op.drop_index(batch_op.f('ix_enrolments_course_id'))
        batch_op.drop_index('ix_enrolments_completed_on', sqlite_where=sa.text("status = 'COMPLETED'"), postgresql_where=sa.text("status = 'COMPLETED'"))

    op.drop_table('enrolments')
    with op.batch_alter_table('learners', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_learners_work_unit_id'))

    op.drop_table('learners')
    op.drop_table('api_tokens')
    with op.batch_alter_table('work_units', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_work_units_parent_id'))
        batch_op.drop_index(batch_op.f('ix_work_units_business_unit_id'))

    op.drop_table('work_units')
    with op.batch_alter_table('token_audit', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_token_audit_public_key'))
        batch_op.drop_index(batch_op.f('ix_token_audit_at'))

    op.drop_table('token_audit')
    op.drop_table('data_state')
    op.drop_table('courses')
    with op.batch_alter_table('business_units', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_business_units_parent_id'))

    op.drop_table('business_units')
