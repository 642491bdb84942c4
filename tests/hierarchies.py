"""hypothesis strategies for random organisations, and the report by its plain definition."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from hypothesis import strategies as st
from sqlalchemy.orm import Session

from southrock_api.admin.tokens import IssuedToken
from southrock_api.data.models import BusinessUnit, Course, Enrolment, Learner, WorkUnit
from tests import factories

STATUSES = ("COMPLETED", "COMPLETED", "COMPLETED", "IN_PROGRESS", "WITHDRAWN")


@dataclass(frozen=True)
class Plan:
    """An organisation to build: parents point at earlier indices, so there are no cycles."""

    business_parents: list[int | None]
    work_units: list[tuple[int, int | None]]  # (owning business unit, parent work unit)
    learners: list[int]  # work unit of each learner
    enrolments: list[tuple[int, int, str, int]]  # (learner, course, status, day offset)
    courses: int
    token_unit: tuple[str, int]


@st.composite
def plans(draw: st.DrawFn, max_rows: int = 60, min_rows: int = 0) -> Plan:
    """Draw a random organisation with both trees, learners and enrolments (at least min_rows)."""
    business_count = draw(st.integers(1, 5))
    business_parents = [None] + [draw(st.none() | st.integers(0, i - 1)) for i in range(1, business_count)]
    work_count = draw(st.integers(1, 8))
    work_units = [
        (draw(st.integers(0, business_count - 1)), draw(st.none() | st.integers(0, i - 1)) if i else None)
        for i in range(work_count)
    ]
    learners = draw(st.lists(st.integers(0, work_count - 1), min_size=1, max_size=10))
    courses = draw(st.integers(1, 4))
    enrolments = draw(
        st.lists(
            st.tuples(
                st.integers(0, len(learners) - 1),
                st.integers(0, courses - 1),
                st.sampled_from(STATUSES),
                st.integers(0, 30),
            ),
            min_size=min_rows,
            max_size=max_rows,
        )
    )
    kind = draw(st.sampled_from(["business_unit", "work_unit"]))
    index = draw(st.integers(0, (business_count if kind == "business_unit" else work_count) - 1))
    return Plan(business_parents, work_units, learners, enrolments, courses, (kind, index))


@dataclass
class Built:
    """What a plan built: the token and every completed row with its work unit index."""

    token: IssuedToken
    expected: list[dict[str, str]]
    all_org_codes: set[str]


def build(session: Session, plan: Plan, tag: str) -> Built:
    """Create the plan's rows and compute the report the token must see, by definition."""
    bus: list[BusinessUnit] = []
    for i, parent in enumerate(plan.business_parents):
        bus.append(factories.business_unit(session, code=f"{tag}B{i}", name=f"Business {i}", parent=bus[parent] if parent is not None else None))
    wus: list[WorkUnit] = []
    for i, (owner, parent) in enumerate(plan.work_units):
        # Codes deliberately not in creation order, so ORG_CODE order differs from id order.
        wus.append(factories.work_unit(session, bus[owner], code=f"{tag}W{(i * 7) % 11:02d}{i}", name=f"Work {i}", parent=wus[parent] if parent is not None else None))
    courses = [factories.course(session, code=f"{tag}C{(i * 3) % 5}{i}", description=f"Course {i}") for i in range(plan.courses)]
    people = [factories.learner(session, wus[unit], lr_id=f"{tag}L{(i * 5) % 13:02d}{i}") for i, unit in enumerate(plan.learners)]
    rows: list[tuple[WorkUnit, Course, Learner, Enrolment]] = []
    for number, (who, what, status, day) in enumerate(plan.enrolments):
        score = Decimal(number % 10001) / 100
        row = factories.enrolment(
            session, people[who], courses[what], sch_id=f"{tag}S{number:04d}", status=status,
            completed_on=dt.date(2020, 1, 1) + dt.timedelta(days=day), score=score,
        )
        if status == "COMPLETED":
            rows.append((wus[plan.learners[who]], courses[what], people[who], row))
    kind, index = plan.token_unit
    unit = bus[index] if kind == "business_unit" else wus[index]
    token = factories.token(session, unit)
    session.commit()
    visible = _visible(plan, kind, index)
    expected = [_report_row(*row) for row in rows if row[0].code in {wus[i].code for i in visible}]
    expected.sort(key=lambda r: (r["ORG_CODE"], r["CRS_CODE"], r["LR_ID"], r["SCH_ID"]))
    for rnum, line in enumerate(expected, start=1):
        # In the response's key order: RNUM, then SCH_ID.
        line["RNUM"] = str(rnum)
        line["SCH_ID"] = line.pop("SCH_ID")
    return Built(token, expected, {wu.code for wu in wus})


def _report_row(wu: WorkUnit, course: Course, person: Learner, row: Enrolment) -> dict[str, str]:
    """A completed enrolment as the report shows it, with its SCH_ID (the last sort key)."""
    assert row.completed_on is not None and row.score_hundredths is not None
    return {
        "ORG_CODE": wu.code, "ORG_NAME": wu.name, "CRS_CODE": course.code, "CRS_DESC": course.description,
        "LR_ID": person.lr_id, "LR_SNAME": person.surname, "LR_FNAME": person.first_name, "LR_EMAIL": person.email,
        "SCH_AEDATE": row.completed_on.isoformat(), "SCH_SCORE": f"{Decimal(row.score_hundredths) / 100:.2f}",
        "SCH_ID": row.sch_id,
    }


def _visible(plan: Plan, kind: str, index: int) -> set[int]:
    """Work-unit indices visible to the token, straight from the definition in spec §17.1.1."""

    def business_below(b: int | None) -> bool:
        while b is not None:
            if b == index:
                return True
            b = plan.business_parents[b]
        return False

    def work_below(w: int | None, roots: set[int]) -> bool:
        while w is not None:
            if w in roots:
                return True
            w = plan.work_units[w][1]
        return False

    if kind == "business_unit":
        roots = {w for w, (owner, _) in enumerate(plan.work_units) if business_below(owner)}
    else:
        roots = {index}
    return {w for w in range(len(plan.work_units)) if work_below(w, roots)}
