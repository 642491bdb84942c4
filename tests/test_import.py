"""`southrock import DIR`: validation, upserts, one transaction, and the data kept safe throughout."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner, FlaskClient
from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session

import southrock_api.data
from southrock_api.data.db import (
    begin_snapshot,
    bump_data_version,
    bump_tokens_version,
    get_database,
    get_session,
    read_versions,
)
from southrock_api.data.demo import write_demo_csvs
from southrock_api.data.importer import ImportFailed, import_directory, import_size
from southrock_api.data.importer.problems import MAX_PROBLEMS
from southrock_api.data.models import BusinessUnit, Course, Enrolment, Learner, WorkUnit
from tests import factories
from tests.databases import fresh_database
from tests.servers import dispose, migrated_app

BASE = {
    "business_units.csv": "ORGGRP_CODE,ORGGRP_NAME,PARENT_ORGGRP_CODE\nEDU,Education,\nUNI,Université – Sud,EDU\n",
    "work_units.csv": (
        "ORG_CODE,ORG_NAME,ORGGRP_CODE,PARENT_ORG_CODE\n"
        "UNIV-STUD,University – Students,UNI,\n"
        "UNIV-STUD-1,Students 中 1,UNI,UNIV-STUD\n"
    ),
    "courses.csv": "CRS_CODE,CRS_DESC\nINFCRTL_GRP3,Robotic Control\nSTUDENTS_UNI,Robotic Interface – Café\n",
    "learners.csv": (
        "LR_ID,LR_FNAME,LR_SNAME,LR_EMAIL,ORG_CODE\n"
        "john.student,John,Student,john.student@test.southrock.com,UNIV-STUD\n"
        "betty.student,Bétty,Student 中,betty.student@test.southrock.com,UNIV-STUD-1\n"
    ),
    "enrolments.csv": (
        "SCH_ID,LR_ID,CRS_CODE,SCH_STATUS,SCH_AEDATE,SCH_SCORE,SCH_PROGRESS\n"
        "S1,john.student,INFCRTL_GRP3,COMPLETED,2017-01-19,100,100\n"
        "S2,betty.student,STUDENTS_UNI,COMPLETED,2017-01-03,99.5,\n"
        "S3,betty.student,INFCRTL_GRP3,IN_PROGRESS,,,40\n"
    ),
}
ENROLMENTS_HEADER = "SCH_ID,LR_ID,CRS_CODE,SCH_STATUS,SCH_AEDATE,SCH_SCORE,SCH_PROGRESS\n"
MODELS = (BusinessUnit, WorkUnit, Course, Learner, Enrolment)


def write_files(directory: Path, files: Mapping[str, str | bytes]) -> Path:
    """Write CSV files (text as UTF-8, bytes as they are) into directory."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = directory / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
    return directory


def counts(session: Session) -> dict[str, int]:
    """Row counts of the imported tables."""
    return {model.__tablename__: session.scalar(select(func.count()).select_from(model)) or 0 for model in MODELS}


def enrolment(session: Session, sch_id: str) -> Enrolment:
    """The stored enrolment with this SCH_ID, read fresh."""
    session.expire_all()
    row = session.scalar(select(Enrolment).where(Enrolment.sch_id == sch_id))
    assert row is not None
    return row


def unit_id(session: Session, model: type[BusinessUnit] | type[WorkUnit], code: str) -> int:
    """The id of a unit by code."""
    value = session.scalar(select(model.id).where(model.code == code))
    assert value is not None
    return value


def test_import_creates_every_row_and_keeps_enrolment_copies(runner: FlaskCliRunner, session: Session, tmp_path: Path) -> None:
    before = read_versions(session).data
    result = runner.invoke(args=["import", str(write_files(tmp_path, BASE))])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "imported business_units.csv 2 inserted, 0 updated; work_units.csv 2 inserted, 0 updated; "
        "courses.csv 2 inserted, 0 updated; learners.csv 2 inserted, 0 updated; enrolments.csv 3 inserted, 0 updated"
    )
    assert counts(session) == {"business_units": 2, "work_units": 2, "courses": 2, "learners": 2, "enrolments": 3}
    assert read_versions(session).data != before
    assert session.scalar(select(BusinessUnit.parent_id).where(BusinessUnit.code == "UNI")) == unit_id(session, BusinessUnit, "EDU")
    assert session.scalar(select(WorkUnit.parent_id).where(WorkUnit.code == "UNIV-STUD-1")) == unit_id(session, WorkUnit, "UNIV-STUD")
    s2 = enrolment(session, "S2")
    assert (s2.status, s2.score_hundredths, s2.progress, str(s2.completed_on)) == ("COMPLETED", 9950, 100, "2017-01-03")
    assert (s2.work_unit_id, s2.crs_code, s2.lr_id) == (unit_id(session, WorkUnit, "UNIV-STUD-1"), "STUDENTS_UNI", "betty.student")
    s3 = enrolment(session, "S3")
    assert (s3.status, s3.score_hundredths, s3.progress, s3.completed_on) == ("IN_PROGRESS", None, 40, None)


def test_reimport_updates_rows_in_place(runner: FlaskCliRunner, session: Session, tmp_path: Path) -> None:
    assert runner.invoke(args=["import", str(write_files(tmp_path / "a", BASE))]).exit_code == 0
    changed = {
        "courses.csv": "CRS_CODE,CRS_DESC\nINFCRTL_GRP3,Robotic Control II\n",
        "enrolments.csv": ENROLMENTS_HEADER
        + "S3,betty.student,INFCRTL_GRP3,COMPLETED,2018-02-28,87.25,\nS4,john.student,STUDENTS_UNI,ENROLLED,,,\n",
    }
    result = runner.invoke(args=["import", str(write_files(tmp_path / "b", changed))])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "imported courses.csv 0 inserted, 1 updated; enrolments.csv 1 inserted, 1 updated"
    s3 = enrolment(session, "S3")
    assert (s3.status, s3.score_hundredths, s3.progress, str(s3.completed_on)) == ("COMPLETED", 8725, 100, "2018-02-28")
    assert session.scalar(select(Course.description).where(Course.code == "INFCRTL_GRP3")) == "Robotic Control II"
    assert enrolment(session, "S4").progress == 0
    assert counts(session)["enrolments"] == 4


def test_moving_a_learner_repoints_all_their_enrolments(runner: FlaskCliRunner, session: Session, tmp_path: Path) -> None:
    assert runner.invoke(args=["import", str(write_files(tmp_path / "a", BASE))]).exit_code == 0
    moved = {"learners.csv": "LR_ID,LR_FNAME,LR_SNAME,LR_EMAIL,ORG_CODE\nbetty.student,Betty,Student,b@example.test,UNIV-STUD\n"}
    result = runner.invoke(args=["import", str(write_files(tmp_path / "b", moved))])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "imported learners.csv 0 inserted, 1 updated (1 learner moved to another work unit)"
    target = unit_id(session, WorkUnit, "UNIV-STUD")
    assert enrolment(session, "S2").work_unit_id == target
    assert enrolment(session, "S3").work_unit_id == target
    assert enrolment(session, "S1").work_unit_id == target


def test_delta_references_rows_already_in_the_database(runner: FlaskCliRunner, session: Session, tmp_path: Path) -> None:
    assert runner.invoke(args=["import", str(write_files(tmp_path / "a", BASE))]).exit_code == 0
    delta = {"enrolments.csv": ENROLMENTS_HEADER + "S9,john.student,STUDENTS_UNI,WITHDRAWN,,,15\n"}
    result = runner.invoke(args=["import", str(write_files(tmp_path / "b", delta))])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "imported enrolments.csv 1 inserted, 0 updated"
    assert enrolment(session, "S9").work_unit_id == unit_id(session, WorkUnit, "UNIV-STUD")


def test_bom_crlf_and_reordered_columns_are_accepted(runner: FlaskCliRunner, session: Session, tmp_path: Path) -> None:
    files: dict[str, str | bytes] = dict(BASE)
    files["courses.csv"] = "\ufeffCRS_DESC,CRS_CODE\r\nRobotic Control,INFCRTL_GRP3\r\nRobotic Interface – Café,STUDENTS_UNI\r\n"
    files["enrolments.csv"] = "\ufeff" + BASE["enrolments.csv"].replace("\n", "\r\n")
    result = runner.invoke(args=["import", str(write_files(tmp_path, files))])
    assert result.exit_code == 0, result.output
    assert session.scalar(select(Course.description).where(Course.code == "STUDENTS_UNI")) == "Robotic Interface – Café"
    assert enrolment(session, "S1").sch_id == "S1"


def test_three_byte_characters_round_trip_through_the_api(
    runner: FlaskCliRunner, client: FlaskClient, session: Session, tmp_path: Path
) -> None:
    assert runner.invoke(args=["import", str(write_files(tmp_path, BASE))]).exit_code == 0
    education = session.scalar(select(BusinessUnit).where(BusinessUnit.code == "EDU"))
    assert education is not None
    token = factories.token(session, education)
    session.commit()
    response = client.get("/api/v1/enrolments", headers={"Authorization": token.authorization})
    assert response.status_code == 200
    betty = next(row for row in response.get_json() if row["LR_ID"] == "betty.student")
    assert (betty["LR_FNAME"], betty["LR_SNAME"], betty["ORG_NAME"], betty["CRS_DESC"], betty["SCH_SCORE"]) == (
        "Bétty",
        "Student 中",
        "Students 中 1",
        "Robotic Interface – Café",
        "99.50",
    )
    assert "Student 中".encode() in response.data


BAD_INPUTS = [
    pytest.param(
        {"enrolments.csv": "SCH_ID,LR_ID,CRS_CODE,SCH_STATUS,SCH_AEDATE,SCH_SCORE\n"},
        ["enrolments.csv:1: missing column(s) SCH_PROGRESS; expected SCH_ID,LR_ID,CRS_CODE,SCH_STATUS,SCH_AEDATE,SCH_SCORE,SCH_PROGRESS"],
        id="missing-column",
    ),
    pytest.param(
        {"courses.csv": "CRS_CODE,CRS_DESC,COLOUR\n"},
        ["courses.csv:1: unknown column(s) 'COLOUR'"],
        id="unknown-column",
    ),
    pytest.param({"courses.csv": ""}, ["courses.csv:1: the file is empty; expected the header CRS_CODE,CRS_DESC"], id="empty-file"),
    pytest.param(
        {"enrolments.csv": ENROLMENTS_HEADER + "S1,john.student,INFCRTL_GRP3,COMPLETED,2017-01-19,100\n"},
        ["enrolments.csv:2: expected 7 fields, found 6"],
        id="field-count",
    ),
    pytest.param(
        {"learners.csv": BASE["learners.csv"] + "ann.other,Ann,,a@example.test,UNIV-STUD\n"},
        ["learners.csv:4: LR_SNAME is empty"],
        id="empty-required",
    ),
    pytest.param(
        {"courses.csv": BASE["courses.csv"] + "C" * 65 + ",Long code\n"},
        ["courses.csv:4: CRS_CODE is longer than 64 characters (65)"],
        id="long-code",
    ),
    pytest.param(
        {"courses.csv": BASE["courses.csv"] + "LONG," + "é" * 256 + "\n"},
        ["courses.csv:4: CRS_DESC is longer than 255 characters (256)"],
        id="long-name",
    ),
    pytest.param(
        {"learners.csv": BASE["learners.csv"] + "ann.other,Ann 😀,Other,a@example.test,UNIV-STUD\n"},
        [
            "learners.csv:4: LR_FNAME contains U+1F600, a character outside the Basic Multilingual Plane "
            "(4 bytes in UTF-8); only characters of up to 3 bytes are supported (spec §10)"
        ],
        id="four-byte-character",
    ),
    pytest.param(
        {"courses.csv": BASE["courses.csv"].encode() + b"LATIN1,Robotic \xe9 Control\n"},
        ["courses.csv:4: CRS_DESC is not valid UTF-8 (byte 0xE9)"],
        id="invalid-utf8",
    ),
    pytest.param(
        {"courses.csv": BASE["courses.csv"] + "TAB,Robotic\tControl\n"},
        ["courses.csv:4: CRS_DESC contains a control character (U+0009)"],
        id="control-character",
    ),
    pytest.param(
        {"courses.csv": 'CRS_CODE,CRS_DESC\nINFCRTL_GRP3,"Robotic\nControl"\nSTUDENTS_UNI,Robotic Interface\n'},
        ["courses.csv:2: a value spans lines 2–3; line breaks are not allowed"],
        id="line-break-in-value",
    ),
    pytest.param(
        {"business_units.csv": "ORGGRP_CODE,ORGGRP_NAME,PARENT_ORGGRP_CODE\nEDU,Education,\nUNI,University,NOPE\n"},
        ["business_units.csv:3: PARENT_ORGGRP_CODE 'NOPE' is not a known business unit"],
        id="unknown-parent-business-unit",
    ),
    pytest.param(
        {
            "work_units.csv": "ORG_CODE,ORG_NAME,ORGGRP_CODE,PARENT_ORG_CODE\n"
            "UNIV-STUD,Students,NOPE,\nUNIV-STUD-1,Students 1,UNI,GONE\n"
        },
        [
            "work_units.csv:2: ORGGRP_CODE 'NOPE' is not a known business unit",
            "work_units.csv:3: PARENT_ORG_CODE 'GONE' is not a known work unit",
        ],
        id="unknown-work-unit-references",
    ),
    pytest.param(
        {"learners.csv": BASE["learners.csv"] + "ann.other,Ann,Other,,ELSEWHERE\n"},
        ["learners.csv:4: ORG_CODE 'ELSEWHERE' is not a known work unit"],
        id="unknown-learner-work-unit",
    ),
    pytest.param(
        {"enrolments.csv": ENROLMENTS_HEADER + "S1,nobody,NOCOURSE,COMPLETED,2017-01-19,100,\n"},
        ["enrolments.csv:2: LR_ID 'nobody' is not a known learner", "enrolments.csv:2: CRS_CODE 'NOCOURSE' is not a known course"],
        id="unknown-enrolment-references",
    ),
    pytest.param(
        {
            "enrolments.csv": ENROLMENTS_HEADER
            + "S1,john.student,INFCRTL_GRP3,COMPLETED,2017-02-30,100,\n"
            + "S2,john.student,INFCRTL_GRP3,COMPLETED,19/01/2017,100,\n"
            + "S3,john.student,INFCRTL_GRP3,COMPLETED,20170119,100,\n"
        },
        [
            "enrolments.csv:2: SCH_AEDATE '2017-02-30' is not a date in the form YYYY-MM-DD",
            "enrolments.csv:3: SCH_AEDATE '19/01/2017' is not a date in the form YYYY-MM-DD",
            "enrolments.csv:4: SCH_AEDATE '20170119' is not a date in the form YYYY-MM-DD",
        ],
        id="bad-dates",
    ),
    pytest.param(
        {
            "enrolments.csv": ENROLMENTS_HEADER
            + "S1,john.student,INFCRTL_GRP3,COMPLETED,2017-01-19,100.01,\n"
            + "S2,john.student,INFCRTL_GRP3,COMPLETED,2017-01-19,-1,\n"
            + "S3,john.student,INFCRTL_GRP3,COMPLETED,2017-01-19,99.999,\n"
        },
        [
            "enrolments.csv:2: SCH_SCORE 100.01 is outside 0–100",
            "enrolments.csv:3: SCH_SCORE '-1' is not a number with at most two decimals",
            "enrolments.csv:4: SCH_SCORE '99.999' is not a number with at most two decimals",
        ],
        id="bad-scores",
    ),
    pytest.param(
        {
            "enrolments.csv": ENROLMENTS_HEADER
            + "S1,john.student,INFCRTL_GRP3,DONE,,,\n"
            + "S2,john.student,INFCRTL_GRP3,COMPLETED,,,\n"
            + "S3,john.student,INFCRTL_GRP3,COMPLETED,2017-01-19,80,50\n"
            + "S4,john.student,INFCRTL_GRP3,IN_PROGRESS,,,101\n"
        },
        [
            "enrolments.csv:2: SCH_STATUS 'DONE' is not one of COMPLETED, IN_PROGRESS, ENROLLED, WITHDRAWN",
            "enrolments.csv:3: SCH_AEDATE is required when SCH_STATUS is COMPLETED",
            "enrolments.csv:3: SCH_SCORE is required when SCH_STATUS is COMPLETED",
            "enrolments.csv:4: SCH_PROGRESS must be 100 when SCH_STATUS is COMPLETED, not 50",
            "enrolments.csv:5: SCH_PROGRESS '101' is not a whole number from 0 to 100",
        ],
        id="status-and-progress",
    ),
    pytest.param(
        {
            "enrolments.csv": ENROLMENTS_HEADER
            + "S1,john.student,INFCRTL_GRP3,ENROLLED,,,\n"
            + "S1,betty.student,INFCRTL_GRP3,ENROLLED,,,\n"
        },
        ["enrolments.csv:3: duplicate SCH_ID 'S1' (first on line 2)"],
        id="duplicate-key",
    ),
    pytest.param(
        {"business_units.csv": "ORGGRP_CODE,ORGGRP_NAME,PARENT_ORGGRP_CODE\nEDU,Education,UNI\nUNI,University,EDU\n"},
        ["business_units.csv:2: business-unit hierarchy cycle: EDU → UNI → EDU"],
        id="business-unit-cycle",
    ),
    pytest.param(
        {
            "work_units.csv": "ORG_CODE,ORG_NAME,ORGGRP_CODE,PARENT_ORG_CODE\n"
            "UNIV-STUD,Students,UNI,UNIV-STUD\nUNIV-STUD-1,Students 1,UNI,UNIV-STUD\n"
        },
        ["work_units.csv:2: work-unit hierarchy cycle: UNIV-STUD → UNIV-STUD"],
        id="work-unit-own-parent",
    ),
    pytest.param(
        {
            "enrolments.csv": ENROLMENTS_HEADER
            + "S1,john.student,INFCRTL_GRP3,COMPLETED,2017-01-19,９９.５,\n"
            + "S2,john.student,INFCRTL_GRP3,IN_PROGRESS,,,٥٠\n"
        },
        [
            "enrolments.csv:2: SCH_SCORE '９９.５' is not a number with at most two decimals",
            "enrolments.csv:3: SCH_PROGRESS '٥٠' is not a whole number from 0 to 100",
        ],
        id="non-ascii-digits",
    ),
    pytest.param(
        # One stray CR would otherwise split a row into two valid ones.
        {"enrolments.csv": ENROLMENTS_HEADER + "S1,john.student,INFCRTL_GRP3,IN_PROGRESS,,,1\rS2,john.student,STUDENTS_UNI,IN_PROGRESS,,,2\n"},
        ["enrolments.csv:2: a carriage return (CR) alone ends this line; lines must end with LF or CRLF"],
        id="lone-carriage-return",
    ),
    pytest.param(
        {"courses.csv": BASE["courses.csv"] + "SEP,Robotic\u2028Control\n"},
        ["courses.csv:4: CRS_DESC contains a control character (U+2028)"],
        id="line-separator",
    ),
    pytest.param(
        {
            "courses.csv": BASE["courses.csv"] + " PADDED ,Padded\nINFCRTL\u200bGRP3,Looks like another\n",
            "learners.csv": BASE["learners.csv"] + "ann.other,Ann,Other,a@example.test,UNIV-STUD \n",
            "enrolments.csv": ENROLMENTS_HEADER + "S1,john.student ,INFCRTL_GRP3,ENROLLED,,,\nS2,john.student,\ufeffINFCRTL_GRP3,ENROLLED,,,\n",
        },
        [
            "courses.csv:4: CRS_CODE ' PADDED ' starts or ends with a space",
            "courses.csv:5: CRS_CODE 'INFCRTL\\u200bGRP3' contains an invisible character (U+200B)",  # shown escaped
            "learners.csv:4: ORG_CODE 'UNIV-STUD ' starts or ends with a space",
            "enrolments.csv:2: LR_ID 'john.student ' starts or ends with a space",
            "enrolments.csv:3: CRS_CODE '\\ufeffINFCRTL_GRP3' contains an invisible character (U+FEFF)",
        ],
        id="codes-that-look-like-others",
    ),
]


@pytest.mark.parametrize(("changes", "problems"), BAD_INPUTS)
def test_bad_input_is_rejected_with_file_and_line_and_nothing_is_written(
    runner: FlaskCliRunner, session: Session, tmp_path: Path, changes: dict[str, str | bytes], problems: list[str]
) -> None:
    before = (counts(session), read_versions(session).data)
    result = runner.invoke(args=["import", str(write_files(tmp_path, {**BASE, **changes}))])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == problems
    assert result.stdout == ""
    assert (counts(session), read_versions(session).data) == before


def test_malformed_csv_is_reported_with_its_line(runner: FlaskCliRunner, session: Session, tmp_path: Path) -> None:
    files = {**BASE, "courses.csv": 'CRS_CODE,CRS_DESC\nINFCRTL_GRP3,Robotic Control\nSTUDENTS_UNI,"Robotic" Interface\n'}
    result = runner.invoke(args=["import", str(write_files(tmp_path, files))])
    assert result.exit_code == 1
    assert result.stderr.startswith("courses.csv:3: malformed CSV: ")
    assert counts(session)["courses"] == 0


@pytest.mark.parametrize("rows", [3, 40_000], ids=["to the end of the file", "past the field limit"])
def test_an_unclosed_quote_is_reported_on_the_line_that_opens_it(
    runner: FlaskCliRunner, session: Session, tmp_path: Path, rows: int
) -> None:
    body = "".join(f"CRS{number},Course {number}\n" for number in range(rows))
    files = {**BASE, "courses.csv": f'CRS_CODE,CRS_DESC\nOPEN,"Never closed\n{body}'}
    result = runner.invoke(args=["import", str(write_files(tmp_path, files))])
    assert result.exit_code == 1
    assert result.stderr.startswith("courses.csv:2: malformed CSV: ")
    assert "a quote opened on this line is never closed?" in result.stderr
    assert counts(session)["courses"] == 0


def test_a_cycle_through_rows_already_stored_is_rejected(runner: FlaskCliRunner, session: Session, tmp_path: Path) -> None:
    assert runner.invoke(args=["import", str(write_files(tmp_path / "a", BASE))]).exit_code == 0
    # UNI's parent is EDU in the database; making EDU a child of UNI closes a loop.
    cycle = {"business_units.csv": "ORGGRP_CODE,ORGGRP_NAME,PARENT_ORGGRP_CODE\nEDU,Education,UNI\n"}
    result = runner.invoke(args=["import", str(write_files(tmp_path / "b", cycle))])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == ["business_units.csv:2: business-unit hierarchy cycle: EDU → UNI → EDU"]
    assert session.scalar(select(BusinessUnit.parent_id).where(BusinessUnit.code == "EDU")) is None


def test_problems_are_capped(session: Session, tmp_path: Path) -> None:
    rows = "".join(f"S{n},nobody,INFCRTL_GRP3,ENROLLED,,,\n" for n in range(MAX_PROBLEMS + 20))
    with pytest.raises(ImportFailed) as failure:
        import_directory(session, write_files(tmp_path, {**BASE, "enrolments.csv": ENROLMENTS_HEADER + rows}))
    assert len(failure.value.problems) == MAX_PROBLEMS
    assert failure.value.problems[-1] == f"enrolments.csv:{MAX_PROBLEMS + 1}: LR_ID 'nobody' is not a known learner"
    assert counts(session)["learners"] == 0


def test_a_directory_without_import_files_is_rejected(runner: FlaskCliRunner, tmp_path: Path) -> None:
    result = runner.invoke(args=["import", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"{tmp_path}: none of business_units.csv, work_units.csv, courses.csv, learners.csv, enrolments.csv, deletions.csv found"
    )


def test_progress_bar_goes_to_stderr(runner: FlaskCliRunner, tmp_path: Path) -> None:
    result = runner.invoke(args=["import", "--progress", str(write_files(tmp_path, BASE))])
    assert result.exit_code == 0, result.output
    assert "Importing" in result.stderr
    assert "Importing" not in result.stdout


def test_no_progress_bar_without_a_terminal_or_with_no_progress(runner: FlaskCliRunner, tmp_path: Path) -> None:
    assert runner.invoke(args=["import", str(write_files(tmp_path / "a", BASE))]).stderr == ""
    assert runner.invoke(args=["import", "--no-progress", str(write_files(tmp_path / "b", BASE))]).stderr == ""


def test_progress_adds_up_to_the_size_of_the_files(session: Session, tmp_path: Path) -> None:
    rows = "".join(f"S{n},john.student,INFCRTL_GRP3,ENROLLED,,,\n" for n in range(25_000))
    directory = write_files(tmp_path, {**BASE, "enrolments.csv": ENROLMENTS_HEADER + rows})
    steps: list[int] = []
    import_directory(session, directory, on_progress=steps.append)
    assert sum(steps) == import_size(directory) == sum(path.stat().st_size for path in directory.iterdir())
    # Reported as the big file is read, not only at the end of each file.
    assert len(steps) > len(BASE)
    assert min(steps) > 0


def test_progress_counts_a_file_with_an_unusable_header(session: Session, tmp_path: Path) -> None:
    directory = write_files(tmp_path, {**BASE, "courses.csv": "CRS_CODE\nINFCRTL_GRP3\n"})
    steps: list[int] = []
    with pytest.raises(ImportFailed):
        import_directory(session, directory, on_progress=steps.append)
    assert sum(steps) == import_size(directory)


def test_the_data_layer_reports_progress_without_click() -> None:
    """The progress bar is the CLI's (admin/): nothing under data/ imports click."""
    data = Path(southrock_api.data.__file__).parent
    for path in data.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            assert "click" not in [module.split(".")[0] for module in modules], path


# -- data safety: real processes on a committed database ------------------------------------


def _southrock(database_url: str, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SOUTHROCK_DATABASE_URL": database_url}
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "southrock"), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _read_position(pid: int, name: str) -> int:
    """How far the process has read into its open file `name` (Linux /proc), 0 if not open."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).endswith(name):
                info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
                return int(info.split("pos:")[1].split()[0])
        except (FileNotFoundError, IndexError):
            continue
    return 0


def _index_names(app: Flask, table: str) -> list[str]:
    """The names of a table's indexes, sorted."""
    names = []
    for index in inspect(get_database(app).engine).get_indexes(table):
        assert index["name"] is not None
        names.append(index["name"])
    return sorted(names)


def _snapshot(app: Flask) -> tuple[dict[str, int], str]:
    with get_database(app).session_factory() as session:
        return counts(session), read_versions(session).data


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/fdinfo").exists(), reason="watches the import through /proc")
def test_an_import_killed_half_way_leaves_the_database_as_it_was(backend: str, tmp_path: Path) -> None:
    write_demo_csvs(tmp_path / "big", enrolments=200_000, seed=11)
    with fresh_database(backend, tmp_path) as url:
        app = migrated_app(url)
        try:
            with app.app_context(), get_database(app).session_factory() as session:
                import_directory(session, write_files(tmp_path / "base", BASE))
            before = _snapshot(app)
            process = _southrock(url, "import", "--no-progress", str(tmp_path / "big"))
            try:
                # Units, courses and learners are written before enrolments.csv is
                # opened; a few batches of enrolments later the kill lands mid-write.
                deadline = time.monotonic() + 120
                while _read_position(process.pid, "enrolments.csv") < 3_000_000:
                    assert process.poll() is None, process.communicate()
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                process.send_signal(signal.SIGKILL)
            finally:
                process.kill()
                process.communicate()
            assert process.returncode == -signal.SIGKILL
            assert _snapshot(app) == before
            with get_database(app).session_factory() as session:
                assert session.scalar(select(Learner.lr_id).where(Learner.lr_id == "john.student")) == "john.student"
        finally:
            dispose(app)


def test_a_request_reads_its_versions_and_its_page_in_one_snapshot(backend: str, tmp_path: Path) -> None:
    with fresh_database(backend, tmp_path) as url:
        app = migrated_app(url)
        try:
            with app.test_request_context("/api/v1/enrolments"):
                session = get_session()
                begin_snapshot(session)
                first = read_versions(session)
                # Another process imports and changes a token meanwhile.
                with get_database(app).session_factory() as other:
                    bump_data_version(other)
                    bump_tokens_version(other)
                    other.commit()
                # Under PostgreSQL's default READ COMMITTED this read would see the new versions.
                assert read_versions(session) == first
                session.close()
                assert read_versions(get_session()) != first
        finally:
            dispose(app)


@pytest.mark.slow
def test_pages_read_during_an_import_are_all_before_or_all_after(backend: str, tmp_path: Path) -> None:
    base = write_files(tmp_path / "base", BASE)
    # The second import rewrites every score of the first page and adds enough
    # enrolments to keep the import busy while the reader polls.
    bulk = "".join(f"B{n:07d},john.student,STUDENTS_UNI,WITHDRAWN,,,10\n" for n in range(150_000))
    update = write_files(
        tmp_path / "update",
        {
            "enrolments.csv": ENROLMENTS_HEADER
            + "S1,john.student,INFCRTL_GRP3,COMPLETED,2017-01-19,55.5,\n"
            + "S2,betty.student,STUDENTS_UNI,COMPLETED,2017-01-03,66.25,\n"
            + "S5,betty.student,INFCRTL_GRP3,COMPLETED,2019-05-05,77,\n"
            + bulk
        },
    )
    with fresh_database(backend, tmp_path) as url:
        app = migrated_app(url, RATE_LIMIT="100000 per minute", TESTING=True)
        try:
            with app.app_context(), get_database(app).session_factory() as session:
                import_directory(session, base)
                education = session.scalar(select(BusinessUnit).where(BusinessUnit.code == "EDU"))
                assert education is not None
                token = factories.token(session, education)
                session.commit()
            client = app.test_client()

            def page() -> tuple[str | None, bytes]:
                response = client.get("/api/v1/enrolments?limit=500", headers={"Authorization": token.authorization})
                assert response.status_code == 200, response.data
                return response.headers.get("X-Total-Count"), response.data

            before = page()
            indexes = _index_names(app, "enrolments")
            process = _southrock(url, "import", "--no-progress", str(update))
            seen = []
            try:
                deadline = time.monotonic() + 300
                while process.poll() is None:
                    assert time.monotonic() < deadline, "the import did not finish within 300 s"
                    seen.append(page())
            finally:
                process.kill()  # still running only if a check failed: never leave it behind
                _out, err = process.communicate()
            assert process.returncode == 0, err
            after = page()
            assert before != after
            assert after[0] == "3"
            assert seen, "the import finished before the reader could read a page"
            assert all(observed in (before, after) for observed in seen)
            # A bulk load into SQLite rebuilds the enrolment indexes: all of them must be back.
            assert _index_names(app, "enrolments") == indexes
            assert "ix_enrolments_report" in indexes
        finally:
            dispose(app)


def test_rows_after_a_malformed_record_keep_their_own_line_numbers(runner: FlaskCliRunner, session: Session, tmp_path: Path) -> None:
    files = {**BASE, "courses.csv": 'CRS_CODE,CRS_DESC\nINFCRTL_GRP3,Robotic Control\nBAD,"Robotic" Interface\nSTUDENTS_UNI,Fine\n'}
    result = runner.invoke(args=["import", str(write_files(tmp_path, files))])
    assert result.exit_code == 1
    problems = [line for line in result.stderr.splitlines() if line.startswith("courses.csv:")]
    assert len(problems) == 1 and problems[0].startswith("courses.csv:3: malformed CSV: ")
    assert counts(session)["courses"] == 0
