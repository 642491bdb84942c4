"""Webhook subscriptions from the `southrock` CLI: the secret shown once, listed masked, audited without it; bad input refused."""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from southrock_api.admin.tokens import IssuedToken, mask
from southrock_api.data.models import WebhookSubscription
from tests import factories


def added(runner: FlaskCliRunner, *args: str) -> dict[str, str]:
    """Run `webhooks add --json` and return its id and secret."""
    result = runner.invoke(args=["webhooks", "add", "--json", *args])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def subscriptions(session: Session) -> int:
    """How many subscriptions are stored."""
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(WebhookSubscription)) or 0)


def test_add_shows_the_secret_once_and_list_never(runner: FlaskCliRunner, bu_token: IssuedToken) -> None:
    shown = added(runner, "--url", "https://receiver.example/hooks?key=abc", "--token", bu_token.public_key, "--description", "LMS copy")
    assert shown["id"].startswith("wh_") and shown["secret"].startswith("whsec_")
    listing = runner.invoke(args=["webhooks", "list"])
    assert listing.exit_code == 0
    assert shown["secret"] not in listing.output and bu_token.public_key not in listing.output
    assert mask(bu_token.public_key) in listing.output
    assert "https://receiver.example/hooks?…" in listing.output and "abc" not in listing.output
    [row] = json.loads(runner.invoke(args=["webhooks", "list", "--json"]).stdout)
    assert (row["id"], row["state"], row["description"]) == (shown["id"], "enabled", "LMS copy")
    audit = runner.invoke(args=["tokens", "audit"]).output
    assert f"webhook-add\t{shown['id']}" in audit and shown["secret"] not in audit
    # A receiver's own key in the query string is no more audited than listed.
    assert "https://receiver.example/hooks?… for token" in audit and "abc" not in audit


def test_rotate_disable_enable_remove_are_audited_without_secrets(runner: FlaskCliRunner, bu_token: IssuedToken) -> None:
    shown = added(runner, "--url", "https://receiver.example/hooks", "--token", bu_token.public_key)
    rotated = runner.invoke(args=["webhooks", "rotate-secret", "--json", shown["id"]])
    assert rotated.exit_code == 0, rotated.output
    new_secret = json.loads(rotated.stdout)["secret"]
    assert new_secret.startswith("whsec_") and new_secret != shown["secret"]
    [row] = json.loads(runner.invoke(args=["webhooks", "list", "--json"]).stdout)
    assert row["secret_overlap_until"] is not None
    assert runner.invoke(args=["webhooks", "disable", shown["id"]]).exit_code == 0
    [row] = json.loads(runner.invoke(args=["webhooks", "list", "--json"]).stdout)
    assert (row["state"], row["disabled_reason"]) == ("disabled", "disabled by an administrator")
    assert runner.invoke(args=["webhooks", "enable", shown["id"]]).exit_code == 0
    assert runner.invoke(args=["webhooks", "remove", shown["id"]]).exit_code == 0
    assert json.loads(runner.invoke(args=["webhooks", "list", "--json"]).stdout) == []
    audit = runner.invoke(args=["tokens", "audit"]).output
    for action in ("webhook-add", "webhook-rotate", "webhook-disable", "webhook-enable", "webhook-remove"):
        assert f"{action}\t{shown['id']}" in audit
    assert shown["secret"] not in audit and new_secret not in audit


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://receiver.example/hooks", "plain http"),
        ("ftp://receiver.example/hooks", "not an https:// URL"),
        ("https://user:pw@receiver.example/hooks", "must not hold credentials"),
        ("receiver.example/hooks", "not an https:// URL"),
    ],
)
def test_a_url_that_is_not_https_is_refused(
    runner: FlaskCliRunner, session: Session, bu_token: IssuedToken, url: str, problem: str
) -> None:
    result = runner.invoke(args=["webhooks", "add", "--url", url, "--token", bu_token.public_key])
    assert result.exit_code == 2 and problem in result.output
    assert subscriptions(session) == 0


def test_loopback_http_is_allowed_for_testing(runner: FlaskCliRunner, bu_token: IssuedToken) -> None:
    added(runner, "--url", "http://127.0.0.1:9/hooks", "--token", bu_token.public_key)


def test_unknown_or_revoked_tokens_and_unknown_orgcodes_are_refused(
    runner: FlaskCliRunner, session: Session, bu_token: IssuedToken, organisation: factories.Organisation
) -> None:
    url = "https://receiver.example/hooks"
    result = runner.invoke(args=["webhooks", "add", "--url", url, "--token", "srpk_nosuchkey"])
    assert result.exit_code == 2 and "no token matches" in result.output
    result = runner.invoke(args=["webhooks", "add", "--url", url, "--token", bu_token.public_key, "--orgcodes", "UNIV-STUD,NOPE"])
    assert result.exit_code == 2 and "no work unit with code 'NOPE'" in result.output
    assert runner.invoke(args=["tokens", "revoke", bu_token.public_key]).exit_code == 0
    result = runner.invoke(args=["webhooks", "add", "--url", url, "--token", bu_token.public_key])
    assert result.exit_code == 2 and "is revoked" in result.output
    assert subscriptions(session) == 0


def test_unknown_subscriptions_are_named(runner: FlaskCliRunner) -> None:
    for command in ("remove", "rotate-secret", "enable", "disable"):
        result = runner.invoke(args=["webhooks", command, "wh_nope"])
        assert result.exit_code == 2 and "no webhook subscription 'wh_nope'" in result.output


def test_the_docs_page_shows_receivers_how_to_verify(client: FlaskClient) -> None:
    page = client.get("/docs").get_data(as_text=True)
    assert 'href="#webhooks"' in page and 'id="webhooks"' in page
    for library in ("from standardwebhooks import Webhook", 'from "standardwebhooks"', "new StandardWebhook(SECRET)"):
        assert library in page
