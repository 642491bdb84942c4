"""`southrock mirror`: a local copy kept exact through the snapshot and the change feed, stopped runs resumed, cut streams refused."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Iterator

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import create_engine, select

from southrock_api.admin.cli import main as southrock
from southrock_api.admin.tokens import IssuedToken
from southrock_api.data.changes import prune
from southrock_api.data.db import get_database
from southrock_api.data.importer import import_directory
from southrock_api.data.models import BusinessUnit
from southrock_api.integrations.client import ChangesExpired, IncompleteSnapshot, SouthrockApiError, SouthrockClient
from southrock_api.integrations.mirror import MIRRORED_FIELDS, Stage, enrolments, mirror, mirror_command, mirror_state
from tests import factories
from tests.databases import fresh_database
from tests.servers import dispose, gunicorn, migrated_app
from tests.fake_feed import PRIVATE_KEY, PUBLIC_KEY, FakeFeed, row, running


class Stop(Exception):
    """Stands for a run killed at that point."""


@pytest.fixture()
def feed() -> Iterator[FakeFeed]:
    """A feed of five enrolments in two work units."""
    served = FakeFeed()
    served.put(*(row(f"S{number}", day=number) for number in range(1, 4)), row("S4", "UNIV-STAFF", 4), row("S5", "UNIV-STAFF", 5))
    with running(served):
        yield served


@pytest.fixture()
def local(backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database for the copy."""
    with fresh_database(backend, tmp_path) as url:
        yield url


def client_of(feed: FakeFeed, private_key: str = PRIVATE_KEY) -> SouthrockClient:
    """A client of the feed's site; max_attempts 1, so a failure is at once."""
    return SouthrockClient(feed.url, PUBLIC_KEY, private_key, max_attempts=1)


def copied(database_url: str) -> dict[str, dict[str, str]]:
    """The local copy's rows by SCH_ID, with the spec's names, absent values left out as the API leaves them out."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return {
                found.sch_id: {name: found._mapping[name.lower()] for name in MIRRORED_FIELDS if found._mapping[name.lower()] is not None}
                for found in connection.execute(select(enrolments))
            }
    finally:
        engine.dispose()


def stored_token(database_url: str) -> str:
    """The change token the copy is exact as of."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return str(connection.scalar(select(mirror_state.c.changes_token)))
    finally:
        engine.dispose()


def test_the_first_run_copies_the_snapshot_and_its_token(feed: FakeFeed, local: str) -> None:
    with client_of(feed) as client:
        result = mirror(client, local)
    assert (result.upserted, result.deleted, result.snapshot_taken) == (5, 0, True)
    assert result.reason == "there was no local copy yet"
    assert copied(local) == feed.listing()
    assert stored_token(local) == "5"


def test_a_later_run_applies_updates_inserts_and_deletes_and_nothing_twice(feed: FakeFeed, local: str) -> None:
    with client_of(feed) as client:
        mirror(client, local)
        feed.put(row("S2", LR_FNAME="Bétty"), row("S6", "UNIV-STAFF", 6), row("S2", LR_FNAME="Bétty", SCH_SCORE="99.5"))
        feed.remove("S3")
        result = mirror(client, local)
        assert (result.upserted, result.deleted, result.snapshot_taken) == (2, 1, False)
        assert copied(local) == feed.listing()
        assert copied(local)["S2"]["SCH_SCORE"] == "99.5"
        assert stored_token(local) == "9"
        again = mirror(client, local)
    assert (again.upserted, again.deleted, again.snapshot_taken) == (0, 0, False)
    assert copied(local) == feed.listing()


def test_a_row_without_a_date_or_score_is_copied_without_them(feed: FakeFeed, local: str) -> None:
    bare = {name: value for name, value in row("S7").items() if name not in ("SCH_AEDATE", "SCH_SCORE")}
    with client_of(feed) as client:
        mirror(client, local)
        feed.put(bare)
        mirror(client, local)
    assert copied(local)["S7"] == bare


def test_a_run_stopped_after_a_committed_page_resumes_from_that_page(feed: FakeFeed, local: str) -> None:
    pages: list[int] = []

    def stop_after_the_first_page(stage: Stage, rows: int) -> None:
        if stage == "changes":
            pages.append(rows)
            raise Stop

    with client_of(feed) as client:
        mirror(client, local)
        feed.put(*(row(f"N{number}", day=10 + number) for number in range(5)))
        feed.remove("S1", "S4")
        with pytest.raises(Stop):
            mirror(client, local, limit=2, progress=stop_after_the_first_page)
        # The first page (N0, N1) and its token are stored, nothing after them.
        assert pages == [2]
        assert stored_token(local) == "7"
        assert {"N0", "N1"} <= set(copied(local)) and "N2" not in copied(local)
        asked = len(feed.requests)
        result = mirror(client, local, limit=2)
    assert copied(local) == feed.listing()
    # The rerun started from the stored page: three more changes, each applied once.
    assert (result.upserted, result.deleted, result.snapshot_taken) == (3, 2, False)
    assert feed.requests[asked].startswith("/api/v1/enrolments/changes?since=7&")


def test_a_snapshot_stopped_before_its_commit_leaves_the_copy_and_its_token(feed: FakeFeed, local: str) -> None:
    def stop(stage: Stage, rows: int) -> None:
        raise Stop

    with client_of(feed) as client:
        mirror(client, local)
        before = copied(local)
        feed.put(row("S9"))
        feed.forgotten_through = 6
        with pytest.raises(Stop):
            mirror(client, local, progress=stop)
        assert copied(local) == before and stored_token(local) == "5"
        result = mirror(client, local)
    assert result.snapshot_taken and copied(local) == feed.listing()


def test_changes_the_site_no_longer_keeps_take_a_new_snapshot_and_say_so(feed: FakeFeed, local: str) -> None:
    with client_of(feed) as client:
        mirror(client, local)
        feed.put(row("S8", day=8))
        feed.remove("S5")
        feed.forgotten_through = 6
        with pytest.raises(ChangesExpired) as expired:
            list(client.iter_changes("5"))
        assert (expired.value.status, expired.value.code) == (410, "E3020")
        result = mirror(client, local)
    assert result.snapshot_taken
    assert result.reason == "the site no longer keeps the changes since the last run (E3020)"
    # Counted against the copy it replaced: S8 is new, S5 is gone.
    assert (result.upserted, result.deleted) == (5, 1)
    assert copied(local) == feed.listing()
    assert stored_token(local) == "7"


@pytest.mark.parametrize(
    ("cut_after", "claimed", "after_the_end", "message"),
    [
        (3, None, [], "cut after 3 rows"),
        (0, None, [], "cut after 0 rows"),
        (None, 4, [], "closed with ROWS 4 after 5 rows"),
        (None, None, [b'{"END": true, "ROWS": 5}\n'], "rows after its closing record"),
    ],
    ids=["mid-row", "before-any-row", "wrong-count", "lines-after-the-end"],
)
def test_a_cut_snapshot_is_refused_and_the_copy_kept(
    feed: FakeFeed, local: str, cut_after: int | None, claimed: int | None, after_the_end: list[bytes], message: str
) -> None:
    with client_of(feed) as client:
        mirror(client, local)
        before = copied(local)
        feed.put(row("S2", LR_FNAME="Changed"))
        feed.forgotten_through = 6
        feed.cut_snapshot_after, feed.snapshot_rows_claimed, feed.after_the_end = cut_after, claimed, after_the_end
        with pytest.raises(IncompleteSnapshot, match=message):
            mirror(client, local)
    assert copied(local) == before and stored_token(local) == "5"


def test_the_snapshot_streams_gzip_and_gives_its_token(feed: FakeFeed) -> None:
    with client_of(feed) as client, client.snapshot(orgcodes=["UNIV-STAFF"], sdate=dt.date(2025, 3, 5)) as snapshot:
        assert snapshot.changes_token == "5"
        records = list(snapshot)
    assert [(record.rnum, record.sch_id) for record in records] == [(1, "S5")]
    assert snapshot.rows == 1
    assert feed.requests[-1] == "/api/v1/enrolments/snapshot?ORGCODES=UNIV-STAFF&SDATE=2025-03-05"


def test_iter_changes_follows_next_links_and_ends_with_the_token_to_poll_with(feed: FakeFeed) -> None:
    feed.remove("S1")
    with client_of(feed) as client:
        changes = client.iter_changes("3", limit=2)
        seen = [(change.kind, change.sch_id) for change in changes]
    assert seen == [("UPSERT", "S4"), ("UPSERT", "S5"), ("DELETE", "S1")]
    assert changes.changes_token == "6"
    assert [path.split("?")[1] for path in feed.requests] == ["since=3&limit=2", "since=5&limit=2"]


def test_the_filters_narrow_the_copy_and_a_row_that_leaves_them_is_removed(feed: FakeFeed, local: str) -> None:
    with client_of(feed) as client:
        first = mirror(client, local, orgcodes=["UNIV-STUD"], edate=dt.date(2025, 3, 2))
        assert set(copied(local)) == {"S1", "S2"} and first.upserted == 2
        feed.put(row("S1", "UNIV-STAFF", 1), row("S3", day=2), row("S4", "UNIV-STAFF", 1))
        result = mirror(client, local, orgcodes=["UNIV-STUD"], edate=dt.date(2025, 3, 2))
    assert (result.upserted, result.deleted, result.snapshot_taken) == (1, 1, False)
    assert set(copied(local)) == {"S2", "S3"}


def test_other_filters_take_a_new_snapshot(feed: FakeFeed, local: str) -> None:
    with client_of(feed) as client:
        mirror(client, local, orgcodes=["UNIV-STUD"])
        same = mirror(client, local, orgcodes=["UNIV-STUD", "UNIV-STUD"])
        other = mirror(client, local, orgcodes=["UNIV-STAFF"])
    assert not same.snapshot_taken
    assert other.snapshot_taken and other.reason is not None and other.reason.startswith("the local copy was made with other filters")
    assert (other.upserted, other.deleted) == (2, 3)
    assert set(copied(local)) == {"S4", "S5"}


def test_an_api_error_is_raised_with_its_code(feed: FakeFeed, local: str) -> None:
    with client_of(feed, private_key="wrong") as client, pytest.raises(SouthrockApiError) as raised:
        mirror(client, local)
    assert (raised.value.status, raised.value.code) == (401, "E1010")


def test_the_command_prints_what_it_did(feed: FakeFeed, local: str, tmp_path: Path) -> None:
    env = {"SOUTHROCK_PUBLIC_KEY": PUBLIC_KEY, "SOUTHROCK_PRIVATE_KEY": PRIVATE_KEY}
    first = CliRunner().invoke(mirror_command, [local, "--url", feed.url, "--no-progress"], env=env)
    assert first.exit_code == 0, first.output
    assert first.stdout == "took a new snapshot: there was no local copy yet\nupserted 5, deleted 0\n"
    feed.put(row("S6"))
    feed.remove("S1")
    # `southrock mirror` is the same command, and needs none of the server's settings.
    env_with_bad_server_setting = {**env, "SOUTHROCK_RATE_LIMIT": "60 per minit"}
    second = CliRunner().invoke(southrock, ["mirror", local, "--url", feed.url, "--progress"], env=env_with_bad_server_setting)
    assert second.exit_code == 0, second.output
    assert second.stdout == "upserted 1, deleted 1\n"
    assert "Applying changes" in second.stderr


def test_the_command_defaults_to_a_sqlite_file_in_the_working_directory(feed: FakeFeed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"SOUTHROCK_PUBLIC_KEY": PUBLIC_KEY, "SOUTHROCK_PRIVATE_KEY": PRIVATE_KEY}
    result = CliRunner().invoke(mirror_command, ["--url", feed.url, "--no-progress"], env=env)
    assert result.exit_code == 0, result.output
    assert copied(f"sqlite:///{tmp_path / 'southrock-mirror.sqlite'}") == feed.listing()


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ([], "E1010: invalid credentials"),
        (["postgresql+nodriver://u:database-secret@h/db"], "the local database"),
        (["sqlite:////nonexistent-directory/copy.sqlite"], "unable to open database file"),
        (["postgresql+pg8000://u:database-secret@h/db"], "needs a driver that is not installed (pg8000)"),
    ],
    ids=["api-error", "unknown-dialect", "database-error", "driver-missing"],
)
def test_the_command_fails_in_one_line_without_the_keys(feed: FakeFeed, local: str, arguments: list[str], expected: str) -> None:
    env = {"SOUTHROCK_PUBLIC_KEY": PUBLIC_KEY, "SOUTHROCK_PRIVATE_KEY": "srsk_the-wrong-secret"}
    result = CliRunner().invoke(mirror_command, [*(arguments or [local]), "--url", feed.url, "--no-progress"], env=env)
    assert result.exit_code == 1
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output and "wrong-secret" not in result.output and "database-secret" not in result.output


# End to end: the site's own snapshot and change feed, served by gunicorn, changed by real imports.

LEARNERS = {f"L{number}": ("UNIV-STUD", "UNIV-STAFF")[number % 2] for number in range(8)}
BUSINESS_UNITS = "ORGGRP_CODE,ORGGRP_NAME,PARENT_ORGGRP_CODE\nEDU,Education,\nUNI,University,EDU\nCORP,Corporate,\n"
WORK_UNITS = "ORG_CODE,ORG_NAME,ORGGRP_CODE,PARENT_ORG_CODE\nUNIV-STUD,Students,UNI,\nUNIV-STAFF,Staff,EDU,\nCORP-1,Corporate 1,CORP,\n"


def learners_csv(units: dict[str, str]) -> str:
    """learners.csv with each learner in the given work unit."""
    lines = [f"{lr_id},Zoë,Nguyễn {lr_id},{lr_id.lower()}@test.southrock.com,{unit}" for lr_id, unit in units.items()]
    return "LR_ID,LR_FNAME,LR_SNAME,LR_EMAIL,ORG_CODE\n" + "\n".join(lines) + "\n"


def enrolments_csv(rows: dict[str, tuple[str, str, str, str, str]]) -> str:
    """enrolments.csv from SCH_ID → (LR_ID, CRS_CODE, SCH_STATUS, SCH_AEDATE, SCH_SCORE)."""
    lines = []
    for sch_id, (lr_id, crs_code, status, completed_on, score) in rows.items():
        lines.append(f"{sch_id},{lr_id},{crs_code},{status},{completed_on},{score},{100 if status == 'COMPLETED' else 40}")
    return "SCH_ID,LR_ID,CRS_CODE,SCH_STATUS,SCH_AEDATE,SCH_SCORE,SCH_PROGRESS\n" + "\n".join(lines) + "\n"


def first_enrolments() -> dict[str, tuple[str, str, str, str, str]]:
    """Thirty enrolments of the eight learners; every fifth unfinished."""
    rows = {}
    for number in range(30):
        status = "IN_PROGRESS" if number % 5 == 4 else "COMPLETED"
        completed = f"2025-03-{1 + number % 28:02d}" if status == "COMPLETED" else ""
        score = f"{60 + number}.5" if status == "COMPLETED" else ""
        rows[f"E{number:02d}"] = (f"L{number % 8}", ("ROBOT", "IFACE")[number % 2], status, completed, score)
    return rows


def files(learners: dict[str, str], rows: dict[str, tuple[str, str, str, str, str]], iface: str = "Robotic Interface") -> dict[str, str]:
    """The five import files."""
    return {
        "business_units.csv": BUSINESS_UNITS,
        "work_units.csv": WORK_UNITS,
        "courses.csv": f"CRS_CODE,CRS_DESC\nROBOT,Robotic Control\nIFACE,{iface}\n",
        "learners.csv": learners_csv(learners),
        "enrolments.csv": enrolments_csv(rows),
    }


class Site:
    """A served database, changed by imports, and a token for EDU."""

    def __init__(self, url: str, database_url: str, public_key: str, private_key: str, directory: Path) -> None:
        self.url = url
        self.database_url = database_url
        self.public_key = public_key
        self.private_key = private_key
        self.directory = directory
        self.imports = 0

    def client(self, session: requests.Session | None = None) -> SouthrockClient:
        """A client with the site's token."""
        return SouthrockClient(self.url, self.public_key, self.private_key, session=session)

    def load(self, contents: dict[str, str]) -> None:
        """Import the files, as `southrock import` does: the change log records what changed."""
        self.imports += 1
        load_files(self.database_url, self.directory / f"import-{self.imports}", contents)

    def forget_changes(self) -> None:
        """Prune every change recorded so far, as retention eventually does."""
        app = migrated_app(self.database_url)
        try:
            with get_database(app).engine.begin() as connection:
                prune(connection, dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1))
        finally:
            dispose(app)

    def listing(self) -> dict[str, dict[str, str]]:
        """Every page of /api/v1/enrolments, RNUM left out, by SCH_ID."""
        rows: dict[str, dict[str, str]] = {}
        url: str | None = self.url + "/api/v1/enrolments?limit=7"
        while url:
            response = requests.get(url, auth=(self.public_key, self.private_key), timeout=10)
            assert response.status_code == 200, response.text
            for found in response.json():
                rows[found["SCH_ID"]] = {name: value for name, value in found.items() if name != "RNUM"}
            url = response.links.get("next", {}).get("url")
        return rows


def load_files(database_url: str, directory: Path, contents: dict[str, str]) -> None:
    """Write the CSVs into directory and import them into the database."""
    directory.mkdir(parents=True)
    for name, text in contents.items():
        (directory / name).write_text(text, encoding="utf-8")
    app = migrated_app(database_url)
    try:
        with get_database(app).session_factory() as session:
            import_directory(session, directory)
    finally:
        dispose(app)


def token_for_edu(database_url: str) -> IssuedToken:
    """A token for business unit EDU."""
    app = migrated_app(database_url)
    try:
        with get_database(app).session_factory() as session:
            edu = session.scalars(select(BusinessUnit).where(BusinessUnit.code == "EDU")).one()
            issued = factories.token(session, edu)
            session.commit()
    finally:
        dispose(app)
    return issued


@pytest.fixture()
def site(backend: str, tmp_path: Path) -> Iterator[Site]:
    """Thirty enrolments imported, the site served by gunicorn with a generous rate limit."""
    with fresh_database(backend, tmp_path) as database_url:
        load_files(database_url, tmp_path / "import-0", files(LEARNERS, first_enrolments()))
        issued = token_for_edu(database_url)
        env = {
            "SOUTHROCK_DATABASE_URL": database_url,
            "SOUTHROCK_RATE_LIMIT": "1000 per 1 second",
            "SOUTHROCK_RATELIMIT_STORAGE_URI": f"sqlite:///{tmp_path / 'ratelimit.sqlite'}",
            "SOUTHROCK_GRACEFUL_TIMEOUT": "1",
        }
        with gunicorn(env, workers=2) as url:
            yield Site(url, database_url, issued.public_key, issued.private_key, tmp_path)


def changed_files() -> dict[str, str]:
    """An import that updates, inserts, moves and ends rows.

    Updates E01's score and E02's date; renames course IFACE (every IFACE row); inserts E30 and E31;
    completes E04 (unfinished before) and withdraws E05; moves L3 to CORP-1, out of EDU's sight,
    and L4 from UNIV-STUD to UNIV-STAFF.
    """
    rows = first_enrolments()
    rows["E01"] = (*rows["E01"][:4], "99.25")
    rows["E02"] = (*rows["E02"][:3], "2025-04-30", rows["E02"][4])
    rows["E04"] = (rows["E04"][0], rows["E04"][1], "COMPLETED", "2025-05-01", "71")
    rows["E05"] = (rows["E05"][0], rows["E05"][1], "WITHDRAWN", "", "")
    rows["E30"] = ("L0", "ROBOT", "COMPLETED", "2025-06-01", "88")
    rows["E31"] = ("L7", "IFACE", "COMPLETED", "2025-06-02", "75")
    learners = {**LEARNERS, "L3": "CORP-1", "L4": "UNIV-STAFF"}
    return files(learners, rows, iface="Robotic Interface (2nd edition)")


@pytest.mark.e2e
def test_the_copy_equals_the_listing_after_the_snapshot_and_after_an_import(site: Site, local: str) -> None:
    with site.client() as client:
        first = mirror(client, local)
        listing = site.listing()
        assert copied(local) == listing
        assert (first.upserted, first.deleted, first.snapshot_taken) == (len(listing), 0, True)
        site.load(changed_files())
        second = mirror(client, local, limit=4)
        after = site.listing()
        assert copied(local) == after
        assert not second.snapshot_taken
        # E05 withdrawn and L3's rows out of sight; E30, E31, E04 in.
        assert set(listing) - set(after) == {"E05", *(sch_id for sch_id in listing if listing[sch_id]["LR_ID"] == "L3")}
        assert second.deleted == len(set(listing) - set(after))
        assert {"E30", "E31", "E04"} <= set(after) - set(listing)
        assert after["E01"]["SCH_SCORE"] != listing["E01"]["SCH_SCORE"]
        third = mirror(client, local)
    assert (third.upserted, third.deleted, third.snapshot_taken) == (0, 0, False)


@pytest.mark.e2e
def test_a_stopped_run_resumes_from_its_last_page_and_applies_nothing_twice(site: Site, local: str, tmp_path: Path) -> None:
    with fresh_database("sqlite", tmp_path) as uninterrupted:
        tokens: list[str] = []
        recorder = requests.Session()
        recorder.hooks["response"].append(lambda response, *_args, **_kwargs: tokens.append(response.headers.get("X-Changes-Token", "")))

        def stop_after_the_first_page(stage: Stage, rows: int) -> None:
            if stage == "changes":
                raise Stop

        with site.client(recorder) as client:
            mirror(client, local)
            mirror(client, uninterrupted)
            site.load(changed_files())
            whole = mirror(client, uninterrupted, limit=3)
            asked = len(tokens)
            with pytest.raises(Stop):
                mirror(client, local, limit=3, progress=stop_after_the_first_page)
            assert stored_token(local) == tokens[asked]
            partial = copied(local)
            resumed = mirror(client, local, limit=3)
        assert copied(local) == site.listing() == copied(uninterrupted)
        assert partial != copied(local)
        # The first page's changes came once, in the stopped run; the rerun began after them.
        assert resumed.upserted + resumed.deleted < whole.upserted + whole.deleted


@pytest.mark.e2e
def test_changes_the_site_no_longer_keeps_take_a_new_snapshot_and_say_so_end_to_end(site: Site, local: str) -> None:
    with site.client() as client:
        mirror(client, local)
        site.load(changed_files())
        site.forget_changes()
        result = mirror(client, local)
        assert result.snapshot_taken
        assert result.reason == "the site no longer keeps the changes since the last run (E3020)"
        assert copied(local) == site.listing()
        assert not mirror(client, local).snapshot_taken


@pytest.mark.e2e
def test_southrock_mirror_prints_what_it_did_end_to_end(site: Site, local: str) -> None:
    env = {"SOUTHROCK_PUBLIC_KEY": site.public_key, "SOUTHROCK_PRIVATE_KEY": site.private_key}
    first = CliRunner().invoke(southrock, ["mirror", local, "--url", site.url, "--no-progress"], env=env)
    assert first.exit_code == 0, first.output
    rows = len(site.listing())
    assert first.stdout == f"took a new snapshot: there was no local copy yet\nupserted {rows}, deleted 0\n"
    again = CliRunner().invoke(southrock, ["mirror", local, "--url", site.url, "--no-progress"], env=env)
    assert again.stdout == "upserted 0, deleted 0\n"
