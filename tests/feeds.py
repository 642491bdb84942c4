"""Imports through the importer (the change log is written only there), and reading snapshots, listings and changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote, urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from southrock_api.admin.tokens import IssuedToken
from southrock_api.data.importer import import_directory
from southrock_api.data.models import BusinessUnit, WorkUnit
from tests import factories
from tests.apiclient import ApiClient

Row = dict[str, str]

ENROLMENTS_HEADER = "SCH_ID,LR_ID,CRS_CODE,SCH_STATUS,SCH_AEDATE,SCH_SCORE,SCH_PROGRESS\n"
LEARNERS_HEADER = "LR_ID,LR_FNAME,LR_SNAME,LR_EMAIL,ORG_CODE\n"
# EDU ⊃ UNI owns UNIV-STUD and its child UNIV-STUD-1; CORP owns CORP-1. john studies in UNIV-STUD,
# betty in UNIV-STUD-1, carl in CORP-1.
BASE = {
    "business_units.csv": "ORGGRP_CODE,ORGGRP_NAME,PARENT_ORGGRP_CODE\nEDU,Education,\nUNI,Université,EDU\nCORP,Corporate,\n",
    "work_units.csv": (
        "ORG_CODE,ORG_NAME,ORGGRP_CODE,PARENT_ORG_CODE\n"
        "UNIV-STUD,University – Students,UNI,\n"
        "UNIV-STUD-1,Students 中 1,UNI,UNIV-STUD\n"
        "CORP-1,Corporate 1,CORP,\n"
    ),
    "courses.csv": "CRS_CODE,CRS_DESC\nC1,Robotic Control\nC2,Robotic Interface – Café\n",
    "learners.csv": LEARNERS_HEADER
    + "john.student,John,Student,john@test.example,UNIV-STUD\n"
    + "betty.student,Bétty,Student 中,betty@test.example,UNIV-STUD-1\n"
    + "carl.corp,Carl,Corp,carl@test.example,CORP-1\n",
    "enrolments.csv": ENROLMENTS_HEADER
    + "S1,john.student,C1,COMPLETED,2017-01-19,100,100\n"
    + "S2,betty.student,C2,COMPLETED,2017-01-03,99.5,\n"
    + "S3,betty.student,C1,IN_PROGRESS,,,40\n"
    + "S4,carl.corp,C1,COMPLETED,2017-02-01,80,100\n"
    + "S5,john.student,C2,COMPLETED,2017-03-01,70,100\n",
}


class Importer:
    """Imports sets of CSV files, each from a directory of its own."""

    def __init__(self, session: Session, directory: Path) -> None:
        self.session = session
        self.directory = directory
        self.count = 0

    def run(self, files: Mapping[str, str], retention_days: int = 30) -> None:
        """Write the files and import them (one transaction, as `southrock import` does)."""
        self.count += 1
        directory = self.directory / f"import-{self.count}"
        directory.mkdir(parents=True)
        for name, content in files.items():
            (directory / name).write_text(content, encoding="utf-8", newline="")
        import_directory(self.session, directory, retention_days=retention_days)


def tokens(session: Session, *codes: str) -> dict[str, IssuedToken]:
    """A token for each named unit (a business unit's code, else a work unit's)."""
    issued = {}
    for code in codes:
        unit: BusinessUnit | WorkUnit | None = session.scalar(select(BusinessUnit).where(BusinessUnit.code == code))
        if unit is None:
            unit = session.scalar(select(WorkUnit).where(WorkUnit.code == code))
        assert unit is not None, code
        issued[code] = factories.token(session, unit)
    session.commit()
    return issued


def snapshot_lines(response: TestResponse) -> tuple[list[Row], dict[str, Any]]:
    """A snapshot's rows and its closing record (the last line)."""
    assert response.status_code == 200, response.get_data(as_text=True)
    text = response.get_data(as_text=True)
    assert text.endswith("\n")
    *rows, closing = [json.loads(line) for line in text.splitlines()]
    return rows, closing


def listing(api: ApiClient, query: str = "", limit: int = 3) -> list[Row]:
    """Every row of GET /api/v1/enrolments?query, page by page through the `next` links."""
    rows: list[Row] = []
    target: str | None = f"{query}&limit={limit}" if query else f"limit={limit}"
    while target is not None:
        response = api.enrolments(target)
        assert response.status_code == 200, response.get_data(as_text=True)
        rows.extend(response.get_json())
        target = next_query(response)
    return rows


def next_query(response: TestResponse) -> str | None:
    """The query of the response's `next` link, or None."""
    for link in response.headers.get("Link", "").split(", "):
        if link.endswith('rel="next"'):
            return urlsplit(link[1 : link.index(">")]).query
    return None


def since(token: str, limit: int | None = None) -> str:
    """The query of GET /api/v1/enrolments/changes for a token."""
    return f"since={quote(token)}" + (f"&limit={limit}" if limit is not None else "")


def all_changes(api: ApiClient, token: str, limit: int | None = None) -> tuple[list[Row], str, int]:
    """Follow a token's `next` links to the end: every change, the token to poll with next, and the pages read."""
    changes: list[Row] = []
    query: str | None = since(token, limit)
    pages = 0
    while query is not None:
        response = api.changes(query)
        assert response.status_code == 200, response.get_data(as_text=True)
        changes.extend(response.get_json())
        token = response.headers["X-Changes-Token"]
        query = next_query(response)
        pages += 1
    return changes, token, pages


def without_rnum(row: Row) -> Row:
    """A listing's row as a change carries it."""
    return {key: value for key, value in row.items() if key != "RNUM"}


def apply(copy: dict[str, Row], changes: list[Row]) -> dict[str, Row]:
    """A copy (SCH_ID → row without RNUM) with the changes applied in order."""
    copy = dict(copy)
    for change in changes:
        if change["CHANGE"] == "UPSERT":
            copy[change["SCH_ID"]] = {key: value for key, value in change.items() if key != "CHANGE"}
        else:
            assert set(change) == {"CHANGE", "SCH_ID"} and change["CHANGE"] == "DELETE"
            copy.pop(change["SCH_ID"], None)
    return copy


def copy_of(rows: list[Row]) -> dict[str, Row]:
    """A copy built from rows of a snapshot or a listing."""
    return {row["SCH_ID"]: without_rnum(row) for row in rows}

