"""The five CSV files: their names, columns in order, key, required columns and length limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from southrock_api.data.models import CODE_LENGTH, NAME_LENGTH


@dataclass(frozen=True)
class FileSpec:
    """One import file: its name, its columns (the key first), which of them are required and which hold names."""

    name: str
    columns: tuple[str, ...]
    required: tuple[str, ...]
    # Columns holding names or descriptions; every other column is a code.
    long_columns: tuple[str, ...] = ()

    def limit(self, column: str) -> int:
        """The most characters a value of column may hold."""
        return NAME_LENGTH if column in self.long_columns else CODE_LENGTH


BUSINESS_UNITS = FileSpec(
    "business_units.csv",
    ("ORGGRP_CODE", "ORGGRP_NAME", "PARENT_ORGGRP_CODE"),
    required=("ORGGRP_CODE", "ORGGRP_NAME"),
    long_columns=("ORGGRP_NAME",),
)
WORK_UNITS = FileSpec(
    "work_units.csv",
    ("ORG_CODE", "ORG_NAME", "ORGGRP_CODE", "PARENT_ORG_CODE"),
    required=("ORG_CODE", "ORG_NAME", "ORGGRP_CODE"),
    long_columns=("ORG_NAME",),
)
COURSES = FileSpec("courses.csv", ("CRS_CODE", "CRS_DESC"), required=("CRS_CODE", "CRS_DESC"), long_columns=("CRS_DESC",))
LEARNERS = FileSpec(
    "learners.csv",
    ("LR_ID", "LR_FNAME", "LR_SNAME", "LR_EMAIL", "ORG_CODE"),
    required=("LR_ID", "LR_FNAME", "LR_SNAME", "ORG_CODE"),
    long_columns=("LR_FNAME", "LR_SNAME", "LR_EMAIL"),
)
ENROLMENTS = FileSpec(
    "enrolments.csv",
    ("SCH_ID", "LR_ID", "CRS_CODE", "SCH_STATUS", "SCH_AEDATE", "SCH_SCORE", "SCH_PROGRESS"),
    required=("SCH_ID", "LR_ID", "CRS_CODE", "SCH_STATUS"),
)
# In dependency order: each file may refer to rows of the files before it.
FILES = (BUSINESS_UNITS, WORK_UNITS, COURSES, LEARNERS, ENROLMENTS)
# A delta import's deletions: the SCH_IDs of stored enrolments to delete, applied after the rest.
DELETIONS = FileSpec("deletions.csv", ("SCH_ID",), required=("SCH_ID",))
ALL_FILES = (*FILES, DELETIONS)


def present_files(directory: Path) -> list[Path]:
    """The import files that exist in directory, in import order."""
    return [directory / spec.name for spec in ALL_FILES if (directory / spec.name).is_file()]
