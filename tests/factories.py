"""Small builders of valid rows with overridable fields."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.orm import Session

from southrock_api.data.db import bump_data_version
from southrock_api.data.models import BusinessUnit, Course, Enrolment, Learner, WorkUnit
from southrock_api.admin.tokens import IssuedToken, create_token

_ids = itertools.count(1)


def _next(prefix: str) -> str:
    return f"{prefix}{next(_ids):05d}"


def business_unit(session: Session, code: str | None = None, name: str | None = None, parent: BusinessUnit | None = None) -> BusinessUnit:
    """Add a business unit."""
    unit = BusinessUnit(code=code or _next("BU"), name=name or "Business unit", parent_id=parent.id if parent else None)
    session.add(unit)
    session.flush()
    bump_data_version(session)
    return unit


def work_unit(session: Session, business: BusinessUnit, code: str | None = None, name: str | None = None, parent: WorkUnit | None = None) -> WorkUnit:
    """Add a work unit owned by a business unit."""
    unit = WorkUnit(code=code or _next("WU"), name=name or "Work unit", business_unit_id=business.id, parent_id=parent.id if parent else None)
    session.add(unit)
    session.flush()
    bump_data_version(session)
    return unit


def course(session: Session, code: str | None = None, description: str = "A course") -> Course:
    """Add a course."""
    row = Course(code=code or _next("CRS"), description=description)
    session.add(row)
    session.flush()
    return row


def learner(session: Session, unit: WorkUnit, lr_id: str | None = None, first_name: str = "Ada", surname: str = "Learner", email: str | None = None) -> Learner:
    """Add a learner to a work unit."""
    lr_id = lr_id or _next("lr.")
    row = Learner(lr_id=lr_id, first_name=first_name, surname=surname, email=email or f"{lr_id}@example.test", work_unit_id=unit.id)
    session.add(row)
    session.flush()
    return row


def enrolment(
    session: Session,
    who: Learner,
    what: Course,
    sch_id: str | None = None,
    status: str = "COMPLETED",
    completed_on: dt.date | None = dt.date(2017, 1, 19),
    score: Decimal | None = Decimal("100.00"),
    progress: int | None = None,
) -> Enrolment:
    """Add an enrolment; COMPLETED by default."""
    row = Enrolment(
        sch_id=sch_id or _next("SCH"),
        learner_id=who.id,
        course_id=what.id,
        status=status,
        completed_on=completed_on if status == "COMPLETED" else None,
        score_hundredths=int(score * 100) if score is not None and status == "COMPLETED" else None,
        progress=progress if progress is not None else (100 if status == "COMPLETED" else 0),
        work_unit_id=who.work_unit_id,
        crs_code=what.code,
        lr_id=who.lr_id,
    )
    session.add(row)
    session.flush()
    bump_data_version(session)
    return row


def token(
    session: Session, unit: BusinessUnit | WorkUnit, description: str | None = None, expires_at: dt.datetime | None = None
) -> IssuedToken:
    """Issue a token for a business or work unit."""
    if isinstance(unit, BusinessUnit):
        issued = create_token(session, business_unit=unit.code, description=description, expires_at=expires_at)
    else:
        issued = create_token(session, work_unit=unit.code, description=description, expires_at=expires_at)
    session.flush()
    return issued


@dataclass(frozen=True)
class Organisation:
    """The smallest organisation the API has something to say about: one completed enrolment."""

    business_unit: BusinessUnit
    work_unit: WorkUnit
    learner: Learner
    course: Course
    enrolment: Enrolment


def organisation(session: Session) -> Organisation:
    """Add business unit EDU (Education), its work unit UNIV-STUD, a learner there and one completed enrolment."""
    bu = business_unit(session, code="EDU", name="Education")
    wu = work_unit(session, bu, code="UNIV-STUD", name="University - Students")
    who, what = learner(session, wu), course(session)
    return Organisation(bu, wu, who, what, enrolment(session, who, what))
