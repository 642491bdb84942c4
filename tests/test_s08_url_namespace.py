"""spec §8: /api/{version} namespace, v1 only, and HTTPS behind a TLS-terminating proxy."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from southrock_api.admin.tokens import IssuedToken
from tests import factories


@pytest.fixture()
def authorization(session: Session, organisation: factories.Organisation, bu_token: IssuedToken) -> str:
    """The business-unit token's header, over two completed enrolments (so limit=1 has a next page)."""
    factories.enrolment(session, factories.learner(session, organisation.work_unit), factories.course(session))
    session.commit()
    return bu_token.authorization


@pytest.mark.parametrize("path", ["/api", "/api/", "/api/v2", "/api/v2/enrolments", "/api/v0/enrolments", "/api/V1/enrolments", "/api/latest"])
def test_unknown_versions_are_e2010(client: FlaskClient, authorization: str, path: str) -> None:
    response = client.get(path, headers={"Authorization": authorization})
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "E2010"


@pytest.mark.parametrize("path", ["/api/v1/users", "/api/v1/enrolments/1", "/api/v1/enrolments/", "/api/v1//enrolments", "/api/v1/units/", "/api/v1/units/UNIV", "/anything"])
def test_unknown_endpoints_under_v1_are_e2020(client: FlaskClient, authorization: str, path: str) -> None:
    response = client.get(path, headers={"Authorization": authorization})
    assert response.status_code == 404
    assert response.get_json()["error"] == {
        "message": "Endpoint not supported: the endpoints are /api/v1, /api/v1/enrolments, /api/v1/enrolments/snapshot, "
        "/api/v1/enrolments/changes and /api/v1/units",
        "code": "E2020",
    }


def test_version_root_answers_with_and_without_trailing_slash(client: FlaskClient, authorization: str) -> None:
    assert client.get("/api/v1", headers={"Authorization": authorization}).status_code == 200
    assert client.get("/api/v1/", headers={"Authorization": authorization}).status_code == 200


def test_links_say_https_behind_a_trusted_proxy(app_with: Callable[..., Flask], authorization: str) -> None:
    client = app_with(TRUSTED_PROXIES="127.0.0.1").test_client()
    response = client.get(
        "/api/v1/enrolments?limit=1",
        headers={"Authorization": authorization, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "acme.southrock.com"},
    )
    assert response.status_code == 200
    assert response.headers["Link"].startswith("<https://acme.southrock.com/api/v1/enrolments?start=2&limit=1")


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(client: FlaskClient, authorization: str) -> None:
    response = client.get(
        "/api/v1/enrolments?limit=1",
        headers={"Authorization": authorization, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"},
    )
    assert response.headers["Link"].startswith("<http://localhost/api/v1/enrolments?")


def test_require_https_refuses_plain_http_with_a_json_error(app_with: Callable[..., Flask], authorization: str) -> None:
    client = app_with(REQUIRE_HTTPS=True, TRUSTED_PROXIES="127.0.0.1").test_client()
    plain = client.get("/api/v1", headers={"Authorization": authorization})
    assert plain.status_code == 404
    assert plain.get_json()["error"] == {"message": "Endpoint not supported: use https://", "code": "E2020"}
    secure = client.get("/api/v1", headers={"Authorization": authorization, "X-Forwarded-Proto": "https"})
    assert secure.status_code == 200
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "api.acme.example.evil.example", "bad host<>", 'x>; rel="next", <http://evil.example'])
def test_trusted_hosts_refuse_other_host_names_before_authentication(app_with: Callable[..., Flask], authorization: str, host: str) -> None:
    client = app_with(TRUSTED_HOSTS="api.acme.example, .southrock.example").test_client()
    ours = client.get("/api/v1/enrolments?limit=1", headers={"Authorization": authorization, "Host": "api.acme.example"})
    assert ours.status_code == 200
    assert ours.headers["Link"].startswith("<http://api.acme.example/api/v1/enrolments?")
    assert client.get("/api/v1", headers={"Authorization": authorization, "Host": "eu.southrock.example:8443"}).status_code == 200
    left = int(client.get("/api/v1", headers={"Authorization": authorization, "Host": "api.acme.example"}).headers["X-Rate-Limit-Remaining"])
    other = client.get("/api/v1/enrolments?limit=1", headers={"Authorization": authorization, "Host": host})
    assert other.status_code == 404
    assert other.get_json()["error"] == {"message": "Endpoint not supported: unknown host name", "code": "E2020"}
    assert "Link" not in other.headers
    # Refused before authentication: the site's bucket is not spent.
    assert int(other.headers["X-Rate-Limit-Remaining"]) == left


@pytest.mark.parametrize("host", ["127.0.0.1:8001", "10.0.4.17", "evil.example", "bad host<>"])
def test_health_probes_answer_whatever_the_host_and_nothing_else_does(app_with: Callable[..., Flask], authorization: str, host: str) -> None:
    """A load balancer probes each backend by its address; /docs and /openapi.json build URLs from the host."""
    client = app_with(TRUSTED_HOSTS="api.acme.example").test_client()
    for path in ("/healthz", "/readyz"):
        for method in (client.get, client.head):
            assert method(path, headers={"Host": host}).status_code == 200, (path, method)
    assert client.get("/healthz", headers={"Host": host}).get_json() == {"status": "ok"}
    assert client.get("/readyz", headers={"Host": host}).get_json()["status"] == "ok"
    for path in ("/api/v1", "/api/v1/enrolments", "/docs", "/openapi.json", "/healthz/", "//healthz", "/nothing"):
        refused = client.get(path, headers={"Authorization": authorization, "Host": host})
        assert refused.status_code == 404, path
        assert refused.get_json()["error"]["code"] == "E2020", path
    for path in ("/docs", "/openapi.json"):
        assert client.get(path, headers={"Host": "api.acme.example"}).status_code == 200


def test_trusted_hosts_ignore_letter_case(app_with: Callable[..., Flask], authorization: str) -> None:
    client = app_with(TRUSTED_HOSTS="API.Acme.Example").test_client()
    response = client.get("/api/v1/enrolments?limit=1", headers={"Authorization": authorization, "Host": "Api.ACME.example"})
    assert response.status_code == 200
    assert response.headers["Link"].startswith("<http://api.acme.example/api/v1/enrolments?")


def test_trusted_hosts_check_the_host_a_trusted_proxy_forwarded(app_with: Callable[..., Flask], authorization: str) -> None:
    client = app_with(TRUSTED_HOSTS="api.acme.example", TRUSTED_PROXIES="127.0.0.1").test_client()
    forwarded = {"Authorization": authorization, "Host": "127.0.0.1:8000"}
    assert client.get("/api/v1", headers={**forwarded, "X-Forwarded-Host": "api.acme.example"}).status_code == 200
    assert client.get("/api/v1", headers={**forwarded, "X-Forwarded-Host": "evil.example"}).status_code == 404


@pytest.mark.parametrize(
    ("setting", "names"),
    [
        ("", None),
        (" a.example ,.b.example,", ["a.example", ".b.example"]),
        (["a.example"], ["a.example"]),
        ("API.Example.org", ["api.example.org"]),  # werkzeug compares case-sensitively
        ("api.example.org:443,lms.exämple.edu", ["api.example.org:443", "lms.exämple.edu"]),
    ],
)
def test_trusted_hosts_take_a_comma_separated_string_or_a_list(setting: object, names: list[str] | None) -> None:
    from southrock_api.api.proxy import host_names

    assert host_names(setting) == names


@pytest.mark.parametrize(
    ("text", "required"),
    [("true", True), ("True", True), ("yes", True), ("1", True), ("ON", True),
     ("false", False), ("False", False), ("no", False), ("0", False), ("off", False), (" yes ", True), ("off\n", False)],
)
def test_require_https_from_the_environment_is_read_strictly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, required: bool
) -> None:
    from southrock_api import create_app

    monkeypatch.setenv("SOUTHROCK_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("SOUTHROCK_REQUIRE_HTTPS", text)
    assert create_app().config["REQUIRE_HTTPS"] is required


def test_an_unreadable_require_https_stops_the_app_from_starting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from southrock_api import create_app

    monkeypatch.setenv("SOUTHROCK_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("SOUTHROCK_REQUIRE_HTTPS", "maybe")
    with pytest.raises(ValueError, match="SOUTHROCK_REQUIRE_HTTPS must be true or false, not 'maybe'"):
        create_app()


def test_the_bare_api_path_is_in_the_api_namespace(client: FlaskClient, app_with: Callable[..., Flask], authorization: str) -> None:
    response = client.get("/api", headers={"Authorization": authorization})
    assert response.status_code == 404 and "X-Rate-Limit-Limit" in response.headers
    plain = app_with(REQUIRE_HTTPS=True).test_client().get("/api", headers={"Authorization": authorization})
    assert plain.get_json()["error"] == {"message": "Endpoint not supported: use https://", "code": "E2020"}
