"""The OpenAPI document stays true: schemathesis drives the live app over HTTP with generated requests
(valid and invalid) and checks there is no 5xx and every answer matches the document."""

from __future__ import annotations

import re

import requests
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from rest import create_app

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def test_api_matches_its_openapi_document(rest):
    """Every operation, generated cases each; schemathesis' own pytest plugin does not load under pytest 9,
    so the cases are drawn with Hypothesis here."""
    served = requests.get(f"http://{rest}/apiv1/openapi.json").json()
    schema = schemathesis.openapi.from_dict(served)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 14
    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def conforms(case):
            case.call_and_validate(base_url=f"http://{rest}", checks=CHECKS)

        conforms()


def test_document_describes_every_route(settings):
    app = create_app(settings)
    document = app.test_client().get("/apiv1/openapi.json").get_json()
    documented = {(path, method.upper()) for path, operations in document["paths"].items() for method in operations}
    routes = {
        (re.sub(r"<(\w+)>", r"{\1}", rule.rule), method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routes == documented
