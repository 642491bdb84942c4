"""The values of enrolments.csv: SCH_AEDATE, SCH_SCORE and SCH_PROGRESS parsed, each distinct value once."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from southrock_api.data.importer.formats import ENROLMENTS
from southrock_api.data.importer.problems import Problems, show

# ASCII digits only: \d would take ９ or ٥ too, and int() would read them.
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_SCORE = re.compile(r"(\d{1,3})(?:\.(\d{1,2}))?", re.ASCII)
_PROGRESS = re.compile(r"\d{1,3}", re.ASCII)


class EnrolmentValues:
    """Parses an enrolment's date, score and progress, reporting the values that are not valid."""

    def __init__(self, problems: Problems, sqlite: bool) -> None:
        self.problems = problems
        self.sqlite = sqlite

    def date(self, line: int, text: str) -> Any:
        """SCH_AEDATE as the database takes it (the text on SQLite, a date elsewhere), or None if invalid."""
        value = None
        if _DATE.fullmatch(text):
            try:
                value = dt.date.fromisoformat(text)
            except ValueError:
                pass
        if value is None:
            self.problems.add(ENROLMENTS, line, f"SCH_AEDATE {show(text)} is not a date in the form YYYY-MM-DD")
            return None
        return text if self.sqlite else value

    def score(self, line: int, text: str) -> int | None:
        """SCH_SCORE in hundredths, or None if invalid."""
        match = _SCORE.fullmatch(text)
        if match is None:
            self.problems.add(ENROLMENTS, line, f"SCH_SCORE {show(text)} is not a number with at most two decimals")
            return None
        # Integer arithmetic on the digits: exact, no float rounding.
        hundredths = int(match.group(1)) * 100 + int((match.group(2) or "0").ljust(2, "0"))
        if hundredths > 10000:
            self.problems.add(ENROLMENTS, line, f"SCH_SCORE {text} is outside 0–100")
            return None
        return hundredths

    def progress(self, line: int, text: str) -> int | None:
        """SCH_PROGRESS as a whole percentage, or None if invalid."""
        if not _PROGRESS.fullmatch(text) or int(text) > 100:
            self.problems.add(ENROLMENTS, line, f"SCH_PROGRESS {show(text)} is not a whole number from 0 to 100")
            return None
        return int(text)


def parse_once(cache: dict[str, Any], raw: str, line: int, parse: Callable[[int, str], Any]) -> Any:
    """Parse a repeated field value once per import (dates and scores repeat a great deal)."""
    value = cache.get(raw)
    if value is None:
        value = parse(line, raw)
        if value is not None:
            cache[raw] = value
    return value
