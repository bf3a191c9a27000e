"""The dead-letter REST API's bulk side: export, bulk dry runs and redrive jobs (through a
real worker), a job resumed after a crash, and cancelling one."""
from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from dlq import services
from dlq.models import DeadLetter, DeadLetterEvent, RedriveJob, Role
from dlq.services import redrive, redrive_engine
from dlq.services.redrive_engine import RedriveRun
from tasks.broker.publish import publish_tasks
from tests.dashboard.conftest import queue_length
from tests.factories import DeadLetterFactory
from tests.workers import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("test_queues")]


def test_export_csv_and_json_masked_admin_only(admin: APIClient, api_client_for: Any) -> None:
    DeadLetterFactory(kwargs={"password": "hunter2", "user": "bob"})
    DeadLetterFactory(status="resolved")
    response = admin.get("/api/v1/dead-letters/export/", {"format": "csv", "status": "dead"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    text = b"".join(response.streaming_content).decode()
    records = list(csv.DictReader(io.StringIO(text)))
    assert len(records) == 1 and "hunter2" not in text and json.loads(records[0]["kwargs"])["password"] == "********"
    response = admin.get("/api/v1/dead-letters/export/", {"format": "json"})
    data = json.loads(b"".join(response.streaming_content))
    assert len(data) == 2 and "hunter2" not in json.dumps(data)
    assert admin.get("/api/v1/dead-letters/export/", {"format": "xml"}).status_code == 400
    assert api_client_for(Role.OPERATOR).get("/api/v1/dead-letters/export/").status_code == 403


def test_bulk_dry_run_and_validation(admin: APIClient) -> None:
    DeadLetterFactory.create_batch(4)
    DeadLetterFactory(status="discarded")
    response = admin.post("/api/v1/dead-letters/bulk/", {"action": "discard", "filter": {"status": "dead"}, "dry_run": True}, format="json")
    assert response.status_code == 200 and response.json()["count"] == 4 and len(response.json()["sample"]) == 4
    response = admin.post("/api/v1/dead-letters/bulk/", {"action": "discard", "filter": {}, "dry_run": True}, format="json")
    assert response.json()["count"] == 4  # only rows the action applies to
    for body in [{"action": "explode", "filter": {}}, {"action": "discard"}, {"action": "discard", "filter": {"nope": "1"}},
                 {"action": "discard", "ids": "1,2"}, {"action": "discard", "filter": {}, "reason": ""},
                 {"action": "requeue", "filter": {}, "reason": "x", "rate_limit": -1}]:
        response = admin.post("/api/v1/dead-letters/bulk/", body, format="json")
        assert response.status_code == 400, (body, response.content)
    assert not RedriveJob.objects.exists()
    assert DeadLetter.objects.filter(status="dead").count() == 4


def test_bulk_discard_job_runs_to_the_end(admin: APIClient, live_worker: Any) -> None:
    rows = DeadLetterFactory.create_batch(30)
    response = admin.post("/api/v1/dead-letters/bulk/", {"action": "discard", "ids": [r.pk for r in rows[:20]],
                                                         "reason": "cleanup"}, format="json")
    assert response.status_code == 202
    job = response.json()["job"]
    assert job["total"] == 20 and job["status"] == "pending"
    done = wait_for(lambda: (lambda j: j if j["status"] == "finished" else None)(
        admin.get(f"/api/v1/redrive-jobs/{job['id']}/").json()), message="job finished")
    assert done["done"] == 20 and done["failed"] == 0
    assert DeadLetter.objects.filter(status="discarded").count() == 20
    assert DeadLetterEvent.objects.filter(action="discard", actor="user-admin", reason="cleanup").count() == 20
    assert admin.post(f"/api/v1/redrive-jobs/{job['id']}/cancel/").status_code == 409


def test_bulk_requeue_through_the_worker_resolves(admin: APIClient, live_worker: Any) -> None:
    rows = DeadLetterFactory.create_batch(10, args=[2, 3])
    response = admin.post("/api/v1/dead-letters/bulk/", {"action": "requeue", "filter": {"task_name": "tasks.demo.add"},
                                                         "reason": "fixed upstream", "rate_limit": 100}, format="json")
    assert response.status_code == 202
    wait_for(lambda: DeadLetter.objects.filter(status="resolved").count() == 10, timeout=60, message="all resolved")
    assert all(r.requeue_count == 1 for r in DeadLetter.objects.all())
    assert {r.pk for r in rows} == set(DeadLetter.objects.values_list("pk", flat=True))


@pytest.fixture
def no_job_task(monkeypatch: Any) -> None:
    """The test plays the (crashing) runner itself: do not also start the job's Celery task."""
    monkeypatch.setattr(redrive, "redrive_job_dispatch", lambda *, job_id: None)


def test_job_resume_after_a_crash_publishes_nothing_twice(admin: APIClient, no_job_task: None) -> None:
    DeadLetterFactory.create_batch(5, queue="api-test")
    job = services.dead_letters_bulk_start(actor="ops", action="requeue", reason="r", filters={})
    RedriveJob.objects.filter(pk=job.pk).update(status="running")
    job.refresh_from_db()
    # Runner A commits its first batch of 3, then dies before publishing it.
    redrive_engine.job_batch(RedriveRun(job=job), 3)
    assert queue_length("api-test") == 0 and len(RedriveJob.objects.get(pk=job.pk).pending_publish) == 3
    # Runner B (the redelivered job task) publishes that batch, then does the rest.
    finished = services.redrive_job_run(job_id=job.pk, batch_size=3)
    assert finished is not None and finished.status == "finished" and finished.done == 5
    assert queue_length("api-test") == 5
    assert DeadLetter.objects.filter(status="requeued").count() == 5
    # A third delivery of the job's message changes nothing.
    assert services.redrive_job_run(job_id=job.pk) is None
    assert queue_length("api-test") == 5


def test_resume_skips_messages_already_in_the_broker(no_job_task: None) -> None:
    rows = DeadLetterFactory.create_batch(3, queue="api-test")
    job = services.dead_letters_bulk_start(actor="ops", action="requeue", reason="r", filters={})
    RedriveJob.objects.filter(pk=job.pk).update(status="running")
    job.refresh_from_db()
    redrive_engine.job_batch(RedriveRun(job=job), 10)
    pending = [services.requeue_message(services.RequeueSource.of(DeadLetter.objects.get(pk=pk)), tid, "api-test")
               for pk, tid in job.pending_publish]
    publish_tasks(pending[:2])  # crashed after publishing two of three
    services.redrive_job_run(job_id=job.pk)
    assert queue_length("api-test") == 3
    assert {r.pk for r in rows} == set(DeadLetter.objects.filter(status="requeued").values_list("pk", flat=True))


def test_cancel_a_running_job(admin: APIClient, no_job_task: None) -> None:
    DeadLetterFactory.create_batch(6)
    job = services.dead_letters_bulk_start(actor="ops", action="discard", reason="r", filters={}, rate_limit=2)
    sleeps: list[float] = []

    def sleep_then_cancel(seconds: float) -> None:
        sleeps.append(seconds)
        assert admin.post(f"/api/v1/redrive-jobs/{job.pk}/cancel/").json()["status"] == "cancelled"

    finished = services.redrive_job_run(job_id=job.pk, sleep=sleep_then_cancel)
    assert finished is not None and finished.status == "cancelled"
    assert finished.done == 2 and DeadLetter.objects.filter(status="discarded").count() == 2  # 2 msg/s: one batch of 2
    assert sleeps and 0 < sleeps[0] <= 1.0
