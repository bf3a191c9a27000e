"""The transactional outbox: ``enqueue()`` writes a row in the caller's transaction, real
``outbox_relay`` processes publish it (issue 17)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django_celery_results.models import TaskResult

from demo.models import LedgerEntry
from devtools.embedded import EmbeddedRedis, free_port
from dlq.models import Role
from tasks.enqueue import enqueue, enqueue_once
from tasks.models import IdempotencyKey, OutboxMessage
from tests.workers import ROOT, RelayProcess, wait_for

pytestmark = pytest.mark.worker


def messages_in(queue: str, client: Any = None) -> list[dict[str, Any]]:
    from tasks.redis import redis_client

    return [json.loads(m) for m in (client or redis_client()).lrange(queue, 0, -1)]


def test_the_row_and_the_task_commit_together(live_worker: Any) -> None:
    with transaction.atomic():
        LedgerEntry.objects.create(order_id="o-commit", amount_cents=100)
        task_id = enqueue("tasks.demo.add", args=[2, 3])
        # Written in this transaction, invisible to the relay until it commits.
        assert OutboxMessage.objects.filter(task_id=task_id).count() == 1
    result = wait_for(lambda: TaskResult.objects.filter(task_id=task_id, status="SUCCESS").first(), message="the task ran")
    assert result.result == "5"
    assert LedgerEntry.objects.filter(order_id="o-commit").count() == 1
    wait_for(lambda: not OutboxMessage.objects.filter(task_id=task_id).exists(), message="the relay deleted the row")


def test_a_rollback_publishes_nothing(live_worker: Any) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        LedgerEntry.objects.create(order_id="o-rollback", amount_cents=100)
        rolled_back = enqueue("tasks.demo.add", args=[1, 1])
        raise RuntimeError("the view failed after enqueue()")
    marker = enqueue("tasks.demo.add", args=[0, 0])  # committed after it: the relay publishes in id order
    wait_for(lambda: TaskResult.objects.filter(task_id=marker, status="SUCCESS").exists(), message="the marker ran")
    time.sleep(0.5)
    assert not TaskResult.objects.filter(task_id=rolled_back).exists()
    assert not LedgerEntry.objects.filter(order_id="o-rollback").exists()
    assert not OutboxMessage.objects.exists()


def test_enqueue_is_one_insert_in_the_callers_transaction(db: Any) -> None:
    enqueue("tasks.demo.add", args=[0, 0])  # reads the queue depth once (cached for a second)
    with CaptureQueriesContext(connection) as ctx, transaction.atomic():
        enqueue("tasks.demo.add", args=[1, 2])
        enqueue("tasks.demo.add", args=[3, 4], idempotency_key=f"k-{uuid.uuid4()}")
    # (The SAVEPOINTs of this test's own atomic block, nested in pytest-django's, aside.)
    statements = [q["sql"] for q in ctx.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) == 2, statements
    assert statements[0].startswith('INSERT INTO tasks_outboxmessage')
    assert statements[1].startswith("WITH claim AS ( INSERT INTO dlq_idempotencykey")  # key and row: one statement


def test_options_are_fixed_at_enqueue_time(db: Any) -> None:
    task_id = enqueue("tasks.demo.add", args=[1, 2], countdown=30, queue="elsewhere")
    row = OutboxMessage.objects.get(task_id=task_id)
    assert row.queue == "elsewhere" and row.payload == "[[1, 2], {}]"
    from datetime import UTC, datetime

    eta = datetime.fromisoformat(row.options["eta"])
    assert 25 < (eta - datetime.now(UTC)).total_seconds() <= 30  # absolute: the relay's delay does not move it


def test_what_apply_async_refuses_enqueue_refuses_before_writing(db: Any) -> None:
    from kombu.exceptions import EncodeError

    with pytest.raises(TypeError):
        enqueue("tasks.demo.add", args=[1])  # does not bind, as apply_async checks
    with pytest.raises(EncodeError):
        enqueue("tasks.demo.add", args=[object(), 1])
    assert not OutboxMessage.objects.exists()


def test_idempotency_keys_go_through_the_outbox(db: Any) -> None:
    first = enqueue_once("tasks.demo.add", args=[1, 1], idempotency_key="order-7")
    second = enqueue_once("tasks.demo.add", args=[1, 1], idempotency_key="order-7")
    assert first[1] is True and second == (first[0], False)
    assert list(OutboxMessage.objects.values_list("task_id", flat=True)) == [first[0]]
    assert IdempotencyKey.objects.get(key="order-7").task_id == first[0]
    # A claim rolled back with its transaction frees the key with the row.
    with pytest.raises(RuntimeError), transaction.atomic():
        enqueue_once("tasks.demo.add", args=[2, 2], idempotency_key="order-8")
        raise RuntimeError
    assert not IdempotencyKey.objects.filter(key="order-8").exists()
    assert enqueue_once("tasks.demo.add", args=[2, 2], idempotency_key="order-8")[1] is True


@pytest.fixture
def own_relays(relay: RelayProcess, transactional_db: Any, settings: Any) -> Any:
    """The session relay stopped for the test (restarted after it), so that only the relays
    the test starts take part; backpressure off."""
    settings.QUEUE_HIGH_WATER_MARK = 0
    relay.stop()
    yield
    OutboxMessage.objects.all().delete()
    relay.start()


def _fill(queue: str, n: int, per_transaction: int = 500) -> list[str]:
    ids: list[str] = []
    for start in range(0, n, per_transaction):
        with transaction.atomic():
            ids += [enqueue("tasks.demo.add", args=[i, 0], queue=queue) for i in range(start, min(n, start + per_transaction))]
    return ids


def test_two_relays_publish_every_row_exactly_once(own_relays: Any) -> None:
    queue = f"outbox-{uuid.uuid4().hex[:8]}"  # no worker consumes it: the messages stay to be counted
    try:
        ids = _fill(queue, 4000)
        relays = [RelayProcess(env={"OUTBOX_RELAY_BATCH_SIZE": "50"}, name=f"relay-{i}").start() for i in range(2)]
        try:
            wait_for(lambda: not OutboxMessage.objects.exists(), timeout=60, message="the relays drained the outbox")
        finally:
            for r in relays:
                r.stop()
        published = [m["headers"]["id"] for m in messages_in(queue)]
        assert len(published) == len(ids) and set(published) == set(ids)
    finally:
        from tasks.redis import redis_client

        redis_client().delete(queue)


def test_broker_down_then_back_the_rows_wait_and_go(own_relays: Any, tmp_path: Any) -> None:
    broker = EmbeddedRedis(tmp_path / "redis", free_port(), appendonly=False)
    broker.start()
    relay = RelayProcess(env={"CELERY_BROKER_URL": broker.url, "OUTBOX_RELAY_BACKOFF_MAX": "1"}, name="relay-down")
    relay.start()
    try:
        broker.stop()
        ids = _fill("down", 100, per_transaction=10)
        time.sleep(3)  # the relay tries, fails, backs off; the rows wait
        assert OutboxMessage.objects.count() == 100
        assert relay.alive
        broker.start()
        wait_for(lambda: not OutboxMessage.objects.exists(), timeout=30, message="published once the broker is back")
        import redis

        client = redis.Redis.from_url(broker.url)
        published = [m["headers"]["id"] for m in messages_in("down", client)]
        assert sorted(published) == sorted(ids)
    finally:
        relay.stop()
        broker.stop()


def test_a_row_that_cannot_be_published_waits_and_the_others_go(own_relays: Any) -> None:
    queue = f"outbox-{uuid.uuid4().hex[:8]}"
    relay = RelayProcess(name="relay-bad-row")
    try:
        with transaction.atomic():
            good = enqueue("tasks.demo.add", args=[1, 1], queue=queue)
            OutboxMessage.objects.create(task_id=str(uuid.uuid4()), task_name="tasks.demo.add", queue=queue,
                                         payload="not json")
            also_good = enqueue("tasks.demo.add", args=[2, 2], queue=queue)
        relay.start()
        wait_for(lambda: OutboxMessage.objects.count() == 1 and OutboxMessage.objects.get().attempts >= 1,
                 timeout=30, message="the bad row set aside, the others published")
        bad = OutboxMessage.objects.get()
        assert bad.payload == "not json" and "JSONDecodeError" in bad.last_error
        assert bad.available_at > bad.created_at
        assert sorted(m["headers"]["id"] for m in messages_in(queue)) == sorted([good, also_good])
    finally:
        from tasks.redis import redis_client

        relay.stop()
        redis_client().delete(queue)


def test_the_api_answers_202_while_the_broker_is_down(db: Any, api_client_for: Any, broker_down: str,
                                                       monkeypatch: Any) -> None:
    from taskplatform.celery import app
    from tasks import backpressure

    monkeypatch.setattr(app.conf, "broker_url", broker_down)  # the backpressure read fails too
    monkeypatch.setattr(backpressure, "_cache", {})
    started = time.monotonic()
    response = api_client_for(Role.OPERATOR).post("/api/v1/tasks/enqueue/", {"task": "tasks.demo.add", "args": [1, 2]},
                                                  format="json")
    assert response.status_code == 202, response.content
    assert time.monotonic() - started < 3
    assert OutboxMessage.objects.filter(task_id=response.json()["task_id"]).exists()


def test_relay_health_check(relay: RelayProcess) -> None:
    env = {"OUTBOX_RELAY_HEARTBEAT_FILE": str(relay.heartbeat)}
    import os

    ok = subprocess.run([sys.executable, "manage.py", "outbox_relay", "--check"], cwd=ROOT, env={**os.environ, **env},
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run([sys.executable, "manage.py", "outbox_relay", "--check"], cwd=ROOT,
                             env={**os.environ, "OUTBOX_RELAY_HEARTBEAT_FILE": str(relay.heartbeat) + ".none"},
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "no outbox relay heartbeat" in missing.stderr
