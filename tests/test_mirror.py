"""`southrock mirror`: a local copy kept exact through the snapshot and the change feed, stopped runs resumed, cut streams refused."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select

from southrock_api.admin.cli import main as southrock
from southrock_api.integrations.client import ChangesExpired, IncompleteSnapshot, SouthrockApiError, SouthrockClient
from southrock_api.integrations.mirror import MIRRORED_FIELDS, Stage, enrolments, mirror, mirror_command, mirror_state
from tests.databases import fresh_database
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
    ("cut_after", "claimed", "message"),
    [
        (3, None, "cut after 3 rows"),
        (0, None, "cut after 0 rows"),
        (None, 4, "closed with ROWS 4 after 5 rows"),
    ],
    ids=["mid-row", "before-any-row", "wrong-count"],
)
def test_a_cut_snapshot_is_refused_and_the_copy_kept(
    feed: FakeFeed, local: str, cut_after: int | None, claimed: int | None, message: str
) -> None:
    with client_of(feed) as client:
        mirror(client, local)
        before = copied(local)
        feed.put(row("S2", LR_FNAME="Changed"))
        feed.forgotten_through = 6
        feed.cut_snapshot_after, feed.snapshot_rows_claimed = cut_after, claimed
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
    ],
    ids=["api-error", "database-error"],
)
def test_the_command_fails_in_one_line_without_the_keys(feed: FakeFeed, local: str, arguments: list[str], expected: str) -> None:
    env = {"SOUTHROCK_PUBLIC_KEY": PUBLIC_KEY, "SOUTHROCK_PRIVATE_KEY": "srsk_the-wrong-secret"}
    result = CliRunner().invoke(mirror_command, [*(arguments or [local]), "--url", feed.url, "--no-progress"], env=env)
    assert result.exit_code == 1
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output and "wrong-secret" not in result.output and "database-secret" not in result.output
