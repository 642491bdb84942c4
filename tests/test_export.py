"""`southrock export` end to end against the real app served by gunicorn."""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import pytest
import requests
from click.testing import CliRunner, Result
from sqlalchemy.orm import Session

from southrock_api.integrations.client import SPEC_FIELDS, EnrolmentStream
from southrock_api.data.db import bump_data_version, get_database
from southrock_api.data.models import BusinessUnit
from southrock_api.integrations.export import EXPORT_ATTEMPTS, export_command
from tests import factories
from tests.databases import fresh_database
from tests.servers import dispose, gunicorn, migrated_app, seeded_token

pytestmark = pytest.mark.e2e

SOUTHROCK = Path(sys.executable).with_name("southrock")
ROWS = 21


class Site:
    """A served database and its token."""

    def __init__(self, url: str, public_key: str, private_key: str, database_url: str) -> None:
        self.url = url
        self.public_key = public_key
        self.private_key = private_key
        self.database_url = database_url

    def env(self) -> dict[str, str]:
        """The environment an operator would set for the export."""
        return {"SOUTHROCK_PUBLIC_KEY": self.public_key, "SOUTHROCK_PRIVATE_KEY": self.private_key}

    def api_rows(self, **params: str) -> list[dict[str, str]]:
        """The rows exactly as the API sends them, for comparison."""
        # The site's bucket is small (10 a second) and an export may just have spent it: wait out
        # its window, a bounded number of times, as any client would.
        for _ in range(3):
            response = requests.get(
                self.url + "/api/v1/enrolments",
                params={"limit": "500", **params},
                auth=(self.public_key, self.private_key),
                timeout=10,
            )
            if response.status_code != 429:
                break
            time.sleep(min(2.0, float(response.headers.get("Retry-After", "1"))))
        assert response.status_code == 200
        return list(response.json())


def mangleable_names(session: Session) -> BusinessUnit:
    """EDU's completed enrolments, some of them with names a spreadsheet would mangle; the token is for EDU."""
    bu = factories.business_unit(session, code="EDU", name="Education")
    students = factories.work_unit(session, bu, code="UNIV-STUD", name="University - Students")
    staff = factories.work_unit(session, bu, code="UNIV-STAFF", name="Staff, \"Head\" Office")
    course = factories.course(session, code="INFCRTL_GRP3", description="Robotic Control")
    for index in range(ROWS - 2):
        who = factories.learner(session, students, first_name="Zoë", surname=f"Nguyễn {index}")
        factories.enrolment(session, who, course, completed_on=dt.date(2017, 1, 1) + dt.timedelta(days=index), score=Decimal("87.50"))
    formula = factories.learner(session, staff, first_name="=HYPERLINK(\"http://x\")", surname="-Minus")
    factories.enrolment(session, formula, course, completed_on=dt.date(2018, 6, 1))
    factories.enrolment(session, factories.learner(session, staff, first_name="Line\nBreak"), course, completed_on=dt.date(2018, 6, 2))
    return bu


@pytest.fixture(scope="module")
def site(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Completed enrolments with names a spreadsheet can mangle, served at 10 requests a second."""
    tmp_path = tmp_path_factory.mktemp("export")
    with fresh_database(backend, tmp_path) as database_url:
        issued = seeded_token(database_url, mangleable_names)
        env = {
            "SOUTHROCK_DATABASE_URL": database_url,
            "SOUTHROCK_RATE_LIMIT": "10 per 1 second",
            "SOUTHROCK_RATELIMIT_STORAGE_URI": f"sqlite:///{tmp_path / 'ratelimit.sqlite'}",
            "SOUTHROCK_GRACEFUL_TIMEOUT": "1",
        }
        with gunicorn(env, workers=2) as url:
            yield Site(url, issued.public_key, issued.private_key, database_url)


def export(site: Site, *args: str, env: dict[str, str] | None = None) -> Result:
    """Run the command in-process with the site's keys in the environment."""
    return CliRunner().invoke(export_command, ["--url", site.url, "--no-progress", *args], env=env or site.env())


def leftovers(directory: Path) -> list[str]:
    """Temporary files an export left behind."""
    return sorted(path.name for path in directory.iterdir() if path.name.endswith(".part"))


def test_csv_has_a_bom_the_spec_columns_and_every_row(site: Site, tmp_path: Path) -> None:
    output = tmp_path / "summary.csv"
    result = export(site, "--output", str(output))
    assert result.exit_code == 0, result.output
    assert f"wrote {ROWS} enrolments to {output}" in result.stdout
    raw = output.read_bytes()
    assert raw.startswith(codecs.BOM_UTF8)
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert rows[0] == list(SPEC_FIELDS)
    by_rnum = {row["RNUM"]: row for row in site.api_rows()}
    assert len(rows) == ROWS + 1
    for row in rows[1:]:
        written = dict(zip(rows[0], row))
        expected = by_rnum[written["RNUM"]]
        for name in SPEC_FIELDS:
            if name not in ("LR_FNAME", "LR_SNAME"):
                assert written[name] == expected[name]
    names = {(row[rows[0].index("LR_FNAME")], row[rows[0].index("LR_SNAME")]) for row in rows[1:]}
    assert ("Zoë", "Nguyễn 0") in names and ("Line\nBreak", "Learner") in names
    # Cells a spreadsheet would run as formulas are shown as text.
    assert ("'=HYPERLINK(\"http://x\")", "'-Minus") in names
    assert leftovers(tmp_path) == []
    assert os.stat(output).st_mode & 0o077 == 0  # learners' personal data: private to the owner


def test_formula_guard_can_be_switched_off(site: Site, tmp_path: Path) -> None:
    output = tmp_path / "raw.csv"
    assert export(site, "--output", str(output), "--no-guard-formulas").exit_code == 0
    assert '-Minus,"=HYPERLINK(""http://x"")"' in output.read_text(encoding="utf-8-sig")


def test_jsonl_matches_the_api_row_for_row(site: Site, tmp_path: Path) -> None:
    output = tmp_path / "summary.jsonl"
    result = export(site, "--format", "jsonl", "--output", str(output), "--page-size", "4")
    assert result.exit_code == 0, result.output
    raw = output.read_bytes()
    assert not raw.startswith(codecs.BOM_UTF8)
    assert [json.loads(line) for line in raw.decode("utf-8").splitlines()] == site.api_rows()


def test_filters_reach_the_api(site: Site, tmp_path: Path) -> None:
    output = tmp_path / "filtered.jsonl"
    result = export(
        site, "--format", "jsonl", "--output", str(output),
        "--orgcodes", "UNIV-STUD", "--orgcodes", "NOT-VISIBLE", "--sdate", "2017-01-03", "--edate", "2017-01-07",
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert sorted(row["SCH_AEDATE"] for row in rows) == [f"2017-01-0{day}" for day in range(3, 8)]
    assert {row["ORG_CODE"] for row in rows} == {"UNIV-STUD"}


def test_a_private_key_on_the_command_line_works_but_is_warned_about(site: Site, tmp_path: Path) -> None:
    output = tmp_path / "warned.csv"
    result = export(
        site, "--public-key", site.public_key, "--private-key", site.private_key, "--output", str(output), env={}
    )
    assert result.exit_code == 0, result.output
    assert "warning: a private key on the command line" in result.stderr
    assert output.exists()


def test_the_private_key_is_read_from_the_named_variable(site: Site, tmp_path: Path) -> None:
    output = tmp_path / "named.csv"
    env = {"SOUTHROCK_PUBLIC_KEY": site.public_key, "SOUTHROCK_PRIVATE_KEY": "", "MY_KEY": site.private_key}
    missing = export(site, "--output", str(output), env=env)
    assert missing.exit_code == 2 and "SOUTHROCK_PRIVATE_KEY" in missing.output
    assert not output.exists()
    named = export(site, "--private-key-env", "MY_KEY", "--output", str(output), env=env)
    assert named.exit_code == 0, named.output
    assert "warning" not in named.output


def test_the_keys_deprecated_names_still_work_with_one_warning(site: Site, tmp_path: Path) -> None:
    """SOUTHROCK_EXPORT_PUBLIC_KEY/_PRIVATE_KEY were the export's own names; SOUTHROCK_PUBLIC_KEY/_PRIVATE_KEY are everyone's."""
    output = tmp_path / "old.csv"
    old = {"SOUTHROCK_EXPORT_PUBLIC_KEY": site.public_key, "SOUTHROCK_EXPORT_PRIVATE_KEY": site.private_key}
    result = export(site, "--output", str(output), env=old)
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "warning: SOUTHROCK_EXPORT_PUBLIC_KEY and SOUTHROCK_EXPORT_PRIVATE_KEY are deprecated names; "
        "set SOUTHROCK_PUBLIC_KEY and SOUTHROCK_PRIVATE_KEY instead\n"
    )
    assert f"wrote {ROWS} enrolments" in result.stdout
    one = export(site, "--output", str(output), env={"SOUTHROCK_PUBLIC_KEY": site.public_key, "SOUTHROCK_EXPORT_PRIVATE_KEY": site.private_key})
    assert one.exit_code == 0, one.output
    assert one.stderr == "warning: SOUTHROCK_EXPORT_PRIVATE_KEY is a deprecated name; set SOUTHROCK_PRIVATE_KEY instead\n"
    # The new names win, silently: the old ones may linger in an environment file.
    stale = {"SOUTHROCK_EXPORT_PUBLIC_KEY": "srpk_stale", "SOUTHROCK_EXPORT_PRIVATE_KEY": "srsk_stale"}
    both = export(site, "--output", str(output), env={**stale, **site.env()})
    assert both.exit_code == 0, both.output
    assert both.stderr == ""


def test_a_missing_public_key_names_the_variable(tmp_path: Path) -> None:
    env: dict[str, str | None] = {"SOUTHROCK_PUBLIC_KEY": None, "SOUTHROCK_EXPORT_PUBLIC_KEY": None, "SOUTHROCK_PRIVATE_KEY": "srsk_x"}
    result = CliRunner().invoke(export_command, ["--url", "https://yoursite.southrock.com", "--output", str(tmp_path / "x.csv")], env=env)
    assert result.exit_code == 2
    assert "--public-key or the environment variable SOUTHROCK_PUBLIC_KEY" in result.output


def test_a_plain_http_url_is_refused_before_any_request(tmp_path: Path) -> None:
    output = tmp_path / "summary.csv"
    env = {"SOUTHROCK_PUBLIC_KEY": "public", "SOUTHROCK_PRIVATE_KEY": "private"}
    result = CliRunner().invoke(export_command, ["--url", "http://yoursite.southrock.com", "--output", str(output)], env=env)
    assert result.exit_code == 2 and "https://" in result.output
    assert not output.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("args", "private_key", "code"),
    [
        ((), "wrong", "E1010"),
        (("--sdate", "2020-01-02", "--edate", "2020-01-01"), None, "E3010"),
    ],
    ids=["bad-credentials", "bad-parameter"],
)
def test_a_failed_export_leaves_the_previous_file_untouched(
    site: Site, tmp_path: Path, args: tuple[str, ...], private_key: str | None, code: str
) -> None:
    output = tmp_path / "summary.csv"
    output.write_text("last week's export\n", encoding="utf-8")
    env = {**site.env(), **({"SOUTHROCK_PRIVATE_KEY": private_key} if private_key else {})}
    result = export(site, "--output", str(output), *args, env=env)
    assert result.exit_code == 1
    assert code in result.output and "not written" in result.output
    assert output.read_text(encoding="utf-8") == "last week's export\n"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_export_removes_its_temp_file_and_writes_nothing(site: Site, tmp_path: Path, signum: int) -> None:
    output = tmp_path / "summary.csv"
    command = [str(SOUTHROCK), "export", "--url", site.url, "--output", str(output), "--page-size", "1", "--no-progress"]
    # One row a request at 10 requests a second: the export runs for about two seconds.
    process = subprocess.Popen(
        command, env={**os.environ, **site.env()}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while not leftovers(tmp_path) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert leftovers(tmp_path), "the export never started writing"
    process.send_signal(signum)
    out, err = process.communicate(timeout=30)
    assert process.returncode != 0, out + err
    assert not output.exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(("imports", "exit_code"), [(1, 0), (EXPORT_ATTEMPTS, 1)])
def test_an_import_during_the_export_starts_it_again(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, imports: int, exit_code: int
) -> None:
    """Rows shift between pages when the data changes: a file mixing both states is never written."""
    app = migrated_app(site.database_url)
    fetched_first_page = EnrolmentStream._fetch
    done: list[int] = []

    def fetch_then_import(stream: EnrolmentStream) -> None:
        first = stream._total is None
        fetched_first_page(stream)
        if first and len(done) < imports:  # an import lands right after each attempt's first page
            with get_database(app).session_factory() as session:
                bump_data_version(session)
                session.commit()
            done.append(1)

    monkeypatch.setattr(EnrolmentStream, "_fetch", fetch_then_import)
    output = tmp_path / "summary.jsonl"
    try:
        result = export(site, "--format", "jsonl", "--output", str(output), "--page-size", "4")
    finally:
        dispose(app)
    assert result.exit_code == exit_code, result.output
    assert "starting again (attempt 2 of 3)" in result.stderr
    if exit_code == 0:
        assert [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()] == site.api_rows()
    else:
        assert "the site's data changed" in result.stderr and not output.exists()
    assert leftovers(tmp_path) == []
