"""Webhook delivery against real receivers on loopback: signed per Standard Webhooks, retried, disabled, replayed."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import update
from standardwebhooks import Webhook

from southrock_api.data.db import get_database
from southrock_api.data.models import ApiToken

from tests.fake_receiver import Receiver
from tests.test_import import BASE, write_files
from tests.test_import_deletions import imported

@pytest.fixture()
def hooks(app_with: Callable[..., Flask]) -> FlaskCliRunner:
    """A CLI runner whose deliveries time out after 0.3 s and retry after 0.05 s, three times."""
    return app_with(WEBHOOK_TIMEOUT=0.3, WEBHOOK_BACKOFF_SECONDS="0.05,0.05,0.05").test_cli_runner()


def subscribed(runner: FlaskCliRunner, tmp_path: Path, url: str, *options: str) -> dict[str, str]:
    """Import the base files, issue an EDU token and subscribe URL for it; return the subscription's id and secret and the token."""
    imported(runner, write_files(tmp_path / "base", BASE))
    created = json.loads(runner.invoke(args=["tokens", "create", "--json", "--business-unit", "EDU"]).stdout)
    result = runner.invoke(args=["webhooks", "add", "--json", "--url", url, "--token", created["public_key"], *options])
    assert result.exit_code == 0, result.output
    return {**json.loads(result.stdout), "token": created["public_key"]}


def changed(runner: FlaskCliRunner, tmp_path: Path, name: str = "renamed", description: str = "Renamed") -> None:
    """Import a change every EDU subscription sees."""
    files = {"courses.csv": f"CRS_CODE,CRS_DESC\nSTUDENTS_UNI,{description}\n"}
    imported(runner, write_files(tmp_path / name, files))


def deliver(runner: FlaskCliRunner) -> str:
    """Run one `webhooks deliver` pass."""
    result = runner.invoke(args=["webhooks", "deliver"])
    assert result.exit_code == 0, result.output
    return result.output


def deliver_until(runner: FlaskCliRunner, done: Callable[[], bool], seconds: float = 10.0) -> None:
    """Run delivery passes until `done` holds (retries come due after their backoff)."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "deliveries did not settle in time"
        deliver(runner)
        time.sleep(0.02)


def log(runner: FlaskCliRunner, *options: str) -> list[dict[str, Any]]:
    """`webhooks deliveries --json`."""
    return list(json.loads(runner.invoke(args=["webhooks", "deliveries", "--json", *options]).stdout))


def listed(runner: FlaskCliRunner) -> dict[str, Any]:
    """The one subscription `webhooks list --json` shows."""
    [row] = json.loads(runner.invoke(args=["webhooks", "list", "--json"]).stdout)
    return dict(row)


def test_a_delivery_is_signed_and_logged(hooks: FlaskCliRunner, tmp_path: Path) -> None:
    with Receiver(204) as receiver:
        subscription = subscribed(hooks, tmp_path, receiver.url)
        changed(hooks, tmp_path)
        assert deliver(hooks).strip() == "delivered 1, to retry 0, dead 0"
        assert deliver(hooks).strip() == "delivered 0, to retry 0, dead 0"
    [post] = receiver.posts()
    event = Webhook(subscription["secret"]).verify(post.body, post.headers)
    assert event["type"] == "enrolments.changed" and event["data"]["upserted"] == 1
    assert post.headers["webhook-id"].startswith("evt_") and post.headers["content-type"] == "application/json"
    [attempt] = log(hooks)
    assert (attempt["event"], attempt["status"], attempt["delivery"], attempt["next_try"]) == (
        post.headers["webhook-id"], 204, "succeeded", None,
    )


def test_500s_and_timeouts_are_retried_with_the_same_id(hooks: FlaskCliRunner, tmp_path: Path) -> None:
    with Receiver(500, None, default=200, hang=1.0) as receiver:
        subscribed(hooks, tmp_path, receiver.url)
        changed(hooks, tmp_path)
        deliver_until(hooks, lambda: any(row["status"] == 200 for row in log(hooks)))
    posts = receiver.posts()
    assert len(posts) == 3 and len({post.headers["webhook-id"] for post in posts}) == 1
    failed = log(hooks, "--failed")
    assert [(row["attempt"], row["status"]) for row in failed] == [(1, 500), (2, None)]
    assert failed[0]["error"] == "answered 500" and failed[1]["error"] == "no answer within 0.3 s"
    assert listed(hooks)["state"] == "enabled"


def test_sustained_failure_disables_the_subscription_with_a_warning(
    hooks: FlaskCliRunner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Receiver(default=503) as receiver, caplog.at_level(logging.WARNING, "southrock_api.integrations.webhooks"):
        subscribed(hooks, tmp_path, receiver.url)
        changed(hooks, tmp_path)
        deliver_until(hooks, lambda: listed(hooks)["state"] == "disabled")
    # The first attempt and one after each of the three pauses.
    assert len(receiver.posts()) == 4
    assert log(hooks)[-1]["delivery"] == "dead"
    reason = listed(hooks)["disabled_reason"]
    assert reason.startswith("4 attempts failed") and reason.endswith("answered 503")
    assert any("disabled" in record.getMessage() for record in caplog.records)


def test_410_disables_at_once_and_redirects_are_not_followed(hooks: FlaskCliRunner, tmp_path: Path) -> None:
    with Receiver(302, 410) as receiver:
        subscribed(hooks, tmp_path, receiver.url)
        changed(hooks, tmp_path)
        deliver_until(hooks, lambda: listed(hooks)["state"] == "disabled")
        changed(hooks, tmp_path, "again", "Again")
        deliver(hooks)
    # The redirect was an answer, not a place to go; after the 410, nothing more was sent.
    assert [request.method for request in receiver.requests] == ["POST", "POST"]
    assert [row["error"] for row in log(hooks)] == [
        "redirect not followed: deliveries go to the subscribed URL only", "answered 410",
    ]
    assert "410 Gone" in listed(hooks)["disabled_reason"]


def test_rotation_sends_both_signatures_during_the_overlap(hooks: FlaskCliRunner, tmp_path: Path) -> None:
    with Receiver(204) as receiver:
        subscription = subscribed(hooks, tmp_path, receiver.url)
        rotated = json.loads(hooks.invoke(args=["webhooks", "rotate-secret", "--json", subscription["id"]]).stdout)
        changed(hooks, tmp_path)
        deliver(hooks)
        # Without an overlap the old secret stops signing at once.
        newest = json.loads(
            hooks.invoke(args=["webhooks", "rotate-secret", "--json", "--overlap", "0", subscription["id"]]).stdout
        )["secret"]
        changed(hooks, tmp_path, "again", "Again")
        deliver(hooks)
    during, after = receiver.posts()
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    for secret in (subscription["secret"], rotated["secret"]):
        Webhook(secret).verify(during.body, during.headers)
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    Webhook(newest).verify(after.body, after.headers)


def test_replay_sends_again_with_the_same_ids(hooks: FlaskCliRunner, tmp_path: Path) -> None:
    with Receiver(204) as receiver:
        subscribed(hooks, tmp_path, receiver.url)
        changed(hooks, tmp_path)
        deliver(hooks)
        [first] = receiver.posts()
        event_id = first.headers["webhook-id"]
        replayed = hooks.invoke(args=["webhooks", "replay", "--event", event_id])
        assert replayed.exit_code == 0 and replayed.output.startswith("1 event(s) due again")
        deliver(hooks)
        assert hooks.invoke(args=["webhooks", "replay", "--since", "2000-01-01T00:00"]).output.startswith("1 event(s)")
        deliver(hooks)
    assert [post.headers["webhook-id"] for post in receiver.posts()] == [event_id] * 3
    assert [post.body for post in receiver.posts()] == [first.body] * 3


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--since", "yesterday"], "is not a date and time"),
        (["--event", "evt_nope"], "no event 'evt_nope'"),
        ([], "exactly one of --event ID or --since DATETIME"),
        (["--event", "evt_nope", "--since", "2026-01-01"], "exactly one of"),
    ],
)
def test_bad_replays_are_refused(hooks: FlaskCliRunner, args: list[str], problem: str) -> None:
    result = hooks.invoke(args=["webhooks", "replay", *args])
    assert result.exit_code == 2 and problem in result.output


def test_a_revoked_token_stops_deliveries(hooks: FlaskCliRunner, tmp_path: Path) -> None:
    with Receiver(204) as receiver:
        subscription = subscribed(hooks, tmp_path, receiver.url)
        changed(hooks, tmp_path)
        assert hooks.invoke(args=["tokens", "revoke", subscription["token"]]).exit_code == 0
        deliver(hooks)
    assert receiver.posts() == []
    assert (listed(hooks)["state"], listed(hooks)["disabled_reason"]) == ("disabled", "its API token is revoked")
    result = hooks.invoke(args=["webhooks", "enable", subscription["id"]])
    assert result.exit_code == 2 and "is revoked" in result.output


def test_an_expired_token_stops_deliveries(hooks: FlaskCliRunner, tmp_path: Path) -> None:
    with Receiver(204) as receiver:
        subscription = subscribed(hooks, tmp_path, receiver.url)
        changed(hooks, tmp_path)
        # The token's last day passed after the event was written, before it was sent.
        with get_database(hooks.app).session_factory() as session:
            session.execute(
                update(ApiToken)
                .where(ApiToken.public_key == subscription["token"])
                .values(expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1))
            )
            session.commit()
        deliver(hooks)
        # And an import after it writes no event for that subscription at all.
        changed(hooks, tmp_path, "again", "Renamed again")
        deliver(hooks)
    assert receiver.posts() == []
    assert (listed(hooks)["state"], listed(hooks)["disabled_reason"]) == ("disabled", "its API token is expired")
