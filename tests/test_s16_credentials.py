"""spec §16: GET /api/v1 validates credentials and names the token's unit."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from tests import factories


def test_business_unit_token_sees_its_business_unit(client: FlaskClient, session: Session) -> None:
    bu = factories.business_unit(session, code="EDU", name="Education")
    issued = factories.token(session, bu)
    session.commit()
    response = client.get("/api/v1", headers={"Authorization": issued.authorization})
    assert response.status_code == 200
    assert response.get_json() == {"ORGGRP_CODE": "EDU", "ORGGRP_NAME": "Education"}
    assert response.content_type == "application/json"


def test_work_unit_token_sees_its_work_unit(client: FlaskClient, session: Session) -> None:
    bu = factories.business_unit(session)
    wu = factories.work_unit(session, bu, code="UNIV-STUD", name="University - Students")
    issued = factories.token(session, wu)
    session.commit()
    response = client.get("/api/v1", headers={"Authorization": issued.authorization})
    assert response.status_code == 200
    assert response.get_json() == {"ORG_CODE": "UNIV-STUD", "ORG_NAME": "University - Students"}
