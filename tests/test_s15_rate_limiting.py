"""spec §15: one bucket per site, 60 a minute, X-Rate-Limit-* on every API response, 429 E1030."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from southrock_api.admin.tokens import IssuedToken
from tests.apiclient import ApiClient, basic


def remaining(response: TestResponse) -> int:
    return int(response.headers["X-Rate-Limit-Remaining"])


def test_headers_count_down_from_60(api: ApiClient) -> None:
    first = api.whoami()
    second = api.enrolments()
    assert first.headers["X-Rate-Limit-Limit"] == "60"
    assert remaining(first) == 59 and remaining(second) == 58
    assert 0 < int(first.headers["X-Rate-Limit-Reset"]) <= 60
    assert first.headers["RateLimit-Policy"] == '"site";q=60;w=60'
    assert first.headers["RateLimit"].startswith('"site";r=59;t=')


def test_the_61st_request_is_429_e1030_and_every_token_shares_the_bucket(
    client: FlaskClient, bu_token: IssuedToken, wu_token: IssuedToken
) -> None:
    apis = (ApiClient(client, bu_token), ApiClient(client, wu_token))
    for number in range(60):
        api = apis[number % 2]  # two tokens, one site bucket
        assert api.whoami().status_code == 200
    for api in apis:
        response = api.enrolments()
        assert response.status_code == 429
        assert response.get_json()["error"]["code"] == "E1030"
        assert response.headers["X-Rate-Limit-Remaining"] == "0"
        assert response.headers["X-Rate-Limit-Limit"] == "60"
        assert 1 <= int(response.headers["Retry-After"]) <= 60


@pytest.mark.parametrize(
    ("path", "status"),
    [("/api/v2", 404), ("/api/v1/nope", 404), ("/api/v1/enrolments?limit=0", 400)],
)
def test_error_responses_carry_the_headers_too(api: ApiClient, path: str, status: int) -> None:
    response = api.get(path)
    assert response.status_code == status
    assert response.headers["X-Rate-Limit-Limit"] == "60"
    assert "X-Rate-Limit-Remaining" in response.headers


@pytest.mark.parametrize("path", ["/api/v1", "/api/v1/enrolments"])
def test_head_spends_the_bucket_like_get(api: ApiClient, path: str) -> None:
    first = api.get(path)
    head = api.open(path, method="HEAD")
    assert head.status_code == 200 and head.data == b""
    assert remaining(head) == remaining(first) - 1


def test_bad_parameters_from_a_valid_token_spend_the_bucket(api: ApiClient) -> None:
    api.enrolments("limit=0")
    assert remaining(api.whoami()) == 58


def test_the_pipeline_runs_before_the_limiter_counts(app: Flask) -> None:
    """HTTPS and authentication refuse a request before flask-limiter's before_request can count it."""
    from southrock_api.api import check_order, pipeline
    from southrock_api.api.ratelimit import get_limiter

    hooks = app.before_request_funcs[None]
    limiter = get_limiter(app)
    counting = next(position for position, hook in enumerate(hooks) if getattr(hook, "__self__", None) is limiter)
    assert hooks.index(pipeline.require_https) < hooks.index(pipeline.authenticate_request) < counting
    # The same check guards every app create_app wires, and refuses the other order.
    check_order(app)
    hooks.remove(pipeline.authenticate_request)
    hooks.append(pipeline.authenticate_request)
    with pytest.raises(RuntimeError, match="spend the site's bucket"):
        check_order(app)


def test_failed_authentication_does_not_spend_the_site_bucket(api: ApiClient, client: FlaskClient, bu_token: IssuedToken) -> None:
    bad = ApiClient(client, basic(f"{bu_token.public_key}:wrong"))
    for _ in range(5):
        response = bad.enrolments()
        assert response.status_code == 401
        assert response.headers["X-Rate-Limit-Remaining"] == "60"
    assert remaining(api.whoami()) == 59


@pytest.mark.parametrize(
    "credentials",
    # A guess, a NUL (PostgreSQL refuses it in text), a control character and a non-ASCII key.
    [b"srpk_guess:srsk_guess", b"\x00guess:srsk_guess", b"srpk_\x1bguess:x", "srpk_gu\u00e9ss:x".encode()],
)
def test_repeated_failures_from_one_address_are_limited(api: ApiClient, client: FlaskClient, credentials: bytes) -> None:
    bad = ApiClient(client, basic(credentials))
    statuses = [bad.whoami().status_code for _ in range(12)]
    assert statuses == [401] * 10 + [429] * 2
    blocked = bad.whoami()
    assert blocked.status_code == 429
    assert blocked.get_json()["error"]["code"] == "E1030"
    assert int(blocked.headers["Retry-After"]) >= 1
    # The headers describe the limit that was hit, not the (untouched) site bucket.
    assert blocked.headers["X-Rate-Limit-Limit"] == "10"
    assert blocked.headers["X-Rate-Limit-Remaining"] == "0"
    assert blocked.headers["X-Rate-Limit-Reset"] == blocked.headers["Retry-After"]
    assert blocked.headers["RateLimit-Policy"] == '"auth-failures";q=10;w=60'
    # Another address is not affected, and the site bucket is untouched.
    other = api.whoami(environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 200 and remaining(other) == 59
    # A valid key from the blocked address is served: whoever shares the address (a NAT) and
    # guesses cannot lock the site's integration out.
    shared = api.whoami()
    assert shared.status_code == 200 and remaining(shared) == 58


def test_health_probes_are_not_limited(api: ApiClient, client: FlaskClient) -> None:
    for _ in range(70):
        response = client.get("/healthz")
        assert response.status_code == 200
        assert "X-Rate-Limit-Limit" not in response.headers
    assert remaining(api.whoami()) == 59


def test_the_window_is_fixed_and_the_first_request_after_it_starts_the_next(
    app_with: Callable[..., Flask], bu_token: IssuedToken, tmp_path: Path
) -> None:
    short = app_with(RATE_LIMIT="2 per 2 seconds", RATELIMIT_STORAGE_URI=f"sqlite:///{tmp_path / 'rl.sqlite'}")
    api = ApiClient(short.test_client(), bu_token)
    answers = [api.whoami() for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    # Requests within a window never move its end.
    resets = [int(answer.headers["X-Rate-Limit-Reset"]) for answer in answers]
    assert resets == sorted(resets, reverse=True) and 1 <= resets[-1] <= 2
    time.sleep(resets[-1] + 0.1)
    fresh = api.whoami()
    assert fresh.status_code == 200 and remaining(fresh) == 1


@pytest.mark.parametrize("path", ["/apidocs", "/api-v1", "/docs"])
def test_paths_outside_the_api_namespace_carry_no_rate_limit_headers(api: ApiClient, path: str) -> None:
    response = api.get(path)
    assert "X-Rate-Limit-Limit" not in response.headers
    assert "RateLimit" not in response.headers


def test_failure_limit_uses_the_client_address_only_from_a_trusted_proxy(app_with: Callable[..., Flask], bu_token: IssuedToken) -> None:
    client = app_with(TRUSTED_PROXIES="10.0.0.1").test_client()
    bad = basic(b"srpk_guess:srsk_guess")

    def attempt(peer: str, forwarded_for: str) -> int:
        environ = {"REMOTE_ADDR": peer}
        headers = {"Authorization": bad, "X-Forwarded-For": forwarded_for}
        return client.get("/api/v1", headers=headers, environ_base=environ).status_code

    # Behind the trusted proxy each real client has its own allowance...
    assert [attempt("10.0.0.1", "198.51.100.7") for _ in range(11)] == [401] * 10 + [429]
    assert attempt("10.0.0.1", "198.51.100.8") == 401
    # ...but a direct caller cannot dodge its limit by inventing X-Forwarded-For values.
    assert [attempt("203.0.113.5", f"192.0.2.{n}") for n in range(11)] == [401] * 10 + [429]


def test_an_ipv6_client_is_limited_by_its_slash_64(client: FlaskClient, bu_token: IssuedToken) -> None:
    bad = basic(b"srpk_guess:srsk_guess")
    # A new address from the same /64 for every guess does not reset the count.
    statuses = [
        client.get("/api/v1", headers={"Authorization": bad}, environ_base={"REMOTE_ADDR": f"2001:db8:0:1::{n + 1:x}"}).status_code
        for n in range(11)
    ]
    assert statuses == [401] * 10 + [429]
    other = client.get("/api/v1", headers={"Authorization": bad}, environ_base={"REMOTE_ADDR": "2001:db8:0:2::1"})
    assert other.status_code == 401
