"""dlq/services/redrive_engine.py: bulk redrive jobs publish every selected dead letter exactly
once, counted in Redis: through crashes between the UPDATE and the publish or in the middle of
it, concurrent runners (the lease), cancellation and rows changed under the job."""
from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from dlq import services
from dlq.models import DeadLetter, DeadLetterEvent, DeadLetterStatus, RedriveJob, RedriveJobStatus
from dlq.services import redrive_engine
from dlq.services.redrive_engine import RedriveRun
from taskplatform.celery import app
from tasks.failures import DEAD_LETTER_HEADER
from tests.factories import DeadLetterFactory
from tests.workers import wait_for

pytestmark = [pytest.mark.django_db,
              pytest.mark.skipif(not str(app.conf.broker_url).startswith("redis"), reason="Redis broker only")]


@pytest.fixture(autouse=True)
def _declared_queues() -> Any:
    """``_queue()`` declares its queues (``TASK_QUEUES``); put the setting back afterwards."""
    from django.conf import settings

    before = list(settings.TASK_QUEUES)
    yield
    settings.TASK_QUEUES = before


def _queue() -> str:
    """A fresh queue, declared (``TASK_QUEUES``) so that a bulk job may name it."""
    from django.conf import settings

    name = f"test-redrive-{uuid.uuid4().hex[:8]}"
    settings.TASK_QUEUES = [*settings.TASK_QUEUES, name]
    return name


def _messages(queue: str) -> list[dict[str, Any]]:
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        blobs = client.lrange(queue, 0, -1)
        client.delete(queue)
    return [json.loads(b) for b in blobs]


def _seed(n: int, queue: str, task_name: str = "tasks.demo.add") -> list[int]:
    rows = DeadLetterFactory.build_batch(n, task_name=task_name, queue=queue, routing_key=queue)
    for i, row in enumerate(rows):
        row.args = [i, i]
    return [r.pk for r in DeadLetter.objects.bulk_create(rows)]


def _start(source: str, **kwargs: Any) -> RedriveJob:
    app.finalize(auto=True)  # as in a worker
    return services.dead_letters_bulk_start(actor="alice", action="requeue", reason="redrive",
                                            filters={"queue": source}, **kwargs)


def _assert_exactly_once(queue: str, pks: list[int], messages: list[dict[str, Any]]) -> None:
    ids = [m["headers"]["id"] for m in messages]
    assert len(ids) == len(set(ids)) == len(pks)
    assert sorted(m["headers"][DEAD_LETTER_HEADER] for m in messages) == sorted(pks)
    by_row = dict(DeadLetter.objects.filter(pk__in=pks).values_list("pk", "last_requeued_task_id"))
    assert {m["headers"][DEAD_LETTER_HEADER]: m["headers"]["id"] for m in messages} == by_row
    assert set(DeadLetter.objects.filter(pk__in=pks).values_list("status", flat=True)) == {DeadLetterStatus.REQUEUED}


def test_every_selected_dead_letter_is_published_once_with_its_event() -> None:
    queue = _queue()
    pks = _seed(2500, queue)
    job = _start(queue)
    job = services.redrive_job_run(job_id=job.pk, batch_size=1000)
    assert job is not None and job.status == RedriveJobStatus.FINISHED
    assert (job.done, job.failed, job.pending_publish, job.runner) == (2500, 0, [], "")
    messages = _messages(queue)
    _assert_exactly_once(queue, pks, messages)
    events = {e.dead_letter_id: e for e in DeadLetterEvent.objects.filter(dead_letter_id__in=pks)}
    assert len(events) == 2500
    row = DeadLetter.objects.get(pk=pks[7])
    event = events[row.pk]
    assert (event.actor, event.action, event.reason) == ("alice", "requeue", "redrive")
    assert event.diff == {"status": ["dead", "requeued"], "job": [None, job.pk], "requeue_count": [0, 1],
                          "task_id": [None, row.last_requeued_task_id]}
    assert (row.requeue_count, row.version) == (1, 2)


def test_queue_override_is_in_the_event_and_the_messages_go_there() -> None:
    source, target = _queue(), _queue()
    pks = _seed(3, source)
    job = _start(source, queue=target)
    services.redrive_job_run(job_id=job.pk)
    assert _messages(source) == []
    _assert_exactly_once(target, pks, _messages(target))
    assert DeadLetterEvent.objects.get(dead_letter_id=pks[0]).diff["queue"] == [source, target]


def test_crash_between_update_and_publish_resumes_without_publishing_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    queue = _queue()
    pks = _seed(1500, queue)
    job = _start(queue)
    real = redrive_engine.publish_tasks
    monkeypatch.setattr(redrive_engine, "publish_tasks", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("gone")))
    with pytest.raises(ConnectionError):
        services.redrive_job_run(job_id=job.pk, batch_size=1000)
    job.refresh_from_db()
    assert len(job.pending_publish) == 1000 and job.done == 1000
    assert _messages(queue) == []
    # The runner died: its lease goes stale and another runner resumes the job.
    RedriveJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    monkeypatch.setattr(redrive_engine, "publish_tasks", real)
    job = services.redrive_job_run(job_id=job.pk, batch_size=1000)
    assert job is not None and job.status == RedriveJobStatus.FINISHED and job.done == 1500
    _assert_exactly_once(queue, pks, _messages(queue))


def test_crash_mid_publish_resumes_with_only_the_missing_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    queue = _queue()
    pks = _seed(1200, queue)
    job = _start(queue)
    real = redrive_engine.publish_tasks

    def half_then_crash(tasks: Any, **kwargs: Any) -> int:
        real(tasks[: len(tasks) // 2], **kwargs)
        raise ConnectionError("lost mid-batch")

    monkeypatch.setattr(redrive_engine, "publish_tasks", half_then_crash)
    with pytest.raises(ConnectionError):
        services.redrive_job_run(job_id=job.pk, batch_size=1000)
    with app.connection_for_write() as conn:
        assert conn.default_channel.client.llen(queue) == 500
    RedriveJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    monkeypatch.setattr(redrive_engine, "publish_tasks", real)
    job = services.redrive_job_run(job_id=job.pk, batch_size=1000)
    assert job is not None and job.status == RedriveJobStatus.FINISHED
    _assert_exactly_once(queue, pks, _messages(queue))


def test_already_published_finds_queued_and_unknown_ids() -> None:
    queue = _queue()
    pks = _seed(3, queue)
    job = _start(queue)
    services.redrive_job_run(job_id=job.pk)
    ids = list(DeadLetter.objects.filter(pk__in=pks).values_list("last_requeued_task_id", flat=True))
    missing = str(uuid.uuid4())
    assert services.already_published([*ids, missing]) == set(ids)
    _messages(queue)


def test_a_second_runner_is_refused_while_the_lease_is_held() -> None:
    queue = _queue()
    _seed(10, queue)
    job = _start(queue)
    assert redrive_engine.claim(job_id=job.pk, token="other-runner")
    assert services.redrive_job_run(job_id=job.pk) is None
    assert _messages(queue) == []
    # Another runner took the lease between two batches: this one stops at the next batch.
    RedriveJob.objects.filter(pk=job.pk).update(status=RedriveJobStatus.RUNNING)
    assert redrive_engine.job_batch(RedriveRun(job=RedriveJob.objects.get(pk=job.pk), token="mine"), 5) is None
    assert RedriveJob.objects.get(pk=job.pk).done == 0


def test_a_stale_lease_is_taken_over_and_the_job_finishes_once() -> None:
    queue = _queue()
    pks = _seed(10, queue)
    job = _start(queue)
    assert redrive_engine.claim(job_id=job.pk, token="dead-runner")
    RedriveJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    job = services.redrive_job_run(job_id=job.pk)
    assert job is not None and job.status == RedriveJobStatus.FINISHED
    _assert_exactly_once(queue, pks, _messages(queue))
    assert services.redrive_job_run(job_id=job.pk) is None  # finished: nothing runs again
    assert _messages(queue) == []


def test_cancel_stops_the_job_between_batches() -> None:
    queue = _queue()
    _seed(30, queue)
    job = _start(queue, rate_limit=10)  # batches of 10, each followed by a pause of about a second
    pauses: list[float] = []

    def cancel_during_the_pause(seconds: float) -> None:
        pauses.append(seconds)
        services.redrive_job_cancel(job_id=job.pk, actor="bob")

    finished = services.redrive_job_run(job_id=job.pk, batch_size=10, sleep=cancel_during_the_pause)
    assert finished is not None and finished.status == RedriveJobStatus.CANCELLED and finished.done == 10
    assert len(pauses) == 1
    assert len(_messages(queue)) == 10
    assert DeadLetter.objects.filter(queue=queue, status=DeadLetterStatus.DEAD).count() == 20


def test_rows_changed_concurrently_are_skipped() -> None:
    queue = _queue()
    pks = _seed(20, queue)
    job = _start(queue)
    # After the job was created: one row discarded, one requeued on its own (its message is
    # not this job's to send).
    services.dead_letter_discard(dead_letter_id=pks[3], actor="bob", reason="not needed")
    DeadLetter.objects.filter(pk=pks[4]).update(status=DeadLetterStatus.REQUEUED, last_requeued_task_id="single")
    job = services.redrive_job_run(job_id=job.pk, batch_size=7)
    assert job is not None and (job.done, job.failed) == (18, 0)  # the selection re-reads status per batch
    messages = _messages(queue)
    by_row: dict[int, list[str]] = {}
    for m in messages:
        by_row.setdefault(m["headers"][DEAD_LETTER_HEADER], []).append(m["headers"]["id"])
    assert pks[3] not in by_row and pks[4] not in by_row
    assert all(len(v) == 1 for v in by_row.values()) and len(by_row) == 18
    assert DeadLetter.objects.get(pk=pks[4]).last_requeued_task_id == "single"


def test_the_update_skips_a_row_whose_status_changed_after_the_ids_were_read() -> None:
    queue = _queue()
    pks = _seed(5, queue)
    job = _start(queue)
    job = RedriveJob.objects.get(pk=job.pk)
    RedriveJob.objects.filter(pk=job.pk).update(status=RedriveJobStatus.RUNNING)
    DeadLetter.objects.filter(pk=pks[2]).update(status=DeadLetterStatus.DISCARDED)
    moved = redrive_engine.move_batch(job, pks, [DeadLetterStatus.DEAD], DeadLetterStatus.REQUEUED)
    assert [row[0] for row in moved] == [pks[0], pks[1], pks[3], pks[4]]
    assert not DeadLetterEvent.objects.filter(dead_letter_id=pks[2]).exists()
    assert DeadLetter.objects.get(pk=pks[2]).status == DeadLetterStatus.DISCARDED


def test_resolve_job_records_each_rows_own_previous_status() -> None:
    queue = _queue()
    pks = _seed(4, queue)
    DeadLetter.objects.filter(pk=pks[0]).update(status=DeadLetterStatus.REQUEUED)
    job = services.dead_letters_bulk_start(actor="alice", action="resolve", reason="fixed", filters={"queue": queue})
    job = services.redrive_job_run(job_id=job.pk)
    assert job is not None and job.done == 4
    diffs = dict(DeadLetterEvent.objects.filter(dead_letter_id__in=pks).values_list("dead_letter_id", "diff"))
    assert diffs[pks[0]]["status"] == ["requeued", "resolved"]
    assert diffs[pks[1]]["status"] == ["dead", "resolved"]
    assert _messages(queue) == []


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_stock_worker_runs_bulk_redriven_messages(live_worker: Any) -> None:
    pks = [DeadLetterFactory(task_name="tasks.demo.add", args=[i, 1], kwargs={}, queue="celery").pk for i in range(5)]
    job = services.dead_letters_bulk_start(actor="alice", action="requeue", reason="redrive", ids=pks)
    services.redrive_job_run(job_id=job.pk)
    wait_for(lambda: DeadLetter.objects.filter(pk__in=pks, status=DeadLetterStatus.RESOLVED).count() == 5,
             message="every redriven message to run and resolve its dead letter")
