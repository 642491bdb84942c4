"""spec §6: HTTP Basic with public:private; every failure is E1010 (or E1020 for another scheme)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from southrock_api import create_app
from southrock_api.api.auth import TokenCache, authenticate, parse_basic, record_last_used
from southrock_api.data.db import bump_data_version, bump_tokens_version, read_versions
from southrock_api.api.errors import ApiError
from southrock_api.data.models import ApiToken
from southrock_api.admin.tokens import IssuedToken, create_token, hash_private_key, revoke_token, rotate_token
from tests import factories
from tests.apiclient import ApiClient, basic


def test_basic_public_private_authenticates(client: FlaskClient, bu_token: IssuedToken) -> None:
    # What `curl -u public:private` and a browser send.
    response = client.get("/api/v1", headers={"Authorization": basic(f"{bu_token.public_key}:{bu_token.private_key}")})
    assert response.status_code == 200
    assert bu_token.authorization == basic(f"{bu_token.public_key}:{bu_token.private_key}")


def test_scheme_name_is_case_insensitive(client: FlaskClient, bu_token: IssuedToken) -> None:
    value = bu_token.authorization.replace("Basic", "basic")
    assert client.get("/api/v1", headers={"Authorization": value}).status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Basic",
        "Basic !!!not-base64!!!",
        basic(b"no-colon-here"),
        basic(b":only-private"),
        basic(b"only-public:"),
        basic(b"\xff\xfe:\xff"),
        basic(b"srpk_unknown:srsk_whatever"),
        # Never a token's public key, and never sent to the database (PostgreSQL refuses NUL).
        basic(b"\x00abc:def"),
        basic(b"srpk_a b:def"),
        basic("srpk_\u4e2d:def"),
        basic("x" * 5000 + ":y"),
    ],
)
def test_bad_credentials_are_e1010_with_a_browser_challenge(client: FlaskClient, bu_token: IssuedToken, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = client.get("/api/v1/enrolments", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "E1010"
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")


def test_wrong_private_key_for_a_real_public_key_is_e1010(client: FlaskClient, bu_token: IssuedToken) -> None:
    response = client.get("/api/v1", headers={"Authorization": basic(f"{bu_token.public_key}:srsk_wrong")})
    assert response.status_code == 401
    assert response.get_json() == {"error": {"message": "Authentication failed", "code": "E1010"}}


def test_unknown_public_key_gets_the_same_answer_as_a_wrong_private_key(client: FlaskClient, bu_token: IssuedToken) -> None:
    wrong_private = client.get("/api/v1", headers={"Authorization": basic(f"{bu_token.public_key}:srsk_wrong")})
    unknown_public = client.get("/api/v1", headers={"Authorization": basic("srpk_nobody:srsk_wrong")})
    assert wrong_private.get_json() == unknown_public.get_json()
    assert wrong_private.status_code == unknown_public.status_code


def test_swapped_keys_are_e1010_saying_which_goes_where(client: FlaskClient, bu_token: IssuedToken) -> None:
    response = client.get("/api/v1", headers={"Authorization": basic(f"{bu_token.private_key}:{bu_token.public_key}")})
    assert response.status_code == 401
    assert response.get_json()["error"] == {
        "message": "Authentication failed: the user name is the public key (srpk_…), the password the private key (srsk_…)",
        "code": "E1010",
    }
    assert bu_token.private_key[5:] not in response.get_data(as_text=True)


@pytest.mark.parametrize("scheme", ["Bearer abc", "Token abc", "Digest username=x"])
def test_another_scheme_is_a_bad_token_type_e1020(client: FlaskClient, bu_token: IssuedToken, scheme: str) -> None:
    response = client.get("/api/v1", headers={"Authorization": scheme})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "E1020"


def test_a_revoked_token_fails_on_the_next_request(api: ApiClient, session: Session, bu_token: IssuedToken) -> None:
    assert api.whoami().status_code == 200
    revoke_token(session, bu_token.public_key)
    session.commit()
    response = api.whoami()
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "E1010"


def test_an_expired_token_is_e1010(client: FlaskClient, session: Session) -> None:
    bu = factories.business_unit(session)
    yesterday = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    expired = factories.token(session, bu, expires_at=yesterday)
    tomorrow = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    valid = factories.token(session, bu, expires_at=tomorrow)
    session.commit()
    response = ApiClient(client, expired).whoami()
    assert response.status_code == 401 and "expired" in response.get_json()["error"]["message"]
    assert ApiClient(client, valid).whoami().status_code == 200


def test_only_a_hash_of_the_private_key_is_stored(session: Session, bu_token: IssuedToken) -> None:
    row = session.scalar(select(ApiToken).where(ApiToken.public_key == bu_token.public_key))
    assert row is not None
    assert row.private_key_hash == hash_private_key(bu_token.private_key)
    assert bu_token.private_key not in row.private_key_hash
    values = [str(getattr(row, column.key)) for column in ApiToken.__table__.columns]
    assert not any(bu_token.private_key in value for value in values)


def test_last_used_is_recorded_after_a_successful_request(api: ApiClient, session: Session, bu_token: IssuedToken) -> None:
    response = api.whoami()
    response.close()  # the write happens once the response is sent, off the request's path
    session.expire_all()
    row = session.scalar(select(ApiToken).where(ApiToken.public_key == bu_token.public_key))
    assert row is not None and row.last_used_at is not None


def test_the_last_used_write_restores_the_connections_busy_wait(session: Session, bu_token: IssuedToken, backend: str) -> None:
    """On SQLite the write waits 50 ms at most, then the connection's own busy wait is back."""
    if backend != "sqlite":
        pytest.skip("SQLite's busy wait")
    session.execute(text("PRAGMA busy_timeout=3000"))
    token = session.scalar(select(ApiToken).where(ApiToken.public_key == bu_token.public_key))
    assert token is not None
    record_last_used(session, token.id, dt.datetime.now(dt.timezone.utc))
    assert session.execute(text("PRAGMA busy_timeout")).scalar_one() == 3000


def test_unknown_public_key_takes_the_same_comparison_path(
    client: FlaskClient, bu_token: IssuedToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hmac

    from southrock_api.api import auth

    compared: list[tuple[int, int]] = []
    original = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        compared.append((len(a), len(b)))
        return original(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    client.get("/api/v1", headers={"Authorization": basic(f"{bu_token.public_key}:srsk_wrong")})
    client.get("/api/v1", headers={"Authorization": basic("srpk_nobody:srsk_wrong")})
    # One constant-time comparison of two SHA-256 digests in both cases: against the real hash,
    # and against a dummy hash when the public key is unknown.
    assert compared == [(64, 64), (64, 64)]


@pytest.mark.parametrize(("age_seconds", "rewritten"), [(30, False), (120, True)])
def test_last_used_is_written_at_most_once_a_minute(
    api: ApiClient, session: Session, bu_token: IssuedToken, age_seconds: int, rewritten: bool
) -> None:
    row = session.scalar(select(ApiToken).where(ApiToken.public_key == bu_token.public_key))
    assert row is not None
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(seconds=age_seconds)
    row.last_used_at = before
    session.commit()
    api.whoami().close()
    session.expire_all()
    after = session.scalar(select(ApiToken.last_used_at).where(ApiToken.public_key == bu_token.public_key))
    assert after is not None
    assert (after.replace(tzinfo=dt.timezone.utc) != before) is rewritten


# -- the token cache: every request reads the tokens version, so no change is ever missed --------


def test_every_change_to_a_token_gives_the_tokens_a_new_version(session: Session, bu_token: IssuedToken) -> None:
    seen = [read_versions(session).tokens]
    rotated = rotate_token(session, bu_token.public_key)
    seen.append(read_versions(session).tokens)
    revoke_token(session, rotated.public_key)
    seen.append(read_versions(session).tokens)
    create_token(session, business_unit="EDU")
    seen.append(read_versions(session).tokens)
    assert len(set(seen)) == 4
    data = read_versions(session).data
    bump_data_version(session)
    assert read_versions(session).tokens == seen[-1] and read_versions(session).data != data


def test_a_request_leaves_the_tokens_version_alone(api: ApiClient, session: Session) -> None:
    before = read_versions(session)
    # The first request also writes the token's last-used time.
    api.whoami().close()
    session.expire_all()
    assert read_versions(session) == before


def test_a_rotated_key_fails_on_the_next_request_and_the_new_one_works(
    api: ApiClient, client: FlaskClient, session: Session, bu_token: IssuedToken
) -> None:
    assert api.whoami().status_code == 200
    rotated = rotate_token(session, bu_token.public_key)
    session.commit()
    assert api.whoami().status_code == 401
    assert ApiClient(client, rotated).whoami().status_code == 200


def test_a_cached_token_still_expires_by_the_clock(session: Session, bu_token: IssuedToken) -> None:
    row = session.scalar(select(ApiToken).where(ApiToken.public_key == bu_token.public_key))
    assert row is not None
    ends = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    row.expires_at = ends
    bump_tokens_version(session)
    cache, versions = TokenCache(), read_versions(session)
    before, after = ends - dt.timedelta(microseconds=1), ends + dt.timedelta(seconds=1)
    assert authenticate(session, parse_basic(bu_token.authorization), before, versions, cache).public_key == bu_token.public_key
    # The expiry instant is the first moment the token no longer works (`--expires` names the last day).
    for moment in (ends, after):
        with pytest.raises(ApiError, match="expired"):
            authenticate(session, parse_basic(bu_token.authorization), moment, versions, cache)


def test_unknown_public_keys_are_never_cached(session: Session, bu_token: IssuedToken) -> None:
    cache, versions = TokenCache(size=1), read_versions(session)
    for n in range(20):
        with pytest.raises(ApiError):
            authenticate(session, parse_basic(basic(f"srpk_guess{n}:srsk_guess")), dt.datetime.now(dt.timezone.utc), versions, cache)
    # The one place in the cache is still free for a real token.
    now = dt.datetime.now(dt.timezone.utc)
    assert authenticate(session, parse_basic(bu_token.authorization), now, versions, cache).public_key == bu_token.public_key
    row = session.scalar(select(ApiToken).where(ApiToken.public_key == bu_token.public_key))
    assert row is not None
    session.delete(row)  # gone from the database (without a version change): served from the cache
    assert authenticate(session, parse_basic(bu_token.authorization), now, versions, cache).public_key == bu_token.public_key


def test_a_missing_or_malformed_header_is_refused_without_the_database(tmp_path: Path) -> None:
    app = create_app(
        {"DATABASE_URL": f"sqlite:///{tmp_path / 'no-such-dir' / 'db.sqlite'}", "RATELIMIT_STORAGE_URI": "memory://"}
    )
    client = app.test_client()
    for headers in ({}, {"Authorization": "Basic !!!"}, {"Authorization": basic("no-colon")}):
        response = client.get("/api/v1/enrolments", headers=headers)
        assert response.status_code == 401 and response.get_json()["error"]["code"] == "E1010"
    # A well-formed header needs the database, which here cannot be opened.
    assert client.get("/api/v1", headers={"Authorization": basic("srpk_x:srsk_y")}).status_code == 500
