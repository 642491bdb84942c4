"""spec §7: Training Coordinators and Managers create, list, revoke and rotate tokens (CLI)."""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
import re
import time
from typing import Callable

import pytest
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from southrock_api.admin.tokens import mask
from southrock_api.data.models import ApiToken
from tests import factories
from tests.servers import ROOT


@pytest.fixture()
def units(session: Session) -> None:
    bu = factories.business_unit(session, code="EDU", name="Education")
    factories.work_unit(session, bu, code="UNIV-STUD", name="University - Students")
    session.commit()


def create(runner: FlaskCliRunner, *args: str) -> dict[str, str]:
    result = runner.invoke(args=["tokens", "create", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    ("option", "code", "expected"),
    [
        ("--business-unit", "EDU", {"ORGGRP_CODE": "EDU", "ORGGRP_NAME": "Education"}),
        ("--work-unit", "UNIV-STUD", {"ORG_CODE": "UNIV-STUD", "ORG_NAME": "University - Students"}),
    ],
)
def test_create_prints_one_json_object_whose_header_works(
    runner: FlaskCliRunner, client: FlaskClient, units: None, option: str, code: str, expected: dict[str, str]
) -> None:
    issued = create(runner, option, code, "--description", "payroll sync")
    assert {"public_key", "private_key", "authorization"} <= set(issued)
    assert ":" not in issued["public_key"] and ":" not in issued["private_key"]
    assert issued["private_key"].startswith("srsk_") and len(issued["private_key"]) >= 40
    response = client.get("/api/v1", headers={"Authorization": issued["authorization"]})
    assert response.get_json() == expected


def test_create_without_json_shows_keys_and_header_once(runner: FlaskCliRunner, units: None) -> None:
    result = runner.invoke(args=["tokens", "create", "--business-unit", "EDU"])
    assert result.exit_code == 0
    assert "Private key:" in result.stdout and "Authorization: Basic " in result.stdout
    assert "never be shown again" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--business-unit", "EDU", "--work-unit", "UNIV-STUD"],
        ["--business-unit", "NOPE"],
        ["--work-unit", "NOPE"],
    ],
)
def test_create_needs_exactly_one_existing_unit(runner: FlaskCliRunner, units: None, args: list[str]) -> None:
    result = runner.invoke(args=["tokens", "create", *args])
    assert result.exit_code == 2
    assert "Error" in result.output


def test_keys_are_unique_and_random(runner: FlaskCliRunner, units: None) -> None:
    keys = [create(runner, "--business-unit", "EDU") for _ in range(5)]
    assert len({k["public_key"] for k in keys}) == 5
    assert len({k["private_key"] for k in keys}) == 5


def test_list_never_shows_a_private_key_and_masks_public_keys(runner: FlaskCliRunner, units: None) -> None:
    issued = create(runner, "--business-unit", "EDU", "--description", "nightly")
    for args in (["tokens", "list"], ["tokens", "list", "--json"]):
        result = runner.invoke(args=args)
        assert result.exit_code == 0
        assert issued["private_key"] not in result.output
        assert issued["public_key"] not in result.output
    rows = json.loads(runner.invoke(args=["tokens", "list", "--json"]).stdout)
    assert rows[0]["public_key"] == f"srpk_{issued['public_key'][5:9]}…{issued['public_key'][-4:]}"
    assert rows[0]["unit"] == "EDU" and rows[0]["description"] == "nightly" and rows[0]["state"] == "active"


def test_revoke_takes_effect_on_the_next_request(runner: FlaskCliRunner, client: FlaskClient, units: None) -> None:
    issued = create(runner, "--work-unit", "UNIV-STUD")
    headers = {"Authorization": issued["authorization"]}
    assert client.get("/api/v1", headers=headers).status_code == 200
    result = runner.invoke(args=["tokens", "revoke", issued["public_key"]])
    assert result.exit_code == 0
    assert client.get("/api/v1", headers=headers).status_code == 401
    rows = json.loads(runner.invoke(args=["tokens", "list", "--json"]).stdout)
    assert rows[0]["state"] == "revoked"


# Fragments of a key (srpk_ + body) that match it, as a slip of the keyboard could.
FRAGMENTS = {
    "last character": lambda key: "…" + key[-1],
    "prefix only": lambda key: "srpk_…",
    "first character": lambda key: key[:6] + "…",
    "three before": lambda key: key[:8] + "…" + key[-4:],
    "three after": lambda key: key[:9] + "…" + key[-3:],
    "no prefix": lambda key: key[5:9] + "…" + key[-4:],
}


@pytest.mark.parametrize("fragment", FRAGMENTS.values(), ids=FRAGMENTS.keys())
def test_revoke_and_rotate_refuse_a_fragment_that_could_name_another_token(
    runner: FlaskCliRunner, client: FlaskClient, units: None, fragment: Callable[[str], str]
) -> None:
    issued = create(runner, "--business-unit", "EDU")
    for command in ("revoke", "rotate"):
        # "--": a key body may begin with "-" (URL-safe Base64), which click would take for an option.
        result = runner.invoke(args=["tokens", command, "--", fragment(issued["public_key"])])
        assert result.exit_code != 0
        assert "too little of a key" in result.output
    assert client.get("/api/v1", headers={"Authorization": issued["authorization"]}).status_code == 200


def test_a_pasted_private_key_is_refused_and_never_repeated(runner: FlaskCliRunner, units: None) -> None:
    issued = create(runner, "--business-unit", "EDU")
    for typed in (issued["private_key"], f"{issued['public_key']}:{issued['private_key']}"):
        result = runner.invoke(args=["tokens", "revoke", typed])
        assert result.exit_code != 0
        assert "give the public key" in result.output
        assert issued["private_key"][5:] not in result.output


@pytest.mark.parametrize("ellipsis", ["…", "..."])
def test_revoke_accepts_the_masked_key_from_the_list(runner: FlaskCliRunner, client: FlaskClient, units: None, ellipsis: str) -> None:
    issued = create(runner, "--business-unit", "EDU")
    masked = json.loads(runner.invoke(args=["tokens", "list", "--json"]).stdout)[0]["public_key"]
    # As printed, or typed by hand with three dots.
    assert runner.invoke(args=["tokens", "revoke", masked.replace("…", ellipsis)]).exit_code == 0
    assert client.get("/api/v1", headers={"Authorization": issued["authorization"]}).status_code == 401


def test_revoke_of_an_unknown_key_fails_clearly(runner: FlaskCliRunner, units: None) -> None:
    result = runner.invoke(args=["tokens", "revoke", "srpk_nobody"])
    assert result.exit_code == 2 and "no token" in result.output


def test_rotate_issues_a_new_private_key_and_the_old_one_stops(runner: FlaskCliRunner, client: FlaskClient, units: None) -> None:
    issued = create(runner, "--business-unit", "EDU")
    result = runner.invoke(args=["tokens", "rotate", issued["public_key"], "--json"])
    assert result.exit_code == 0
    rotated = json.loads(result.stdout)
    assert rotated["public_key"] == issued["public_key"]
    assert rotated["private_key"] != issued["private_key"]
    assert client.get("/api/v1", headers={"Authorization": issued["authorization"]}).status_code == 401
    assert client.get("/api/v1", headers={"Authorization": rotated["authorization"]}).status_code == 200


def test_expiry_is_the_last_day_a_token_works(runner: FlaskCliRunner, units: None) -> None:
    issued = create(runner, "--business-unit", "EDU", "--expires", "2027-06-30")
    assert issued["expires"] == "2027-07-01T00:00:00+00:00"
    rows = json.loads(runner.invoke(args=["tokens", "list", "--json"]).stdout)
    assert rows[0]["expires"] == "2027-07-01T00:00:00+00:00"
    # Read back from the database (naive on SQLite), rotation reports the same UTC instant.
    rotated = json.loads(runner.invoke(args=["tokens", "rotate", issued["public_key"], "--json"]).stdout)
    assert rotated["expires"] == "2027-07-01T00:00:00+00:00"


@pytest.mark.parametrize(("expires", "says"), [("2000-01-01", "2000-01-01 has passed"), ("9999-12-31", "must be before 9999-12-31")])
def test_an_expiry_that_has_passed_or_cannot_be_stored_is_refused(
    runner: FlaskCliRunner, units: None, expires: str, says: str
) -> None:
    result = runner.invoke(args=["tokens", "create", "--business-unit", "EDU", "--expires", expires])
    assert result.exit_code == 2
    assert says in result.output
    assert "Traceback" not in result.output
    assert json.loads(runner.invoke(args=["tokens", "list", "--json"]).stdout) == []


def test_a_token_expiring_today_works_until_midnight_utc(runner: FlaskCliRunner, client: FlaskClient, units: None) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    if (now.hour, now.minute) == (23, 59):
        time.sleep(61 - now.second)  # not across midnight between here and the command
    today = dt.datetime.now(dt.timezone.utc).date()
    issued = create(runner, "--business-unit", "EDU", "--expires", today.isoformat())
    assert issued["expires"] == f"{today + dt.timedelta(days=1)}T00:00:00+00:00"
    assert client.get("/api/v1", headers={"Authorization": issued["authorization"]}).status_code == 200


def test_audit_records_who_did_what_without_secrets(runner: FlaskCliRunner, units: None) -> None:
    issued = create(runner, "--business-unit", "EDU")
    runner.invoke(args=["tokens", "rotate", issued["public_key"]])
    runner.invoke(args=["tokens", "revoke", issued["public_key"]])
    result = runner.invoke(args=["tokens", "audit", "--json"])
    events = json.loads(result.stdout)
    assert [event["action"] for event in events] == ["create", "rotate", "revoke"]
    assert all(event["actor"] for event in events)
    assert issued["private_key"] not in result.output


def test_the_audited_actor_is_the_account_not_what_the_environment_claims(
    runner: FlaskCliRunner, units: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(name, "alice")
    monkeypatch.delenv("SUDO_USER", raising=False)
    create(runner, "--business-unit", "EDU")
    monkeypatch.setenv("SUDO_USER", "bob")
    create(runner, "--business-unit", "EDU")
    actors = [event["actor"] for event in json.loads(runner.invoke(args=["tokens", "audit", "--json"]).stdout)]
    account = pwd.getpwuid(os.geteuid()).pw_name
    assert actors == [account, f"{account} (sudo by bob)"]


def test_the_rotation_guides_commands_name_the_key_as_the_command_takes_it(
    runner: FlaskCliRunner, client: FlaskClient, session: Session, units: None
) -> None:
    """docs/deployment.md §10, as an operator would copy it: each command accepts the key it shows."""
    guide = (ROOT / "docs" / "deployment.md").read_text()
    section = guide.split("## 10. Rotating a leaked token", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"`(srpk_[A-Za-z0-9_-]+)`", section)
    assert found is not None
    full = found.group(1)
    commands = re.findall(r"^southrock tokens (rotate|revoke) (\S+)", section, re.M)
    assert [command for command, _ in commands] == ["rotate", "revoke"]
    assert {key for _, key in commands} == {mask(full)}
    # The log search looks for the same key.
    assert f'"public_key": "{full}"' in section
    issued = create(runner, "--business-unit", "EDU")
    row = session.scalars(select(ApiToken).where(ApiToken.public_key == issued["public_key"])).one()
    row.public_key = full
    session.commit()
    for command, key in commands:
        result = runner.invoke(args=["tokens", command, key])
        assert result.exit_code == 0, result.output
    assert json.loads(runner.invoke(args=["tokens", "list", "--json"]).stdout)[0]["state"] == "revoked"
