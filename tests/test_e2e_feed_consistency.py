"""A snapshot streamed through gunicorn while an import commits is the data of one moment, and its token continues it exactly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask

from southrock_api.admin import tokens
from southrock_api.api.feed_views import SNAPSHOT_BLOCK_ROWS
from southrock_api.data.db import get_database
from southrock_api.data.importer import import_directory
from tests.databases import fresh_database
from tests.servers import dispose, gunicorn, migrated_app
from tests.test_import import write_files

# Enough rows for several blocks: the import below commits between the first and the last.
ROWS = SNAPSHOT_BLOCK_ROWS * 3
HEADER = "SCH_ID,LR_ID,CRS_CODE,SCH_STATUS,SCH_AEDATE,SCH_SCORE,SCH_PROGRESS\n"


def extract(scores: dict[str, str]) -> dict[str, str]:
    """One business unit, three work units, learners spread over them, a completion for each SCH_ID."""
    return {
        "business_units.csv": "ORGGRP_CODE,ORGGRP_NAME,PARENT_ORGGRP_CODE\nORG,Organisation,\n",
        "work_units.csv": "ORG_CODE,ORG_NAME,ORGGRP_CODE,PARENT_ORG_CODE\nA,Unit A,ORG,\nB,Unit B,ORG,\nC,Unit C,ORG,\n",
        "courses.csv": "CRS_CODE,CRS_DESC\nC1,Course\n",
        "learners.csv": "LR_ID,LR_FNAME,LR_SNAME,LR_EMAIL,ORG_CODE\n"
        + "".join(f"L{number:03},First,Last,l{number}@example.org,{'ABC'[number % 3]}\n" for number in range(300)),
        "enrolments.csv": HEADER
        + "".join(
            f"{sch_id},L{int(sch_id[1:]) % 300:03},C1,COMPLETED,2017-01-01,{score},100\n" for sch_id, score in scores.items()
        ),
    }


@pytest.fixture()
def site(backend: str, tmp_path: Path) -> Iterator[tuple[str, str, Flask]]:
    """A served site of ROWS completions, its business-unit token's Authorization, and an app to import with."""
    with fresh_database(backend, tmp_path) as database_url:
        app = migrated_app(database_url)
        try:
            with get_database(app).session_factory() as session:
                import_directory(session, write_files(tmp_path / "first", extract(_scores(ROWS, "50"))))
                issued = tokens.create_token(session, business_unit="ORG")
                session.commit()
            env = {
                "SOUTHROCK_DATABASE_URL": database_url,
                "SOUTHROCK_RATELIMIT_STORAGE_URI": "memory://",
                "SOUTHROCK_RATE_LIMIT": "1000 per minute",
            }
            with gunicorn(env, workers=1) as url:
                yield url, tokens.authorization_header(issued.public_key, issued.private_key), app
        finally:
            dispose(app)


def _scores(count: int, score: str) -> dict[str, str]:
    return {f"S{number:06}": score for number in range(count)}


def test_a_snapshot_read_while_an_import_commits_is_one_moment_and_its_token_continues_it(
    site: tuple[str, str, Flask], tmp_path: Path
) -> None:
    url, authorization, app = site
    headers = {"Authorization": authorization}
    with requests.get(f"{url}/api/v1/enrolments/snapshot", headers=headers, stream=True, timeout=60) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        first = json.loads(next(lines))
        # Every score changes, a third of the rows go and new ones come, while the stream is open.
        after = {sch_id: "75" for sch_id in _scores(ROWS, "") if int(sch_id[1:]) % 3}
        after.update({f"N{number:06}": "60" for number in range(10)})
        with get_database(app).session_factory() as session:
            import_directory(session, write_files(tmp_path / "second", extract(after)), full=True, max_delete_percent=50)
        rows = [first, *(json.loads(line) for line in lines)]
        token = response.headers["X-Changes-Token"]
    assert rows[-1] == {"END": True, "ROWS": ROWS}
    snapshot = {row["SCH_ID"]: row["SCH_SCORE"] for row in rows[:-1]}
    assert snapshot == {sch_id: "50.00" for sch_id in _scores(ROWS, "")}
    copy = dict(snapshot)
    link: str | None = f"{url}/api/v1/enrolments/changes?since={token}&limit=5000"
    for _page in range(20):
        assert link is not None
        page = requests.get(link, headers=headers, timeout=60)
        assert page.status_code == 200
        for change in page.json():
            if change["CHANGE"] == "DELETE":
                del copy[change["SCH_ID"]]
            else:
                copy[change["SCH_ID"]] = change["SCH_SCORE"]
        link = page.links.get("next", {}).get("url")
        if link is None:
            break
    assert link is None
    assert copy == {sch_id: f"{score}.00" for sch_id, score in after.items()}
