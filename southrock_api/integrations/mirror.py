"""`southrock mirror`: a local copy of the enrolments a token sees, kept current through the change feed.

The first run loads a snapshot (GET /api/v1/enrolments/snapshot) and stores the change token it came
with; later runs apply the changes since (GET /api/v1/enrolments/changes) one page at a time. The
same command is `southrock-mirror` (and `python -m southrock_api.integrations.mirror`), which needs
requests, click and SQLAlchemy only: nothing here may import the server's packages (Flask, …).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import dataclass
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, Literal

import click
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Table,
    Text,
    create_engine,
    delete,
    insert,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from southrock_api.integrations.client import (
    DEFAULT_CHANGES_LIMIT,
    MAX_CHANGES_LIMIT,
    SPEC_FIELDS,
    Change,
    ChangesExpired,
    EnrolmentRecord,
    SouthrockApiError,
    SouthrockClient,
)
from southrock_api.integrations.export import read_keys, site_options, terminate_as_interrupt

# In the working directory, like the export's output: the copy is the operator's file.
DEFAULT_DATABASE_URL = "sqlite:///southrock-mirror.sqlite"
# Snapshot rows per INSERT.
BATCH_ROWS = 5000
# Every row property but RNUM, which is a position in one listing, not a property of the enrolment.
MIRRORED_FIELDS = tuple(name for name in SPEC_FIELDS if name != "RNUM")

metadata = MetaData()
# Text as the API sends it; NULL where the API sends null (or leaves the property out, spec §5.2d).
enrolments = Table(
    "enrolments",
    metadata,
    Column("sch_id", Text, primary_key=True),
    *(Column(name.lower(), Text) for name in MIRRORED_FIELDS if name != "SCH_ID"),
)
# The snapshot being loaded: compared with the copy, then copied over it, in the same transaction.
incoming = Table(
    "mirror_incoming",
    metadata,
    Column("sch_id", Text, primary_key=True),
    *(Column(name.lower(), Text) for name in MIRRORED_FIELDS if name != "SCH_ID"),
)
# One row: where the copy comes from, what it holds, and the change-feed position it is exact as of.
mirror_state = Table(
    "mirror_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("base_url", Text, nullable=False),
    Column("public_key", Text, nullable=False),
    Column("filters", Text, nullable=False),
    Column("changes_token", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
STATE_ID = 1

Stage = Literal["snapshot", "changes"]
# Called with the stage and the rows just handled: while a snapshot loads, before its one commit;
# while changes are applied, after each page's commit.
Progress = Callable[[Stage, int], None]


@dataclass(frozen=True)
class Filters:
    """The spec's filters (§17.1.2) a copy was made with: the snapshot is asked for them, changes are narrowed to them."""

    orgcodes: tuple[str, ...] | None = None
    sdate: dt.date | None = None
    edate: dt.date | None = None

    @classmethod
    def of(cls, orgcodes: Iterable[str] | None, sdate: dt.date | None, edate: dt.date | None) -> Filters:
        """The filters in a canonical form: the same set of codes in any order is the same copy."""
        return cls(tuple(sorted(set(orgcodes))) if orgcodes is not None else None, sdate, edate)

    def to_json(self) -> str:
        """As stored in mirror_state.filters."""
        return json.dumps(
            {
                "ORGCODES": list(self.orgcodes) if self.orgcodes is not None else None,
                "SDATE": self.sdate.isoformat() if self.sdate else None,
                "EDATE": self.edate.isoformat() if self.edate else None,
            },
            sort_keys=True,
        )

    def admits(self, record: EnrolmentRecord) -> bool:
        """Whether the listing with these filters holds this row (ORGCODES matches ORG_CODE exactly)."""
        # The site narrows the feed to the filters its snapshot was taken with (they travel in the
        # token); narrowing here too keeps the copy exact should a row that left them come as an UPSERT.
        if self.orgcodes is not None and record.org_code not in self.orgcodes:
            return False
        if (self.sdate or self.edate) and record.sch_aedate is None:
            return False
        if self.sdate and record.sch_aedate and record.sch_aedate < self.sdate:
            return False
        return not (self.edate and record.sch_aedate and record.sch_aedate > self.edate)


@dataclass(frozen=True)
class MirrorResult:
    """What a run did: rows written and removed, and whether (and why) it loaded a new snapshot."""

    upserted: int
    deleted: int
    snapshot_taken: bool
    reason: str | None = None


@dataclass
class _Tally:
    upserted: int = 0
    deleted: int = 0


def mirror(
    client: SouthrockClient,
    database_url: str = DEFAULT_DATABASE_URL,
    *,
    orgcodes: Iterable[str] | None = None,
    sdate: dt.date | None = None,
    edate: dt.date | None = None,
    progress: Progress | None = None,
    limit: int = DEFAULT_CHANGES_LIMIT,
) -> MirrorResult:
    """Bring the local copy at database_url up to date with what client's token sees, through the filters.

    Without a copy made from the same site, token and filters, or when the site no longer keeps
    the changes since the copy's token (410), a snapshot replaces the rows and the token together.
    Otherwise each page of changes is committed with the token after it: a run stopped at any point
    leaves a copy exact as of its token, and the next run goes on from there.
    """
    if orgcodes is not None and isinstance(orgcodes, str):
        raise TypeError("orgcodes must be a list of work unit codes, not one string")
    filters = Filters.of(orgcodes, sdate, edate)
    report: Progress = progress or (lambda _stage, _rows: None)
    engine = create_engine(database_url)
    try:
        metadata.create_all(engine)
        tally = _Tally()
        reason = _why_snapshot(engine, client, filters)
        if reason is None:
            token = _stored_token(engine)
            try:
                _apply_changes(engine, client, token, filters, limit, tally, report)
                return MirrorResult(tally.upserted, tally.deleted, snapshot_taken=False)
            except ChangesExpired as expired:
                reason = f"the site no longer keeps the changes since the last run ({expired.code or 'HTTP 410'})"
        _load_snapshot(engine, client, filters, tally, report)
        return MirrorResult(tally.upserted, tally.deleted, snapshot_taken=True, reason=reason)
    finally:
        engine.dispose()


def _why_snapshot(engine: Engine, client: SouthrockClient, filters: Filters) -> str | None:
    """Why the copy cannot be brought up to date from its token, or None when it can."""
    with engine.connect() as connection:
        state = connection.execute(select(mirror_state).where(mirror_state.c.id == STATE_ID)).first()
    if state is None:
        return "there was no local copy yet"
    if state.base_url != client.api_url:
        return f"the local copy was made from {state.base_url}"
    if state.public_key != client.public_key:
        return "the local copy was made with another token"
    if state.filters != filters.to_json():
        return f"the local copy was made with other filters ({state.filters})"
    return None


def _stored_token(engine: Engine) -> str:
    with engine.connect() as connection:
        return str(connection.scalar(select(mirror_state.c.changes_token).where(mirror_state.c.id == STATE_ID)))


def _save_state(connection: Connection, client: SouthrockClient, filters: Filters, token: str) -> None:
    connection.execute(delete(mirror_state))
    connection.execute(
        insert(mirror_state).values(
            id=STATE_ID,
            base_url=client.api_url,
            public_key=client.public_key,
            filters=filters.to_json(),
            changes_token=token,
            updated_at=dt.datetime.now(dt.timezone.utc),
        )
    )


def _row(record: EnrolmentRecord) -> dict[str, str | None]:
    """The record as a row of `enrolments`: the API's text, NULL for an empty value."""
    spec = record.to_spec()
    return {name.lower(): spec[name] or None for name in MIRRORED_FIELDS}


def _object_row(data: dict[str, Any]) -> dict[str, str | None]:
    """A snapshot line as a row of `enrolments`: the API's text as it came, NULL for an empty or absent value."""
    return {name.lower(): data.get(name) or None for name in MIRRORED_FIELDS}


def _batches(objects: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, str | None]]]:
    iterator = iter(objects)
    while batch := [_object_row(data) for data in islice(iterator, size)]:
        yield batch


def _bulk_writer(connection: Connection, table: Table) -> Callable[[list[dict[str, str | None]]], None]:
    """INSERT batches of rows into table: on SQLite through the driver's executemany, which a million rows need."""
    names = list(table.c.keys())
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"

    def write(batch: list[dict[str, str | None]]) -> None:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql(sql, [tuple(row[name] for name in names) for row in batch])
        else:
            connection.execute(insert(table), batch)

    return write


def _load_snapshot(engine: Engine, client: SouthrockClient, filters: Filters, tally: _Tally, report: Progress) -> None:
    """Replace the copy's rows and token with a new snapshot's, in one transaction."""
    with client.snapshot(filters.orgcodes, filters.sdate, filters.edate) as snapshot:
        # One transaction: a run stopped (or a stream cut) before the commit leaves the old copy and its token.
        with engine.begin() as connection:
            # A first copy goes straight into its table; a copy that holds rows is replaced through
            # `incoming`, so that the rows the new snapshot no longer has can be counted as deleted.
            empty = connection.execute(select(enrolments.c.sch_id).limit(1)).first() is None
            target = enrolments if empty else incoming
            connection.execute(delete(incoming))
            # Stored as the API wrote them: no parsing into records and back to text.
            write = _bulk_writer(connection, target)
            for batch in _batches(snapshot.objects(), BATCH_ROWS):
                write(batch)
                report("snapshot", len(batch))
            if not empty:
                gone = connection.execute(
                    delete(enrolments).where(enrolments.c.sch_id.not_in(select(incoming.c.sch_id)))
                ).rowcount
                connection.execute(delete(enrolments))
                connection.execute(insert(enrolments).from_select(list(incoming.c.keys()), select(incoming)))
                connection.execute(delete(incoming))
                tally.deleted += gone
            _save_state(connection, client, filters, snapshot.changes_token)
        tally.upserted += snapshot.rows


def _apply_changes(
    engine: Engine, client: SouthrockClient, token: str, filters: Filters, limit: int, tally: _Tally, report: Progress
) -> None:
    """Apply the changes since token, committing each page with the token after it."""
    for changes, page_token in client.iter_changes(token, limit).pages():
        upserted, deleted = _apply_page(engine, client, filters, changes, page_token)
        tally.upserted += upserted
        tally.deleted += deleted
        report("changes", len(changes))


def _apply_page(
    engine: Engine, client: SouthrockClient, filters: Filters, changes: list[Change], token: str
) -> tuple[int, int]:
    # The last change of an enrolment in the page is its state as of the page's token.
    latest = {change.sch_id: change for change in changes}
    rows = [_row(change.record) for change in latest.values() if change.record and filters.admits(change.record)]
    kept = {row["sch_id"] for row in rows}
    # A DELETE, or an UPSERT of a row that has left the filters.
    dropped = [sch_id for sch_id in latest if sch_id not in kept]
    with engine.begin() as connection:
        deleted = connection.execute(delete(enrolments).where(enrolments.c.sch_id.in_(dropped))).rowcount if dropped else 0
        if rows:
            connection.execute(delete(enrolments).where(enrolments.c.sch_id.in_(kept)))
            connection.execute(insert(enrolments), rows)
        connection.execute(
            mirror_state.update()
            .where(mirror_state.c.id == STATE_ID)
            .values(changes_token=token, updated_at=dt.datetime.now(dt.timezone.utc))
        )
    return len(rows), deleted


def _shown(database_url: str) -> str:
    """The database URL without its password, for messages."""
    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except ArgumentError:
        return "the database URL"


def _database_problem(error: SQLAlchemyError) -> str:
    # The driver's own first line: the statement and its parameters (learners' data) stay out.
    original = getattr(error, "orig", None) or error
    return (str(original).strip().splitlines() or [type(original).__name__])[0]


def _counting() -> Iterator[Any]:
    """Nothing, of unknown length: the bar counts rows, as neither a snapshot nor the feed says how many will come."""
    yield from ()


LABELS: dict[Stage, str] = {"snapshot": "Loading a snapshot", "changes": "Applying changes"}


@click.command("mirror")
@click.argument("database_url", required=False, default=DEFAULT_DATABASE_URL, metavar="[DATABASE_URL]")
@site_options("SOUTHROCK_MIRROR_URL")
@click.option("--limit", default=DEFAULT_CHANGES_LIMIT, show_default=True, type=click.IntRange(1, MAX_CHANGES_LIMIT), help="Changes per page (each page is committed on its own).")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: on a terminal).")
def mirror_command(
    database_url: str,
    url: str,
    public_key: str | None,
    private_key_env: str,
    private_key: str | None,
    orgcodes: tuple[str, ...],
    sdate: dt.datetime | None,
    edate: dt.datetime | None,
    limit: int,
    progress: bool | None,
) -> None:
    """Keep a local copy of the enrolments a token sees in DATABASE_URL (default: southrock-mirror.sqlite here).

    The first run loads a snapshot; later runs apply the changes since the last one.
    """
    public_key, secret = read_keys(public_key, private_key_env, private_key)
    show = sys.stderr.isatty() if progress is None else progress
    try:
        make_url(database_url)
    except ArgumentError:
        raise click.BadParameter("not a database URL, e.g. sqlite:///southrock-mirror.sqlite", param_hint="DATABASE_URL") from None
    try:
        client = SouthrockClient(url, public_key, secret)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--url") from None
    try:
        with terminate_as_interrupt(), client:
            with click.progressbar(_counting(), label="Mirroring", hidden=not show, file=sys.stderr) as bar:

                def advance(stage: Stage, rows: int) -> None:
                    bar.label = LABELS[stage]
                    bar.update(rows)

                result = mirror(
                    client,
                    database_url,
                    orgcodes=orgcodes or None,
                    sdate=sdate.date() if sdate else None,
                    edate=edate.date() if edate else None,
                    progress=advance,
                    limit=limit,
                )
    except SouthrockApiError as error:
        raise click.ClickException(f"mirror failed, {_shown(database_url)} is as of its last stored change: {error}") from None
    except SQLAlchemyError as error:
        raise click.ClickException(f"the local database {_shown(database_url)} failed: {_database_problem(error)}") from None
    except ImportError as missing:
        # The URL names a driver that is not installed (postgresql:// means psycopg2).
        raise click.ClickException(
            f"the local database {_shown(database_url)} needs a driver that is not installed ({missing.name}): "
            "install it, or name an installed one in the URL (e.g. postgresql+psycopg://)"
        ) from None
    if result.snapshot_taken:
        click.echo(f"took a new snapshot: {result.reason}")
    click.echo(f"upserted {result.upserted}, deleted {result.deleted}")


def main() -> None:
    """Run the mirror on its own (`southrock-mirror`), without the server's packages."""
    mirror_command()


if __name__ == "__main__":
    main()
