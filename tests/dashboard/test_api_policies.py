"""``/api/v1/reprocess-policies/``: the serializer reads JSON, the rules are the service's
(``dlq.services.reprocess_policy_validate``, tested in tests/dlq/services/test_reprocess.py);
here, that the API refuses what the service refuses, in the API's error shape."""
from __future__ import annotations

from typing import Any

import pytest

from dlq.models import AuditEvent, ReprocessPolicy, Role

pytestmark = pytest.mark.django_db
URL = "/api/v1/reprocess-policies/"


def test_create_change_delete(api_client_for: Any) -> None:
    admin = api_client_for(Role.ADMIN)
    created = admin.post(URL, {"task_name": "tasks.demo.flaky", "reasons": ["max_retries_exceeded"],
                               "backoff_factor": 3}, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["task_name"], body["reasons"], body["backoff_factor"], body["max_auto_requeues"]) == (
        "tasks.demo.flaky", ["max_retries_exceeded"], 3.0, 3)
    changed = admin.patch(f"{URL}{body['id']}/", {"enabled": False}, format="json")
    assert changed.status_code == 200 and changed.json()["enabled"] is False
    assert changed.json()["task_name"] == "tasks.demo.flaky"  # a PATCH needs only what it changes
    assert admin.delete(f"{URL}{body['id']}/").status_code == 204
    assert list(AuditEvent.objects.order_by("id").values_list("action", flat=True)) == [
        "policy.create", "policy.update", "policy.delete"]


@pytest.mark.parametrize(("body", "field"), [
    ({"task_name": "no.such.task"}, "task_name"),
    ({}, "task_name"),
    ({"task_name": "tasks.demo.flaky", "backoff_factor": 0.5}, "backoff_factor"),
    ({"task_name": "tasks.demo.flaky", "cooldown_seconds": -1}, "cooldown_seconds"),
    ({"task_name": "tasks.demo.flaky", "max_auto_requeues": 1001}, "max_auto_requeues"),
    ({"task_name": "tasks.demo.flaky", "reasons": ["zombie"]}, "reasons"),
    ({"task_name": "tasks.demo.flaky", "reasons": "rejected"}, "reasons"),
    ({"task_name": "tasks.demo.flaky", "exception_types": ["E"] * 51}, "exception_types"),
    ({"task_name": "tasks.demo.flaky", "cooldown_seconds": "soon"}, "cooldown_seconds"),
])
def test_bad_policies_are_400_and_change_nothing(api_client_for: Any, body: dict[str, Any], field: str) -> None:
    response = api_client_for(Role.ADMIN).post(URL, body, format="json")
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == "invalid" and field in error["fields"]
    assert not ReprocessPolicy.objects.exists() and not AuditEvent.objects.exists()


def test_one_policy_per_task_and_a_change_keeps_its_own_name(api_client_for: Any) -> None:
    admin = api_client_for(Role.ADMIN)
    policy = ReprocessPolicy.objects.create(task_name="tasks.demo.flaky")
    duplicate = admin.post(URL, {"task_name": "tasks.demo.flaky"}, format="json")
    assert duplicate.status_code == 400 and "task_name" in duplicate.json()["error"]["fields"]
    same = admin.patch(f"{URL}{policy.pk}/", {"task_name": "tasks.demo.flaky", "backoff_factor": 200}, format="json")
    assert same.status_code == 400 and list(same.json()["error"]["fields"]) == ["backoff_factor"]
    assert admin.patch(f"{URL}{policy.pk}/", {"task_name": "tasks.demo.flaky"}, format="json").status_code == 200
