"""The exact-copy invariant: for any history of imports, a copy kept by snapshot + changes equals the listing.

Random histories (hypothesis) of inserts, updates, status and date changes, renames of units,
courses and learners, learners moving between work units, work units moving between business
units and under other work units, business units moving, delta and --full deletions, interleaved
with syncs. After every sync, each copy — for business-unit and work-unit tokens, with and
without ORGCODES, SDATE and EDATE — equals `/api/v1/enrolments` for the same token and filters.
"""

from __future__ import annotations

import json
import tempfile
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, update

from southrock_api.admin import tokens
from southrock_api.data.db import get_database
from southrock_api.data.importer import ImportFailed, import_directory
from southrock_api.data.models import (
    ApiToken,
    BusinessUnit,
    ChangeImport,
    Course,
    Enrolment,
    EnrolmentChange,
    Learner,
    RtopilotPush,
    TokenAudit,
    WorkUnit,
)
from tests.test_import import write_files

SCH_IDS = [f"E{number}" for number in range(1, 9)]
LEARNERS = ["L1", "L2", "L3", "L4"]
COURSES = ["C1", "C2"]
WORK_UNITS = ["W1", "W2", "W3"]
BUSINESS_UNITS = ["ROOT", "B1", "B2"]
DATES = ["2017-01-01", "2017-01-02", "2017-01-03", "2017-01-04"]
SCORES = ["85", "90.5", "100"]
NAMES = ["Ann", "Bob", "Café"]
# Each copy: a token's unit and a query (the list's filters, which the snapshot takes too).
VIEWS = [
    ("business_unit", "ROOT", ""),
    ("business_unit", "B2", ""),
    ("work_unit", "W1", ""),
    ("business_unit", "ROOT", "ORGCODES=W2&ORGCODES=W3"),
    ("business_unit", "B1", "SDATE=2017-01-02&EDATE=2017-01-03"),
    ("work_unit", "W1", "ORGCODES=W2&SDATE=2017-01-02"),
]
MAX_PAGES = 500
_NEXT = re.compile(r'<([^>]*)>; rel="next"')


@dataclass
class World:
    """What the LMS holds: every import writes it whole (or a delta of deletions)."""

    business_unit_parent: dict[str, str | None] = field(default_factory=lambda: {"ROOT": None, "B1": "ROOT", "B2": "ROOT"})
    work_units: dict[str, tuple[str, str, str | None]] = field(
        default_factory=lambda: {"W1": ("Unit 1", "B1", None), "W2": ("Unit 2", "B1", "W1"), "W3": ("Unit 3", "B2", None)}
    )
    courses: dict[str, str] = field(default_factory=lambda: {code: f"Course {code}" for code in COURSES})
    learners: dict[str, tuple[str, str]] = field(
        default_factory=lambda: {code: (f"First {code}", work_unit) for code, work_unit in zip(LEARNERS, ["W1", "W2", "W3", "W2"])}
    )
    enrolments: dict[str, tuple[str, str, str, str, str]] = field(default_factory=dict)

    def files(self) -> dict[str, str]:
        """The five CSV files of the whole extract."""
        return {
            "business_units.csv": "ORGGRP_CODE,ORGGRP_NAME,PARENT_ORGGRP_CODE\n"
            + "".join(f"{code},Group {code},{parent or ''}\n" for code, parent in self.business_unit_parent.items()),
            "work_units.csv": "ORG_CODE,ORG_NAME,ORGGRP_CODE,PARENT_ORG_CODE\n"
            + "".join(f"{code},{name},{bu},{parent or ''}\n" for code, (name, bu, parent) in self.work_units.items()),
            "courses.csv": "CRS_CODE,CRS_DESC\n" + "".join(f"{code},{name}\n" for code, name in self.courses.items()),
            "learners.csv": "LR_ID,LR_FNAME,LR_SNAME,LR_EMAIL,ORG_CODE\n"
            + "".join(f"{code},{first},Surname,{code}@example.org,{wu}\n" for code, (first, wu) in self.learners.items()),
            "enrolments.csv": "SCH_ID,LR_ID,CRS_CODE,SCH_STATUS,SCH_AEDATE,SCH_SCORE,SCH_PROGRESS\n"
            + "".join(
                f"{sch_id},{lr},{crs},{status},{date if status == 'COMPLETED' else ''},"
                f"{score if status == 'COMPLETED' else ''},{100 if status == 'COMPLETED' else 0}\n"
                for sch_id, (lr, crs, status, date, score) in self.enrolments.items()
            ),
        }


Step = tuple[Any, ...]
enrolment = st.tuples(
    st.just("enrol"),
    st.sampled_from(SCH_IDS),
    st.sampled_from(LEARNERS),
    st.sampled_from(COURSES),
    st.sampled_from(["COMPLETED", "COMPLETED", "IN_PROGRESS"]),
    st.sampled_from(DATES),
    st.sampled_from(SCORES),
)
steps = st.one_of(
    enrolment,
    enrolment,
    st.tuples(st.just("delete"), st.sampled_from(SCH_IDS)),
    st.tuples(st.just("drop_full"), st.sampled_from(SCH_IDS)),
    st.tuples(st.just("rename_course"), st.sampled_from(COURSES), st.sampled_from(NAMES)),
    st.tuples(st.just("rename_learner"), st.sampled_from(LEARNERS), st.sampled_from(NAMES)),
    st.tuples(st.just("move_learner"), st.sampled_from(LEARNERS), st.sampled_from(WORK_UNITS)),
    st.tuples(st.just("rename_unit"), st.sampled_from(WORK_UNITS), st.sampled_from(NAMES)),
    st.tuples(st.just("move_unit"), st.sampled_from(WORK_UNITS), st.sampled_from(["B1", "B2"])),
    # Only W2 takes another parent, and W1 and W3 never do: no cycle can arise.
    st.tuples(st.just("reparent_unit"), st.sampled_from([None, "W1", "W3"])),
    st.tuples(st.just("move_business_unit"), st.sampled_from(["ROOT", "B1"])),
    st.tuples(st.just("sync"), st.integers(min_value=1, max_value=5)),
)


def apply(world: World, step: Step) -> str:
    """Change the world as the step says; return how to import it: 'full', 'delete' or '' (nothing to import)."""
    kind = step[0]
    if kind == "enrol":
        _, sch_id, lr, crs, status, date, score = step
        world.enrolments[sch_id] = (lr, crs, status, date, score)
    elif kind in ("delete", "drop_full"):
        if step[1] not in world.enrolments:
            return ""
        del world.enrolments[step[1]]
        return "delete" if kind == "delete" else "full"
    elif kind == "rename_course":
        world.courses[step[1]] = step[2]
    elif kind == "rename_learner":
        world.learners[step[1]] = (step[2], world.learners[step[1]][1])
    elif kind == "move_learner":
        world.learners[step[1]] = (world.learners[step[1]][0], step[2])
    elif kind == "rename_unit":
        _name, bu, parent = world.work_units[step[1]]
        world.work_units[step[1]] = (step[2], bu, parent)
    elif kind == "move_unit":
        name, _bu, parent = world.work_units[step[1]]
        world.work_units[step[1]] = (name, step[2], parent)
    elif kind == "reparent_unit":
        name, bu, _parent = world.work_units["W2"]
        world.work_units["W2"] = (name, bu, step[1])
    elif kind == "move_business_unit":
        world.business_unit_parent["B2"] = step[1]
    return "full"


@dataclass
class Copy:
    """One client's copy: rows by SCH_ID (without RNUM) and where its feed stands."""

    authorization: str
    query: str
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    token: str | None = None


def _without_rnum(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key != "RNUM"}


def sync(client: Any, copy: Copy, limit: int) -> None:
    """Bring the copy up to date: a snapshot the first time, the change feed after."""
    headers = {"Authorization": copy.authorization}
    if copy.token is None:
        response = client.get(f"/api/v1/enrolments/snapshot?{copy.query}", headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        lines = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
        assert lines[-1] == {"END": True, "ROWS": len(lines) - 1}
        copy.rows = {row["SCH_ID"]: _without_rnum(row) for row in lines[:-1]}
        assert [row["RNUM"] for row in lines[:-1]] == [str(number) for number in range(1, len(lines))]
        copy.token = response.headers["X-Changes-Token"]
        return
    url: str | None = f"/api/v1/enrolments/changes?since={copy.token}&limit={limit}"
    seen: set[str] = set()
    for _page in range(MAX_PAGES):
        assert url is not None
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        for change in response.get_json():
            sch_id = change["SCH_ID"]
            assert sch_id not in seen, f"{sch_id} twice in one catch-up"
            seen.add(sch_id)
            if change["CHANGE"] == "DELETE":
                assert set(change) == {"CHANGE", "SCH_ID"}
                copy.rows.pop(sch_id, None)
            else:
                assert change["CHANGE"] == "UPSERT"
                copy.rows[sch_id] = {key: value for key, value in change.items() if key != "CHANGE"}
        copy.token = response.headers["X-Changes-Token"]
        found = _NEXT.search(response.headers.get("Link", ""))
        if found is None:
            return
        url = found.group(1).split("://", 1)[-1].partition("/")[2]
        url = "/" + url
    pytest.fail(f"the change feed did not end within {MAX_PAGES} pages")


def listing(client: Any, copy: Copy) -> dict[str, dict[str, Any]]:
    """The rows /api/v1/enrolments lists for the copy's token and filters (one page holds them all)."""
    separator = "&" if copy.query else ""
    response = client.get(f"/api/v1/enrolments?{copy.query}{separator}limit=500", headers={"Authorization": copy.authorization})
    assert response.status_code == 200
    return {row["SCH_ID"]: _without_rnum(row) for row in response.get_json()}


@pytest.fixture()
def roomy_app(app_with: Callable[..., Flask]) -> Flask:
    """The app with a rate limit no history reaches."""
    return app_with(RATE_LIMIT="1000000 per minute")


def _import(app: Flask, directory: Path, full: bool) -> None:
    with get_database(app).session_factory() as session:
        try:
            import_directory(session, directory, full=full, max_delete_percent=100)
        except ImportFailed as failure:
            pytest.fail(f"import of {sorted(path.name for path in directory.iterdir())} refused: {failure.problems}")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(initial=st.lists(enrolment, max_size=8), history=st.lists(steps, min_size=1, max_size=14))
def test_a_copy_kept_by_snapshot_and_changes_equals_the_listing(
    roomy_app: Flask, tmp_path: Path, initial: list[Step], history: list[Step]
) -> None:
    _empty(roomy_app)
    _history(roomy_app, tmp_path, initial, history)


def _empty(app: Flask) -> None:
    """Start an example from no data (the test's transaction is rolled back after all of them)."""
    with get_database(app).session_factory() as session:
        for model in (RtopilotPush, EnrolmentChange, ChangeImport, TokenAudit, ApiToken, Enrolment, Learner, Course):
            session.execute(delete(model))
        session.execute(update(WorkUnit).values(parent_id=None))
        session.execute(delete(WorkUnit))
        session.execute(update(BusinessUnit).values(parent_id=None))
        session.execute(delete(BusinessUnit))
        session.commit()


def _history(app: Flask, tmp_path: Path, initial: list[Step], history: list[Step]) -> None:
    world = World()
    for step in initial:
        apply(world, step)
    # tmp_path is the test's, shared by every example: each import gets a new folder in it.
    def directory() -> Path:
        return Path(tempfile.mkdtemp(dir=tmp_path))

    _import(app, write_files(directory(), world.files()), full=True)
    copies: list[Copy] = []
    with get_database(app).session_factory() as session:
        for unit_type, code, query in VIEWS:
            if unit_type == "business_unit":
                issued = tokens.create_token(session, business_unit=code)
            else:
                issued = tokens.create_token(session, work_unit=code)
            copies.append(Copy(tokens.authorization_header(issued.public_key, issued.private_key), query))
        session.commit()
    client = app.test_client()
    for copy in copies:
        sync(client, copy, 3)
    for step in [*history, ("sync", 2)]:
        if step[0] == "sync":
            for copy in copies:
                sync(client, copy, step[1])
                assert copy.rows == listing(client, copy), f"copy for {copy.query!r} differs after {history}"
            continue
        before = dict(world.enrolments)
        how = apply(world, step)
        if how == "delete":
            (gone,) = set(before) - set(world.enrolments)
            _import(app, write_files(directory(), {"deletions.csv": f"SCH_ID\n{gone}\n"}), full=False)
        elif how == "full":
            _import(app, write_files(directory(), world.files()), full=True)
