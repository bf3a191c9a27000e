"""Every way a task dies ends up as exactly one dead letter (real worker processes)."""
from __future__ import annotations

import base64
import pickle
import uuid
from pathlib import Path
from typing import Any

import pytest
from kombu import Producer

from dlq.models import DeadLetter, DeadLetterStatus
from tests.workers import wait_for

pytestmark = pytest.mark.worker


def one_dead_letter(task_id: str, timeout: float = 45) -> DeadLetter:
    row = wait_for(lambda: DeadLetter.objects.filter(task_id=task_id).first(), timeout=timeout, message=f"dead letter {task_id}")
    assert DeadLetter.objects.filter(task_id=task_id).count() == 1
    return row


def publish_raw(body: bytes, *, content_type: str, headers: dict[str, Any], content_encoding: str = "utf-8") -> None:
    from taskplatform.celery import app

    with app.connection_for_write() as conn:
        Producer(conn).publish(body, exchange="", routing_key="celery", content_type=content_type,
                               content_encoding=content_encoding, headers=headers, serializer=None)


def test_soft_time_limit(live_worker: Any) -> None:
    from demo.tasks import sleep

    result = sleep.apply_async([5], soft_time_limit=1, time_limit=8)
    row = one_dead_letter(result.id)
    assert row.reason == "time_limit" and row.exception_type == "billiard.exceptions.SoftTimeLimitExceeded"
    assert row.retries == 0 and len(row.attempts) == 1  # a time limit is never retried


def test_hard_time_limit_is_captured_from_the_parent(live_worker: Any) -> None:
    from demo.examples import stubborn_sleep

    result = stubborn_sleep.apply_async([30], soft_time_limit=1, time_limit=2)
    row = one_dead_letter(result.id)
    assert row.reason == "time_limit" and row.exception_type == "billiard.exceptions.TimeLimitExceeded"
    assert row.queue == "celery" and row.args == [30]
    assert row.attempts[0]["worker"] == live_worker.name


def test_poison_pill_is_dead_lettered_after_the_cap(live_worker: Any) -> None:
    from demo.tasks import crash

    result = crash.apply_async()
    row = one_dead_letter(result.id, timeout=90)
    assert row.reason == "worker_lost"
    assert row.exception_type == "billiard.exceptions.WorkerLostError"
    assert [a["number"] for a in row.attempts] == [1, 2, 3, 4]  # cap 3: the 4th loss dead-letters
    from tasks.redis import redis_client

    assert redis_client().llen("celery") == 0  # acked, not requeued again
    # The worker survived and still works.
    from demo.tasks import add

    assert add.apply_async([2, 3]).get(timeout=30) == 5


def test_reject_is_captured(live_worker: Any) -> None:
    from demo.examples import validate_order

    result = validate_order.apply_async([{"sku": "", "quantity": 0}])
    row = one_dead_letter(result.id)
    assert row.reason == "rejected" and row.args == [{"sku": "", "quantity": 0}]
    assert "invalid order" in row.exception_message


def test_unregistered_task(live_worker: Any) -> None:
    from taskplatform.celery import app

    result = app.send_task("billing.no_such_task", args=[1, "x"], kwargs={"k": 2})
    row = one_dead_letter(result.id)
    assert row.reason == "unregistered_task" and row.task_name == "billing.no_such_task"
    assert row.args == [1, "x"] and row.kwargs == {"k": 2}
    assert row.content_type == "application/json" and row.raw_body
    assert row.status == DeadLetterStatus.DEAD


def test_undecodable_body_keeps_the_raw_bytes_in_base64(live_worker: Any) -> None:
    task_id = str(uuid.uuid4())
    body = b"\x80\x00{not json"
    publish_raw(body, content_type="application/json", headers={"id": task_id, "task": "tasks.demo.add"}, content_encoding="binary")
    row = one_dead_letter(task_id)
    assert row.reason == "decode_error" and row.task_name == "tasks.demo.add"
    assert base64.b64decode(row.raw_body) == body
    assert row.options["raw_body_encoding"] == "base64"
    assert row.args is None and row.kwargs is None


def test_text_body_without_id_header_gets_an_id_from_its_hash(live_worker: Any) -> None:
    body = b'{"this is": "not a task"'
    publish_raw(body, content_type="application/json", headers={"task": "tasks.demo.add"})
    row = wait_for(lambda: DeadLetter.objects.filter(reason="decode_error").first(), message="decode_error row")
    assert row.task_id.startswith("body-") and row.raw_body == body.decode()


def test_pickle_is_never_deserialised(live_worker: Any, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> Any:
            return (Path.touch, (marker,))

    task_id = str(uuid.uuid4())
    body = pickle.dumps(((Exploit(),), {}, {}))
    publish_raw(body, content_type="application/x-python-serialize", content_encoding="binary",
                headers={"id": task_id, "task": "tasks.demo.add", "lang": "py"})
    row = one_dead_letter(task_id)
    assert row.reason == "decode_error" and row.content_type == "application/x-python-serialize"
    assert "ContentDisallowed" in row.exception_type
    assert base64.b64decode(row.raw_body) == body
    assert not marker.exists()


def test_fingerprint_groups_the_same_cause() -> None:
    from tasks.failures import fingerprint

    a = fingerprint("t", "KeyError", "order 1234 not found in 'eu-west' (id 5f2c9a8e-aaaa-bbbb-cccc-123456789abc)")
    b = fingerprint("t", "KeyError", "order 98 not found in 'us-east' (id 00000000-1111-2222-3333-444444444444)")
    c = fingerprint("t", "KeyError", "customer 98 not found")
    assert a == b != c
    assert fingerprint("u", "KeyError", "order 1 not found in 'x' (id 1)") != a
