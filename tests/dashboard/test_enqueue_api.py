"""POST /api/v1/tasks/enqueue/ and GET /api/v1/tasks/: allow-list, signatures, roles, bad input."""
from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from dlq.models import Role

pytestmark = pytest.mark.django_db


def queue_length(name: str = "celery") -> int:
    """What the request wrote for the broker: outbox rows (the relay publishes them after
    commit) plus messages already in the queue."""
    from tasks.models import OutboxMessage
    from tasks.redis import redis_client

    return OutboxMessage.objects.count() + int(redis_client().llen(name))


@pytest.fixture(autouse=True)
def empty_queue() -> None:
    from tests.conftest import purge_broker

    purge_broker()


def test_lists_enqueueable_tasks_with_signatures(api_client_for: Any) -> None:
    response = api_client_for(Role.VIEWER).get("/api/v1/tasks/")
    assert response.status_code == 200
    tasks = {t["name"]: t for t in response.json()["results"]}
    assert set(tasks) >= {"tasks.demo.add", "tasks.demo.divide", "tasks.demo.flaky", "tasks.demo.sleep", "tasks.demo.crash"}
    assert tasks["tasks.demo.divide"]["signature"] == "tasks.demo.divide(x: float, y: float) -> float"
    assert tasks["tasks.demo.divide"]["non_retryable"] == ["ZeroDivisionError"]


def test_enqueue_writes_one_outbox_row_in_the_request_transaction(operator_client: APIClient) -> None:
    from tasks.models import OutboxMessage
    from tasks.redis import redis_client

    response = operator_client.post("/api/v1/tasks/enqueue/", {"task": "tasks.demo.add", "args": [1, 2]}, format="json")
    assert response.status_code == 202
    row = OutboxMessage.objects.get()
    assert row.task_id == response.json()["task_id"] and row.task_name == "tasks.demo.add"
    assert row.payload == "[[1, 2], {}]"
    assert redis_client().llen("celery") == 0  # the relay publishes it once the transaction commits


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"task": "os.system", "args": ["rm -rf /"]}, "unknown_task"),
        ({"task": "tasks.demo.add"}, "invalid_arguments"),  # missing x and y
        ({"task": "tasks.demo.add", "args": [1, 2, 3]}, "invalid_arguments"),
        ({"task": "tasks.demo.add", "args": [1], "kwargs": {"z": 1}}, "invalid_arguments"),
        ({"task": "tasks.demo.add", "args": {"x": 1}}, "invalid"),
        ({"task": "tasks.demo.add", "args": [1, 2], "kwargs": [1]}, "invalid"),
        ({"task": ["tasks.demo.add"], "args": [1, 2]}, "invalid"),
        ({"task": "tasks.demo.add\x00", "args": [1, 2]}, "malformed_json"),
        ({"args": [1, 2]}, "invalid"),
        ({"task": "tasks.demo.add", "args": [1, 2], "countdown": -1}, "invalid"),
        ({"task": "tasks.demo.add", "args": [1, 2], "countdown": 10**9}, "countdown_too_long"),
        ({"task": "tasks.demo.add", "args": [1, 2], "queue": "bad queue!"}, "unknown_queue"),
    ],
)
def test_bad_input_is_400_and_publishes_nothing(operator_client: APIClient, body: dict[str, Any], code: str) -> None:
    response = operator_client.post("/api/v1/tasks/enqueue/", body, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert queue_length() == 0


def test_malformed_json_is_400(operator_client: APIClient) -> None:
    response = operator_client.post("/api/v1/tasks/enqueue/", '{"task": "tasks.demo.add", "args": [1,', content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"
    assert queue_length() == 0


def test_deep_nesting_and_huge_payload_are_4xx(operator_client: APIClient) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    response = operator_client.post("/api/v1/tasks/enqueue/", '{"task": "tasks.demo.add", "args": ' + deep + "}",
                                    content_type="application/json")
    assert response.status_code in (400, 413)
    big = json.dumps({"task": "tasks.demo.add", "args": ["x" * (3 * 1024 * 1024), 1]})
    response = operator_client.post("/api/v1/tasks/enqueue/", big, content_type="application/json")
    assert response.status_code in (400, 413)
    assert "error" in response.json()
    assert queue_length() == 0


def test_roles(api_client_for: Any) -> None:
    viewer = api_client_for(Role.VIEWER)
    response = viewer.post("/api/v1/tasks/enqueue/", {"task": "tasks.demo.add", "args": [1, 2]}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    nobody = api_client_for(None)
    assert nobody.get("/api/v1/tasks/").status_code == 403
    anonymous = APIClient()
    assert anonymous.get("/api/v1/tasks/").status_code == 401
    wrong_token = APIClient()
    wrong_token.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert wrong_token.get("/api/v1/tasks/").status_code == 401
    admin = api_client_for(Role.ADMIN)
    assert admin.post("/api/v1/tasks/enqueue/", {"task": "tasks.demo.add", "args": [1, 2]}, format="json").status_code == 202


def test_session_writes_need_csrf(client: Any) -> None:
    from tests.conftest import make_user

    make_user("dora", Role.OPERATOR)
    csrf_client = APIClient(enforce_csrf_checks=True)
    csrf_client.force_login(get_user_model().objects.get(username="dora"))  # django-axes: a login needs a request
    response = csrf_client.post("/api/v1/tasks/enqueue/", {"task": "tasks.demo.add", "args": [1, 2]}, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]["message"]
    assert queue_length() == 0


@pytest.mark.parametrize(
    "raw",
    [
        '{"task": "tasks.demo.add", "args": ["\\u0000", 1]}',
        '{"task": "tasks.demo.add", "args": ["\\ud800", 1]}',
        '{"task": "tasks.demo.add", "args": [NaN, 1]}',
        '{"task": "tasks.demo.add", "args": ' + "[" * 200 + "]" * 200 + "}",
    ],
)
def test_unstorable_json_is_400(operator_client: APIClient, raw: str) -> None:
    response = operator_client.post("/api/v1/tasks/enqueue/", raw, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "malformed_json"
    assert queue_length() == 0
