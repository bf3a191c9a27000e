"""The other ops pages: the broker panel (also with the broker down), bulk dry runs and
jobs, groups, job progress and cancel, schedules, reprocess policies."""
from __future__ import annotations

import re
import time
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from dashboard.ops import broker_status
from devtools.embedded import free_port
from dlq.models import DeadLetter, DeadLetterStatus, RedriveJob, ReprocessPolicy, Role
from taskplatform.celery import app
from tasks.redis import redis_client
from tests.conftest import make_user
from tests.factories import DeadLetterFactory
from tests.workers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_broker_panel_renders_quickly_when_the_broker_is_down(login: Any, monkeypatch: Any) -> None:

    monkeypatch.setattr(app.conf, "broker_read_url", f"redis://127.0.0.1:{free_port()}/0")
    client = login(Role.VIEWER)
    started = time.monotonic()
    response = client.get("/dashboard/ops/broker/")
    assert time.monotonic() - started < 2
    assert response.status_code == 200 and b"broker unreachable" in response.content
    assert client.get("/dashboard/").status_code == 200


def test_broker_status_times_out_on_a_blackholed_broker() -> None:

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

    redis_client().delete("dashboard-test")
    response = client.post(f"/dashboard/schedules/{task.pk}/run/", follow=True)
    assert b"Sent once now as task" in response.content
    assert redis_client().llen("dashboard-test") == 1
    redis_client().delete("dashboard-test")
    assert client.post("/dashboard/schedules/999999/run/").status_code == 404


def test_policies_page_viewer_reads_admin_edits(client: Any) -> None:

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
