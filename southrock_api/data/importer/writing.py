"""Writing rows: batches, one table writer per database (SQLite, PostgreSQL) and the SQLite bulk-load settings."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Container, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from itertools import islice
from typing import Any, TypeVar

from sqlalchemy import Connection, Executable, Insert, Table, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from southrock_api.data.importer.formats import FileSpec
from southrock_api.data.importer.problems import Problems

BATCH_ROWS = 10_000
# Rebuild a table's indexes after a load of at least this many rows, and at least
# half as many as the table holds.
REBUILD_MIN_ROWS = 100_000
# SQLite page cache for the import's connection (negative = KiB): big enough that
# the enrolment indexes of a million-row load stay in memory between batches.
SQLITE_IMPORT_CACHE_KIB = 512 * 1024

Row = TypeVar("Row")
# Told, before they are written, the keys of stored rows whose values change (data.changes).
OnChange = Callable[[list[Any]], None]


def batches(rows: Iterable[Row]) -> Iterator[list[Row]]:
    """The rows in lists of BATCH_ROWS (the last one shorter), every row consumed."""
    iterator = iter(rows)
    while batch := list(islice(iterator, BATCH_ROWS)):
        yield batch


@dataclass(frozen=True)
class FileCounts:
    """How many rows of one file created new records and how many updated existing ones."""

    file: str
    inserted: int
    updated: int


class TableWriter(ABC):
    """Writes batches of row tuples (in `columns` order, key first) into a table and counts what they did."""

    def __init__(
        self, connection: Connection, table: Table, columns: tuple[str, ...], on_change: OnChange | None = None
    ) -> None:
        self.connection = connection
        self.table = table
        self.columns = columns
        self.on_change = on_change
        self.inserted = 0
        self.updated = 0

    @abstractmethod
    def write(self, batch: list[tuple[Any, ...]]) -> None:
        """Write (or stage) one batch."""

    @abstractmethod
    def finish(self) -> None:
        """Complete the writes once every batch is written."""

    def counts(self, spec: FileSpec) -> FileCounts:
        """The file's inserted and updated counts."""
        return FileCounts(spec.name, self.inserted, self.updated)


class SqliteWriter(TableWriter):
    """SQLite: each batch goes straight in, a plain INSERT for new keys and the upsert for existing ones."""

    # SQLite runs an upsert on a table with foreign keys through a statement
    # journal per row, several times slower than a plain INSERT; most rows of a
    # large load are new, so they take the fast path. Both statements are
    # compiled once and run with exec_driver_sql, so the rows reach the driver's
    # executemany as they are, without per-row parameter processing.

    def __init__(
        self,
        connection: Connection,
        table: Table,
        columns: tuple[str, ...],
        existing_keys: Container[str] | None,
        on_change: OnChange | None = None,
    ) -> None:
        super().__init__(connection, table, columns, on_change)
        # Without a dictionary of the keys already stored, ask the database per batch.
        self.existing_keys = existing_keys
        self.rows_before = count_rows(connection, table) if existing_keys is None or on_change else 0
        self.insert_sql = self._compile(insert(table))
        self.upsert_sql = self._compile(upsert(connection, table, columns[0]))
        names = ", ".join(columns)
        self.stored_sql = f"SELECT {names} FROM {table.name} WHERE {columns[0]} IN "

    def _compile(self, statement: Insert) -> str:
        compiled = statement.compile(dialect=self.connection.dialect, column_keys=list(self.columns))
        if tuple(compiled.positiontup or ()) != self.columns:
            raise RuntimeError(f"{self.table.name} parameters are in the order {compiled.positiontup}, not {self.columns}")
        return str(compiled)

    def _stored(self, batch: list[tuple[Any, ...]]) -> set[str]:
        if self.existing_keys is not None:
            return {row[0] for row in batch if row[0] in self.existing_keys}
        if not self.rows_before:
            return set()
        key = self.table.c[self.columns[0]]
        return set(self.connection.scalars(select(key).where(key.in_([row[0] for row in batch]))))

    def _stored_rows(self, batch: list[tuple[Any, ...]]) -> dict[Any, tuple[Any, ...]]:
        if not self.rows_before:
            return {}
        keys = [row[0] for row in batch]
        marks = ", ".join("?" * len(keys))
        rows = self.connection.exec_driver_sql(self.stored_sql + f"({marks})", tuple(keys)).all()
        return {row[0]: tuple(row) for row in rows}

    def write(self, batch: list[tuple[Any, ...]]) -> None:
        """INSERT the batch's new keys and upsert the stored ones (only those that change, when told of changes)."""
        if self.on_change is None:
            stored = self._stored(batch)
            changing = [row for row in batch if row[0] in stored]
        else:
            # Raw values compare as the driver returns them: ISO text for dates, as the batch holds them.
            stored_rows = self._stored_rows(batch)
            stored = set(stored_rows)
            changing = [row for row in batch if row[0] in stored and stored_rows[row[0]] != tuple(row)]
            if changing:
                self.on_change([row[0] for row in changing])
        new = [row for row in batch if row[0] not in stored] if stored else batch
        if new:
            self.connection.exec_driver_sql(self.insert_sql, new)
        if changing:
            self.connection.exec_driver_sql(self.upsert_sql, changing)
        self.inserted += len(new)
        self.updated += len(stored)

    def finish(self) -> None:
        """Nothing left to do: every batch went straight in."""


class PostgresWriter(TableWriter):
    """PostgreSQL: COPY each batch into a staging table, then one INSERT … SELECT … ON CONFLICT."""

    # Even pipelined, executemany runs one statement per row on the server; COPY
    # and a single set-based upsert load a million rows several times faster.

    def __init__(
        self,
        connection: Connection,
        table: Table,
        columns: tuple[str, ...],
        merge_order: tuple[str, ...],
        on_change: OnChange | None = None,
    ) -> None:
        super().__init__(connection, table, columns, on_change)
        # Merging in the order of the table's widest index turns that index's
        # inserts into appends instead of random page writes (~20% at 1.2M rows).
        self.order_by = f" ORDER BY {', '.join(merge_order)}" if merge_order else ""
        self.staging = f"import_{table.name}"
        names = ", ".join(columns)
        # Temporary, so it vanishes with the session; kept for the session's next import and
        # emptied instead of dropped: creating and dropping it each time would churn the catalog
        # (and, in one long transaction, fill PostgreSQL's lock table).
        self.connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {self.staging} AS SELECT {names} FROM {table.name} WITH NO DATA"
        )
        self.connection.exec_driver_sql(f"TRUNCATE {self.staging}")
        self.copy_sql = f"COPY {self.staging} ({names}) FROM STDIN"
        self.staged = 0

    def write(self, batch: list[tuple[Any, ...]]) -> None:
        """COPY the batch into the staging table."""
        with self.connection.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
            with cursor.copy(self.copy_sql) as copy:
                for row in batch:
                    copy.write_row(row)
        self.staged += len(batch)

    def finish(self) -> None:
        """Upsert the staged rows into the table in one statement."""
        table, key, names = self.table.name, self.columns[0], ", ".join(self.columns)
        self.updated = int(
            self.connection.exec_driver_sql(f"SELECT count(*) FROM {self.staging} JOIN {table} USING ({key})").scalar_one()
        )
        self.inserted = self.staged - self.updated
        others = self.columns[1:]
        stored = ", ".join(f"{table}.{name}" for name in others)
        incoming = ", ".join(f"excluded.{name}" for name in others)
        if self.on_change is not None and self.updated:
            staged = ", ".join(f"s.{name}" for name in others)
            changing = self.connection.exec_driver_sql(
                f"SELECT s.{key} FROM {self.staging} s JOIN {table} USING ({key}) "
                f"WHERE ({stored}) IS DISTINCT FROM ({staged})"
            ).scalars().all()
            if changing:
                self.on_change(list(changing))
        updates = ", ".join(f"{name} = excluded.{name}" for name in others)
        # Rows whose values are unchanged are not rewritten: no dead tuples, no index churn.
        self.connection.exec_driver_sql(
            f"INSERT INTO {table} ({names}) SELECT {names} FROM {self.staging}{self.order_by} "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates} WHERE ({stored}) IS DISTINCT FROM ({incoming})"
        )
        self.connection.exec_driver_sql(f"TRUNCATE {self.staging}")


def table_writer(
    connection: Connection,
    table: Table,
    columns: tuple[str, ...],
    existing_keys: Container[str] | None = None,
    merge_order: tuple[str, ...] = (),
    on_change: OnChange | None = None,
) -> TableWriter:
    """A writer for table suited to the database (existing_keys serves SQLite, merge_order PostgreSQL)."""
    if connection.dialect.name == "sqlite":
        return SqliteWriter(connection, table, columns, existing_keys, on_change)
    return PostgresWriter(connection, table, columns, merge_order, on_change)


def write_rows(writer: TableWriter, rows: Iterable[tuple[Any, ...]], problems: Problems) -> None:
    """Write rows batch by batch until a problem is found; the rows are read to the end either way."""
    for batch in batches(rows):
        if not problems.found:
            writer.write(batch)
    if not problems.found:
        writer.finish()


def execute_batches(connection: Connection, statement: Executable, rows: Iterable[dict[str, Any]]) -> None:
    """Execute statement for every parameter row, BATCH_ROWS rows at a time."""
    for batch in batches(rows):
        connection.execute(statement, batch)


def upsert(connection: Connection, table: Table, key: str) -> Insert:
    """INSERT … ON CONFLICT (key) DO UPDATE every other column, for SQLite or PostgreSQL."""
    dialect = sqlite if connection.dialect.name == "sqlite" else postgresql
    statement = dialect.insert(table)
    updates = {column.name: statement.excluded[column.name] for column in table.columns if column.name not in (key, "id")}
    return statement.on_conflict_do_update(index_elements=[key], set_=updates)


def count_rows(connection: Connection, table: Table) -> int:
    """How many rows table holds."""
    return int(connection.scalar(select(func.count()).select_from(table)) or 0)


def indexes_rebuilt_for_bulk_load(connection: Connection, table: Table, rows: int) -> AbstractContextManager[None]:
    """On SQLite, for a load of many rows (see REBUILD_MIN_ROWS), drop table's secondary indexes and rebuild them after."""
    # A bulk load into SQLite is much faster with the secondary indexes built
    # once at the end than updated row by row; the DDL is part of the
    # transaction, so readers and a rollback still see the old indexes.
    # (Not on PostgreSQL: DROP INDEX would lock readers out.)
    if connection.dialect.name == "sqlite" and rows >= max(REBUILD_MIN_ROWS, count_rows(connection, table) // 2):
        return _secondary_indexes_dropped(connection, table.name)
    return nullcontext()


@contextmanager
def _secondary_indexes_dropped(connection: Connection, table: str) -> Iterator[None]:
    # sqlite_master keeps each index's CREATE statement verbatim, so the rebuild
    # matches the migration exactly; UNIQUE constraints' indexes (sql IS NULL) stay.
    indexes = connection.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (table,)
    ).all()
    for name, _sql in indexes:
        connection.exec_driver_sql(f'DROP INDEX "{name}"')
    yield
    for _name, sql in indexes:
        connection.exec_driver_sql(sql)


@contextmanager
def sqlite_import_cache(connection: Connection) -> Iterator[None]:
    """On SQLite, the connection's page cache raised to SQLITE_IMPORT_CACHE_KIB for the import, then restored."""
    if connection.dialect.name != "sqlite":
        yield
        return
    previous = int(connection.exec_driver_sql("PRAGMA cache_size").scalar_one())
    connection.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_IMPORT_CACHE_KIB}")
    try:
        yield
    finally:
        connection.exec_driver_sql(f"PRAGMA cache_size={previous}")
