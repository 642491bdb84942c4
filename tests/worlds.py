"""A small organisation with both hierarchies, shared by the HTTP contract tests."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy.orm import Session

from southrock_api.admin.tokens import IssuedToken
from southrock_api.data.models import BusinessUnit, WorkUnit
from tests import factories


@dataclass
class World:
    """Units, tokens and the SCH_IDs each unit's learners completed."""

    tokens: dict[str, IssuedToken] = field(default_factory=dict)
    completed: dict[str, list[str]] = field(default_factory=dict)


def build(session: Session) -> World:
    """Build business units EDU ⊃ EDU-VOC and CORP, and work units across them.

    EDU owns UNIV and its child UNIV-STUD; EDU-VOC owns VOC-1; CORP owns CORP-1 and CORP-SUB,
    but CORP-SUB's parent is UNIV, so both EDU and CORP see it. Each work unit's learners have
    completed and unfinished enrolments.
    """
    world = World()
    edu = factories.business_unit(session, code="EDU", name="Education")
    voc = factories.business_unit(session, code="EDU-VOC", name="Vocational", parent=edu)
    corp = factories.business_unit(session, code="CORP", name="Corporate")
    univ = factories.work_unit(session, edu, code="UNIV", name="University")
    stud = factories.work_unit(session, edu, code="UNIV-STUD", name="University - Students", parent=univ)
    voc1 = factories.work_unit(session, voc, code="VOC-1", name="Vocational 1")
    corp1 = factories.work_unit(session, corp, code="CORP-1", name="Corporate 1")
    corp_sub = factories.work_unit(session, corp, code="CORP-SUB", name="Corporate sub", parent=univ)
    robotics = factories.course(session, code="INFCRTL_GRP3", description="Robotic Control")
    interface = factories.course(session, code="STUDENTS_UNI", description="Robotic Interface")
    day = dt.date(2017, 1, 1)
    for unit in (univ, stud, voc1, corp1, corp_sub):
        ids = []
        for number, who in enumerate(("john", "betty")):
            person = factories.learner(
                session, unit, lr_id=f"{who}.{unit.code.lower()}", first_name=who.title(), surname="Student"
            )
            for course in (robotics, interface):
                row = factories.enrolment(
                    session, person, course, completed_on=day, score=Decimal("87.50") if number else Decimal("100")
                )
                ids.append(row.sch_id)
                day += dt.timedelta(days=1)
            factories.enrolment(session, person, robotics, status="IN_PROGRESS", progress=40)
            factories.enrolment(session, person, interface, status="WITHDRAWN")
        world.completed[unit.code] = ids
    holders: tuple[tuple[str, BusinessUnit | WorkUnit], ...] = (
        ("EDU", edu), ("EDU-VOC", voc), ("CORP", corp), ("UNIV", univ), ("UNIV-STUD", stud), ("CORP-1", corp1)
    )
    for name, holder in holders:
        world.tokens[name] = factories.token(session, holder)
    session.commit()
    return world


def visible_sch_ids(world: World, *units: str) -> set[str]:
    """The completed SCH_IDs of the given work units."""
    return {sch_id for unit in units for sch_id in world.completed[unit]}
