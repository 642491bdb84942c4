"""docs/deployment.md's commands, taken from the guide and run as written (names and paths made this run's own)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from tests import databases
from tests.servers import ROOT

SOUTHROCK = str(Path(sys.executable).with_name("southrock"))
GUIDE = ROOT / "docs" / "deployment.md"


def code_block(language: str, containing: str) -> str:
    """The one fenced block of the guide in language that contains a text, unindented."""
    text = GUIDE.read_text(encoding="utf-8")
    blocks = re.findall(rf"^( *)```{language}\n(.*?)^\1```", text, re.DOTALL | re.MULTILINE)
    [block] = [textwrap.dedent(body) for _indent, body in blocks if containing in body]
    return str(block)


def counters_database_statement() -> str:
    """The guide's statement creating the rate-limit counters' own database."""
    [statement] = re.findall(r"CREATE DATABASE southrock_ratelimit OWNER southrock_app;", GUIDE.read_text(encoding="utf-8"))
    return str(statement)


class Names:
    """The guide's role and database names made unique to this run: roles are shared by every database of the server."""

    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.owner, self.app, self.database, self.counters = (f"{name}_{suffix}" for name in ("sr_owner", "sr_app", "sr_db", "sr_rl"))
        self.databases = [self.database, self.counters]

    def apply(self, text: str, database: str | None = None) -> str:
        """The text with the guide's names replaced by these (the database's by another, if given)."""
        for guide, ours in (("southrock_owner", self.owner), ("southrock_app", self.app), ("southrock_ratelimit", self.counters)):
            text = text.replace(guide, ours)
        return re.sub(r"\bsouthrock\b(?![_.-])", database or self.database, text)

    def url(self, role: str, database: str | None = None, driver: str = "+psycopg") -> str:
        """A URL logging in as role (the test server trusts local connections: no password); driver="" for libpq."""
        host = databases.POSTGRES_ADMIN_URL.split("@", 1)[1].rsplit("/", 1)[0]
        return f"postgresql{driver}://{role}@{host}/{database or self.database}"


def run_as_superuser(sql: str) -> None:
    """Run a psql script of plain statements, `\\connect` and `\\password` (skipped: the test server trusts local logins)."""
    base = databases.POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    connection = psycopg.connect(databases.POSTGRES_ADMIN_URL, autocommit=True)
    statement: list[str] = []
    try:
        for line in sql.splitlines():
            if line.startswith("\\connect "):
                connection.close()
                connection = psycopg.connect(f"{base}/{line.split()[1]}", autocommit=True)
            elif line.startswith("\\password ") or line.startswith("--") or not line.strip():
                continue
            else:
                statement.append(line)
                if line.rstrip().endswith(";"):
                    connection.execute("\n".join(statement))
                    statement = []
        assert not statement, statement
    finally:
        connection.close()


def roles_setup() -> str:
    """The guide's SQL for the database and its two roles."""
    return code_block("sql", "CREATE ROLE southrock_owner")


@contextmanager
def documented_postgres() -> Iterator[Names]:
    """The guide's database, its roles and the counters' database, created as it says; dropped afterwards."""
    if not databases.postgres_available():
        if databases.REQUIRE_SERVICES:
            pytest.fail("PostgreSQL is not reachable at " + databases.POSTGRES_ADMIN_URL)
        pytest.skip("PostgreSQL is not reachable at " + databases.POSTGRES_ADMIN_URL)
    names = Names()
    try:
        run_as_superuser(names.apply(roles_setup()))
        run_as_superuser(names.apply(counters_database_statement()))
        yield names
    finally:
        with psycopg.connect(databases.POSTGRES_ADMIN_URL, autocommit=True) as admin:
            for database in names.databases:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            for role in (names.app, names.owner):
                admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def southrock(
    names: Names, tmp_path: Path, role: str, *args: str, database: str | None = None, **settings: str
) -> subprocess.CompletedProcess[str]:
    """Run a `southrock` command logged in as role."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SOUTHROCK_")}
    env.update(
        {
            "SOUTHROCK_INSTANCE_PATH": str(tmp_path),
            "SOUTHROCK_DATABASE_URL": names.url(role, database),
            "SOUTHROCK_RATELIMIT_STORAGE_URI": "memory://",
            **settings,
        }
    )
    return subprocess.run([SOUTHROCK, *args], env=env, capture_output=True, text=True, timeout=300)
