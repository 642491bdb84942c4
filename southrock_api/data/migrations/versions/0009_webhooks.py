"""webhooks

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 09:00:00.000000

Webhook subscriptions and their outbox (docs/architecture.md, "Webhooks"): webhook_subscriptions,
each owned by an API token and holding the secret that signs its deliveries; webhook_events, one
`enrolments.changed` event per subscription per import, written in the import's transaction;
webhook_deliveries, where each event's delivery stands; webhook_attempts, the log of every try.
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

POSITION = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Apply this revision."""
    op.create_table('webhook_subscriptions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('public_id', sa.String(length=64), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('api_token_id', sa.Integer(), nullable=False),
    sa.Column('orgcodes', sa.Text(), nullable=True),
    sa.Column('description', sa.String(length=255), nullable=True),
    sa.Column('secret', sa.String(length=64), nullable=False),
    sa.Column('previous_secret', sa.String(length=64), nullable=True),
    sa.Column('previous_secret_expires_at', WHEN, nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('disabled_reason', sa.Text(), nullable=True),
    sa.Column('created_at', WHEN, nullable=False),
    sa.Column('consecutive_failures', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['api_token_id'], ['api_tokens.id'], name=op.f('fk_webhook_subscriptions_api_token_id_api_tokens')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_subscriptions')),
    sa.UniqueConstraint('public_id', name=op.f('uq_webhook_subscriptions_public_id'))
    )
    op.create_index(op.f('ix_webhook_subscriptions_api_token_id'), 'webhook_subscriptions', ['api_token_id'], unique=False)
    op.create_table('webhook_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('public_id', sa.String(length=64), nullable=False),
    sa.Column('subscription_id', sa.Integer(), nullable=False),
    sa.Column('created_at', WHEN, nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('first_position', POSITION, nullable=False),
    sa.Column('last_position', POSITION, nullable=False),
    sa.ForeignKeyConstraint(['subscription_id'], ['webhook_subscriptions.id'], name=op.f('fk_webhook_events_subscription_id_webhook_subscriptions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_events')),
    sa.UniqueConstraint('public_id', name=op.f('uq_webhook_events_public_id'))
    )
    op.create_index(op.f('ix_webhook_events_subscription_id'), 'webhook_events', ['subscription_id'], unique=False)
    op.create_index(op.f('ix_webhook_events_created_at'), 'webhook_events', ['created_at'], unique=False)
    op.create_table('webhook_deliveries',
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', WHEN, nullable=False),
    sa.Column('locked_until', WHEN, nullable=True),
    sa.Column('last_status', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_duration_ms', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['event_id'], ['webhook_events.id'], name=op.f('fk_webhook_deliveries_event_id_webhook_events'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_webhook_deliveries'))
    )
    op.create_index(op.f('ix_webhook_deliveries_next_attempt_at'), 'webhook_deliveries', ['next_attempt_at'], unique=False)
    op.create_table('webhook_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('at', WHEN, nullable=False),
    sa.Column('status', sa.Integer(), nullable=True),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['event_id'], ['webhook_events.id'], name=op.f('fk_webhook_attempts_event_id_webhook_events'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_attempts'))
    )
    op.create_index(op.f('ix_webhook_attempts_event_id'), 'webhook_attempts', ['event_id'], unique=False)


def downgrade() -> None:
    """Undo this revision."""
    op.drop_index(op.f('ix_webhook_attempts_event_id'), table_name='webhook_attempts')
    op.drop_table('webhook_attempts')
    op.drop_index(op.f('ix_webhook_deliveries_next_attempt_at'), table_name='webhook_deliveries')
    op.drop_table('webhook_deliveries')
    op.drop_index(op.f('ix_webhook_events_created_at'), table_name='webhook_events')
    op.drop_index(op.f('ix_webhook_events_subscription_id'), table_name='webhook_events')
    op.drop_table('webhook_events')
    op.drop_index(op.f('ix_webhook_subscriptions_api_token_id'), table_name='webhook_subscriptions')
    op.drop_table('webhook_subscriptions')
