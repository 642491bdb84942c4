"""The `FILE:LINE: what is wrong` messages an import collects, capped at MAX_PROBLEMS."""

from __future__ import annotations

from southrock_api.data.importer.formats import FileSpec

MAX_PROBLEMS = 50


class TooManyProblems(Exception):
    """Raised once MAX_PROBLEMS have been collected: reading on would only add noise."""


class Problems:
    """The problems found so far; the first one stops the writing, the MAX_PROBLEMS-th the reading."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def add(self, spec: FileSpec, line: int, message: str) -> None:
        """Record `FILE:LINE: message`; raise TooManyProblems at the cap."""
        self._append(f"{spec.name}:{line}: {message}")

    def add_to_file(self, spec: FileSpec, message: str) -> None:
        """Record `FILE: message`, for what no one line holds (a row a --full import would delete)."""
        self._append(f"{spec.name}: {message}")

    def _append(self, problem: str) -> None:
        self.found.append(problem)
        if len(self.found) >= MAX_PROBLEMS:
            raise TooManyProblems


def show(value: str) -> str:
    """A value as quoted in a message, cut at 40 characters."""
    return repr(value if len(value) <= 40 else value[:40] + "…")
