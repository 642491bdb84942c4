"""Deletions in the importer: a delta's deletions.csv, `--full` extracts, and the mass-delete rail."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from flask.testing import FlaskCliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from southrock_api.admin import tokens
from southrock_api.data.models import ApiToken, Course, Enrolment, Learner, RtopilotPush, WorkUnit
from tests.test_import import BASE, ENROLMENTS_HEADER, counts, write_files

LEARNERS_HEADER = "LR_ID,LR_FNAME,LR_SNAME,LR_EMAIL,ORG_CODE\n"


def imported(runner: FlaskCliRunner, directory: Path, *options: str) -> str:
    """Run `southrock import` and return its output, failing the test if it was refused."""
    result = runner.invoke(args=["import", *options, str(directory)])
    assert result.exit_code == 0, result.output
    return result.output


def refused(runner: FlaskCliRunner, directory: Path, *options: str) -> list[str]:
    """Run `southrock import` expecting a refusal; return its problem lines."""
    result = runner.invoke(args=["import", *options, str(directory)])
    assert result.exit_code == 1, result.output
    return [line for line in result.output.splitlines() if line]


def sch_ids(session: Session) -> set[str]:
    """The stored enrolments' SCH_IDs."""
    session.expire_all()
    return set(session.scalars(select(Enrolment.sch_id)))


def test_deletions_csv_deletes_the_named_enrolments_and_their_push_state(
    runner: FlaskCliRunner, session: Session, tmp_path: Path
) -> None:
    imported(runner, write_files(tmp_path / "base", BASE))
    s1 = session.scalar(select(Enrolment.id).where(Enrolment.sch_id == "S1"))
    assert s1 is not None
    session.add(RtopilotPush(enrolment_id=s1, pushed_progress=100, attempted_at=dt.datetime.now(dt.timezone.utc)))
    session.commit()
    output = imported(runner, write_files(tmp_path / "delta", {"deletions.csv": "SCH_ID\nS1\nS3\n"}))
    assert "deleted 2 enrolments" in output
    assert sch_ids(session) == {"S2"}
    assert session.scalar(select(RtopilotPush).where(RtopilotPush.enrolment_id == s1)) is None


def test_deletions_csv_naming_an_unknown_or_imported_enrolment_is_refused_and_nothing_changes(
    runner: FlaskCliRunner, session: Session, tmp_path: Path
) -> None:
    imported(runner, write_files(tmp_path / "base", BASE))
    before = counts(session)
    delta = {
        "enrolments.csv": ENROLMENTS_HEADER + "S4,john.student,STUDENTS_UNI,COMPLETED,2017-02-01,80,\n",
        "deletions.csv": "SCH_ID\nS1\nNOPE\nS4\n",
    }
    problems = refused(runner, write_files(tmp_path / "delta", delta))
    assert problems == [
        "deletions.csv:4: SCH_ID 'S4' is also in enrolments.csv (line 2)",
        "deletions.csv:3: SCH_ID 'NOPE' is not a stored enrolment",
    ]
    session.expire_all()
    assert counts(session) == before
    assert "S4" not in sch_ids(session)


def test_full_import_deletes_what_its_files_no_longer_hold(runner: FlaskCliRunner, session: Session, tmp_path: Path) -> None:
    imported(runner, write_files(tmp_path / "base", BASE))
    extract = {
        **BASE,
        "courses.csv": "CRS_CODE,CRS_DESC\nINFCRTL_GRP3,Robotic Control\n",
        "learners.csv": LEARNERS_HEADER + "john.student,John,Student,john.student@test.southrock.com,UNIV-STUD\n",
        "enrolments.csv": ENROLMENTS_HEADER + "S1,john.student,INFCRTL_GRP3,COMPLETED,2017-01-19,100,100\n",
        "work_units.csv": "ORG_CODE,ORG_NAME,ORGGRP_CODE,PARENT_ORG_CODE\nUNIV-STUD,University – Students,UNI,\n",
    }
    output = imported(runner, write_files(tmp_path / "full", extract), "--full", "--max-delete", "100")
    assert "deleted 2 enrolments, 1 learner, 1 course, 1 work unit" in output
    session.expire_all()
    assert sch_ids(session) == {"S1"}
    assert set(session.scalars(select(Learner.lr_id))) == {"john.student"}
    assert set(session.scalars(select(Course.code))) == {"INFCRTL_GRP3"}
    assert set(session.scalars(select(WorkUnit.code))) == {"UNIV-STUD"}


def test_without_full_absent_rows_stay(runner: FlaskCliRunner, session: Session, tmp_path: Path) -> None:
    imported(runner, write_files(tmp_path / "base", BASE))
    imported(runner, write_files(tmp_path / "delta", {"enrolments.csv": ENROLMENTS_HEADER}))
    assert sch_ids(session) == {"S1", "S2", "S3"}


def test_full_deletion_that_would_orphan_rows_is_refused_precisely(
    runner: FlaskCliRunner, session: Session, tmp_path: Path
) -> None:
    imported(runner, write_files(tmp_path / "base", BASE))
    before = counts(session)
    # betty.student is absent, but her enrolments are not in this extract's kinds: they would be orphaned.
    extract = {"learners.csv": LEARNERS_HEADER + "john.student,John,Student,john@example.org,UNIV-STUD\n"}
    problems = refused(runner, write_files(tmp_path / "full", extract), "--full")
    assert problems == [
        "learners.csv: LR_ID 'betty.student' is not in the file, so --full would delete it, "
        "but enrolment 'S2' still refers to it (2 in all)"
    ]
    session.expire_all()
    assert counts(session) == before


def test_full_deletion_of_a_unit_that_still_has_a_token_or_a_child_is_refused(
    runner: FlaskCliRunner, session: Session, tmp_path: Path
) -> None:
    imported(runner, write_files(tmp_path / "base", BASE))
    issued = tokens.create_token(session, work_unit="UNIV-STUD", description="HR")
    session.commit()
    extract = {
        "work_units.csv": "ORG_CODE,ORG_NAME,ORGGRP_CODE,PARENT_ORG_CODE\nUNIV-STUD-1,Students 1,UNI,\n",
        "learners.csv": LEARNERS_HEADER + "betty.student,Betty,Student,b@example.org,UNIV-STUD-1\n",
    }
    problems = refused(runner, write_files(tmp_path / "full", extract), "--full")
    assert problems == [
        "learners.csv: LR_ID 'john.student' is not in the file, so --full would delete it, but enrolment 'S1' still refers to it",
        f"work_units.csv: ORG_CODE 'UNIV-STUD' is not in the file, so --full would delete it, but API token {issued.public_key!r} still refers to it",
    ]


def test_the_mass_delete_rail_refuses_an_empty_extract_and_names_its_option(
    runner: FlaskCliRunner, session: Session, tmp_path: Path
) -> None:
    imported(runner, write_files(tmp_path / "base", BASE))
    empty = write_files(tmp_path / "empty", {"enrolments.csv": ENROLMENTS_HEADER})
    problems = refused(runner, empty, "--full")
    assert problems == [
        "enrolments.csv: this --full import would delete 3 of the 3 stored enrolments (100.0 %), more than "
        "--max-delete 10 % allows; if the extract is complete, run it again with --max-delete 100"
    ]
    assert sch_ids(session) == {"S1", "S2", "S3"}
    assert "deleted 3 enrolments" in imported(runner, empty, "--full", "--max-delete", "100")
    assert sch_ids(session) == set()


def test_a_revoked_token_goes_with_its_unit(runner: FlaskCliRunner, session: Session, tmp_path: Path) -> None:
    imported(runner, write_files(tmp_path / "base", BASE))
    issued = tokens.create_token(session, work_unit="UNIV-STUD-1", description="HR")
    session.commit()
    extract = {
        "work_units.csv": "ORG_CODE,ORG_NAME,ORGGRP_CODE,PARENT_ORG_CODE\nUNIV-STUD,University – Students,UNI,\n",
        "learners.csv": LEARNERS_HEADER + "john.student,John,Student,john.student@test.southrock.com,UNIV-STUD\n",
        "enrolments.csv": ENROLMENTS_HEADER + "S1,john.student,INFCRTL_GRP3,COMPLETED,2017-01-19,100,100\n",
    }
    full = write_files(tmp_path / "full", extract)
    assert refused(runner, full, "--full", "--max-delete", "100") == [
        f"work_units.csv: ORG_CODE 'UNIV-STUD-1' is not in the file, so --full would delete it, but API token {issued.public_key!r} still refers to it"
    ]
    tokens.revoke_token(session, issued.public_key)
    session.commit()
    assert "1 work unit" in imported(runner, full, "--full", "--max-delete", "100")
    session.expire_all()
    assert session.scalar(select(ApiToken).where(ApiToken.public_key == issued.public_key)) is None
