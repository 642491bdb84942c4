"""The webhook outbox: one thin event per subscription whose scope an import changed, written in the import's transaction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from southrock_api.admin.tokens import IssuedToken
from southrock_api.data.models import WebhookDelivery, WebhookEvent
from tests import factories
from tests.apiclient import ApiClient
from tests.test_import import BASE, ENROLMENTS_HEADER, write_files
from tests.test_import_deletions import imported

RECEIVER = "https://receiver.example/hooks"


def subscribe(runner: FlaskCliRunner, token: IssuedToken, *options: str) -> str:
    """Add a subscription for the token; return its id."""
    result = runner.invoke(args=["webhooks", "add", "--json", "--url", RECEIVER, "--token", token.public_key, *options])
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["id"])


def events(session: Session) -> list[dict[str, Any]]:
    """The events written so far, oldest first, with their delivery's state."""
    session.expire_all()
    rows = session.execute(
        select(WebhookEvent.public_id, WebhookEvent.payload, WebhookDelivery.state)
        .join(WebhookDelivery, WebhookDelivery.event_id == WebhookEvent.id)
        .order_by(WebhookEvent.id)
    )
    return [{"id": public_id, "state": state, **json.loads(payload)} for public_id, payload, state in rows]


def token_for(session: Session, runner: FlaskCliRunner, tmp_path: Path, unit: str) -> IssuedToken:
    """Import the base files and issue a token for business unit or work unit `unit`."""
    imported(runner, write_files(tmp_path / "base", BASE))
    args = ["--business-unit", unit] if unit in ("EDU", "UNI") else ["--work-unit", unit]
    result = runner.invoke(args=["tokens", "create", "--json", *args])
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    return IssuedToken(created["public_key"], created["private_key"], created["unit_type"], created["unit"], None, None)


def test_an_import_that_changes_the_scope_writes_one_thin_event(
    runner: FlaskCliRunner, session: Session, client: FlaskClient, tmp_path: Path
) -> None:
    token = token_for(session, runner, tmp_path, "EDU")
    subscribe(runner, token)
    delta = ENROLMENTS_HEADER + "S1,john.student,INFCRTL_GRP3,WITHDRAWN,,,0\nS3,betty.student,INFCRTL_GRP3,COMPLETED,2017-03-01,70,100\n"
    imported(runner, write_files(tmp_path / "delta", {"enrolments.csv": delta}))
    [event] = events(session)
    assert event["id"].startswith("evt_") and event["state"] == "pending"
    assert event["type"] == "enrolments.changed"
    assert (event["data"]["upserted"], event["data"]["deleted"]) == (1, 1)
    # Thin: no learner's data, only counts and where to pull them.
    text = json.dumps(event)
    assert "john" not in text and "betty" not in text and "S1" not in text.replace(event["data"]["since"], "")
    # The since token pulls exactly this import's changes with the subscription's own token.
    answer = ApiClient(client, token).get(event["data"]["changes_url"])
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert sorted((change["CHANGE"], change["SCH_ID"]) for change in answer.get_json()) == [("DELETE", "S1"), ("UPSERT", "S3")]


def test_no_event_for_an_import_that_changes_nothing_in_the_scope(
    runner: FlaskCliRunner, session: Session, tmp_path: Path
) -> None:
    # UNIV-STUD-1 holds S2 (and S3); S1 is UNIV-STUD's only.
    token = token_for(session, runner, tmp_path, "UNIV-STUD-1")
    subscribe(runner, token)
    withdrawn = ENROLMENTS_HEADER + "S1,john.student,INFCRTL_GRP3,WITHDRAWN,,,0\n"
    imported(runner, write_files(tmp_path / "outside", {"enrolments.csv": withdrawn}))
    imported(runner, write_files(tmp_path / "outside", {}))  # the same files again: no change at all
    assert events(session) == []
    deleted = "SCH_ID\nS2\n"
    imported(runner, write_files(tmp_path / "inside", {"deletions.csv": deleted}))
    [event] = events(session)
    assert (event["data"]["upserted"], event["data"]["deleted"]) == (0, 1)


def test_orgcodes_narrow_what_a_subscription_is_told(runner: FlaskCliRunner, session: Session, tmp_path: Path) -> None:
    token = token_for(session, runner, tmp_path, "EDU")
    subscribe(runner, token, "--orgcodes", "UNIV-STUD-1")
    withdrawn = ENROLMENTS_HEADER + "S1,john.student,INFCRTL_GRP3,WITHDRAWN,,,0\n"
    imported(runner, write_files(tmp_path / "outside", {"enrolments.csv": withdrawn}))
    assert events(session) == []


def test_a_failed_import_writes_no_event(runner: FlaskCliRunner, session: Session, tmp_path: Path) -> None:
    token = token_for(session, runner, tmp_path, "EDU")
    subscribe(runner, token)
    bad = {"courses.csv": "CRS_CODE,CRS_DESC\nSTUDENTS_UNI,Renamed\n", "deletions.csv": "SCH_ID\nNOPE\n"}
    assert runner.invoke(args=["import", str(write_files(tmp_path / "bad", bad))]).exit_code == 1
    assert events(session) == []


def test_disabled_subscriptions_and_revoked_tokens_get_no_events(
    runner: FlaskCliRunner, session: Session, tmp_path: Path
) -> None:
    token = token_for(session, runner, tmp_path, "EDU")
    disabled = subscribe(runner, token)
    assert runner.invoke(args=["webhooks", "disable", disabled]).exit_code == 0
    other = factories.token(session, factories.business_unit(session, code="ELSE"))
    session.commit()
    subscribe(runner, other)
    assert runner.invoke(args=["tokens", "revoke", other.public_key]).exit_code == 0
    imported(runner, write_files(tmp_path / "rename", {"courses.csv": "CRS_CODE,CRS_DESC\nSTUDENTS_UNI,Renamed\n"}))
    assert events(session) == []
