"""Self-healing and safe producers: reprocess policies, idempotency keys, idempotent
effects, backpressure. Real worker processes; the "dependency" is a flag in Redis that the
probe task checks (no task fetches a caller-given URL)."""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from dlq.models import DeadLetter, DeadLetterEvent, ReprocessPolicy, Role
from tests.workers import wait_for

pytestmark = pytest.mark.worker


class Dependency:
    """A remote service the test stops and starts (``probe.dependency`` checks its flag)."""

    def __init__(self) -> None:
        self.name = f"svc-{uuid.uuid4().hex[:8]}"

    def start(self) -> None:
        from tasks.redis import redis_client

        redis_client().set(f"probe:up:{self.name}", 1, ex=3600)

    def stop(self) -> None:
        from tasks.redis import redis_client

        redis_client().delete(f"probe:up:{self.name}")


@pytest.fixture
def dependency() -> Iterator[Dependency]:
    dep = Dependency()
    yield dep
    dep.stop()


def dead_count(task_ids: list[str], **filters: Any) -> int:
    return DeadLetter.objects.filter(task_id__in=task_ids, **filters).count()


def test_policy_heals_after_the_dependency_comes_back(live_worker: Any, dependency: Dependency) -> None:
    from dlq.services import reprocess_policies_apply
    from tests.tasks.probe_tasks import dependency as call_dependency

    ReprocessPolicy.objects.create(task_name="probe.dependency", reasons=["max_retries_exceeded"],
                                   cooldown_seconds=5, backoff_factor=2, max_auto_requeues=3,
                                   circuit_max_failures_per_minute=2)
    ids = [call_dependency.apply_async([dependency.name]).id for _ in range(4)]  # the dependency is down
    wait_for(lambda: dead_count(ids) == 4, timeout=60, message="four dead letters")

    # Within the cool-down nothing happens; after it, the circuit holds them: 4 failures in
    # the last minute is more than the policy's 2.
    assert reprocess_policies_apply()["requeued"] == 0
    held = reprocess_policies_apply(now=timezone.now() + timedelta(seconds=6))
    assert held["requeued"] == 0 and held["held_by_circuit"] == 4

    # A minute later the circuit closes; the dependency is still down: they die again, and
    # the circuit holds them again.
    later = timezone.now() + timedelta(seconds=61)
    assert reprocess_policies_apply(now=later)["requeued"] == 4
    wait_for(lambda: dead_count(ids, status="dead", auto_requeue_count=1) == 4, timeout=60, message="failed again")
    assert reprocess_policies_apply(now=timezone.now() + timedelta(seconds=11))["held_by_circuit"] == 4

    dependency.start()  # the dependency is back
    assert reprocess_policies_apply(now=timezone.now() + timedelta(seconds=61 + 11))["requeued"] == 4
    wait_for(lambda: dead_count(ids, status="resolved") == 4, timeout=60, message="all healed")
    rows = DeadLetter.objects.filter(task_id__in=ids)
    assert all(r.auto_requeue_count == 2 and r.last_auto_requeued_at for r in rows)
    events = DeadLetterEvent.objects.filter(dead_letter__in=rows, action="requeue")
    assert events.count() == 8 and set(events.values_list("actor", flat=True)) == {"system"}
    assert all("reprocess policy" in e.reason for e in events)


def test_cool_down_grows_with_each_automatic_requeue(transactional_db: Any) -> None:
    from dlq.services import reprocess_policies_apply
    from tasks.redis import redis_client
    from tests.factories import DeadLetterFactory

    queue = f"cool-{uuid.uuid4().hex[:6]}"
    ReprocessPolicy.objects.create(task_name="tasks.demo.add", cooldown_seconds=5, backoff_factor=2, max_auto_requeues=5,
                                   circuit_max_failures_per_minute=100)
    now = timezone.now()
    first = DeadLetterFactory(queue=queue, auto_requeue_count=0, last_failed_at=now - timedelta(seconds=6))
    second = DeadLetterFactory(queue=queue, auto_requeue_count=2, last_failed_at=now - timedelta(seconds=15))  # needs 20 s
    third = DeadLetterFactory(queue=queue, auto_requeue_count=2, last_failed_at=now - timedelta(seconds=21))
    assert reprocess_policies_apply(now=now)["requeued"] == 2
    statuses = dict(DeadLetter.objects.values_list("pk", "status"))
    assert statuses == {first.pk: "requeued", second.pk: "dead", third.pk: "requeued"}
    assert redis_client().llen(queue) == 2
    redis_client().delete(queue)


def test_policy_cap_leaves_the_rest_for_a_person(live_worker: Any, dependency: Dependency) -> None:
    from dlq.services import reprocess_policies_apply
    from tests.tasks.probe_tasks import dependency as call_dependency

    ReprocessPolicy.objects.create(task_name="probe.dependency", cooldown_seconds=0, backoff_factor=1,
                                   max_auto_requeues=1, circuit_max_failures_per_minute=100)
    task_id = call_dependency.apply_async([dependency.name]).id
    wait_for(lambda: dead_count([task_id]) == 1, timeout=60, message="dead letter")
    assert reprocess_policies_apply()["requeued"] == 1
    wait_for(lambda: dead_count([task_id], status="dead", auto_requeue_count=1) == 1, timeout=60, message="dead again")
    result = reprocess_policies_apply(now=timezone.now() + timedelta(minutes=5))
    assert result["requeued"] == 0 and result["exhausted"] == 1
    assert reprocess_policies_apply(now=timezone.now() + timedelta(minutes=10))["exhausted"] == 0  # noted once
    row = DeadLetter.objects.get(task_id=task_id)
    assert row.status == "dead" and row.auto_requeue_count == 1
    note = DeadLetterEvent.objects.get(dead_letter=row, action="auto_requeue_exhausted")
    assert note.actor == "system" and "needs a person" in note.reason


def published(queue: str) -> int:
    """Messages in ``queue`` once the relay has published what the outbox held for it."""
    from tasks.models import OutboxMessage
    from tasks.redis import redis_client

    wait_for(lambda: not OutboxMessage.objects.filter(queue=queue).exists(), message=f"the relay published {queue}")
    return int(redis_client().llen(queue))


def test_two_enqueues_with_one_key_give_one_task(transactional_db: Any, api_client_for: Any, relay: Any,
                                                 settings: Any) -> None:
    from tasks.redis import redis_client

    queue = f"idem-{uuid.uuid4().hex[:6]}"
    settings.TASK_QUEUES = [*settings.TASK_QUEUES, queue]
    client: APIClient = api_client_for(Role.OPERATOR)
    body = {"task": "tasks.demo.add", "args": [1, 2], "queue": queue, "idempotency_key": "order-42"}
    first = client.post("/api/v1/tasks/enqueue/", body, format="json")
    second = client.post("/api/v1/tasks/enqueue/", body, format="json")
    assert first.status_code == 202 and second.status_code == 200
    assert first.json()["task_id"] == second.json()["task_id"]
    assert published(queue) == 1
    # Another key publishes again; an expired key may be reused.
    assert client.post("/api/v1/tasks/enqueue/", {**body, "idempotency_key": "order-43"}, format="json").status_code == 202
    from tasks.models import IdempotencyKey

    IdempotencyKey.objects.filter(key="order-42").update(expires_at=timezone.now() - timedelta(seconds=1))
    third = client.post("/api/v1/tasks/enqueue/", body, format="json")
    assert third.status_code == 202 and third.json()["task_id"] != first.json()["task_id"]
    assert published(queue) == 3
    redis_client().delete(queue)


def test_concurrent_enqueues_with_one_key_publish_once(transactional_db: Any, relay: Any) -> None:
    from django.db import connection

    from tasks.enqueue import enqueue_once
    from tasks.redis import redis_client

    queue = f"idem-{uuid.uuid4().hex[:6]}"
    barrier = threading.Barrier(10)
    results: list[tuple[str, bool]] = []

    def go() -> None:
        barrier.wait()
        results.append(enqueue_once("tasks.demo.add", args=[1, 1], queue=queue, idempotency_key="same-key"))
        connection.close()

    threads = [threading.Thread(target=go) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({tid for tid, _ in results}) == 1 and sum(written for _, written in results) == 1
    assert published(queue) == 1
    redis_client().delete(queue)


def test_a_redelivered_idempotent_task_does_its_effect_once(live_worker: Any) -> None:
    from django_celery_results.models import TaskResult

    from demo.examples import charge_order
    from demo.models import LedgerEntry

    order = uuid.uuid4().hex
    # The first run commits the charge and then its process is killed before the ack:
    # the message comes back (late acks) and the second run must not charge again.
    result = charge_order.apply_async([order, 1999], {"crash_after_charge": True})
    done = wait_for(lambda: TaskResult.objects.filter(task_id=result.id, status="SUCCESS").first(), timeout=60,
                    message="the redelivered run")
    assert done.result == '"already charged"'
    assert LedgerEntry.objects.filter(order_id=order).count() == 1
    assert not DeadLetter.objects.filter(task_id=result.id).exists()


def test_a_queue_over_its_mark_gets_429_and_recovers_when_drained(transactional_db: Any, api_client_for: Any,
                                                                  settings: Any, relay: Any) -> None:
    from tasks.backpressure import QueueFull
    from tasks.enqueue import enqueue
    from tasks.redis import redis_client

    queue = f"bp-{uuid.uuid4().hex[:6]}"
    settings.QUEUE_HIGH_WATER_MARKS = {queue: 3}
    settings.TASK_QUEUES = [*settings.TASK_QUEUES, queue]
    client: APIClient = api_client_for(Role.OPERATOR)
    body = {"task": "tasks.demo.add", "args": [1, 2], "queue": queue}
    for _ in range(3):
        assert client.post("/api/v1/tasks/enqueue/", body, format="json").status_code == 202
        time.sleep(1.1)  # the depth is cached for a second
    response = client.post("/api/v1/tasks/enqueue/", body, format="json")
    assert response.status_code == 429 and int(response["Retry-After"]) >= 1
    assert response.json()["error"]["code"] == "queue_full"
    with pytest.raises(QueueFull):
        enqueue("tasks.demo.add", args=[1, 2], queue=queue)
    assert published(queue) == 3
    redis_client().delete(queue)  # drained
    time.sleep(1.1)
    assert client.post("/api/v1/tasks/enqueue/", body, format="json").status_code == 202
    redis_client().delete(queue)


def test_bulk_redrive_pauses_at_the_mark_instead_of_flooding(transactional_db: Any, settings: Any, monkeypatch: Any) -> None:
    from dlq import services
    from dlq.services import redrive
    from tasks.redis import redis_client
    from tests.factories import DeadLetterFactory

    queue = f"bp-{uuid.uuid4().hex[:6]}"
    settings.QUEUE_HIGH_WATER_MARKS = {queue: 5}
    monkeypatch.setattr(redrive, "redrive_job_dispatch", lambda *, job_id: None)  # the test runs the job itself
    DeadLetterFactory.create_batch(8, queue=queue)
    job = services.dead_letters_bulk_start(actor="ops", action="requeue", reason="r", filters={"queue": queue})
    pauses: list[float] = []

    def drain_while_paused(seconds: float) -> None:
        pauses.append(seconds)
        redis_client().delete(queue)  # a worker drains the queue meanwhile
        time.sleep(1.1)

    finished = services.redrive_job_run(job_id=job.pk, batch_size=5, sleep=drain_while_paused)
    assert finished is not None and finished.status == "finished" and finished.done == 8
    assert pauses, "the job should have paused at the mark"
    assert redis_client().llen(queue) <= 5
    redis_client().delete(queue)


def push_delivered_request(task: Any, task_id: str, args: list[Any]) -> None:
    """The request a worker's pool process would run ``task`` with (first delivery)."""
    task.push_request(id=task_id, args=args, kwargs={}, retries=0, called_directly=False,
                      delivery_info={"routing_key": "celery", "exchange": ""}, hostname="w@h")


@pytest.mark.parametrize("error, requeued", [
    (ConnectionError("Error 111 connecting to the broker"), True),
    (TypeError("Object of type Decimal is not JSON serializable"), False),
])
def test_a_retry_that_cannot_be_published_is_handed_back_or_dead_lettered_never_dropped(
        transactional_db: Any, monkeypatch: Any, error: Exception, requeued: bool) -> None:
    """Celery answers a failed retry publish with Reject(requeue=False), which drops the
    message. Broker down: the message is handed back (Reject(requeue=True)) and no dead letter
    is recorded, since the message comes back anyway (chaos F12: dead-lettering it ended tasks
    both dead and done). Any other error would fail again: the dead letter is recorded first.
    The failure is injected at the publish call; the rest is the real retry path."""
    from celery.canvas import Signature
    from celery.exceptions import Reject

    from tests.tasks.probe_tasks import DependencyDown
    from tests.tasks.probe_tasks import dependency as call_dependency

    def publish_fails(self: Any, *args: Any, **kwargs: Any) -> None:
        raise error

    monkeypatch.setattr(Signature, "apply_async", publish_fails)
    task_id = str(uuid.uuid4())
    push_delivered_request(call_dependency, task_id, ["http://x"])
    try:
        with pytest.raises(Reject) as raised:
            call_dependency.retry(exc=DependencyDown("http://x is unreachable"))
    finally:
        call_dependency.pop_request()
    assert raised.value.requeue is requeued
    if requeued:
        assert not DeadLetter.objects.filter(task_id=task_id).exists()
    else:
        row = DeadLetter.objects.get(task_id=task_id)
        assert row.reason == "rejected" and row.exception_type == "tests.tasks.probe_tasks.DependencyDown"
        assert row.args == ["http://x"] and "retry could not be published" in row.attempts[-1]["message"]


def test_a_terminated_pool_process_neither_retries_nor_dead_letters(transactional_db: Any, monkeypatch: Any) -> None:
    """After its terminate signal (Celery cancelling the run on a broker connection loss),
    the pool process leaves the message to the main process, which has it delivered again:
    a retry published or a dead letter recorded here would make the task run twice or end
    both done and dead-lettered (chaos F12)."""
    from billiard import common
    from celery.canvas import Signature
    from celery.exceptions import Retry

    from tests.tasks.probe_tasks import DependencyDown
    from tests.tasks.probe_tasks import dependency as call_dependency

    published: list[Any] = []
    monkeypatch.setattr(Signature, "apply_async", lambda self, *a, **k: published.append(self))
    monkeypatch.setattr(common, "_should_have_exited", [True])  # what billiard's _shutdown_cleanup sets
    task_id = str(uuid.uuid4())
    push_delivered_request(call_dependency, task_id, ["http://x"])
    try:
        with pytest.raises(DependencyDown):
            call_dependency.retry(exc=DependencyDown("cleanup failed while the broker was down"))
        call_dependency.on_failure(DependencyDown("x"), task_id, ["http://x"], {}, None)
    finally:
        call_dependency.pop_request()
    assert published == []
    assert not DeadLetter.objects.filter(task_id=task_id).exists()

    # The process lives on (the task swallowed the SystemExit) with billiard's flag still set:
    # its next runs retry and dead-letter as usual.
    next_id = str(uuid.uuid4())
    push_delivered_request(call_dependency, next_id, ["http://y"])
    try:
        call_dependency.before_start(next_id, ["http://y"], {})
        with pytest.raises(Retry):
            call_dependency.retry(exc=DependencyDown("http://y is unreachable"))
        call_dependency.on_failure(DependencyDown("y"), next_id, ["http://y"], {}, None)
    finally:
        call_dependency.pop_request()
    assert len(published) == 1
    assert DeadLetter.objects.filter(task_id=next_id).exists()
