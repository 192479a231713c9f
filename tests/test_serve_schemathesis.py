"""Schemathesis (a maintained property-based API tester) against the service's OpenAPI schema, with
requests sent to a real uvicorn on 127.0.0.1: every operation, in its examples, coverage (edge and
invalid values) and fuzzing phases, valid and invalid requests. Each answer: no 5xx; a documented
status code, content type, headers and body; valid requests accepted, invalid ones refused.

The contract failures Schemathesis found are pinned below, each with its exact request."""

from __future__ import annotations

import httpx
import jsonschema_rs
import pytest
import schemathesis
from schemathesis.specs.openapi import checks as openapi_checks
from serve_fixtures import build_world, uvicorn_thread

from foundation.config import load_settings
from growthgr.serve import create_app

# A generous deadline as in tests/test_serve.py: a loaded 2-core machine must not shed requests.
SERVE = {"request_timeout_ms": 60_000}

# Deterministic and bounded: a fixed seed, derandomized generation, no example database (a run never
# replays another's failures), at most 50 fuzzed requests per operation (the coverage phase adds its
# edge and invalid values); Schemathesis sets no Hypothesis deadline. The service's own statuses,
# narrower than Schemathesis' defaults (which let 5xx pass both): a valid request is answered, 200 or
# 404 (unknown user); an invalid one refused, 422 (400: body not UTF-8, 405: method, 413: body cap).
CONFIG = schemathesis.Config.from_dict({
    "seed": 20260110,
    "generation": {"mode": "all", "max-examples": 50, "deterministic": True, "database": "none"},
    "phases": {"stateful": {"enabled": False}},       # no resource links between operations
    "checks": {"positive_data_acceptance": {"expected-statuses": [200, 404]},
               "negative_data_rejection": {"expected-statuses": [400, 405, 413, 422]}},
    "request-timeout": 60,
})

# The schema the service states for these settings, built at collection: Schemathesis' lazy loader
# (`schemathesis.pytest.from_fixture`) sets `Function._nodeid`, which pytest 9 no longer has.
# `test_the_fuzzed_schema_is_the_one_served` checks it is the live service's /openapi.json.
_SETTINGS = load_settings("tiny", env={}, overrides={"serve": SERVE})
_SCHEMA_DOC = create_app(_SETTINGS).openapi()
schema = schemathesis.openapi.from_dict(_SCHEMA_DOC, config=CONFIG)

# Every built-in check runs except these, which cannot apply to this API:
NOT_APPLICABLE = [
    openapi_checks.use_after_free,                 # no DELETE: nothing a request creates is removed
    openapi_checks.ensure_resource_availability,   # no request creates a resource (POST /retrieve reads)
    openapi_checks.ignored_auth,                   # the schema declares no security scheme
]


@pytest.fixture(scope="module")
def live_url(tmp_path_factory):
    world = build_world(tmp_path_factory.mktemp("serve_st"), epochs=2, serve=SERVE)
    assert world.settings.serve == _SETTINGS.serve
    with uvicorn_thread(world.settings) as url:
        yield url


def test_the_fuzzed_schema_is_the_one_served(live_url):
    assert httpx.get(f"{live_url}/openapi.json").json() == _SCHEMA_DOC


@schema.parametrize()
def test_api_conforms_to_its_openapi_schema(case, live_url):
    case.call_and_validate(base_url=live_url, excluded_checks=NOT_APPLICABLE)


# -- the contract failures Schemathesis found, each pinned with its exact request -------------------------------------------
def _documented(method: str) -> set[int]:
    return {int(code) for code in _SCHEMA_DOC["paths"]["/retrieve"][method]["responses"]}


@pytest.mark.parametrize("body", [{"user_id": 0, "query": "brand1 shoes", "k": 3.0},
                                  {"user_id": 0.0, "query": "brand1 shoes"}])
def test_an_integer_written_with_a_fraction_of_zero_is_accepted(live_url, body):
    r = httpx.post(f"{live_url}/retrieve", json=body, timeout=60)
    assert r.status_code == 200, r.text


def test_a_body_that_is_not_utf8_gets_a_documented_status(live_url):
    r = httpx.post(f"{live_url}/retrieve", content=b"\xff\xfe{", headers={"content-type": "application/json"})
    assert r.status_code in _documented("post"), (r.status_code, r.text)


def test_a_non_json_body_that_is_not_utf8_is_no_server_error(live_url):
    r = httpx.post(f"{live_url}/retrieve", content=b"\xff", headers={"content-type": "text/plain"})
    assert r.status_code == 422, (r.status_code, r.text)


# Whitespace as three readers see it: the schema's `pattern` (ECMA-262, as JSON Schema defines it),
# pydantic (Rust regex) and `check_request`'s str.strip(); `\S` differed among them on these characters.


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("query", [
    "brand1 shoes", " \u00a0", "\u200b", "\u180e",
    "\x1e", " \x1c ", "\x85", "\ufeff"])
def test_a_query_is_refused_exactly_when_the_schema_says_it_is_blank(live_url, method, query):
    params = {p["name"]: p for p in _SCHEMA_DOC["paths"]["/retrieve"]["get"]["parameters"]}
    valid = jsonschema_rs.validator_for(params["query"]["schema"]).is_valid(query)
    fields = {"user_id": 0, "query": query}
    r = (httpx.get(f"{live_url}/retrieve", params=fields, timeout=60) if method == "get"
         else httpx.post(f"{live_url}/retrieve", json=fields, timeout=60))
    assert r.status_code == (200 if valid else 422), (valid, r.status_code, r.text)
