"""The OpenAPI document stays true: schemathesis drives the live app over HTTP with generated requests
(valid and invalid) and checks there is no 5xx and every answer matches the document."""

from __future__ import annotations

import base64
import json
import re

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from msaas.options import SPECS
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
    assert len(operations) == 24  # every route: tests/test_openapi.py::test_document_describes_every_route
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


# What schemathesis draws from the document stays within the declared types; a client need not. Every field of
# the submission, and every option in a query string, gets wrong JSON types, non-finite and huge numbers and
# malformed URLs. Each must answer a 4xx JSON error, never a 5xx. The options come from the options table, so
# an option added later is attacked too.
NOT_AN_MP3 = base64.b64encode(b"not an mp3").decode()  # options are parsed before the song is checked
RAW_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 400, "0.1e-400", "-0"]
MALFORMED_URLS = [
    "http://[::1", "http://[zz]/", "http://[::1]x/", "http://host:99999/", "http://host:port/", "http://host:-1/",
    "http:///path", "://host", "http://", "http://%zz/", "http://\u0000/", "http://h\ud800st/", "javascript:alert(1)",
    "http://user@:80/", "http://a..b/", "https://" + "a" * 300 + ".example/", "HTTP://EXAMPLE.COM:0/",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
hostile_json = st.one_of(  # the value as JSON text: raw literals json.dumps would not write
    json_values.map(json.dumps), st.sampled_from(RAW_NUMBERS), st.sampled_from(MALFORMED_URLS).map(json.dumps)
)
hostile_text = st.one_of(st.text(st.characters(exclude_categories=["Cs"]), max_size=30), st.sampled_from(
    RAW_NUMBERS + [url for url in MALFORMED_URLS if "\ud800" not in url] + ["", "[]", "{}"]  # a query is UTF-8
))
def _body(field: str, raw: str) -> str:
    """A submission whose `field` holds the JSON text `raw`, everything else valid."""
    if field == "callback.url":
        return f'{{"mp3": "{NOT_AN_MP3}", "callback": {{"url": {raw}}}}}'
    if field == "callback.data":
        return f'{{"mp3": "{NOT_AN_MP3}", "callback": {{"url": "http://127.0.0.1:9/hook", "data": {raw}}}}}'
    if field == "mp3":
        return f'{{"mp3": {raw}}}'
    return f'{{"mp3": "{NOT_AN_MP3}", "{field}": {raw}}}'


def _no_server_error(answer: requests.Response, sent: object) -> None:
    assert answer.status_code < 500, f"{answer.status_code} for {sent!r}: {answer.text}"
    if answer.status_code >= 400:
        error = answer.json()
        assert set(error) == {"error", "message"}, error


@pytest.mark.parametrize(
    "field",
    ["mp3", *(spec.name for spec in SPECS), "callback", "callback.url", "callback.data"],
)
def test_hostile_json_fields_get_a_4xx(rest, field):
    @given(raw=hostile_json)
    @example(raw="Infinity")
    @example(raw="1e400")
    @example(raw="NaN")
    @example(raw="[]")
    @example(raw='{"a": 1}')
    @example(raw='"http://[::1"')
    @hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                         derandomize=True)
    def answers_4xx(raw):
        body = _body(field, raw)
        answer = requests.post(f"http://{rest}/apiv1/separate", data=body.encode("utf-8", "surrogatepass"),
                               headers={"Content-Type": "application/json"}, timeout=30)
        _no_server_error(answer, body)

    answers_4xx()


@pytest.mark.parametrize(
    "parameter",
    [*(spec.name for spec in SPECS), "callback_url"],
)
def test_hostile_query_options_get_a_4xx(rest, parameter):
    """On a raw upload and on every read route that takes options."""
    @given(value=hostile_text)
    @example(value="inf")
    @example(value="1e400")
    @example(value="http://[::1")
    @hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                         derandomize=True)
    def answers_4xx(value):
        query = {parameter: value}
        answers = [requests.post(f"http://{rest}/apiv1/separate", params=query, data=b"not an mp3",
                                 headers={"Content-Type": "audio/mpeg"}, timeout=30)]
        if parameter != "callback_url":
            songhash = "0" * 56
            answers += [
                requests.get(f"http://{rest}/apiv1/status/{songhash}", params=query, timeout=30),
                requests.get(f"http://{rest}/apiv1/track/{songhash}/vocals", params=query, timeout=30),
                requests.delete(f"http://{rest}/apiv1/remove/{songhash}/vocals", params=query, timeout=30),
            ]
        for answer in answers:
            _no_server_error(answer, query)

    answers_4xx()
