"""schemathesis against the app's own /openapi.json: no 5xx, and every response as documented."""

from __future__ import annotations

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err, Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.orm import Session

from southrock_api.admin.tokens import IssuedToken
from tests import factories

# Bounded per operation so the file stays fast on a shared two-core machine; invalid cases cost
# more (some carry over a thousand ORGCODES values), so they get fewer.
MAX_EXAMPLES = {GenerationMode.POSITIVE: 50, GenerationMode.NEGATIVE: 25}
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXTRA_CHECKS = {
    GenerationMode.POSITIVE: [positive_data_acceptance],
    GenerationMode.NEGATIVE: [negative_data_rejection],
}


def _put_dates_in_order(case: schemathesis.Case) -> None:
    """EDATE on or after SDATE is documented in words only: OpenAPI cannot relate two parameters."""
    query = case.query or {}
    if "SDATE" in query and "EDATE" in query and query["SDATE"] > query["EDATE"]:
        query["SDATE"], query["EDATE"] = query["EDATE"], query["SDATE"]


@pytest.fixture()
def authorization(app: Flask, session: Session, organisation: factories.Organisation, bu_token: IssuedToken) -> str:
    """The business-unit token over completed enrolments in UNIV-STUD, ORG1 and ORG2, with the limits raised."""
    # Thousands of requests a minute: 429 must not crowd out the cases worth checking.
    app.config["RATE_LIMIT"] = "100000 per minute"
    app.config["AUTH_FAILURE_LIMIT"] = "100000 per minute"
    for code in ("ORG1", "ORG2"):
        wu = factories.work_unit(session, organisation.business_unit, code=code)
        factories.enrolment(session, factories.learner(session, wu), factories.course(session))
    session.commit()
    return bu_token.authorization


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_behaves_as_documented(
    app: Flask, authorization: str, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    # spec §5.1c: unknown query parameters are ignored by design (new ones may appear), and the
    # test sends its own valid Authorization, so neither counts as schema-violating input here.
    schema.config.generation.update(allow_extra_parameters=False, with_security_parameters=False)
    results = list(schema.get_all_operations())
    assert not [result.err() for result in results if isinstance(result, Err)]
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert {operation.path for operation in operations} == {
        "/api/v1", "/api/v1/enrolments", "/api/v1/units", "/api/v1/enrolments/snapshot", "/api/v1/enrolments/changes"
    }
    for operation in operations:
        checks = [*CONFORMANCE, *EXTRA_CHECKS[mode]]
        if operation.path == "/api/v1/enrolments/changes" and mode is GenerationMode.POSITIVE:
            # `since` is valid only as the API sealed it: any text the schema allows is refused
            # (E3010, as documented), so a well-formed request is not always an accepted one.
            checks = [*CONFORMANCE]
        if mode is GenerationMode.NEGATIVE and not len(operation.query):
            continue  # free-form headers only: nothing there can be made schema-violating

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=MAX_EXAMPLES[mode],
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def check(case: schemathesis.Case) -> None:
            if mode is GenerationMode.POSITIVE:
                _put_dates_in_order(case)
            # Called below, in this iteration: `checks` is this operation's.
            case.call_and_validate(headers={"Authorization": authorization}, checks=checks)  # noqa: B023

        check()


@pytest.mark.parametrize("query", ["limit=0", "EDATE=", "start=-1", "SDATE=2017-13-01"])
def test_a_precondition_never_hides_a_bad_parameter(
    client: FlaskClient, authorization: str, query: str
) -> None:
    response = client.get(
        "/api/v1/enrolments?" + query,
        headers={"Authorization": authorization, "If-None-Match": "*"},
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "E3010"
