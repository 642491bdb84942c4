"""southrock_api.integrations.client end to end against the real app served by gunicorn."""

from __future__ import annotations

import datetime as dt
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from sqlalchemy import text
from sqlalchemy.orm import Session

from southrock_api.admin.tokens import IssuedToken
from southrock_api.data.db import bump_data_version, get_database
from southrock_api.data.models import BusinessUnit
from southrock_api.integrations.client import (
    DataChanged,
    EnrolmentRecord,
    SouthrockApiError,
    SouthrockClient,
    UnitRecord,
)
from tests import factories
from tests.databases import fresh_database
from tests.servers import dispose, free_port, gunicorn, migrated_app, seeded_token

pytestmark = pytest.mark.e2e

COMPLETED_STUDENTS = 17
COMPLETED_STAFF = 6
# Requests that spend the tight site's window (5 per 2 seconds) many times over: a site that never
# answers 429 fails the test instead of hanging it.
MAX_REQUESTS_FOR_A_429 = 50


class Site:
    """A served database, its token and what it holds."""

    def __init__(self, url: str, database_url: str, public_key: str, private_key: str) -> None:
        self.url = url
        self.database_url = database_url
        self.public_key = public_key
        self.private_key = private_key

    def client(self, **kwargs: Any) -> SouthrockClient:
        """A client with this site's token."""
        return SouthrockClient(self.url, self.public_key, self.private_key, **kwargs)


def students_and_staff(session: Session) -> BusinessUnit:
    """EDU with two work units of completed enrolments (and one unfinished); the token is for EDU."""
    bu = factories.business_unit(session, code="EDU", name="Education")
    students = factories.work_unit(session, bu, code="UNIV-STUD", name="University - Students")
    staff = factories.work_unit(session, bu, code="UNIV-STAFF", name="University - Staff")
    course = factories.course(session, code="INFCRTL_GRP3", description="Robotic Control")
    for index in range(COMPLETED_STUDENTS):
        who = factories.learner(session, students, first_name="Zoë", surname=f"Ngô {index}")
        factories.enrolment(session, who, course, completed_on=dt.date(2017, 1, 1) + dt.timedelta(days=index), score=Decimal("87.50"))
    for index in range(COMPLETED_STAFF):
        factories.enrolment(session, factories.learner(session, staff), course, completed_on=dt.date(2018, 6, 1 + index))
    factories.enrolment(session, factories.learner(session, staff), course, status="IN_PROGRESS", progress=50)
    return bu


@pytest.fixture(scope="module")
def seeded(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, IssuedToken]]:
    """A fresh database with two work units of completed enrolments; yields its URL and a token."""
    with fresh_database(backend, tmp_path_factory.mktemp("client-db")) as database_url:
        yield database_url, seeded_token(database_url, students_and_staff)


@contextmanager
def serve(database_url: str, tmp_path: Path, rate_limit: str) -> Iterator[str]:
    """Serve a database with gunicorn at a given rate limit; yield the base URL."""
    env = {
        "SOUTHROCK_DATABASE_URL": database_url,
        "SOUTHROCK_RATE_LIMIT": rate_limit,
        # Each server counts in its own store, so tests never share a window by accident.
        "SOUTHROCK_RATELIMIT_STORAGE_URI": f"sqlite:///{tmp_path / 'ratelimit.sqlite'}",
        "SOUTHROCK_GRACEFUL_TIMEOUT": "1",
        # The test process may act as a proxy (X-Forwarded-Host) towards these servers.
        "SOUTHROCK_TRUSTED_PROXIES": "127.0.0.1",
    }
    with gunicorn(env, workers=2) as url:
        yield url


@pytest.fixture(scope="module")
def site(seeded: tuple[str, IssuedToken], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The seeded database behind gunicorn with a generous limit."""
    database_url, issued = seeded
    with serve(database_url, tmp_path_factory.mktemp("fast"), "1000 per minute") as url:
        yield Site(url, database_url, issued.public_key, issued.private_key)


@pytest.fixture(scope="module")
def tight_site(seeded: tuple[str, IssuedToken], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The same database behind a second gunicorn allowing 5 requests per 2 seconds."""
    database_url, issued = seeded
    with serve(database_url, tmp_path_factory.mktemp("tight"), "5 per 2 seconds") as url:
        yield Site(url, database_url, issued.public_key, issued.private_key)


class Recorder:
    """An injected sleep that records each wait and really waits (the rate-limit window is real time)."""

    def __init__(self, really_sleep: bool = True) -> None:
        self.waits: list[float] = []
        self.really_sleep = really_sleep

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.really_sleep:
            time.sleep(seconds)


def observed_session(statuses: list[int]) -> requests.Session:
    """A requests session that notes every status it receives."""
    session = requests.Session()
    session.hooks["response"].append(lambda response, *_args, **_kwargs: statuses.append(response.status_code))
    return session


def fresh_window(site: Site) -> None:
    """Wait until the site's rate-limit window has just restarted."""
    response = requests.get(site.url + "/api/v1", auth=(site.public_key, site.private_key), timeout=10)
    time.sleep(int(response.headers["X-Rate-Limit-Reset"]) + 0.05)


def spend_the_window(site: Site) -> None:
    """Request until the site answers 429: the rest of its rate-limit window is spent."""
    for _ in range(MAX_REQUESTS_FOR_A_429):
        if requests.get(site.url + "/api/v1", auth=(site.public_key, site.private_key), timeout=10).status_code == 429:
            return
    pytest.fail(f"no 429 after {MAX_REQUESTS_FOR_A_429} requests")


def test_whoami_names_the_tokens_business_unit(site: Site) -> None:
    with site.client() as client:
        assert client.whoami() == {"ORGGRP_CODE": "EDU", "ORGGRP_NAME": "Education"}


@pytest.mark.parametrize("base", ["{url}", "{url}/", "{url}/api/v1", "{url}/api"])
def test_the_base_url_may_be_the_site_or_the_api(site: Site, base: str) -> None:
    with SouthrockClient(base.format(url=site.url), site.public_key, site.private_key) as client:
        assert client.whoami()["ORGGRP_CODE"] == "EDU"


def test_iter_enrolments_follows_next_links_and_yields_typed_records(site: Site) -> None:
    statuses: list[int] = []
    with site.client(session=observed_session(statuses)) as client:
        stream = client.iter_enrolments(page_size=5)
        total = stream.total
        records = list(stream)
        whole = list(client.iter_enrolments(page_size=500))
    assert total == COMPLETED_STUDENTS + COMPLETED_STAFF
    # Reading the total fetched the first page, which iteration then used instead of refetching.
    assert statuses == [200] * (5 + 1)
    assert records == whole
    assert [record.rnum for record in records] == list(range(1, total + 1))
    student = next(record for record in records if record.org_code == "UNIV-STUD")
    assert isinstance(student, EnrolmentRecord)
    assert student.org_name == "University - Students"
    assert student.crs_code == "INFCRTL_GRP3" and student.crs_desc == "Robotic Control"
    assert student.lr_fname == "Zoë" and student.lr_sname.startswith("Ngô ")
    assert student.lr_email.endswith("@example.test")
    assert isinstance(student.sch_aedate, dt.date) and student.sch_score == Decimal("87.50")
    with pytest.raises(AttributeError):
        student.rnum = 0  # type: ignore[misc]


def test_iter_units_lists_the_tokens_work_units_and_their_codes_filter_the_enrolments(site: Site) -> None:
    statuses: list[int] = []
    with site.client(session=observed_session(statuses)) as client:
        stream = client.iter_units(page_size=1)
        total = stream.total
        units = list(stream)
        staff = list(client.iter_enrolments(orgcodes=[units[0].org_code]))
    assert total == 2
    # One page a unit, by code.
    assert statuses == [200, 200, 200]
    assert units == [
        UnitRecord("UNIV-STAFF", "University - Staff", "EDU", None),
        UnitRecord("UNIV-STUD", "University - Students", "EDU", None),
    ]
    assert len(staff) == COMPLETED_STAFF and {record.org_code for record in staff} == {"UNIV-STAFF"}


@pytest.mark.parametrize("page_size", [0, 501])
def test_iter_units_refuses_a_page_size_the_api_would(page_size: int) -> None:
    client = SouthrockClient("http://127.0.0.1:1", "public", "private")
    with pytest.raises(ValueError):
        client.iter_units(page_size=page_size)


def test_filters_are_sent_as_the_spec_names_them(site: Site) -> None:
    with site.client() as client:
        staff = list(client.iter_enrolments(orgcodes=["UNIV-STAFF"], page_size=4))
        january = list(client.iter_enrolments(sdate=dt.date(2017, 1, 5), edate=dt.date(2017, 1, 9)))
    assert len(staff) == COMPLETED_STAFF and {record.org_code for record in staff} == {"UNIV-STAFF"}
    assert sorted(record.sch_aedate for record in january) == [dt.date(2017, 1, day) for day in range(5, 10)]  # type: ignore[type-var]


@pytest.mark.parametrize(("orgcodes", "error"), [("UNIV-STAFF", TypeError), ([], ValueError), ((), ValueError)])
def test_orgcodes_that_would_mean_something_else_are_refused(orgcodes: object, error: type[Exception]) -> None:
    # A string would be one-character codes (no rows); an empty list no filter (every row).
    client = SouthrockClient("http://127.0.0.1:1", "public", "private")
    with pytest.raises(error):
        client.iter_enrolments(orgcodes=orgcodes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("credentials", "arguments", "status", "code"),
    [
        ("wrong", {}, 401, "E1010"),
        ("right", {"sdate": dt.date(2020, 1, 2), "edate": dt.date(2020, 1, 1)}, 400, "E3010"),
    ],
)
def test_other_errors_raise_at_once_with_the_e_code(
    site: Site, credentials: str, arguments: dict[str, dt.date], status: int, code: str
) -> None:
    sleep = Recorder(really_sleep=False)
    private_key = site.private_key if credentials == "right" else "not-the-key"
    with SouthrockClient(site.url, site.public_key, private_key, sleep=sleep) as client:
        with pytest.raises(SouthrockApiError) as raised:
            list(client.iter_enrolments(**arguments))  # type: ignore[arg-type]
    assert (raised.value.status, raised.value.code) == (status, code)
    assert raised.value.message
    assert sleep.waits == []


def test_connection_failures_are_retried_with_bounded_full_jitter_backoff() -> None:
    sleep = Recorder(really_sleep=False)
    client = SouthrockClient(
        f"http://127.0.0.1:{free_port()}", "public", "private",
        max_attempts=5, backoff_base=0.5, max_sleep=3.0, sleep=sleep, random_source=lambda: 1.0, timeout=2,
    )
    with client, pytest.raises(SouthrockApiError) as raised:
        client.whoami()
    assert raised.value.status is None and raised.value.code is None
    # random 1.0 shows each ceiling: base * 2^n, capped at max_sleep; no sleep after the last attempt.
    assert sleep.waits == [0.5, 1.0, 2.0, 3.0]


def test_a_server_error_is_retried_and_then_succeeds(site: Site) -> None:
    app = migrated_app(site.database_url)
    engine = get_database(app).engine
    statuses: list[int] = []

    def repair(_seconds: float) -> None:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE data_state_away RENAME TO data_state"))

    try:
        # Hide a table every request reads: the real app answers 500 E9010 until it is back.
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE data_state RENAME TO data_state_away"))
        with site.client(sleep=repair, session=observed_session(statuses)) as client:
            assert client.whoami()["ORGGRP_CODE"] == "EDU"
    finally:
        dispose(app)
    assert statuses == [500, 200]


def test_the_client_waits_for_the_window_instead_of_hitting_429(tight_site: Site) -> None:
    fresh_window(tight_site)
    statuses: list[int] = []
    sleep = Recorder()
    with tight_site.client(sleep=sleep, session=observed_session(statuses)) as client:
        assert client.whoami()["ORGGRP_CODE"] == "EDU"
        records = list(client.iter_enrolments(page_size=3))
    # 9 requests at 5 per window: the client waited for a new window at least once and never saw a 429.
    assert 429 not in statuses and len(statuses) == 9
    assert [wait for wait in sleep.waits if wait > 0]
    assert [record.rnum for record in records] == list(range(1, COMPLETED_STUDENTS + COMPLETED_STAFF + 1))


def test_a_429_from_a_window_spent_elsewhere_is_waited_out(tight_site: Site) -> None:
    fresh_window(tight_site)
    # Another consumer on the site spends the whole window (spec §15: the limit is per site).
    spend_the_window(tight_site)
    statuses: list[int] = []
    sleep = Recorder()
    with tight_site.client(sleep=sleep, session=observed_session(statuses)) as client:
        assert client.whoami()["ORGGRP_CODE"] == "EDU"
    assert statuses == [429, 200]
    assert len(sleep.waits) == 1


def test_429s_that_never_end_give_up_after_max_attempts(tight_site: Site) -> None:
    fresh_window(tight_site)
    spend_the_window(tight_site)
    # Sleeping nothing keeps every retry inside the spent window.
    with tight_site.client(sleep=Recorder(really_sleep=False), max_attempts=3) as client:
        with pytest.raises(SouthrockApiError) as raised:
            client.whoami()
    assert (raised.value.status, raised.value.code) == (429, "E1030")


@pytest.mark.parametrize("base", ["http://yoursite.southrock.com", "yoursite.southrock.com", "ftp://yoursite.southrock.com"])
def test_only_https_urls_are_accepted_away_from_localhost(base: str) -> None:
    with pytest.raises(ValueError):
        SouthrockClient(base, "public", "private")


def test_credentials_put_in_the_url_are_not_repeated_in_the_error() -> None:
    with pytest.raises(ValueError) as raised:
        SouthrockClient("http://srpk_x:srsk_secret@yoursite.southrock.com", "public", "private")
    assert "srsk_secret" not in str(raised.value) and "yoursite.southrock.com" in str(raised.value)


def test_credentials_put_in_the_url_are_dropped_so_no_error_can_repeat_them() -> None:
    client = SouthrockClient("http://srpk_x:srsk_secret@127.0.0.1:1", "public", "private", max_attempts=1)
    assert client.api_url == "http://127.0.0.1:1/api/v1"
    with pytest.raises(SouthrockApiError) as raised:
        client.whoami()
    assert "no answer from http://127.0.0.1:1/api/v1" in str(raised.value)
    assert "srsk_secret" not in str(raised.value)


def test_next_links_are_followed_on_the_clients_own_origin(site: Site) -> None:
    statuses: list[int] = []
    seen: list[str] = []
    session = observed_session(statuses)
    session.hooks["response"].append(lambda response, *_args, **_kwargs: seen.append(response.url))
    # Through a proxy the server names its public address in links; the credentials still go only
    # to the address the client was given.
    session.headers.update({"X-Forwarded-Host": "elsewhere.invalid", "X-Forwarded-Proto": "https"})
    with site.client(session=session) as client:
        stream = client.iter_enrolments(page_size=10)
        assert len(list(stream)) == COMPLETED_STUDENTS + COMPLETED_STAFF
    assert len(seen) == 3 and all(url.startswith(site.url + "/api/v1/enrolments?") for url in seen)


def test_an_import_between_pages_raises_data_changed(site: Site) -> None:
    """Rows may move between pages when the data changes: the stream says so instead of going on."""
    app = migrated_app(site.database_url)
    responses: list[int] = []

    def import_after_first_page(response: requests.Response, *_args: object, **_kwargs: object) -> None:
        responses.append(response.status_code)
        if len(responses) == 1:
            with get_database(app).session_factory() as session:
                bump_data_version(session)
                session.commit()

    session = requests.Session()
    session.hooks["response"].append(import_after_first_page)
    try:
        with site.client(session=session) as client, pytest.raises(DataChanged) as raised:
            list(client.iter_enrolments(page_size=5))
    finally:
        dispose(app)
    assert responses == [200, 200]
    assert "changed" in str(raised.value)


@contextmanager
def impostor(body: bytes, content_type: str, declared_length: int | None = None) -> Iterator[str]:
    """A server that answers every GET 200 with this body (cut off if declared_length is longer)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(declared_length or len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"<html>Sign in</html>", "text/html"), (b'{"not": "a list"}', "application/json"), (b"[1, 2]", "application/json")],
)
def test_a_url_that_is_not_the_api_is_a_clear_error(body: bytes, content_type: str) -> None:
    with impostor(body, content_type) as url, SouthrockClient(url, "public", "private") as client:
        with pytest.raises(SouthrockApiError, match="not the API's JSON") as raised:
            list(client.iter_enrolments())
    assert raised.value.status == 200


def test_an_answer_cut_off_mid_body_is_retried() -> None:
    sleep = Recorder(really_sleep=False)
    with impostor(b'[{"ORG_CODE": "UNIV', "application/json", declared_length=5000) as url:
        with SouthrockClient(url, "public", "private", max_attempts=3, sleep=sleep) as client:
            with pytest.raises(SouthrockApiError, match="no answer") as raised:
                client.whoami()
    assert raised.value.status is None
    assert len(sleep.waits) == 2  # retried like a dropped connection, then given up


def test_a_password_with_an_at_sign_is_dropped_whole() -> None:
    with pytest.raises(ValueError) as raised:
        SouthrockClient("http://srpk_x:p@ss@yoursite.southrock.com", "public", "private")
    assert "ss@" not in str(raised.value) and "'http://yoursite.southrock.com'" in str(raised.value)
    client = SouthrockClient("https://srpk_x:p@ss@yoursite.southrock.com", "public", "private")
    assert client.api_url == "https://yoursite.southrock.com/api/v1"


def test_too_many_orgcodes_for_one_request_line_is_a_clear_error(site: Site) -> None:
    # gunicorn answers a request line over 8190 bytes 414, with its own HTML page.
    with site.client() as client, pytest.raises(SouthrockApiError) as raised:
        list(client.iter_enrolments(orgcodes=[f"UNIT-{number:05d}" for number in range(600)]))
    assert raised.value.status == 414
    assert "ask for fewer ORGCODES at a time" in str(raised.value)
