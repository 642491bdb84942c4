"""`southrock rtopilot sync` against a real HTTP fake of RTOPilot's documented contract."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from southrock_api.data.db import get_database
from southrock_api.data.models import Enrolment, RtopilotPush
from southrock_api.integrations.rtopilot import INCOMPLETE_EXIT_CODE, endpoint_url, settings_from_config, target_of
from tests import factories
from tests.databases import fresh_database
from tests.fake_rtopilot import FakeRtopilot, running
from tests.servers import dispose, migrated_app

KEY = "rtop_" + "0123456789abcdef" * 4
OTHER_KEY = "rtop_" + "fedcba9876543210" * 4
SOUTHROCK = Path(sys.executable).with_name("southrock")


@pytest.fixture()
def fake() -> Iterator[FakeRtopilot]:
    """A running RTOPilot fake that accepts KEY."""
    with running(KEY) as server:
        yield server


@pytest.fixture()
def pushing_app(app: Flask, fake: FakeRtopilot) -> Flask:
    """The test app pointed at the fake, with retries fast enough for tests."""
    app.config.update(
        RTOPILOT_URL=fake.url,
        RTOPILOT_API_KEY=KEY,
        RTOPILOT_BACKOFF_SECONDS=0.01,
        RTOPILOT_MAX_BACKOFF_SECONDS=0.05,
        RTOPILOT_MAX_ATTEMPTS=4,
        RTOPILOT_TIMEOUT=5.0,
    )
    return app


def make_enrolments(session: Session) -> dict[str, int]:
    """Two completed, two in progress, one untouched; return sch_id → the progress RTOPilot should get."""
    bu = factories.business_unit(session)
    wu = factories.work_unit(session, bu)
    course = factories.course(session)
    expected = {}
    for status, progress in (("COMPLETED", 100), ("COMPLETED", 100), ("IN_PROGRESS", 40), ("IN_PROGRESS", 75)):
        row = factories.enrolment(session, factories.learner(session, wu), course, status=status, progress=progress)
        expected[row.sch_id] = progress
    factories.enrolment(session, factories.learner(session, wu), course, status="ENROLLED", progress=0)
    session.commit()
    return expected


def sync(runner: FlaskCliRunner, *args: str) -> Result:
    """Invoke the command without a progress bar."""
    return runner.invoke(args=["rtopilot", "sync", "--no-progress", *args])


def pushes(session: Session) -> dict[str, RtopilotPush]:
    """The stored push state by sch_id."""
    session.expire_all()
    rows = session.execute(select(Enrolment.sch_id, RtopilotPush).join(RtopilotPush, RtopilotPush.enrolment_id == Enrolment.id))
    return {sch_id: push for sch_id, push in rows}


def test_first_run_sends_every_increase_and_a_rerun_sends_nothing(
    pushing_app: Flask, runner: FlaskCliRunner, session: Session, fake: FakeRtopilot
) -> None:
    expected = make_enrolments(session)
    result = sync(runner)
    assert result.exit_code == 0, result.output
    assert "sent 4, unchanged 1, failed 0, pending 0" in result.stdout
    assert sorted(fake.accepted()) == sorted((sch_id, float(p)) for sch_id, p in expected.items())
    assert {sch_id: push.pushed_progress for sch_id, push in pushes(session).items()} == expected

    again = sync(runner)
    assert again.exit_code == 0, again.output
    assert "sent 0, unchanged 5, failed 0, pending 0" in again.stdout
    assert len(fake.received) == 4


def test_an_increase_resends_only_that_enrolment(
    pushing_app: Flask, runner: FlaskCliRunner, session: Session, fake: FakeRtopilot
) -> None:
    expected = make_enrolments(session)
    assert sync(runner).exit_code == 0
    rising, falling = [sch_id for sch_id, progress in expected.items() if progress < 100]
    for sch_id, progress in ((rising, 90), (falling, 10)):
        session.scalars(select(Enrolment).where(Enrolment.sch_id == sch_id)).one().progress = progress
    session.commit()
    before = len(fake.accepted())

    result = sync(runner)
    assert result.exit_code == 0, result.output
    assert "sent 1," in result.stdout
    # A fall is never pushed: RTOPilot would ignore it, and the stored value stays the high-water mark.
    assert fake.accepted()[before:] == [(rising, 90.0)]
    assert pushes(session)[falling].pushed_progress == expected[falling]


def test_completion_is_pushed_as_100(
    pushing_app: Flask, runner: FlaskCliRunner, session: Session, fake: FakeRtopilot
) -> None:
    expected = make_enrolments(session)
    assert sync(runner).exit_code == 0
    sch_id = next(sch_id for sch_id, progress in expected.items() if progress == 40)
    row = session.scalars(select(Enrolment).where(Enrolment.sch_id == sch_id)).one()
    # The LMS may leave SCH_PROGRESS behind when it marks an enrolment COMPLETED.
    row.status, row.completed_on, row.score_hundredths = "COMPLETED", dt.date(2024, 5, 1), 9000
    session.commit()
    assert sync(runner).exit_code == 0
    assert fake.accepted()[-1] == (sch_id, 100.0)


def test_a_400_is_recorded_and_the_run_continues(
    pushing_app: Flask, runner: FlaskCliRunner, session: Session, fake: FakeRtopilot
) -> None:
    expected = make_enrolments(session)
    bu = factories.business_unit(session)
    blank = factories.enrolment(session, factories.learner(session, factories.work_unit(session, bu)), factories.course(session), status="IN_PROGRESS", progress=30)
    blank.sch_id = ""  # an LMS row without its enrolment id: RTOPilot's validation refuses it
    session.commit()

    result = sync(runner)
    assert result.exit_code == INCOMPLETE_EXIT_CODE, result.output
    assert "sent 4, unchanged 1, failed 1, pending 0" in result.stdout
    assert "incomplete: 1 refused by RTOPilot, 0 pending" in result.stderr
    state = pushes(session)
    assert state[""].pushed_progress is None
    assert state[""].last_error == "HTTP 400: lmsEnrolmentId is required"
    assert {sch_id for sch_id, _ in fake.accepted()} == set(expected)


def test_500s_dropped_and_hung_connections_are_retried_until_they_succeed(
    pushing_app: Flask, runner: FlaskCliRunner, session: Session, fake: FakeRtopilot
) -> None:
    expected = make_enrolments(session)
    # More attempts than injected failures, so no enrolment can run out whatever the interleaving.
    pushing_app.config.update(RTOPILOT_TIMEOUT=0.3, RTOPILOT_MAX_ATTEMPTS=7)
    fake.fail_with_500 = 3
    fake.drop_connections = 2
    fake.hang_next = 1
    fake.hang_seconds = 0.6

    result = sync(runner)
    assert result.exit_code == 0, result.output
    assert "sent 4, unchanged 1, failed 0, pending 0" in result.stdout
    assert fake.statuses().count(500) == 3
    assert sorted(fake.accepted()) == sorted((sch_id, float(p)) for sch_id, p in expected.items())


def test_a_persistent_500_leaves_the_enrolment_pending_for_the_next_run(
    pushing_app: Flask, runner: FlaskCliRunner, session: Session, fake: FakeRtopilot
) -> None:
    expected = make_enrolments(session)
    stuck = next(iter(expected))
    fake.always_500_for = {stuck}

    result = sync(runner)
    assert result.exit_code == INCOMPLETE_EXIT_CODE, result.output
    assert "sent 3, unchanged 1, failed 0, pending 1" in result.stdout
    assert "incomplete: 0 refused by RTOPilot, 1 pending" in result.stderr
    attempts = [r for r in fake.received if r.lms_enrolment_id == stuck]
    assert len(attempts) == pushing_app.config["RTOPILOT_MAX_ATTEMPTS"]
    assert pushes(session)[stuck].pushed_progress is None
    assert pushes(session)[stuck].last_error == "HTTP 500: unexpected error"

    fake.always_500_for = set()
    again = sync(runner)
    assert again.exit_code == 0, again.output
    assert "sent 1, unchanged 4, failed 0, pending 0" in again.stdout
    assert fake.accepted()[-1] == (stuck, float(expected[stuck]))
    assert pushes(session)[stuck].last_error is None


def test_a_401_stops_at_once_without_showing_the_key(
    pushing_app: Flask, runner: FlaskCliRunner, session: Session, fake: FakeRtopilot
) -> None:
    make_enrolments(session)
    pushing_app.config["RTOPILOT_API_KEY"] = OTHER_KEY

    result = sync(runner, "--concurrency", "1")
    assert result.exit_code != 0
    assert "401" in result.output and "rotated" in result.output
    assert "sent 0, unchanged 1, failed 0, pending 4" in result.output
    assert OTHER_KEY not in result.output and OTHER_KEY[5:] not in result.output
    assert fake.statuses() == [401]
    assert pushes(session) == {}


@pytest.mark.parametrize(
    ("url", "key", "complaint"),
    [
        ("", KEY, "SOUTHROCK_RTOPILOT_URL is not set"),
        ("ftp://example.test", KEY, "must be an http(s) URL"),
        ("http://rtopilot.example.test", KEY, "must use https://"),
        (None, "", "SOUTHROCK_RTOPILOT_API_KEY is not set"),
        (None, "rtop_" + "g" * 64, "malformed"),
        (None, KEY[:-1], "malformed"),
        (None, KEY[5:], "malformed"),
    ],
)
def test_bad_settings_fail_clearly_and_never_echo_the_key(
    pushing_app: Flask, runner: FlaskCliRunner, session: Session, fake: FakeRtopilot, url: str | None, key: str, complaint: str
) -> None:
    make_enrolments(session)
    if url is not None:
        pushing_app.config["RTOPILOT_URL"] = url
    pushing_app.config["RTOPILOT_API_KEY"] = key
    result = sync(runner)
    assert result.exit_code != 0
    assert complaint in result.output
    if key:
        assert key not in result.output
    assert fake.received == []


def test_dry_run_lists_what_would_be_sent_and_sends_and_writes_nothing(
    pushing_app: Flask, runner: FlaskCliRunner, session: Session, fake: FakeRtopilot
) -> None:
    expected = make_enrolments(session)
    pushing_app.config["RTOPILOT_API_KEY"] = ""  # a dry run needs no credentials
    result = sync(runner, "--dry-run")
    assert result.exit_code == 0, result.output
    for sch_id, progress in expected.items():
        assert f"{sch_id}\t{progress}\t(last pushed: never)" in result.stdout
    assert "dry run: would send 4, unchanged 1" in result.stdout
    assert fake.received == []
    assert pushes(session) == {}


@pytest.mark.parametrize(
    ("base", "endpoint"),
    [
        ("https://v2.rtopilot.com.au", "https://v2.rtopilot.com.au/api/enrolments/lms-progress"),
        ("https://v2.rtopilot.com.au/", "https://v2.rtopilot.com.au/api/enrolments/lms-progress"),
        ("https://v2.rtopilot.com.au/api", "https://v2.rtopilot.com.au/api/enrolments/lms-progress"),
    ],
)
def test_the_base_url_may_include_the_api_prefix(base: str, endpoint: str) -> None:
    assert endpoint_url(base) == endpoint


def many_enrolments(session: Session, count: int = 24) -> dict[str, int]:
    """Enrolments in progress at 1..count percent; return sch_id → progress."""
    bu = factories.business_unit(session)
    wu = factories.work_unit(session, bu)
    course = factories.course(session)
    expected = {}
    for index in range(count):
        row = factories.enrolment(session, factories.learner(session, wu), course, status="IN_PROGRESS", progress=index + 1)
        expected[row.sch_id] = index + 1
    session.commit()
    return expected


def test_ctrl_c_finishes_in_flight_pushes_and_the_next_run_resumes(
    pushing_app: Flask, runner: FlaskCliRunner, session: Session, fake: FakeRtopilot
) -> None:
    expected = many_enrolments(session)

    def ctrl_c(successes: int) -> None:
        if successes == 6:
            os.kill(os.getpid(), signal.SIGINT)

    fake.after_success = ctrl_c
    interrupted = sync(runner, "--concurrency", "3")
    fake.after_success = lambda _successes: None
    assert interrupted.exit_code == 128 + signal.SIGINT, interrupted.output
    assert "interrupted" in interrupted.stderr
    first = len(fake.accepted())
    assert 6 <= first < len(expected)
    # What RTOPilot acknowledged before the stop is recorded, so the next run does not resend it.
    assert len([push for push in pushes(session).values() if push.pushed_progress is not None]) == first

    resumed = sync(runner)
    assert resumed.exit_code == 0, resumed.output
    assert f"sent {len(expected) - first}, unchanged {first}, failed 0, pending 0" in resumed.stdout
    assert sorted(fake.accepted()) == sorted((sch_id, float(p)) for sch_id, p in expected.items())


def test_a_killed_sync_resumes_and_never_sends_a_success_twice(backend: str, tmp_path: Path, fake: FakeRtopilot) -> None:
    with fresh_database(backend, tmp_path) as url:
        app = migrated_app(url, RTOPILOT_URL=fake.url, RTOPILOT_API_KEY=KEY)
        with get_database(app).session_factory() as session:
            expected = many_enrolments(session)
        env = {
            **os.environ,
            "SOUTHROCK_DATABASE_URL": url,
            "SOUTHROCK_RATELIMIT_STORAGE_URI": "memory://",
            "SOUTHROCK_RTOPILOT_URL": fake.url,
            "SOUTHROCK_RTOPILOT_API_KEY": KEY,
        }
        process: list[subprocess.Popen[str]] = []

        def kill(successes: int) -> None:
            if successes == 6:
                process[0].send_signal(signal.SIGTERM)

        fake.after_success = kill
        command = [str(SOUTHROCK), "rtopilot", "sync", "--no-progress", "--concurrency", "3"]
        process.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        out, err = process[0].communicate(timeout=60)
        fake.after_success = lambda _successes: None
        assert process[0].returncode == 128 + signal.SIGTERM, out + err
        first = len(fake.accepted())
        assert 6 <= first < len(expected)

        try:
            resumed = app.test_cli_runner().invoke(args=["rtopilot", "sync", "--no-progress"])
        finally:
            dispose(app)
        assert resumed.exit_code == 0, resumed.output
        assert f"sent {len(expected) - first}, unchanged {first}, failed 0, pending 0" in resumed.stdout
        # Every enrolment reached RTOPilot exactly once, with its final progress.
        assert sorted(fake.accepted()) == sorted((sch_id, float(p)) for sch_id, p in expected.items())


@pytest.mark.parametrize("change", ["key", "url"])
def test_a_new_target_gets_every_enrolment_again_once(
    pushing_app: Flask, runner: FlaskCliRunner, session: Session, fake: FakeRtopilot, change: str
) -> None:
    """What one RTOPilot acknowledged says nothing about another (staging → production, another organisation)."""
    expected = make_enrolments(session)
    assert sync(runner).exit_code == 0
    with running(KEY) as elsewhere:
        if change == "key":  # another organisation's key on the same RTOPilot
            fake.api_key = OTHER_KEY
            pushing_app.config["RTOPILOT_API_KEY"] = OTHER_KEY
            target = fake
        else:
            pushing_app.config["RTOPILOT_URL"] = elsewhere.url
            target = elsewhere
        before = len(target.accepted())
        result = sync(runner)
        assert result.exit_code == 0, result.output
        assert "sent 4, unchanged 1, failed 0, pending 0" in result.stdout
        assert sorted(target.accepted()[before:]) == sorted((sch_id, float(p)) for sch_id, p in expected.items())
        assert "sent 0, unchanged 5" in sync(runner).stdout
    assert {push.target for push in pushes(session).values()} == {target_of(settings_from_config(pushing_app.config))}


def test_all_resends_every_enrolment_with_progress(
    pushing_app: Flask, runner: FlaskCliRunner, session: Session, fake: FakeRtopilot
) -> None:
    """For enrolments RTOPilot linked after their push was answered 200 (it answers 200 to unknown ids too)."""
    expected = make_enrolments(session)
    assert sync(runner).exit_code == 0
    assert "would send 4, unchanged 1" in sync(runner, "--dry-run", "--all").stdout
    result = sync(runner, "--all")
    assert result.exit_code == 0, result.output
    assert "sent 4, unchanged 1, failed 0, pending 0" in result.stdout
    assert len(fake.accepted()) == 8 and fake.progress == {sch_id: float(p) for sch_id, p in expected.items()}


def test_a_redirect_is_never_followed_nor_counted_as_sent(
    pushing_app: Flask, runner: FlaskCliRunner, session: Session, fake: FakeRtopilot
) -> None:
    make_enrolments(session)
    fake.redirect_next = 1
    result = sync(runner, "--concurrency", "1")
    assert result.exit_code == 1
    assert "redirect" in result.output and "SOUTHROCK_RTOPILOT_URL" in result.output
    assert fake.gets == 0  # the PUT was not repeated as a GET to the login page
    assert pushes(session) == {}


def test_an_answer_cut_off_mid_body_is_retried(
    pushing_app: Flask, runner: FlaskCliRunner, session: Session, fake: FakeRtopilot
) -> None:
    expected = make_enrolments(session)
    fake.truncate_next = 2
    result = sync(runner, "--concurrency", "1")
    assert result.exit_code == 0, result.output
    assert "sent 4, unchanged 1, failed 0, pending 0" in result.stdout
    assert sorted(fake.accepted()) == sorted((sch_id, float(p)) for sch_id, p in expected.items())


def test_an_error_without_title_or_message_is_stored_as_the_status_reason(
    pushing_app: Flask, runner: FlaskCliRunner, session: Session, fake: FakeRtopilot
) -> None:
    make_enrolments(session)
    fake.bare_400 = True
    assert sync(runner).exit_code == INCOMPLETE_EXIT_CODE
    assert {push.last_error for push in pushes(session).values()} == {"HTTP 400: Bad Request"}


def test_an_error_message_that_echoes_the_key_is_stored_without_it(
    pushing_app: Flask, runner: FlaskCliRunner, session: Session, fake: FakeRtopilot
) -> None:
    make_enrolments(session)
    fake.echo_authorization = True
    result = sync(runner)
    assert result.exit_code == INCOMPLETE_EXIT_CODE
    errors = {push.last_error for push in pushes(session).values()}
    assert errors == {"HTTP 400: bad header Bearer rtop_…"}
    assert KEY not in result.output


def test_a_long_rtopilot_error_is_cut_to_the_stored_length() -> None:
    import json

    import requests

    from southrock_api.integrations.rtopilot import MAX_ERROR_LENGTH, _error_message

    response = requests.Response()
    response.status_code, response.reason = 400, "Bad Request"
    response._content = json.dumps({"message": "x" * 5000}).encode()
    assert _error_message(response, KEY) == "x" * MAX_ERROR_LENGTH
