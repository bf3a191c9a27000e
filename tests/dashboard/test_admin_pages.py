"""The Django admin's dead-letter changelist (no full count, full-text search), its
confirmed actions, and the read-only and schedule admins, for each role."""
from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from dashboard.admin import EstimatedCountPaginator
from dlq.models import Alert, DeadLetter, DeadLetterEvent, RedriveJob, Role
from tasks.redis import redis_client
from tests.factories import DeadLetterFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _counts_on_deadletter(queries: list[dict[str, Any]]) -> list[str]:
    return [q["sql"] for q in queries if "COUNT(" in q["sql"].upper() and '"dlq_deadletter"' in q["sql"]]


def test_admin_changelist_never_counts_the_whole_table(login: Any, monkeypatch: Any) -> None:


    DeadLetterFactory.create_batch(60)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE dlq_deadletter")
    monkeypatch.setattr(EstimatedCountPaginator, "ESTIMATE_ABOVE", 10)  # "big" for this test
    client = login(Role.VIEWER)
    with CaptureQueriesContext(connection) as ctx:
        page = client.get("/admin/dlq/deadletter/")
    assert page.status_code == 200 and _counts_on_deadletter(ctx.captured_queries) == []
    assert "about 60 dead letters" in " ".join(page.content.decode().split()) and b"estimated" in page.content
    # Filtered (or small): a count bounded by LIMIT, never a scan of everything.
    with CaptureQueriesContext(connection) as ctx:
        page = client.get("/admin/dlq/deadletter/", {"status__exact": "dead"})
    counts = _counts_on_deadletter(ctx.captured_queries)
    assert counts and all("LIMIT" in sql.upper() for sql in counts)
    assert "60 dead letters" in " ".join(page.content.decode().split())


def test_admin_search_is_the_full_text_search(login: Any) -> None:
    hit = DeadLetterFactory(exception_message="card declined by issuer")
    DeadLetterFactory(exception_message="socket timeout")
    client = login(Role.VIEWER)
    page = client.get("/admin/dlq/deadletter/", {"q": "declined"})
    assert list(page.context["cl"].result_list) == [hit]
    page = client.get("/admin/dlq/deadletter/", {"q": hit.task_id})
    assert list(page.context["cl"].result_list) == [hit]


def test_admin_discard_confirms_and_needs_a_reason(login: Any) -> None:
    rows = DeadLetterFactory.create_batch(2)
    client = login(Role.OPERATOR)
    ids = [r.pk for r in rows]
    confirm = client.post("/admin/dlq/deadletter/", {"action": "discard_selected", "_selected_action": ids})
    html = confirm.content.decode()
    assert confirm.status_code == 200 and 'name="post" value="yes"' in html and 'name="reason"' in html
    assert 'id="action-count">2<' in html and DeadLetter.objects.filter(status="dead").count() == 2
    no_reason = client.post("/admin/dlq/deadletter/", {"action": "discard_selected", "_selected_action": ids,
                                                       "post": "yes", "reason": " "})
    assert no_reason.status_code == 400 and b"A reason is required" in no_reason.content
    assert DeadLetter.objects.filter(status="dead").count() == 2
    done = client.post("/admin/dlq/deadletter/", {"action": "discard_selected", "_selected_action": ids,
                                                  "post": "yes", "reason": "duplicates"})
    assert done.status_code == 302
    assert set(DeadLetter.objects.values_list("status", flat=True)) == {"discarded"}
    assert set(DeadLetterEvent.objects.values_list("action", "reason", "actor")) == {("discard", "duplicates", "page-operator")}


def test_admin_requeue_shows_a_confirmation_first(login: Any) -> None:
    row = DeadLetterFactory()
    client = login(Role.OPERATOR)
    confirm = client.post("/admin/dlq/deadletter/", {"action": "requeue_selected", "_selected_action": [row.pk]})
    assert confirm.status_code == 200 and b"Requeue these" in confirm.content and b'value="requeue_selected"' in confirm.content
    row.refresh_from_db()
    assert row.status == "dead" and row.requeue_count == 0


def test_admin_export_is_admin_only_confirms_then_streams_masked_rows(login: Any) -> None:
    row = DeadLetterFactory(kwargs={"api_key": "sk-live-123"})
    operator = login(Role.OPERATOR, "op2")
    assert b"export_selected" not in operator.get("/admin/dlq/deadletter/").content
    client = login(Role.ADMIN, "ad2")
    assert b"export_selected" in client.get("/admin/dlq/deadletter/").content
    confirm = client.post("/admin/dlq/deadletter/", {"action": "export_selected", "_selected_action": [row.pk]})
    assert confirm.status_code == 200 and b'name="format"' in confirm.content
    response = client.post("/admin/dlq/deadletter/", {"action": "export_selected", "_selected_action": [row.pk],
                                                      "post": "yes", "format": "csv"})
    body = b"".join(response.streaming_content).decode()
    assert response["Content-Type"] == "text/csv" and row.task_id in body
    assert "sk-live-123" not in body and "********" in body
    response = client.post("/admin/dlq/deadletter/", {"action": "export_selected", "_selected_action": [row.pk],
                                                      "post": "yes", "format": "json"})

    assert [r["id"] for r in json.loads(b"".join(response.streaming_content))] == [row.pk]


def test_admin_jobs_alerts_and_schedules(login: Any) -> None:


    RedriveJob.objects.create(action="requeue", actor="x", reason="r", total=1)
    Alert.objects.create(kind="dlq_size", key="k", message="too many")
    every = IntervalSchedule.objects.create(every=1, period="hours")
    task = PeriodicTask.objects.create(name="admin add", task="tasks.demo.add", interval=every, args="[2, 3]",
                                       queue="dashboard-admin-test")
    client = login(Role.ADMIN)
    for url in ("/admin/dlq/redrivejob/", "/admin/dlq/alert/", "/admin/django_celery_beat/periodictask/"):
        assert client.get(url).status_code == 200, url
    redis_client().delete("dashboard-admin-test")
    response = client.post("/admin/django_celery_beat/periodictask/", {"action": "run_tasks", "_selected_action": [task.pk]},
                           follow=True)
    assert b"Sent 1 task(s) now." in response.content
    assert redis_client().llen("dashboard-admin-test") == 1
    redis_client().delete("dashboard-admin-test")


def test_admin_viewer_cannot_run_or_toggle_schedules(login: Any) -> None:

    every = IntervalSchedule.objects.create(every=1, period="hours")
    task = PeriodicTask.objects.create(name="viewer add", task="tasks.demo.add", interval=every, args="[2, 3]")
    client = login(Role.VIEWER)
    page = client.get("/admin/django_celery_beat/periodictask/")
    assert page.status_code == 200 and b"run_tasks" not in page.content and b"disable_tasks" not in page.content
    client.post("/admin/django_celery_beat/periodictask/", {"action": "disable_tasks", "_selected_action": [task.pk]})
    task.refresh_from_db()
    assert task.enabled
    assert client.get("/admin/dlq/redrivejob/").status_code == 200
