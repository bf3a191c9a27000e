"""dlq/services/reprocess.py: the rules of a reprocess policy (one home for the API, the pages
and the admin), and its changes, each audited."""
from __future__ import annotations

import math
from typing import Any

import pytest

from dlq.models import AuditEvent, ReprocessPolicy
from dlq.services import reprocess_policy_delete, reprocess_policy_save, reprocess_policy_validate
from tasks.errors import NotFound, ValidationFailed

pytestmark = pytest.mark.django_db

VALID: dict[str, Any] = {
    "task_name": "tasks.demo.flaky", "reasons": ["max_retries_exceeded"], "exception_types": ["ConnectionError"],
    "cooldown_seconds": 60, "backoff_factor": 2, "max_auto_requeues": 4, "circuit_max_failures_per_minute": 5,
    "enabled": True,
}


def errors(data: dict[str, Any], policy_id: int | None = None) -> dict[str, Any]:
    with pytest.raises(ValidationFailed) as caught:
        reprocess_policy_validate(data=data, policy_id=policy_id)
    assert caught.value.status == 400 and caught.value.message.startswith("invalid policy: ")
    assert caught.value.fields is not None
    return caught.value.fields


def test_a_valid_policy_comes_back_cleaned() -> None:
    clean = reprocess_policy_validate(data={**VALID, "task_name": "  tasks.demo.flaky ", "exception_types": [" E "]})
    assert clean == {**VALID, "backoff_factor": 2.0, "exception_types": ["E"]}
    assert isinstance(clean["backoff_factor"], float)
    assert reprocess_policy_validate(data={"task_name": "tasks.demo.add"}) == {"task_name": "tasks.demo.add"}


def test_a_new_policy_needs_a_registered_task_and_a_change_only_what_it_gives() -> None:
    assert errors({"enabled": False}) == {"task_name": ["This field is required."]}
    assert errors({"task_name": "no.such.task"}) == {"task_name": ["not a registered task"]}
    assert errors({"task_name": "  "}) == {"task_name": ["This field may not be blank."]}
    assert errors({"task_name": 7}) == {"task_name": ["This field may not be blank."]}
    assert reprocess_policy_validate(data={"enabled": False}, policy_id=1) == {"enabled": False}


def test_one_policy_per_task() -> None:
    policy = ReprocessPolicy.objects.create(task_name="tasks.demo.flaky")
    assert errors({"task_name": "tasks.demo.flaky"}) == {
        "task_name": ["reprocess policy with this task name already exists."]}
    assert reprocess_policy_validate(data={"task_name": "tasks.demo.flaky"}, policy_id=policy.pk)  # itself


@pytest.mark.parametrize(("field", "value", "message"), [
    ("cooldown_seconds", -1, "Ensure this value is greater than or equal to 0."),
    ("cooldown_seconds", 30 * 86400 + 1, "Ensure this value is less than or equal to 2592000."),
    ("cooldown_seconds", 1.5, "A valid integer is required."),
    ("cooldown_seconds", "60", "A valid integer is required."),
    ("max_auto_requeues", True, "A valid integer is required."),
    ("max_auto_requeues", 1001, "Ensure this value is less than or equal to 1000."),
    ("circuit_max_failures_per_minute", 1_000_001, "Ensure this value is less than or equal to 1000000."),
    ("backoff_factor", 0.5, "Ensure this value is greater than or equal to 1.0."),
    ("backoff_factor", 101, "Ensure this value is less than or equal to 100.0."),
    ("backoff_factor", math.nan, "Ensure this value is greater than or equal to 1.0."),
    ("backoff_factor", math.inf, "Ensure this value is less than or equal to 100.0."),
    ("backoff_factor", None, "A valid number is required."),
    ("enabled", "yes", "Must be a valid boolean."),
    ("reasons", ["rejected", "zombie"], '"zombie" is not a valid choice.'),
    ("reasons", "rejected", 'Expected a list of items but got type "str".'),
    ("reasons", ["rejected"] * 21, "Ensure this field has no more than 20 elements."),
    ("exception_types", ["E"] * 51, "Ensure this field has no more than 50 elements."),
    ("exception_types", ["E", ""], "This field may not be blank."),
    ("exception_types", ["E" * 256], "Ensure this field has no more than 255 characters."),
    ("exception_types", [1], "Not a valid string."),
    ("id", 5, "unknown field"),
])
def test_each_rule(field: str, value: Any, message: str) -> None:
    assert errors({**VALID, field: value}) == {field: [message]}


def test_every_field_in_error_is_reported_at_once() -> None:
    assert set(errors({"task_name": "no.such.task", "backoff_factor": 0, "reasons": ["zombie"]})) == {
        "task_name", "backoff_factor", "reasons"}


def test_save_goes_through_the_rules_and_audits() -> None:
    with pytest.raises(ValidationFailed):
        reprocess_policy_save(actor="ops", data={**VALID, "backoff_factor": 0.5})
    assert not ReprocessPolicy.objects.exists() and not AuditEvent.objects.exists()
    policy = reprocess_policy_save(actor="ops", data=VALID)
    assert (policy.task_name, policy.max_auto_requeues, policy.backoff_factor) == ("tasks.demo.flaky", 4, 2.0)
    with pytest.raises(ValidationFailed):
        reprocess_policy_save(actor="ops", data={"max_auto_requeues": -1}, policy_id=policy.pk)
    reprocess_policy_save(actor="ops", data={"max_auto_requeues": 1}, policy_id=policy.pk)
    policy.refresh_from_db()
    assert policy.max_auto_requeues == 1 and policy.cooldown_seconds == 60
    with pytest.raises(NotFound):
        reprocess_policy_save(actor="ops", data={"enabled": False}, policy_id=policy.pk + 1000)
    reprocess_policy_delete(actor="ops", policy_id=policy.pk)
    assert not ReprocessPolicy.objects.exists()
    events = list(AuditEvent.objects.order_by("id").values_list("action", "diff"))
    assert [action for action, _ in events] == ["policy.create", "policy.update", "policy.delete"]
    assert events[1][1] == {"max_auto_requeues": [4, 1]}
