"""spec §16: GET /api/v1 validates credentials and names the token's unit."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from southrock_api.admin.tokens import IssuedToken
from tests.apiclient import ApiClient


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("bu_token", {"ORGGRP_CODE": "EDU", "ORGGRP_NAME": "Education"}),
        ("wu_token", {"ORG_CODE": "UNIV-STUD", "ORG_NAME": "University - Students"}),
    ],
    ids=["business unit token sees its business unit", "work unit token sees its work unit"],
)
def test_a_token_sees_its_own_unit(client: FlaskClient, request: pytest.FixtureRequest, token: str, expected: dict[str, str]) -> None:
    issued: IssuedToken = request.getfixturevalue(token)
    response = ApiClient(client, issued).whoami()
    assert response.status_code == 200
    assert response.get_json() == expected
    assert response.content_type == "application/json"
