"""Property-based run of every API operation from the OpenAPI schema (schemathesis
strategies driven by hypothesis): no input gives a 5xx, every 4xx has the error shape.

schemathesis' own pytest plugin does not run under pytest 9 (it reads a removed pytest
internal), so the test draws operations and cases with hypothesis directly."""
from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from dlq.models import Role
from tests.factories import DeadLetterFactory


def test_no_input_gives_a_server_error(transactional_db: Any, api_client_for: Any) -> None:
    from taskplatform.wsgi import application

    header = api_client_for(Role.ADMIN)._credentials["HTTP_AUTHORIZATION"]
    DeadLetterFactory.create_batch(3)
    DeadLetterFactory(args=None, kwargs=None, reason="decode_error")
    schema = schemathesis.openapi.from_wsgi("/api/schema/", application, headers={"Authorization": header})
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    strategies = [op.as_strategy(generation_mode=mode) for op in operations
                  for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    seen: set[str] = set()
    statuses: set[int] = set()

    @given(case=st.one_of(*strategies))
    @settings(max_examples=400, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        seen.add(f"{case.method} {case.path}")
        response = case.call(headers={"Authorization": header})
        statuses.add(response.status_code)
        assert response.status_code < 500, (case.method, case.formatted_path, case.query, case.body, response.text[:500])
        if response.status_code >= 400 and response.headers.get("Content-Type", "").startswith("application/json"):
            assert "error" in response.json(), response.text[:300]

    run()
    assert len(seen) >= len(operations) // 2
    assert 200 in statuses and 400 in statuses, statuses  # authenticated, and bad input was generated
