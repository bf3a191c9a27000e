"""The Django admin: list with search and filters, and the requeue action through the services."""
from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model

from dlq import services
from dlq.models import DeadLetter, DeadLetterStatus
from dlq.services import CapturedFailure, dead_letter_capture
from tests.conftest import make_user
from tests.workers import wait_for

pytestmark = pytest.mark.worker


def test_admin_lists_filters_and_requeues(live_worker: Any, client: Any, operator_client: Any) -> None:
    ids = [operator_client.post("/api/v1/tasks/enqueue/", {"task": "tasks.demo.divide", "args": [n, 0]},
                                format="json").json()["task_id"] for n in (1, 2)]
    wait_for(lambda: DeadLetter.objects.filter(task_id__in=ids).count() == 2, message="two dead letters")
    make_user("olga", "operator")
    client.force_login(get_user_model().objects.get(username="olga"))  # django-axes: a login needs a request

    page = client.get("/admin/dlq/deadletter/", {"status__exact": "dead", "reason__exact": "non_retryable", "q": "division"})
    assert page.status_code == 200
    assert page.content.count(b"tasks.demo.divide") >= 2
    row = DeadLetter.objects.get(task_id=ids[0])
    detail = client.get(f"/admin/dlq/deadletter/{row.pk}/change/")
    assert detail.status_code == 200 and b"ZeroDivisionError" in detail.content

    # Fix the first one's arguments through the service, then requeue both from the admin.
    services.dead_letter_update(dead_letter_id=row.pk, actor="olga", reason="fix", version=row.version, args=[4, 2])
    other = DeadLetter.objects.get(task_id=ids[1])
    response = client.post("/admin/dlq/deadletter/", {"action": "requeue_selected", "_selected_action": [row.pk, other.pk],
                                                      "post": "yes"})  # "yes" on the confirmation page
    assert response.status_code == 302
    wait_for(lambda: DeadLetter.objects.filter(pk=row.pk, status=DeadLetterStatus.RESOLVED).exists(), message="resolved")
    wait_for(lambda: DeadLetter.objects.filter(pk=other.pk, status=DeadLetterStatus.DEAD, requeue_count=1).exists(),
             message="the unfixed one back in dead")
    assert DeadLetter.objects.count() == 2


def test_viewer_cannot_requeue_from_the_admin(transactional_db: Any, client: Any) -> None:
    dead_letter_capture(failure=CapturedFailure(task_id="t-1", task_name="tasks.demo.add", reason="non_retryable",
                                                exception_type="ValueError", exception_message="boom", args=[1, 2], kwargs={}))
    make_user("vera", "viewer")
    client.force_login(get_user_model().objects.get(username="vera"))  # django-axes: a login needs a request
    page = client.get("/admin/dlq/deadletter/")
    assert page.status_code == 200 and b"requeue_selected" not in page.content
    row = DeadLetter.objects.get()
    client.post("/admin/dlq/deadletter/", {"action": "requeue_selected", "_selected_action": [row.pk]})
    row.refresh_from_db()
    assert row.status == DeadLetterStatus.DEAD and row.requeue_count == 0


def test_admin_masks_secrets(transactional_db: Any, client: Any) -> None:
    dead_letter_capture(failure=CapturedFailure(
        task_id="t-2", task_name="tasks.demo.add", reason="non_retryable", exception_type="ValueError",
        exception_message="boom", args=[{"password": "hunter2"}], kwargs={"api_key": "sk-live-123", "y": 1}))
    make_user("walt", "operator")
    client.force_login(get_user_model().objects.get(username="walt"))  # django-axes: a login needs a request
    row = DeadLetter.objects.get()
    page = client.get(f"/admin/dlq/deadletter/{row.pk}/change/")
    assert b"hunter2" not in page.content and b"sk-live-123" not in page.content
    assert b"********" in page.content
