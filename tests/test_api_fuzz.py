"""The API's OpenAPI schema, fuzzed by schemathesis against a real server (`streamlit run webapp.py`):
whatever it sends, no answer is a 5xx, and every refusal is one JSON line. With an API key, so the
writes (submit, groups, cancel, retry, votes) are reached too; no executor, so nothing runs."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from apiserver import service
from t2i.api.app import create_app

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]
EXAMPLES = 25   # per operation: about 400 requests in all, some 20 s on a 2-core machine


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    with service(tmp_path_factory.mktemp("fuzz"), executor=False) as svc:
        yield svc, svc.key("fuzzer")


# The schema the server serves at /api/openapi.json (test_api.py reads it there), made by the same
# application here so the operations are known when pytest collects. schemathesis's lazy loader
# (from_fixture) sets Function._nodeid, which pytest 9 no longer has.
# A job's event stream lasts until the job ends, and nothing runs here: its refusals are tested in
# tests/test_api.py, on a server with an executor. AUTOMATIC1111's txt2img answers when its jobs end,
# so likewise (tests/test_api_a1111.py).
schema = schemathesis.openapi.from_dict(create_app().openapi()).exclude(path_regex=r"/events$|/sdapi/v1/txt2img$")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_every_error_is_one_json_line(case, fuzzed):
    svc, key = fuzzed
    response = case.call(base_url=svc.base, headers={"Authorization": f"Bearer {key}",
                                                     "X-Forwarded-For": "192.0.2.99"})
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400:
        text = response.text
        body = json.loads(text)
        assert "\n" not in text and body["status"] == response.status_code and body["error"], text
