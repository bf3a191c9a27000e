"""Fault injection against our own Postgres: no dead letter is lost while it is down."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.faults import own_postgres, query
from tests.workers import Worker, wait_for

pytestmark = pytest.mark.worker


def spool_length(redis_url: str) -> int:
    import redis

    return int(redis.Redis.from_url(redis_url).llen("dlq:spool"))


def test_postgres_down_while_tasks_fail_spools_then_writes_each_once(tmp_path: Path) -> None:
    from demo.tasks import divide

    spool_redis = re.sub(r"/\d+$", "/5", os.environ["REDIS_URL"])
    import redis

    redis.Redis.from_url(spool_redis).delete("dlq:spool")
    with own_postgres(tmp_path) as pg:
        env = {"DATABASE_URL": pg.url, "REDIS_URL": spool_redis}
        worker = Worker(queues="faults", env=env).start()
        try:
            pg.stop()
            ids = [divide.apply_async([n, 0], queue="faults").id for n in range(5)]
            wait_for(lambda: spool_length(spool_redis) == 5, timeout=60, message="5 spooled dead letters")
            pg.start()
            # Nothing reached Postgres yet; a worker start drains the spool.
            assert query(pg, "SELECT count(*) FROM dlq_deadletter") == [(0,)]
            worker.stop()
            worker = Worker(queues="faults", env=env).start()
            wait_for(lambda: query(pg, "SELECT count(*) FROM dlq_deadletter") == [(5,)], timeout=30, message="drained")
            rows = query(pg, "SELECT task_id, reason, args FROM dlq_deadletter ORDER BY task_id")
            assert sorted(r[0] for r in rows) == sorted(ids)
            assert {r[1] for r in rows} == {"non_retryable"}
            assert spool_length(spool_redis) == 0
        finally:
            worker.stop()


def test_reconcile_task_drains_the_spool_and_is_idempotent(transactional_db: Any, live_worker: Any) -> None:
    import dataclasses

    from dlq import spool
    from dlq.models import DeadLetter
    from dlq.services import CapturedFailure
    from tasks.redis import redis_client

    redis_client().delete(spool.SPOOL_KEY)
    failure = CapturedFailure(task_id="spooled-1", task_name="tasks.demo.add", reason="non_retryable",
                              exception_type="ValueError", exception_message="x", args=[1], kwargs={})
    spool.push("capture", dataclasses.asdict(failure))
    spool.push("capture", dataclasses.asdict(failure))  # the same failure spooled twice
    from dlq.tasks import reconcile

    reconcile.apply_async()
    wait_for(lambda: redis_client().llen(spool.SPOOL_KEY) == 0, message="the spool drained by the worker")
    assert DeadLetter.objects.filter(task_id="spooled-1").count() == 1


def test_file_spool_when_redis_is_down_too(transactional_db: Any, settings: Any, tmp_path: Path) -> None:
    import dataclasses

    from dlq import spool
    from dlq.models import DeadLetter
    from dlq.services import CapturedFailure

    settings.DLQ_SPOOL_DIR = str(tmp_path / "spool")
    failure = CapturedFailure(task_id="file-1", task_name="tasks.demo.add", reason="non_retryable",
                              exception_type="ValueError", exception_message="x", args=[1], kwargs={})
    import tasks.redis as task_redis

    original = task_redis.redis_client
    task_redis.redis_client.cache_clear()
    try:
        from django.test import override_settings

        from devtools.embedded import free_port

        with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
            task_redis.redis_client.cache_clear()
            assert spool.push("capture", dataclasses.asdict(failure)) == "file"
    finally:
        task_redis.redis_client.cache_clear()
    assert original is task_redis.redis_client
    assert len(list((tmp_path / "spool").glob("*.json"))) == 1
    assert spool.drain() == 1
    assert DeadLetter.objects.filter(task_id="file-1").count() == 1
    assert list((tmp_path / "spool").glob("*.json")) == []


def test_a_stored_success_is_not_overwritten_by_a_late_retry_or_failure(transactional_db: Any) -> None:
    """A retry with a zero countdown can run and succeed before the retrying process stores
    RETRY for the same task id (seen in the suite); the result must stay SUCCESS, as Celery's
    key-value backends keep it."""
    import uuid

    from celery import states
    from django_celery_results.models import TaskResult

    from taskplatform.celery import app

    task_id = str(uuid.uuid4())
    app.backend.store_result(task_id, 2, states.SUCCESS)
    app.backend.store_result(task_id, {"exc_type": "TransientError"}, states.RETRY)
    app.backend.store_result(task_id, {"exc_type": "TransientError"}, states.FAILURE)
    assert TaskResult.objects.get(task_id=task_id).status == states.SUCCESS
    other = str(uuid.uuid4())
    app.backend.store_result(other, {"exc_type": "TransientError"}, states.RETRY)
    app.backend.store_result(other, 3, states.SUCCESS)
    assert TaskResult.objects.get(task_id=other).status == states.SUCCESS


def test_success_and_a_late_retry_stored_concurrently_end_as_success(transactional_db: Any) -> None:
    """The race itself: the retried run's SUCCESS and the retrying run's RETRY written at the
    same moment from two connections, many times over."""
    import threading
    import uuid

    from celery import states
    from django.db import connection
    from django_celery_results.models import TaskResult

    from taskplatform.celery import app

    ids = [str(uuid.uuid4()) for _ in range(30)]
    for task_id in ids:
        barrier = threading.Barrier(2)

        def store(state: str, value: Any, task_id: str = task_id, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            app.backend.store_result(task_id, value, state)
            connection.close()

        threads = [threading.Thread(target=store, args=(states.SUCCESS, 2)),
                   threading.Thread(target=store, args=(states.RETRY, {"exc_type": "TransientError"}))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert dict(TaskResult.objects.filter(task_id__in=ids).values_list("task_id", "status")) == \
        {task_id: states.SUCCESS for task_id in ids}


def test_a_poisoned_spool_entry_is_quarantined_and_the_next_ones_drain(transactional_db: Any) -> None:
    """The spool never blocks: what Postgres refuses for its content leaves the spool for the
    quarantine (with an alert), and the entries behind it are written."""
    import dataclasses
    import math

    from dlq import spool
    from dlq.models import Alert, DeadLetter, QuarantinedEntry
    from dlq.services import CapturedFailure, alerts_check
    from tasks.redis import redis_client

    redis_client().delete(spool.SPOOL_KEY)

    def failure(task_id: str, args: Any) -> dict[str, Any]:
        return dataclasses.asdict(CapturedFailure(task_id=task_id, task_name="tasks.demo.divide", reason="non_retryable",
                                                  exception_type="ZeroDivisionError", exception_message="x",
                                                  args=args, kwargs={}))

    spool.push("capture", failure("nan-1", [float("nan"), float("inf"), "\x00", "\ud800"]))  # once blocked the drain
    refused = failure("refused-1", [1, 0])
    refused["reason"] = "r" * 40  # longer than the column (an entry of another version): refused even as text
    spool.push("capture", refused)
    spool.push("resolve", {"dead_letter_id": "not-an-id", "task_id": "t"})
    redis_client().rpush(spool.SPOOL_KEY, "not a spool entry")
    spool.push("capture", failure("after-1", [1, 0]))
    assert spool.drain() == 5
    assert redis_client().llen(spool.SPOOL_KEY) == 0
    nan = DeadLetter.objects.get(task_id="nan-1")
    assert nan.raw_arguments is not None and nan.args == ["NaN", "Infinity", "\\u0000", "\\ud800"]
    args, _ = nan.arguments()
    assert math.isnan(args[0]) and args[1] == math.inf and args[2:] == ["\x00", "\ud800"]  # exact, for a requeue
    assert DeadLetter.objects.filter(task_id="after-1").exists()
    assert not DeadLetter.objects.filter(task_id="refused-1").exists()
    quarantined = list(QuarantinedEntry.objects.order_by("id"))
    assert [(q.kind, q.task_id) for q in quarantined] == [("capture", "refused-1"), ("resolve", "t"), ("unreadable", "")]
    assert "StringDataRightTruncation" in quarantined[0].error or "too long" in quarantined[0].error
    assert "spool_quarantine" in alerts_check()["opened"]
    assert "3 spool entries" in Alert.objects.get(key="spool_quarantine").message
    # After a fix (here: the entry corrected in place), a retry writes it and empties the quarantine.
    fixed = json.loads(quarantined[0].entry)
    fixed["payload"]["reason"] = "non_retryable"
    QuarantinedEntry.objects.filter(pk=quarantined[0].pk).update(entry=json.dumps(fixed))
    assert spool.quarantine_retry(entry_id=quarantined[0].pk) == "db"
    assert DeadLetter.objects.filter(task_id="refused-1").exists()
    assert QuarantinedEntry.objects.count() == 2
