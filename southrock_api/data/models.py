"""Business units, work units, courses, learners, enrolments and API tokens."""

from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import BigInteger, CheckConstraint, Date, DateTime, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from southrock_api.data.db import Base

COMPLETED = "COMPLETED"
ENROLMENT_STATUSES = ("COMPLETED", "IN_PROGRESS", "ENROLLED", "WITHDRAWN")
CODE_LENGTH = 64
NAME_LENGTH = 255
# Characters that look like nothing: soft hyphen, zero-width spaces and joiners, direction marks and
# embeddings, word joiner and invisible operators, byte-order mark. A code holding one looks like a
# code without it; the importer refuses them in codes, the API in parameter names.
INVISIBLE = "\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff"
# The report's order (work unit, course, learner, SCH_ID), then every other column a page reads.
# `status` closes both partial indexes over their own WHERE: SQLite treats an index as covering
# only if it holds every column the query names (PostgreSQL needs no such help).
REPORT_INDEX_COLUMNS = (
    "work_unit_id", "crs_code", "lr_id", "sch_id", "completed_on", "score_hundredths", "learner_id", "course_id",
    "status",
)
COMPLETED_ON_INDEX_COLUMNS = ("work_unit_id", "completed_on", "status")
# Codes sort and compare by code point on every database, as SQLite's BINARY does: a PostgreSQL
# database created with a linguistic default collation (en_US.UTF-8, ICU) would otherwise order
# the report differently from SQLite, and differently within a work unit than across work units.
CODE = String(CODE_LENGTH).with_variant(String(CODE_LENGTH, collation="C"), "postgresql")


class BusinessUnit(Base):
    """A node of the business-unit tree (ORGGRP_CODE)."""

    __tablename__ = "business_units"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(CODE, unique=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    parent_id: Mapped[Optional[int]] = mapped_column(ForeignKey("business_units.id"), index=True)

    parent: Mapped[Optional[BusinessUnit]] = relationship(remote_side=[id])


class WorkUnit(Base):
    """A node of the work-unit tree (ORG_CODE), owned by a business unit."""

    __tablename__ = "work_units"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(CODE, unique=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    business_unit_id: Mapped[int] = mapped_column(ForeignKey("business_units.id"), index=True)
    parent_id: Mapped[Optional[int]] = mapped_column(ForeignKey("work_units.id"), index=True)

    business_unit: Mapped[BusinessUnit] = relationship()
    parent: Mapped[Optional[WorkUnit]] = relationship(remote_side=[id])


class Course(Base):
    """A course (CRS_CODE)."""

    __tablename__ = "courses"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(CODE, unique=True)
    description: Mapped[str] = mapped_column(String(NAME_LENGTH))


class Learner(Base):
    """A learner (LR_ID) belonging to one work unit."""

    __tablename__ = "learners"

    id: Mapped[int] = mapped_column(primary_key=True)
    lr_id: Mapped[str] = mapped_column(CODE, unique=True)
    first_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    surname: Mapped[str] = mapped_column(String(NAME_LENGTH))
    email: Mapped[str] = mapped_column(String(NAME_LENGTH))
    work_unit_id: Mapped[int] = mapped_column(ForeignKey("work_units.id"), index=True)

    work_unit: Mapped[WorkUnit] = relationship()


class Enrolment(Base):
    """A learner's enrolment in a course (SCH_ID).

    work_unit_id, crs_code and lr_id copy the learner's work unit and the two
    codes so that the report's order (work unit, course, learner) is one index
    range per work unit; the importer keeps them in step with their sources.
    """

    __tablename__ = "enrolments"
    __table_args__ = (
        CheckConstraint(
            "status IN ('COMPLETED', 'IN_PROGRESS', 'ENROLLED', 'WITHDRAWN')", name="status"
        ),
        CheckConstraint("progress BETWEEN 0 AND 100", name="progress"),
        CheckConstraint("score_hundredths BETWEEN 0 AND 10000", name="score"),
        CheckConstraint(
            "status <> 'COMPLETED' OR (completed_on IS NOT NULL AND score_hundredths IS NOT NULL)",
            name="completed_has_date_and_score",
        ),
        # Covering: a page reads index entries only, never the table (docs/architecture.md).
        Index(
            "ix_enrolments_report",
            *REPORT_INDEX_COLUMNS,
            sqlite_where=text("status = 'COMPLETED'"),
            postgresql_where=text("status = 'COMPLETED'"),
        ),
        # Per-unit counts for a date range, read from the index alone.
        Index(
            "ix_enrolments_completed_on",
            *COMPLETED_ON_INDEX_COLUMNS,
            sqlite_where=text("status = 'COMPLETED'"),
            postgresql_where=text("status = 'COMPLETED'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sch_id: Mapped[str] = mapped_column(CODE, unique=True)
    learner_id: Mapped[int] = mapped_column(ForeignKey("learners.id"), index=True)
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id"))
    status: Mapped[str] = mapped_column(String(16))
    completed_on: Mapped[Optional[dt.date]] = mapped_column(Date)
    # Hundredths of a point: exact two-decimal scores on every database.
    score_hundredths: Mapped[Optional[int]] = mapped_column(Integer)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    work_unit_id: Mapped[int] = mapped_column(ForeignKey("work_units.id"))
    crs_code: Mapped[str] = mapped_column(CODE)
    lr_id: Mapped[str] = mapped_column(CODE)

    learner: Mapped[Learner] = relationship()
    course: Mapped[Course] = relationship()


class ApiToken(Base):
    """An API token: a public key and the hash of its private key, owned by one unit."""

    __tablename__ = "api_tokens"
    __table_args__ = (
        CheckConstraint(
            "(business_unit_id IS NULL) <> (work_unit_id IS NULL)", name="exactly_one_unit"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    public_key: Mapped[str] = mapped_column(String(CODE_LENGTH), unique=True)
    private_key_hash: Mapped[str] = mapped_column(String(CODE_LENGTH))
    business_unit_id: Mapped[Optional[int]] = mapped_column(ForeignKey("business_units.id"))
    work_unit_id: Mapped[Optional[int]] = mapped_column(ForeignKey("work_units.id"))
    description: Mapped[Optional[str]] = mapped_column(String(NAME_LENGTH))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime(timezone=True))

    business_unit: Mapped[Optional[BusinessUnit]] = relationship()
    work_unit: Mapped[Optional[WorkUnit]] = relationship()


class TokenAudit(Base):
    """One token administration event (never the secret)."""

    __tablename__ = "token_audit"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(String(NAME_LENGTH))
    action: Mapped[str] = mapped_column(String(32))
    public_key: Mapped[str] = mapped_column(String(CODE_LENGTH), index=True)
    detail: Mapped[Optional[str]] = mapped_column(Text)


class DataState(Base):
    """A single row whose versions change with every import and every change to a token."""

    __tablename__ = "data_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(String(32))
    # Read with `version` on every API request: the per-process token cache is good while it holds.
    tokens_version: Mapped[str] = mapped_column(String(32), server_default="initial")


class RtopilotPush(Base):
    """What was last pushed to RTOPilot for one enrolment, so each sync sends only increases."""

    __tablename__ = "rtopilot_pushes"
    __table_args__ = (CheckConstraint("pushed_progress BETWEEN 0 AND 100", name="pushed_progress"),)

    enrolment_id: Mapped[int] = mapped_column(
        ForeignKey("enrolments.id", ondelete="CASCADE"), primary_key=True
    )
    # None until a push for this enrolment has succeeded.
    pushed_progress: Mapped[Optional[int]] = mapped_column(Integer)
    # The RTOPilot pushed_progress was sent to (rtopilot.target_of: a digest of its URL and key);
    # at any other target the enrolment counts as never pushed.
    target: Mapped[Optional[str]] = mapped_column(String(64))
    last_error: Mapped[Optional[str]] = mapped_column(Text)
    attempted_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    pushed_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime(timezone=True))


# SQLite keeps BIGINT primary keys as plain INTEGER so that they stay the rowid (and autoincrement).
POSITION = BigInteger().with_variant(Integer(), "sqlite")


class UnitPath(Base):
    """A work unit's place in both trees as the change log records it (data.changes.unit_path)."""

    __tablename__ = "unit_paths"

    id: Mapped[int] = mapped_column(primary_key=True)
    # JSON: the work unit's code, then "B:code" and "W:code" of every unit whose tokens see it.
    units: Mapped[str] = mapped_column(Text)
    # The text's SHA-256: unique where the text itself may be too long for an index.
    digest: Mapped[str] = mapped_column(String(64), unique=True)


class EnrolmentChange(Base):
    """One enrolment whose row, as some token sees it, an import changed (the change feed, data.changes).

    `units_before` and `units_after` are the enrolment's place in both trees (a UnitPath) before and
    after the change, so a token is told of a row that left it and never of one it could not see;
    None where the enrolment did not exist (before) or was deleted (after).
    """

    __tablename__ = "enrolment_changes"
    # AUTOINCREMENT: positions never go back, even after pruning has emptied the table.
    __table_args__ = (Index("ix_enrolment_changes_sch_id", "sch_id", "position"), {"sqlite_autoincrement": True})

    position: Mapped[int] = mapped_column(POSITION, primary_key=True, autoincrement=True)
    sch_id: Mapped[str] = mapped_column(CODE)
    units_before: Mapped[Optional[int]] = mapped_column(Integer)
    units_after: Mapped[Optional[int]] = mapped_column(Integer)


class ChangeImport(Base):
    """One import that recorded changes: the last position it took and when, for retention."""

    __tablename__ = "change_imports"

    id: Mapped[int] = mapped_column(primary_key=True)
    last_position: Mapped[int] = mapped_column(POSITION)
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    changes: Mapped[int] = mapped_column(Integer)


class ChangeLogState(Base):
    """The change log's single row: the key that seals feed tokens and how far pruning has reached."""

    __tablename__ = "change_log_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Random per site, created by the migration: a changes token names its scope and position
    # under this seal, so an edited one is refused.
    seal_key: Mapped[str] = mapped_column(String(64))
    # Every position up to here may have been pruned: a token from before it must take a new snapshot.
    pruned_through: Mapped[int] = mapped_column(POSITION, server_default="0")


class WebhookSubscription(Base):
    """A receiver told of the changes its API token sees (docs/architecture.md, "Webhooks").

    The secret is stored as given to the subscriber (`whsec_…`): HMAC signing needs it, unlike a
    token's private key. During a rotation's overlap the previous secret signs too.
    """

    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(CODE_LENGTH), unique=True)
    url: Mapped[str] = mapped_column(Text)
    api_token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id"), index=True)
    # JSON array of ORG_CODEs narrowing the token's scope; None: all it sees.
    orgcodes: Mapped[Optional[str]] = mapped_column(Text)
    description: Mapped[Optional[str]] = mapped_column(String(NAME_LENGTH))
    secret: Mapped[str] = mapped_column(String(CODE_LENGTH))
    previous_secret: Mapped[Optional[str]] = mapped_column(String(CODE_LENGTH))
    previous_secret_expires_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime(timezone=True))
    enabled: Mapped[bool] = mapped_column(default=True)
    disabled_reason: Mapped[Optional[str]] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)

    api_token: Mapped[ApiToken] = relationship()


class WebhookEvent(Base):
    """One `enrolments.changed` event for one subscription, written in the import's transaction (the outbox)."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    # `evt_…`: the webhook-id header, the same on every attempt and replay.
    public_id: Mapped[str] = mapped_column(String(CODE_LENGTH), unique=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    payload: Mapped[str] = mapped_column(Text)
    first_position: Mapped[int] = mapped_column(POSITION)
    last_position: Mapped[int] = mapped_column(POSITION)


class WebhookDelivery(Base):
    """Where an event's delivery stands: pending (with its next try), succeeded, or dead."""

    __tablename__ = "webhook_deliveries"

    event_id: Mapped[int] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    # A worker that has claimed the delivery holds it until then; a crashed worker's claim lapses.
    locked_until: Mapped[Optional[dt.datetime]] = mapped_column(DateTime(timezone=True))
    last_status: Mapped[Optional[int]] = mapped_column(Integer)
    last_error: Mapped[Optional[str]] = mapped_column(Text)
    last_duration_ms: Mapped[Optional[int]] = mapped_column(Integer)


class WebhookAttempt(Base):
    """One attempt to deliver an event, for `southrock webhooks deliveries`."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[Optional[int]] = mapped_column(Integer)
    duration_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[Optional[str]] = mapped_column(Text)
