"""The ops pages under /dashboard/ (Django test client): roles, query budgets, the edit /
requeue / discard / resolve flows through the services, bulk dry runs, jobs, schedules,
and a broker that is down."""
from __future__ import annotations

from django.contrib.auth import get_user_model

import re
import time
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from dlq.models import Alert, DeadLetter, DeadLetterEvent, DeadLetterStatus, RedriveJob, Role
from tasks.models import OutboxMessage
from tests.conftest import make_user
from tests.factories import DeadLetterFactory
from tests.workers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

WRITE_ACTIONS = re.compile(rb'action="[^"]*/(edit|requeue|discard|resolve|bulk|cancel|enable|disable|run)/"')


@pytest.fixture
def login(client: Client) -> Any:
    def as_role(role: str | None, name: str | None = None) -> Client:
        user = make_user(name or f"page-{role}", role)
        client.force_login(user)
        return client
    return as_role


def dead_url(pk: int, verb: str = "") -> str:
    return f"/dashboard/dead-letters/{pk}/" + (f"{verb}/" if verb else "")


def test_pages_need_a_login(client: Client) -> None:
    row = DeadLetterFactory()
    for url in ("/dashboard/", "/dashboard/dead-letters/", dead_url(row.pk), "/dashboard/groups/",
                f"/dashboard/groups/{row.fingerprint}/", "/dashboard/jobs/", "/dashboard/schedules/",
                "/dashboard/ops/broker/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url
    response = client.post(dead_url(row.pk, "discard"), {"reason": "x"})
    assert response.status_code == 302
    assert DeadLetter.objects.get().status == DeadLetterStatus.DEAD


def test_a_user_without_a_role_gets_403(login: Any) -> None:
    client = login(None)
    response = client.get("/dashboard/")
    assert response.status_code == 403 and b"viewer role" in response.content


def test_viewer_reads_everything_and_sees_no_write_button(login: Any) -> None:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    row = DeadLetterFactory(exception_message="card declined")
    job = RedriveJob.objects.create(action="requeue", actor="x", reason="r", total=5, done=2, status="running")
    every = IntervalSchedule.objects.create(every=5, period="minutes")
    PeriodicTask.objects.create(name="demo add", task="tasks.demo.add", interval=every, args="[1, 2]")
    client = login(Role.VIEWER)
    pages = ["/dashboard/", "/dashboard/dead-letters/", dead_url(row.pk), "/dashboard/groups/",
             f"/dashboard/groups/{row.fingerprint}/", "/dashboard/jobs/", f"/dashboard/jobs/{job.pk}/",
             f"/dashboard/jobs/{job.pk}/progress/", "/dashboard/schedules/"]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        assert not WRITE_ACTIONS.search(response.content), (url, WRITE_ACTIONS.search(response.content))
        assert b'type="checkbox" name="ids"' not in response.content
    assert b"card declined" in client.get(dead_url(row.pk)).content
    # ... and every write answers 403 and changes nothing.
    for url, data in [(dead_url(row.pk, "requeue"), {}), (dead_url(row.pk, "discard"), {"reason": "x"}),
                      (dead_url(row.pk, "resolve"), {"reason": "x"}),
                      (dead_url(row.pk, "edit"), {"args": "[1]", "kwargs": "{}", "reason": "x", "version": "1", "intent": "save"}),
                      ("/dashboard/dead-letters/bulk/", {"action": "discard", "scope": "filter"}),
                      (f"/dashboard/jobs/{job.pk}/cancel/", {}),
                      (f"/dashboard/schedules/{PeriodicTask.objects.get(name='demo add').pk}/disable/", {})]:
        assert client.post(url, data).status_code == 403, url
    row.refresh_from_db()
    job.refresh_from_db()
    assert row.status == DeadLetterStatus.DEAD and row.version == 1 and not DeadLetterEvent.objects.exists()
    assert job.status == "running" and PeriodicTask.objects.get(name="demo add").enabled


def test_operator_sees_row_actions_but_no_bulk_admin_sees_bulk(login: Any) -> None:
    row = DeadLetterFactory()
    operator = login(Role.OPERATOR, "opal")
    detail = operator.get(dead_url(row.pk)).content
    for verb in (b"edit", b"requeue", b"discard", b"resolve"):
        assert b'action="/dashboard/dead-letters/%d/%s/"' % (row.pk, verb) in detail
    listing = operator.get("/dashboard/dead-letters/").content
    assert b"/dashboard/dead-letters/bulk/" not in listing
    assert operator.post("/dashboard/dead-letters/bulk/", {"action": "discard", "scope": "filter"}).status_code == 403
    admin = login(Role.ADMIN, "ada")
    listing = admin.get("/dashboard/dead-letters/").content
    assert b'action="/dashboard/dead-letters/bulk/"' in listing and b'name="ids"' in listing


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
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

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


def test_broker_panel_renders_quickly_when_the_broker_is_down(login: Any, monkeypatch: Any) -> None:
    from taskplatform.celery import app
    from taskplatform.embedded import free_port

    monkeypatch.setattr(app.conf, "broker_read_url", f"redis://127.0.0.1:{free_port()}/0")
    client = login(Role.VIEWER)
    started = time.monotonic()
    response = client.get("/dashboard/ops/broker/")
    assert time.monotonic() - started < 2
    assert response.status_code == 200 and b"broker unreachable" in response.content
    assert client.get("/dashboard/").status_code == 200


def test_broker_status_times_out_on_a_blackholed_broker() -> None:
    from dashboard.ops import broker_status

    started = time.monotonic()
    status = broker_status(timeout=0.5, broker_url="redis://10.255.255.1:6379/0")  # non-routable
    assert not status.reachable and time.monotonic() - started < 3


@pytest.mark.worker
def test_broker_panel_lists_the_live_worker_and_queue(live_worker: Any, login: Any) -> None:
    response = login(Role.VIEWER).get("/dashboard/ops/broker/")
    html = response.content.decode()
    assert response.status_code == 200 and live_worker.name in html and ">celery<" in html


@pytest.mark.worker
def test_bulk_shows_the_dry_run_count_before_it_starts_a_job(live_worker: Any, login: Any) -> None:
    rows = DeadLetterFactory.create_batch(4, exception_message="gone")
    DeadLetterFactory(status=DeadLetterStatus.RESOLVED)
    client = login(Role.ADMIN)
    preview = client.post("/dashboard/dead-letters/bulk/", {"action": "discard", "scope": "selected",
                                                             "ids": [r.pk for r in rows[:3]]})
    assert preview.status_code == 200
    assert re.search(rb'id="dry-run-count">3<', preview.content) and b'name="reason"' in preview.content
    assert not RedriveJob.objects.exists() and DeadLetter.objects.filter(status="dead").count() == 4
    no_reason = client.post("/dashboard/dead-letters/bulk/", {"action": "discard", "scope": "selected", "step": "start",
                                                               "ids": ",".join(str(r.pk) for r in rows[:3])})
    assert no_reason.status_code == 400 and b"a reason is required" in no_reason.content
    started = client.post("/dashboard/dead-letters/bulk/", {"action": "discard", "scope": "selected", "step": "start",
                                                             "ids": ",".join(str(r.pk) for r in rows[:3]),
                                                             "reason": "cleanup"})
    job = RedriveJob.objects.get()
    assert started.status_code == 302 and started["Location"] == f"/dashboard/jobs/{job.pk}/"
    assert (job.action, job.total, job.ids, job.reason) == ("discard", 3, sorted(r.pk for r in rows[:3]), "cleanup")
    wait_for(lambda: RedriveJob.objects.filter(pk=job.pk, status="finished").exists(), message="job finished")
    assert DeadLetter.objects.filter(status="discarded").count() == 3
    # By filter: the group's whole selection.
    preview = client.post("/dashboard/dead-letters/bulk/", {"action": "requeue", "scope": "filter", "f_q": "gone"})
    assert re.search(rb'id="dry-run-count">1<', preview.content)  # the 3 discarded no longer count
    none = client.post("/dashboard/dead-letters/bulk/", {"action": "discard", "scope": "selected"})
    assert none.status_code == 400


def test_group_page_lists_the_fingerprint_and_offers_group_actions_to_admins(login: Any) -> None:
    same = DeadLetterFactory.create_batch(3, exception_message="order 1 not found")
    DeadLetterFactory(exception_message="something else entirely", exception_type="KeyError")
    client = login(Role.ADMIN)
    page = client.get(f"/dashboard/groups/{same[0].fingerprint}/")
    assert page.status_code == 200 and {r.pk for r in page.context["rows"]} == {r.pk for r in same}
    assert b"Requeue the whole group" in page.content and b"Discard the whole group" in page.content
    assert b'<option value="discard">Discard</option>' in page.content  # the bulk bar, as on the list
    groups = client.get("/dashboard/groups/")
    assert [g["count"] for g in groups.context["groups"]] == [3, 1]
    assert client.get("/dashboard/groups/nope/").status_code == 404


def test_job_page_progress_and_cancel(login: Any) -> None:
    job = RedriveJob.objects.create(action="requeue", actor="x", reason="r", total=4, done=1, failed=1, status="running")
    client = login(Role.ADMIN)
    fragment = client.get(f"/dashboard/jobs/{job.pk}/progress/").content.decode()
    assert "50 %" in fragment and 'hx-trigger="every 1s"' in fragment and "Cancel job" in fragment
    assert client.post(f"/dashboard/jobs/{job.pk}/cancel/").status_code == 302
    job.refresh_from_db()
    assert job.status == "cancelled"
    fragment = client.get(f"/dashboard/jobs/{job.pk}/progress/").content.decode()
    assert "hx-trigger" not in fragment and "Cancel job" not in fragment  # polling stops
    again = client.post(f"/dashboard/jobs/{job.pk}/cancel/")
    assert again.status_code == 409 and b"already cancelled" in again.content


def test_schedules_enable_disable_and_run_now(login: Any) -> None:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every = IntervalSchedule.objects.create(every=5, period="minutes")
    task = PeriodicTask.objects.create(name="demo add", task="tasks.demo.add", interval=every, args="[1, 2]",
                                       queue="dashboard-test")
    client = login(Role.ADMIN)
    page = client.get("/dashboard/schedules/").content.decode()
    assert "demo add" in page and "every 5 minutes" in page and "Run demo add now" in page
    assert client.post(f"/dashboard/schedules/{task.pk}/disable/").status_code == 302
    task.refresh_from_db()
    assert not task.enabled
    assert "disabled" in client.get("/dashboard/schedules/").content.decode()
    assert client.post(f"/dashboard/schedules/{task.pk}/enable/").status_code == 302
    task.refresh_from_db()
    assert task.enabled
    from tasks.redis import redis_client

    redis_client().delete("dashboard-test")
    response = client.post(f"/dashboard/schedules/{task.pk}/run/", follow=True)
    assert b"Sent once now as task" in response.content
    assert redis_client().llen("dashboard-test") == 1
    redis_client().delete("dashboard-test")
    assert client.post("/dashboard/schedules/999999/run/").status_code == 404


def test_forms_have_labels_and_csrf(login: Any) -> None:
    row = DeadLetterFactory()
    client = login(Role.ADMIN)
    for url in ("/dashboard/dead-letters/", dead_url(row.pk), "/accounts/login/"):
        html = client.get(url).content.decode()
        ids = set(re.findall(r'<(?:input|select|textarea)[^>]*\bid="([^"]+)"', html))
        labelled = set(re.findall(r'<label[^>]*for="([^"]+)"', html)) | set(
            re.findall(r'<(?:input|select|textarea)[^>]*aria-label="[^"]+"[^>]*\bid="([^"]+)"', html)) | set(
            re.findall(r'<(?:input|select|textarea)[^>]*\bid="([^"]+)"[^>]*aria-label="[^"]+"', html))
        hidden = set(re.findall(r'<input type="hidden"[^>]*\bid="([^"]+)"', html))
        assert ids - hidden <= labelled, (url, ids - hidden - labelled)
        for form in re.findall(r"<form[^>]*method=\"post\".*?</form>", html, flags=re.S):
            assert "csrfmiddlewaretoken" in form, (url, form[:200])


# --- The Django admin -----------------------------------------------------------------------

def _counts_on_deadletter(queries: list[dict[str, Any]]) -> list[str]:
    return [q["sql"] for q in queries if "COUNT(" in q["sql"].upper() and '"dlq_deadletter"' in q["sql"]]


def test_admin_changelist_never_counts_the_whole_table(login: Any, monkeypatch: Any) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from dashboard.admin import EstimatedCountPaginator

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
    import json

    assert [r["id"] for r in json.loads(b"".join(response.streaming_content))] == [row.pk]


def test_admin_jobs_alerts_and_schedules(login: Any) -> None:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from tasks.redis import redis_client

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
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every = IntervalSchedule.objects.create(every=1, period="hours")
    task = PeriodicTask.objects.create(name="viewer add", task="tasks.demo.add", interval=every, args="[2, 3]")
    client = login(Role.VIEWER)
    page = client.get("/admin/django_celery_beat/periodictask/")
    assert page.status_code == 200 and b"run_tasks" not in page.content and b"disable_tasks" not in page.content
    client.post("/admin/django_celery_beat/periodictask/", {"action": "disable_tasks", "_selected_action": [task.pk]})
    task.refresh_from_db()
    assert task.enabled
    assert client.get("/admin/dlq/redrivejob/").status_code == 200


def test_policies_page_viewer_reads_admin_edits(client: Any) -> None:
    from dlq.models import ReprocessPolicy
    from tests.conftest import make_user

    make_user("pol-admin", "admin")
    make_user("pol-viewer", "viewer")
    client.force_login(get_user_model().objects.get(username="pol-admin"))  # django-axes: a login needs a request
    form = {"task_name": "tasks.demo.flaky", "reasons": "max_retries_exceeded",
            "exception_types": "", "cooldown_seconds": "60", "backoff_factor": "2", "max_auto_requeues": "4",
            "circuit_max_failures_per_minute": "5", "enabled": "on"}
    assert client.post("/dashboard/policies/new/", form).status_code == 302
    policy = ReprocessPolicy.objects.get()
    assert policy.reasons == ["max_retries_exceeded"] and policy.max_auto_requeues == 4 and policy.enabled
    bad = client.post("/dashboard/policies/new/", {**form, "task_name": "no.such.task"})
    assert bad.status_code == 400 and ReprocessPolicy.objects.count() == 1
    assert client.post(f"/dashboard/policies/{policy.pk}/", {**form, "max_auto_requeues": "1"}).status_code == 302
    policy.refresh_from_db()
    assert policy.max_auto_requeues == 1
    client.logout()
    client.force_login(get_user_model().objects.get(username="pol-viewer"))  # django-axes: a login needs a request
    page = client.get("/dashboard/policies/")
    assert page.status_code == 200 and b"tasks.demo.flaky" in page.content
    assert b">Save</button>" not in page.content and b"New policy" not in page.content
    assert client.post(f"/dashboard/policies/{policy.pk}/", {**form, "delete": "yes"}).status_code == 403
    assert ReprocessPolicy.objects.count() == 1


def test_detail_shows_a_dead_letter_that_healed_itself(client: Any) -> None:
    from django.utils import timezone

    from tests.conftest import make_user
    from tests.factories import DeadLetterFactory

    make_user("healer", "viewer")
    client.force_login(get_user_model().objects.get(username="healer"))  # django-axes: a login needs a request
    row = DeadLetterFactory(status="resolved", auto_requeue_count=2, last_auto_requeued_at=timezone.now())
    page = client.get(f"/dashboard/dead-letters/{row.pk}/")
    assert b"healed by itself" in page.content and b"2 automatic requeue(s)" in page.content
