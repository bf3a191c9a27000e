"""What once answered 500 (or 406) where a 4xx belongs (issue 18): non-finite numbers, queues
that are not queues, JSON nested 50,000 deep in the forms, Accept on the export, and requeue
clicks that land after the row changed."""
from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from dlq import services
from dlq.models import DeadLetter, DeadLetterEvent, Role
from tasks.errors import ValidationFailed
from tasks.models import OutboxMessage
from tasks.redis import redis_client
from tests.conftest import make_user
from tests.factories import DeadLetterFactory

pytestmark = pytest.mark.django_db(transaction=True)
DEEP = "[" * 50_000 + "]" * 50_000


def test_patch_with_a_number_too_big_for_a_float_is_400(api_client_for: Any) -> None:
    row = DeadLetterFactory(task_name="tasks.demo.add", args=[1, 0])
    response = api_client_for(Role.OPERATOR).patch(
        f"/api/v1/dead-letters/{row.pk}/", '{"args": [1e400, 1], "reason": "r", "version": 1}',
        content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed_json"
    assert "out of range" in response.json()["error"]["message"]
    row.refresh_from_db()
    assert row.args == [1, 0] and row.version == 1


def test_an_edit_through_the_service_refuses_non_finite_numbers() -> None:
    row = DeadLetterFactory(task_name="tasks.demo.add", args=[1, 0])
    with pytest.raises(ValidationFailed) as refused:
        services.dead_letter_update(dead_letter_id=row.pk, actor="ops", reason="r", version=1, args=[float("inf"), 1])
    assert refused.value.code == "invalid_arguments"


@pytest.mark.parametrize("queue", ["_kombu.binding.celery", "unacked", "no-such-queue"])
def test_queues_that_are_not_configured_are_400_everywhere(api_client_for: Any, queue: str) -> None:
    admin = api_client_for(Role.ADMIN)
    enqueue = admin.post("/api/v1/tasks/enqueue/", {"task": "tasks.demo.add", "args": [1, 2], "queue": queue},
                         format="json")
    assert enqueue.status_code == 400 and enqueue.json()["error"]["code"] == "unknown_queue", enqueue.content
    assert not OutboxMessage.objects.exists()
    row = DeadLetterFactory(task_name="tasks.demo.add", args=[1, 0])
    patched = admin.patch(f"/api/v1/dead-letters/{row.pk}/", {"queue": queue, "reason": "r", "version": 1}, format="json")
    requeued = admin.post(f"/api/v1/dead-letters/{row.pk}/requeue/", {"queue": queue}, format="json")
    bulk = admin.post("/api/v1/dead-letters/bulk/", {"action": "requeue", "ids": [row.pk], "reason": "r", "queue": queue},
                      format="json")
    for response in (patched, requeued, bulk):
        assert response.status_code == 400 and response.json()["error"]["code"] == "unknown_queue", response.content
    row.refresh_from_db()
    assert row.status == "dead" and row.version == 1 and row.queue != queue


def test_a_configured_queue_is_accepted(api_client_for: Any, settings: Any) -> None:
    settings.TASK_QUEUES = ["celery", "billing"]
    response = api_client_for(Role.ADMIN).post("/api/v1/tasks/enqueue/",
                                               {"task": "tasks.demo.add", "args": [1, 2], "queue": "billing"}, format="json")
    assert response.status_code == 202
    assert OutboxMessage.objects.get().queue == "billing"


@pytest.mark.parametrize("field", ["args", "kwargs"])
def test_the_demo_form_refuses_json_nested_50000_deep(client: Any, field: str) -> None:
    client.force_login(make_user("demo-deep", Role.OPERATOR))
    form = {"task": "tasks.demo.add", "args": "[1, 2]", "kwargs": "{}", field: DEEP}
    response = client.post("/demo/", form)
    assert response.status_code == 400 and b"nested deeper" in response.content
    assert not OutboxMessage.objects.exists()


def test_the_edit_preview_refuses_json_nested_50000_deep(client: Any) -> None:
    client.force_login(make_user("edit-deep", Role.OPERATOR))
    row = DeadLetterFactory(task_name="tasks.demo.add", args=[1, 0])
    response = client.post(f"/dashboard/dead-letters/{row.pk}/edit/",
                           {"args": DEEP, "kwargs": "{}", "queue": "", "reason": "r", "version": 1, "intent": "preview"})
    assert response.status_code == 400 and b"nested deeper" in response.content
    response = client.post(f"/dashboard/dead-letters/{row.pk}/edit/",
                           {"args": "[1e400, 1]", "kwargs": "{}", "queue": "", "reason": "r", "version": 1,
                            "intent": "save"})
    assert response.status_code == 400 and b"out of range" in response.content
    row.refresh_from_db()
    assert row.args == [1, 0] and row.version == 1


@pytest.mark.parametrize(("query", "accept", "status", "content_type"), [
    ("format=csv", "text/csv", 200, "text/csv"),
    ("format=json", "application/json", 200, "application/json"),
    ("", "text/csv", 200, "text/csv"),
    ("", "application/json", 200, "application/json"),
    ("format=csv", "*/*", 200, "text/csv"),
    ("format=csv", "", 200, "text/csv"),
    ("format=csv", "application/json", 406, "application/json"),
])
def test_the_export_honours_accept(api_client_for: Any, query: str, accept: str, status: int,
                                   content_type: str) -> None:
    DeadLetterFactory()
    headers = {"HTTP_ACCEPT": accept} if accept else {}
    response = api_client_for(Role.ADMIN).get(f"/api/v1/dead-letters/export/?{query}", **headers)
    assert response.status_code == status
    assert response["Content-Type"].startswith(content_type)
    if status == 406:
        assert response.json()["error"]["code"] == "not_acceptable"


def test_a_requeue_with_a_stale_version_is_409_and_changes_nothing(api_client_for: Any) -> None:
    operator = api_client_for(Role.OPERATOR)
    row = DeadLetterFactory(task_name="tasks.demo.add", args=[1, 0], version=3)
    response = operator.post(f"/api/v1/dead-letters/{row.pk}/requeue/", {"version": 2}, format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "stale_version"
    row.refresh_from_db()
    assert row.status == "dead" and row.version == 3 and not DeadLetterEvent.objects.exists()
    assert operator.post(f"/api/v1/dead-letters/{row.pk}/requeue/", {"version": 3}, format="json").status_code == 202


def test_twenty_clicks_on_a_requeue_whose_run_fails_fast_publish_once(transactional_db: Any, api_client_for: Any,
                                                                       settings: Any) -> None:
    """The run fails again before the slower clicks land: with the version they read, those
    clicks are stale (409), not new requeues."""
    settings.TASK_QUEUES = [*settings.TASK_QUEUES, "clicks"]
    redis_client().delete("clicks")
    row = DeadLetterFactory(task_name="tasks.demo.add", args=[1, 0], queue="clicks")
    token = api_client_for(Role.OPERATOR)._credentials["HTTP_AUTHORIZATION"]
    barrier = threading.Barrier(20)
    codes: list[int] = []
    first_done = threading.Event()

    def click(i: int) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=token)
        barrier.wait()
        if i:
            first_done.wait(10)  # these land after the run failed again (below)
        codes.append(client.post(f"/api/v1/dead-letters/{row.pk}/requeue/", {"version": 1}, format="json").status_code)
        if i == 0:
            # The requeued run fails at once and the row is back to dead (version 3).
            current = DeadLetter.objects.get(pk=row.pk)
            from dlq.services import CapturedFailure, dead_letter_capture

            dead_letter_capture(failure=CapturedFailure(
                task_id=current.last_requeued_task_id, task_name=current.task_name, reason="non_retryable",
                exception_type="ZeroDivisionError", exception_message="again", dead_letter_id=current.pk))
            first_done.set()
        connection.close()

    threads = [threading.Thread(target=click, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [202] + [409] * 19
    assert redis_client().llen("clicks") == 1
    row.refresh_from_db()
    assert row.status == "dead" and row.requeue_count == 1
    assert DeadLetterEvent.objects.filter(dead_letter=row, action="requeue").count() == 1
    redis_client().delete("clicks")
