"""The change log an import writes: one row per enrolment whose row changed for some token, with where it was and is."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from flask.testing import FlaskCliRunner
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from southrock_api.data import changes
from southrock_api.data.models import ChangeImport, EnrolmentChange, UnitPath
from tests.test_import import BASE, ENROLMENTS_HEADER, write_files
from tests.test_import_deletions import LEARNERS_HEADER, imported

Logged = dict[str, tuple[list[str] | None, list[str] | None]]


def logged_since(session: Session, position: int) -> Logged:
    """SCH_ID → (unit path before, unit path after) of the log rows after position (one per SCH_ID expected)."""
    session.expire_all()
    paths = {path.id: path.units for path in session.scalars(select(UnitPath))}
    found: Logged = {}
    for change in session.scalars(select(EnrolmentChange).where(EnrolmentChange.position > position)):
        assert change.sch_id not in found, f"{change.sch_id} logged twice by one import"
        before = None if change.units_before is None else _parse(paths[change.units_before])
        after = None if change.units_after is None else _parse(paths[change.units_after])
        found[change.sch_id] = (before, after)
    return found


def _parse(text: str) -> list[str]:
    info = changes.UnitPathInfo.parse(text)
    return [info.work_unit_code, *sorted(info.seen_by)]


def position(session: Session) -> int:
    """The newest position."""
    session.expire_all()
    return changes.last_position(session.connection())


STUD = ["UNIV-STUD", "B:EDU", "B:UNI", "W:UNIV-STUD"]
STUD_1 = ["UNIV-STUD-1", "B:EDU", "B:UNI", "W:UNIV-STUD", "W:UNIV-STUD-1"]


def test_a_first_import_logs_its_completed_enrolments_only(runner: FlaskCliRunner, session: Session, tmp_path: Path) -> None:
    imported(runner, write_files(tmp_path, BASE))
    # S3 is IN_PROGRESS: no token ever sees it, so no token needs telling.
    assert logged_since(session, 0) == {"S1": (None, STUD), "S2": (None, STUD_1)}


def test_an_unchanged_import_logs_nothing(runner: FlaskCliRunner, session: Session, tmp_path: Path) -> None:
    imported(runner, write_files(tmp_path, BASE))
    at = position(session)
    imported(runner, tmp_path)
    assert logged_since(session, at) == {}
    assert position(session) == at


def test_renames_and_moves_log_the_enrolments_they_touch(runner: FlaskCliRunner, session: Session, tmp_path: Path) -> None:
    imported(runner, write_files(tmp_path / "base", BASE))
    at = position(session)
    imported(runner, write_files(tmp_path / "course", {"courses.csv": "CRS_CODE,CRS_DESC\nSTUDENTS_UNI,Renamed\n"}))
    assert logged_since(session, at) == {"S2": (STUD_1, STUD_1)}
    at = position(session)
    # john moves to UNIV-STUD-1: his completed S1 leaves UNIV-STUD's own view.
    learners = LEARNERS_HEADER + "john.student,John,Student,john.student@test.southrock.com,UNIV-STUD-1\n"
    imported(runner, write_files(tmp_path / "move", {"learners.csv": learners}))
    assert logged_since(session, at) == {"S1": (STUD, STUD_1)}
    at = position(session)
    # UNIV-STUD-1 leaves UNIV-STUD for the top: both its enrolments are seen otherwise now.
    units = "ORG_CODE,ORG_NAME,ORGGRP_CODE,PARENT_ORG_CODE\nUNIV-STUD-1,Students 中 1,UNI,\n"
    imported(runner, write_files(tmp_path / "tree", {"work_units.csv": units}))
    top = ["UNIV-STUD-1", "B:EDU", "B:UNI", "W:UNIV-STUD-1"]
    assert logged_since(session, at) == {"S1": (STUD_1, top), "S2": (STUD_1, top)}


def test_status_changes_and_deletions_are_logged(runner: FlaskCliRunner, session: Session, tmp_path: Path) -> None:
    imported(runner, write_files(tmp_path / "base", BASE))
    at = position(session)
    delta = ENROLMENTS_HEADER + (
        "S1,john.student,INFCRTL_GRP3,WITHDRAWN,,,0\n"  # out of COMPLETED
        "S3,betty.student,INFCRTL_GRP3,COMPLETED,2017-03-01,70,100\n"  # into COMPLETED
        "S4,betty.student,STUDENTS_UNI,ENROLLED,,,0\n"  # new, seen by no one
    )
    imported(runner, write_files(tmp_path / "status", {"enrolments.csv": delta}))
    assert logged_since(session, at) == {"S1": (STUD, STUD), "S3": (STUD_1, STUD_1)}
    at = position(session)
    imported(runner, write_files(tmp_path / "delete", {"deletions.csv": "SCH_ID\nS2\nS4\n"}))
    assert logged_since(session, at) == {"S2": (STUD_1, None)}


def test_a_failed_import_logs_nothing(runner: FlaskCliRunner, session: Session, tmp_path: Path) -> None:
    imported(runner, write_files(tmp_path / "base", BASE))
    at = position(session)
    bad = {"courses.csv": "CRS_CODE,CRS_DESC\nSTUDENTS_UNI,Renamed\n", "deletions.csv": "SCH_ID\nNOPE\n"}
    result = runner.invoke(args=["import", str(write_files(tmp_path / "bad", bad))])
    assert result.exit_code == 1
    assert logged_since(session, at) == {}


def test_retention_prunes_old_imports_and_says_how_far(
    runner: FlaskCliRunner, session: Session, tmp_path: Path
) -> None:
    imported(runner, write_files(tmp_path / "base", BASE))
    first = position(session)
    assert changes.pruned_through(session.connection()) == 0
    # The first import was recorded long ago; the next one prunes it.
    session.execute(update(ChangeImport).values(recorded_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=31)))
    session.commit()
    imported(runner, write_files(tmp_path / "course", {"courses.csv": "CRS_CODE,CRS_DESC\nSTUDENTS_UNI,Renamed\n"}))
    session.expire_all()
    assert changes.pruned_through(session.connection()) == first
    assert set(session.scalars(select(EnrolmentChange.sch_id))) == {"S2"}
    assert position(session) > first
