"""CSV import: the five LMS files checked row by row with FILE:LINE messages and written all or nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from southrock_api.data.changes import DEFAULT_RETENTION_DAYS, ChangeRecorder
from southrock_api.data.db import bump_data_version
from southrock_api.data.importer.deletions import MAX_DELETE_PERCENT, Deleted, Deletions
from southrock_api.data.importer.formats import ALL_FILES, DELETIONS, present_files
from southrock_api.data.importer.problems import Problems, TooManyProblems
from southrock_api.data.importer.reading import CsvReader
from southrock_api.data.importer.references import References
from southrock_api.data.importer.writing import FileCounts, sqlite_import_cache
from southrock_api.data.webhooks import write_events


class ImportFailed(Exception):
    """The import was rejected; nothing was written. `problems` holds `FILE:LINE: what is wrong`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"import rejected with {len(problems)} problem(s)")
        self.problems = problems


@dataclass
class ImportReport:
    """What an import changed, per file."""

    files: list[FileCounts] = field(default_factory=list)
    moved_learners: int = 0
    # Rows written to the change log: enrolments whose row changed for some token.
    changes: int = 0
    deleted: Deleted = field(default_factory=Deleted)

    def summary(self) -> str:
        """One line: counts per file inserted/updated."""
        parts = [f"{counts.file} {counts.inserted} inserted, {counts.updated} updated" for counts in self.files]
        line = "imported " + "; ".join(parts)
        if self.moved_learners:
            learners = "learner" if self.moved_learners == 1 else "learners"
            line += f" ({self.moved_learners} {learners} moved to another work unit)"
        if self.deleted.summary():
            line += "; " + self.deleted.summary()
        return line


def import_size(directory: Path) -> int:
    """The bytes of the import files in directory: the total that import_directory's on_progress adds up to."""
    return sum(path.stat().st_size for path in present_files(directory))


def import_directory(
    session: Session,
    directory: Path,
    on_progress: Callable[[int], None] | None = None,
    retention_days: int = DEFAULT_RETENTION_DAYS,
    full: bool = False,
    max_delete_percent: float = MAX_DELETE_PERCENT,
) -> ImportReport:
    """Validate and load the CSV files in directory in one transaction; raise ImportFailed on any problem."""
    # The files are read in dependency order, each once: rows are checked as they stream
    # past (reading), resolved to ids (references) and written in batches (writing) while
    # no problem has been found. The first problem stops the writing; reading goes on to
    # report up to MAX_PROBLEMS, and the transaction is rolled back, so a failed (or killed)
    # import leaves nothing behind. on_progress, if given, receives the bytes read since
    # its last call; they add up to import_size(directory).
    if not present_files(directory):
        raise ImportFailed([f"{directory}: none of " + ", ".join(spec.name for spec in ALL_FILES) + " found"])
    problems = Problems()
    try:
        connection = session.connection()
        recorder = ChangeRecorder(connection)
        reader = CsvReader(directory, problems, on_progress)
        references = References(connection, reader, problems, recorder)
        # Which SCH_IDs the enrolments file holds: what --full keeps and deletions.csv may not name.
        references.keep_enrolment_keys = full or reader.present(DELETIONS)
        deletions = Deletions(connection, reader, problems, recorder, references.file_keys, full, max_delete_percent)
        with sqlite_import_cache(connection):
            try:
                references.load()
                if not problems.found or reader.present(DELETIONS):
                    deletions.apply()
            except TooManyProblems:
                pass
        if problems.found:
            raise ImportFailed(problems.found)
        now = dt.datetime.now(dt.timezone.utc)
        changes = recorder.finish(now, retention_days)
        # The outbox: subscribers are told exactly when the import commits (data.webhooks).
        write_events(connection, *recorder.positions, now)
        bump_data_version(session)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return ImportReport(references.files, references.moved_learners, changes, deletions.deleted)
