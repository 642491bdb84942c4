"""The client, `southrock-export` and `southrock-mirror` installed without the server's packages: Flask, a database driver, gunicorn (and, but for the mirror, SQLAlchemy)."""

from __future__ import annotations

import configparser
import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy.orm import Session

from southrock_api.data.models import BusinessUnit
from tests import factories
from tests.databases import fresh_database
from tests.fake_feed import PRIVATE_KEY, PUBLIC_KEY, FakeFeed, row, running
from tests.servers import ROOT, gunicorn, seeded_token

ROWS = 7
# Every distribution the `server` extra brings in, and what they bring in themselves, by import name.
SERVER_PACKAGES = (
    "flask", "werkzeug", "jinja2", "itsdangerous", "markupsafe", "blinker", "flask_limiter", "limits",
    "sqlalchemy", "alembic", "mako", "marshmallow", "apispec", "psycopg", "psycopg_binary", "gunicorn", "redis",
)
# The client and the export need only requests and click; the mirror needs SQLAlchemy too.
MIRROR_PACKAGES = ("sqlalchemy",)


def guards(blocked: tuple[str, ...]) -> tuple[str, str]:
    """Code run first in the child, so that importing any of blocked fails as it would where they are not
    installed, and code run last, which fails if any of them got in after all."""
    blocker = f"""
import importlib.abc, sys
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, NotInstalled())
"""
    nothing_loaded = f"""
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in {blocked!r})
assert not loaded, loaded
"""
    return blocker, nothing_loaded


def run_alone(
    code: str, *args: str, env: dict[str, str] | None = None, blocked: tuple[str, ...] = SERVER_PACKAGES
) -> subprocess.CompletedProcess[str]:
    """Run Python code in a child where none of the blocked packages (by default the server's) can be imported."""
    blocker, nothing_loaded = guards(blocked)
    environment = {name: value for name, value in os.environ.items() if not name.startswith("SOUTHROCK_")}
    return subprocess.run(
        [sys.executable, "-c", blocker + code + nothing_loaded, *args],
        env={**environment, **(env or {})},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def completions(session: Session) -> BusinessUnit:
    """ROWS completed enrolments in one work unit of business unit EDU."""
    bu = factories.business_unit(session, code="EDU", name="Education")
    unit = factories.work_unit(session, bu, code="UNIV-STUD", name="University - Students")
    course = factories.course(session, code="ROBOT", description="Robotic Control")
    for day in range(ROWS):
        factories.enrolment(session, factories.learner(session, unit, first_name="Zoë"), course, completed_on=dt.date(2025, 3, 1 + day))
    return bu


@pytest.fixture(scope="module")
def site(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """The real API over ROWS enrolments; yields its URL, a public key and its private key."""
    tmp_path = tmp_path_factory.mktemp("alone")
    with fresh_database(backend, tmp_path) as database_url:
        issued = seeded_token(database_url, completions)
        env = {
            "SOUTHROCK_DATABASE_URL": database_url,
            "SOUTHROCK_RATELIMIT_STORAGE_URI": f"sqlite:///{tmp_path / 'ratelimit.sqlite'}",
            "SOUTHROCK_GRACEFUL_TIMEOUT": "1",
        }
        with gunicorn(env, workers=1) as url:
            yield url, issued.public_key, issued.private_key


def test_the_distribution_needs_only_requests_click_and_sqlalchemy_and_the_server_is_an_extra() -> None:
    """`pip install southrock_api` is the client, the export and the mirror; `pip install 'southrock_api[server]'` the server."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    required = [line.split(">")[0].split("[")[0] for line in setup["options"]["install_requires"].split()]
    assert required == ["requests", "click", "sqlalchemy"]
    server = {line.split(">")[0].split("[")[0] for line in setup["options.extras_require"]["server"].split()}
    assert {"flask", "gunicorn", "sqlalchemy", "psycopg", "marshmallow"} <= server
    scripts = {}
    for line in setup["options.entry_points"]["console_scripts"].strip().splitlines():
        name, _, target = line.partition("=")
        scripts[name.strip()] = target.strip()
    assert scripts == {
        "southrock": "southrock_api.admin:main",
        "southrock-export": "southrock_api.integrations.export:main",
        "southrock-mirror": "southrock_api.integrations.mirror:main",
    }


@pytest.mark.e2e
def test_the_client_works_without_the_servers_packages(site: tuple[str, str, str]) -> None:
    url, public_key, private_key = site
    code = """
import json
from southrock_api.integrations.client import SouthrockClient
with SouthrockClient(sys.argv[1], sys.argv[2], sys.argv[3]) as client:
    unit = client.whoami()
    records = client.iter_enrolments(page_size=3)
    rows = [(record.rnum, record.lr_fname, record.sch_aedate.isoformat()) for record in records]
print(json.dumps({"unit": unit, "total": records.total, "rows": rows}))
"""
    result = run_alone(code, url, public_key, private_key)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["unit"] == {"ORGGRP_CODE": "EDU", "ORGGRP_NAME": "Education"}
    assert answer["total"] == ROWS
    assert [row[0] for row in answer["rows"]] == list(range(1, ROWS + 1))
    assert {row[1] for row in answer["rows"]} == {"Zoë"}


@pytest.mark.e2e
@pytest.mark.parametrize(
    "entry",
    [
        "from southrock_api.integrations.export import main; main()",  # the southrock-export script
        "import runpy; runpy.run_module('southrock_api.integrations.export', run_name='__main__')",  # python -m
    ],
    ids=["southrock-export", "python-m"],
)
def test_the_export_works_without_the_servers_packages(site: tuple[str, str, str], tmp_path: Path, entry: str) -> None:
    url, public_key, private_key = site
    output = tmp_path / "summary.csv"
    # A server setting that cannot work is none of the export's business.
    env = {"SOUTHROCK_PUBLIC_KEY": public_key, "SOUTHROCK_PRIVATE_KEY": private_key, "SOUTHROCK_RATE_LIMIT": "60 per minit"}
    code = f"sys.argv[0] = 'southrock-export'\ntry:\n    {entry}\nexcept SystemExit as end:\n    assert end.code in (0, None), end.code\n"
    result = run_alone(code, "--url", url, "--output", str(output), "--sdate", "2025-03-03", "--no-progress", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote {ROWS - 2} enrolments to {output}\n"
    rows = list(csv.reader(io.StringIO(output.read_text(encoding="utf-8-sig"), newline="")))
    assert len(rows) == ROWS - 2 + 1 and rows[1][rows[0].index("SCH_AEDATE")] == "2025-03-03"


@pytest.mark.e2e
def test_southrock_export_reads_none_of_the_servers_settings(site: tuple[str, str, str], tmp_path: Path) -> None:
    """The `southrock` command's own export still works, with a server setting that cannot work and no instance folder."""
    url, public_key, private_key = site
    output = tmp_path / "summary.jsonl"
    environment = {name: value for name, value in os.environ.items() if not name.startswith("SOUTHROCK_")}
    env = {**environment, "SOUTHROCK_PUBLIC_KEY": public_key, "SOUTHROCK_PRIVATE_KEY": private_key, "SOUTHROCK_RATE_LIMIT": "60 per minit"}
    southrock = str(Path(sys.executable).with_name("southrock"))
    command = [southrock, "export", "--url", url, "--output", str(output), "--format", "jsonl", "--no-progress"]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(output.read_text(encoding="utf-8").splitlines()) == ROWS


@pytest.mark.parametrize(
    "entry",
    [
        "from southrock_api.integrations.mirror import main; main()",  # the southrock-mirror script
        "import runpy; runpy.run_module('southrock_api.integrations.mirror', run_name='__main__')",  # python -m
    ],
    ids=["southrock-mirror", "python-m"],
)
def test_the_mirror_works_with_sqlalchemy_and_without_the_rest_of_the_servers_packages(tmp_path: Path, entry: str) -> None:
    blocked = tuple(name for name in SERVER_PACKAGES if name not in MIRROR_PACKAGES)
    feed = FakeFeed()
    feed.put(*(row(f"S{number}") for number in range(ROWS)))
    env = {"SOUTHROCK_PUBLIC_KEY": PUBLIC_KEY, "SOUTHROCK_PRIVATE_KEY": PRIVATE_KEY, "SOUTHROCK_RATE_LIMIT": "60 per minit"}
    code = f"sys.argv[0] = 'southrock-mirror'\ntry:\n    {entry}\nexcept SystemExit as end:\n    assert end.code in (0, None), end.code\n"
    database = f"sqlite:///{tmp_path / 'copy.sqlite'}"
    with running(feed):
        result = run_alone(code, database, "--url", feed.url, "--no-progress", env=env, blocked=blocked)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"took a new snapshot: there was no local copy yet\nupserted {ROWS}, deleted 0\n"


@pytest.mark.e2e
def test_southrock_mirror_copies_the_real_site_without_the_servers_packages_or_settings(site: tuple[str, str, str], tmp_path: Path) -> None:
    """`southrock-mirror` against the site's own snapshot, then `southrock mirror` (the group's) on the same copy."""
    url, public_key, private_key = site
    blocked = tuple(name for name in SERVER_PACKAGES if name not in MIRROR_PACKAGES)
    env = {"SOUTHROCK_PUBLIC_KEY": public_key, "SOUTHROCK_PRIVATE_KEY": private_key, "SOUTHROCK_RATE_LIMIT": "60 per minit"}
    database = f"sqlite:///{tmp_path / 'copy.sqlite'}"
    code = "from southrock_api.integrations.mirror import main\nsys.argv[0] = 'southrock-mirror'\ntry:\n    main()\nexcept SystemExit as end:\n    assert end.code in (0, None), end.code\n"
    result = run_alone(code, database, "--url", url, "--no-progress", env=env, blocked=blocked)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"took a new snapshot: there was no local copy yet\nupserted {ROWS}, deleted 0\n"
    environment = {name: value for name, value in os.environ.items() if not name.startswith("SOUTHROCK_")}
    southrock = str(Path(sys.executable).with_name("southrock"))
    command = [southrock, "mirror", database, "--url", url, "--no-progress"]
    again = subprocess.run(command, env={**environment, **env}, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "upserted 0, deleted 0\n"


def test_the_export_command_says_how_to_run_it() -> None:
    result = run_alone("from southrock_api.integrations.export import main\nsys.argv[0] = 'southrock-export'\ntry:\n    main()\nexcept SystemExit as end:\n    assert end.code == 0\n", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: southrock-export [OPTIONS]")


def test_southrock_without_the_servers_packages_says_what_to_install_in_one_line() -> None:
    code = "from southrock_api.admin import main\nsys.argv[0] = 'southrock'\ntry:\n    main()\nexcept SystemExit as end:\n    print(end.code, file=sys.stderr)\n    sys.stderr.flush()\n"
    result = run_alone(code, "tokens", "list")
    assert result.stderr == (
        "Error: the `southrock` command needs the server's packages (flask is not installed): "
        "pip install 'southrock_api[server]'. `southrock-export` and `southrock-mirror` need only the client's.\n"
    )


def test_importing_the_package_loads_no_flask() -> None:
    """create_app is still `from southrock_api import create_app`, loaded when asked for."""
    result = run_alone("import southrock_api, southrock_api.integrations.client, southrock_api.integrations.export\n")
    assert result.returncode == 0, result.stderr
    probe = "import sys, southrock_api; southrock_api.create_app; print('flask' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "True\n"
