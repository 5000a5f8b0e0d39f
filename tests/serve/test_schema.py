"""Schemathesis against the app's own OpenAPI schema: for every route, requests built from
its parameters and bodies (and broken variants of them), and never a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

pytestmark = pytest.mark.slow
EXAMPLES = 20
"""Cases per route."""


def test_no_route_answers_5xx(svimo_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{svimo_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    routes = {f"{op.method.upper()} {op.path}" for op in operations}
    assert {"POST /v1/generations", "GET /v1/generations/{job_id}",
            "GET /v1/generations/{job_id}/events",
            "GET /v1/generations/{job_id}/files/{name}", "GET /healthz",
            "GET /v1/config"} <= routes, routes
    answered: dict[str, set[int]] = {}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def call(case) -> None:
            response = case.call(base_url=svimo_url, timeout=30)
            route = f"{case.method} {case.path}"
            answered.setdefault(route, set()).add(response.status_code)
            assert response.status_code < 500, (route, response.status_code,
                                                response.text[:500])

        call()
    assert set(answered) == routes, answered
