"""End to end through a real worker: views enqueue, tasks die, dead letters are recorded,
edited, requeued and resolved."""
from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django_celery_results.models import TaskResult

from dlq import services
from dlq.models import DeadLetter, DeadLetterEvent, DeadLetterStatus
from tests.workers import wait_for

pytestmark = pytest.mark.worker


def dead_letter_of(task_id: str) -> DeadLetter | None:
    return DeadLetter.objects.filter(task_id=task_id).first()


def test_divide_by_zero_from_a_view_dies_once_then_is_fixed_and_resolved(live_worker: Any, operator_client: Any) -> None:
    response = operator_client.post("/api/v1/tasks/enqueue/", {"task": "tasks.demo.divide", "args": [1, 0]}, format="json")
    assert response.status_code == 202, response.content
    task_id = response.json()["task_id"]

    row = wait_for(lambda: dead_letter_of(task_id), message="the dead letter")
    assert DeadLetter.objects.filter(task_name="tasks.demo.divide").count() == 1
    assert row.reason == "non_retryable"
    assert row.status == DeadLetterStatus.DEAD
    assert row.exception_type == "ZeroDivisionError"
    assert "ZeroDivisionError" in row.traceback and "divide" in row.traceback
    assert row.args == [1, 0] and row.kwargs == {}
    assert row.queue == "celery"
    assert row.retries == 0 and len(row.attempts) == 1 and row.attempts[0]["number"] == 1
    assert row.fingerprint

    edited = services.dead_letter_update(dead_letter_id=row.pk, actor="alice", reason="y must not be 0",
                                         version=row.version, args=[1, 2])
    assert edited.args == [1, 2]
    new_task_id = services.dead_letter_requeue(dead_letter_id=row.pk, actor="alice", reason="fixed")
    assert new_task_id != task_id

    resolved = wait_for(lambda: DeadLetter.objects.filter(pk=row.pk, status=DeadLetterStatus.RESOLVED).first(),
                        message="the requeued run to resolve the dead letter")
    assert resolved.requeue_count == 1 and resolved.last_requeued_task_id == new_task_id
    assert TaskResult.objects.get(task_id=new_task_id).result == "0.5"
    actions = list(DeadLetterEvent.objects.filter(dead_letter=row).order_by("id").values_list("actor", "action"))
    assert actions == [("alice", "edit"), ("alice", "requeue"), ("system", "resolve")]
    assert DeadLetter.objects.count() == 1


def test_flaky_succeeds_after_one_retry_without_dead_letter(live_worker: Any, operator_client: Any) -> None:
    key = uuid.uuid4().hex
    response = operator_client.post("/api/v1/tasks/enqueue/", {"task": "tasks.demo.flaky", "args": [key, 1]}, format="json")
    task_id = response.json()["task_id"]
    result = wait_for(lambda: TaskResult.objects.filter(task_id=task_id, status="SUCCESS").first(), message="success")
    assert result.result == "2"  # the second attempt succeeded
    assert not DeadLetter.objects.exists()


def test_flaky_beyond_max_retries_dies_with_one_attempt_per_try(live_worker: Any, operator_client: Any) -> None:
    key = uuid.uuid4().hex
    response = operator_client.post("/api/v1/tasks/enqueue/", {"task": "tasks.demo.flaky", "args": [key, 10]}, format="json")
    task_id = response.json()["task_id"]
    row = wait_for(lambda: dead_letter_of(task_id), timeout=60, message="the dead letter")
    assert row.reason == "max_retries_exceeded"
    assert row.retries == 3  # tasks.demo.flaky has max_retries=3: 4 tries
    assert [a["number"] for a in row.attempts] == [1, 2, 3, 4]
    assert all(a["exception_type"] == "demo.tasks.TransientError" for a in row.attempts)
    assert [a["message"].split()[1] for a in row.attempts] == ["1", "2", "3", "4"]
    assert all(a["worker"] == live_worker.name for a in row.attempts)
    assert DeadLetter.objects.count() == 1


def test_requeued_run_that_fails_again_returns_the_same_row_to_dead(live_worker: Any, operator_client: Any) -> None:
    task_id = operator_client.post("/api/v1/tasks/enqueue/", {"task": "tasks.demo.divide", "args": [5, 0]},
                                   format="json").json()["task_id"]
    row = wait_for(lambda: dead_letter_of(task_id), message="the dead letter")
    services.dead_letter_requeue(dead_letter_id=row.pk, actor="bob", reason="try again unchanged")
    again = wait_for(lambda: DeadLetter.objects.filter(pk=row.pk, status=DeadLetterStatus.DEAD, requeue_count=1).first(),
                     message="the row back in dead")
    assert DeadLetter.objects.count() == 1
    assert len(again.attempts) == 2
    assert DeadLetterEvent.objects.filter(dead_letter=row, action="failed_again", actor="system").count() == 1


def test_demo_page_enqueues_through_the_form(live_worker: Any, client: Any) -> None:
    from tests.conftest import make_user

    make_user("carol", "operator")
    client.force_login(get_user_model().objects.get(username="carol"))  # django-axes: a login needs a request
    page = client.get("/demo/")
    assert page.status_code == 200 and b"tasks.demo.divide" in page.content
    response = client.post("/demo/", {"task": "tasks.demo.divide", "args": "[3, 0]", "kwargs": "{}"})
    assert response.status_code == 302
    row = wait_for(lambda: DeadLetter.objects.filter(task_name="tasks.demo.divide").first(), message="dead letter")
    assert row.args == [3, 0]
    bad = client.post("/demo/", {"task": "tasks.demo.divide", "args": "[3", "kwargs": "{}"})
    assert bad.status_code == 400
