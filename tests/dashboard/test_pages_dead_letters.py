"""The dead-letter pages: the overview and the list within their query budgets, search and
filters with chips and cursor pages, and the edit / requeue / discard / resolve flows
through the services."""
from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from dlq.models import Alert, DeadLetter, DeadLetterEvent, DeadLetterStatus, RedriveJob, Role
from tasks.models import OutboxMessage
from tests.conftest import make_user
from tests.dashboard.conftest import dead_url
from tests.factories import DeadLetterFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_overview_shows_counts_groups_jobs_alerts_within_ten_queries(login: Any, django_assert_max_num_queries: Any) -> None:
    DeadLetterFactory.create_batch(3, exception_message="order 7 not found")
    DeadLetterFactory(status=DeadLetterStatus.RESOLVED, reason="max_retries_exceeded", task_name="tasks.demo.flaky")
    RedriveJob.objects.create(action="requeue", actor="x", reason="r", total=10, done=4, status="running")
    Alert.objects.create(kind="dlq_size", key="dlq_size", message="DLQ holds 4 dead letters (threshold 3)")
    # Set aside (a later available_at), so that a relay running beside the tests leaves it.
    OutboxMessage.objects.create(task_id="t-1", task_name="tasks.demo.add", queue="celery", payload="[[1, 2], {}]",
                                 available_at=timezone.now() + timedelta(hours=1))
    client = login(Role.VIEWER)
    client.get("/healthz")  # once per connection: the statement timeout
    with django_assert_max_num_queries(10):
        response = client.get("/dashboard/")
    html = response.content.decode()
    assert response.status_code == 200
    assert re.search(r"Outbox: <strong>1</strong> enqueued message waiting for the relay", html)
    assert "DLQ holds 4 dead letters" in html and "Job #" in html and 'aria-valuenow="4"' in html
    assert re.search(r'<span class="n">3</span>Dead', html) and re.search(r'<span class="n">1</span>Resolved', html)
    assert "max_retries_exceeded" in html and "order 7 not found" in html
    assert 'id="per-hour-data"' in html and "chart.umd.min.js" in html and "cdn" not in html.lower()
    assert 'hx-get="/dashboard/ops/broker/"' in html  # workers load after the page, never blocking it


def test_list_costs_the_same_queries_whatever_the_page_size(login: Any, django_assert_max_num_queries: Any) -> None:
    DeadLetterFactory.create_batch(120)
    client = login(Role.ADMIN)
    client.get("/healthz")  # once per connection: the statement timeout
    counts = []
    for size in (25, 100):

        with CaptureQueriesContext(connection) as ctx:
            response = client.get("/dashboard/dead-letters/", {"page_size": size})
        assert response.status_code == 200 and len(response.context["rows"]) == size
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1] <= 5, counts
    with django_assert_max_num_queries(6):
        client.get(f"/dashboard/groups/{DeadLetter.objects.first().fingerprint}/", {"page_size": 100})


def test_search_filters_chips_and_cursor_pages(login: Any) -> None:
    DeadLetterFactory.create_batch(30, exception_message="socket timeout talking to billing")
    DeadLetterFactory.create_batch(5, exception_message="card declined", task_name="tasks.demo.divide")
    client = login(Role.VIEWER)
    page = client.get("/dashboard/dead-letters/", {"q": "declined"})
    assert len(page.context["rows"]) == 5 and b"Remove filter q" in page.content
    page = client.get("/dashboard/dead-letters/", {"task_name": "tasks.demo.add", "status": "dead", "page_size": 25})
    html = page.content.decode()
    assert len(page.context["rows"]) == 25 and "Remove filter task_name" in html and "Remove filter status" in html
    seen = {r.pk for r in page.context["rows"]}
    next_url = page.context["next_url"]
    assert next_url and "task_name=tasks.demo.add" in next_url
    page2 = client.get("/dashboard/dead-letters/" + next_url)
    assert {r.pk for r in page2.context["rows"]}.isdisjoint(seen) and len(page2.context["rows"]) == 5
    assert page2.context["next_url"] is None and page2.context["prev_url"]
    bad = client.get("/dashboard/dead-letters/", {"status": "bogus"})
    assert bad.status_code == 400 and b"status" in bad.content
    bad = client.get("/dashboard/dead-letters/", {"cursor": "not-a-cursor"})
    assert bad.status_code == 400 and b"invalid cursor" in bad.content


def test_edit_previews_a_diff_then_saves_with_a_reason(login: Any) -> None:
    row = DeadLetterFactory(task_name="tasks.demo.divide", args=[1, 0], kwargs={})
    client = login(Role.OPERATOR)
    form = {"args": "[1, 2]", "kwargs": "{}", "queue": "celery", "reason": "divide by two", "version": str(row.version)}
    preview = client.post(dead_url(row.pk, "edit"), {**form, "intent": "preview"})
    assert preview.status_code == 200 and b"Diff preview" in preview.content
    assert re.search(rb'<div class="del">-\s+0</div>', preview.content) and re.search(rb'<div class="add">\+\s+2</div>', preview.content)
    row.refresh_from_db()
    assert row.args == [1, 0] and row.version == 1  # nothing saved by a preview

    assert client.post(dead_url(row.pk, "edit"), {**form, "args": "[1, ", "intent": "save"}).status_code == 400
    assert client.post(dead_url(row.pk, "edit"), {**form, "args": '{"x": 1}', "intent": "save"}).status_code == 400
    no_reason = client.post(dead_url(row.pk, "edit"), {**form, "reason": "", "intent": "save"})
    assert no_reason.status_code == 400 and b"This field is required" in no_reason.content
    wrong_sig = client.post(dead_url(row.pk, "edit"), {**form, "args": "[1, 2, 3]", "intent": "save"})
    assert wrong_sig.status_code == 400
    row.refresh_from_db()
    assert row.args == [1, 0] and row.version == 1

    saved = client.post(dead_url(row.pk, "edit"), {**form, "intent": "save"})
    assert saved.status_code == 302
    row.refresh_from_db()
    assert row.args == [1, 2] and row.version == 2
    event = DeadLetterEvent.objects.get()
    assert (event.action, event.reason, event.actor) == ("edit", "divide by two", "page-operator")
    stale = client.post(dead_url(row.pk, "edit"), {**form, "args": "[3, 1]", "intent": "save"}, follow=False)
    assert stale.status_code == 409 and b"stale version" in stale.content
    page = client.get(dead_url(row.pk))
    assert b"divide by two" in page.content  # the audit trail


def test_detail_masks_secrets_in_view_and_editor(login: Any) -> None:
    row = DeadLetterFactory(args=[{"password": "hunter2"}], kwargs={"api_key": "sk-live-123"})
    for role in (Role.VIEWER, Role.OPERATOR):
        page = login(role).get(dead_url(row.pk)).content
        assert b"hunter2" not in page and b"sk-live-123" not in page and b"********" in page


def test_discard_needs_a_reason_and_resolve_works(login: Any) -> None:
    one, two = DeadLetterFactory(), DeadLetterFactory()
    client = login(Role.OPERATOR)
    response = client.post(dead_url(one.pk, "discard"), {"reason": "  "})
    assert response.status_code == 400 and b"a reason is required" in response.content
    assert client.post(dead_url(one.pk, "discard"), {"reason": "test data"}).status_code == 302
    again = client.post(dead_url(one.pk, "discard"), {"reason": "again"})
    assert again.status_code == 409 and b"only dead letters" in again.content
    assert client.post(dead_url(two.pk, "resolve"), {"reason": "fixed upstream"}).status_code == 302
    assert {r.pk: r.status for r in DeadLetter.objects.all()} == {one.pk: "discarded", two.pk: "resolved"}
    page = client.get(dead_url(one.pk)).content
    assert b"test data" in page and b'/requeue/"' not in page  # no requeue button on a discarded row
    assert client.get(dead_url(999999)).status_code == 404


def test_requeue_with_the_broker_down_is_503_and_leaves_the_row_dead(login: Any, broker_down: str) -> None:
    row = DeadLetterFactory()
    response = login(Role.OPERATOR).post(dead_url(row.pk, "requeue"), {"reason": "try"})
    assert response.status_code == 503 and b"broker refused" in response.content
    row.refresh_from_db()
    assert row.status == DeadLetterStatus.DEAD


def test_detail_shows_a_dead_letter_that_healed_itself(client: Any) -> None:
    make_user("healer", "viewer")
    client.force_login(get_user_model().objects.get(username="healer"))  # django-axes: a login needs a request
    row = DeadLetterFactory(status="resolved", auto_requeue_count=2, last_auto_requeued_at=timezone.now())
    page = client.get(f"/dashboard/dead-letters/{row.pk}/")
    assert b"healed by itself" in page.content and b"2 automatic requeue(s)" in page.content
