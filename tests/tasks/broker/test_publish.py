"""The batched publish path (tasks/broker/publish.py) writes what apply_async writes, and a stock
worker runs it."""
from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest

from dlq.models import DeadLetter, DeadLetterStatus
from taskplatform.celery import app
from tasks.broker.publish import OutgoingTask, publish_tasks
from tasks.failures import DEAD_LETTER_HEADER
from tests.factories import DeadLetterFactory
from tests.workers import wait_for

pytestmark = pytest.mark.skipif(not str(app.conf.broker_url).startswith("redis"), reason="Redis broker only")

# Differ between any two publishes, by design: kombu draws a fresh delivery tag per message.
PER_MESSAGE = {("properties", "delivery_tag")}


def _client() -> Any:
    conn = app.connection_for_write()
    return conn, conn.default_channel.client


def _pop_all(queue: str) -> list[dict[str, Any]]:
    conn, client = _client()
    try:
        raw = []
        while (blob := client.rpop(queue)) is not None:
            raw.append(json.loads(blob))
        return raw
    finally:
        conn.release()


def _without_per_message(message: dict[str, Any]) -> dict[str, Any]:
    copy = json.loads(json.dumps(message))
    for section, key in PER_MESSAGE:
        copy[section].pop(key, None)
    return copy


@pytest.mark.parametrize("task_name,args,kwargs", [
    ("tasks.demo.add", [1, 2], {}),
    ("tasks.demo.sleep", [0.01], {}),  # own time limits: the timelimit header differs from the default
    ("tasks.demo.flaky", [], {"key": "k\u00e9y \u2603", "failures": 0}),  # kwargs, non-ASCII
])
def test_fast_path_message_is_identical_to_apply_async(task_name: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    app.finalize(auto=True)  # as in a worker or a web process that has imported its tasks
    queue = f"test-publish-{uuid.uuid4().hex[:8]}"
    task_id = str(uuid.uuid4())
    headers = {DEAD_LETTER_HEADER: 42}
    app.tasks[task_name].apply_async(args, kwargs, task_id=task_id, queue=queue, headers=headers, retries=0)
    assert publish_tasks([OutgoingTask(task_name, args, kwargs, task_id, queue, headers)], fast=True) == 1
    first, second = _pop_all(queue)  # rpop: oldest (apply_async) first

    assert first["properties"]["delivery_tag"] != second["properties"]["delivery_tag"]
    a, b = _without_per_message(first), _without_per_message(second)
    diff = {k: (a["headers"].get(k), b["headers"].get(k)) for k in {*a["headers"], *b["headers"]}
            if a["headers"].get(k) != b["headers"].get(k)}
    assert not diff, diff
    assert a == b
    # And what a worker will read out of it:
    body = json.loads(base64.b64decode(second["body"]))
    assert body[0] == args and body[1] == kwargs
    assert second["headers"]["id"] == task_id and second["headers"][DEAD_LETTER_HEADER] == 42
    assert second["properties"]["delivery_info"] == {"exchange": "", "routing_key": queue}


def test_messages_of_different_tasks_keep_their_own_names() -> None:
    """Two tasks with the same options share a routing plan, never a message template: a
    template cut from one task's message once carried that task's name into the other's."""
    app.finalize(auto=True)
    queue = f"test-publish-{uuid.uuid4().hex[:8]}"
    items = [OutgoingTask(name, [i, 1], {}, str(uuid.uuid4()), queue)
             for i in range(3) for name in ("tasks.demo.add", "tasks.demo.divide", "tasks.demo.add")]
    assert publish_tasks(items, fast=True) == len(items)
    published = {m["headers"]["id"]: m["headers"]["task"] for m in _pop_all(queue)}
    assert published == {item.task_id: item.name for item in items}


def test_each_message_keeps_its_own_workflow_links() -> None:
    app.finalize(auto=True)
    queue = f"test-publish-{uuid.uuid4().hex[:8]}"
    plain = OutgoingTask("tasks.demo.add", [1, 1], {}, str(uuid.uuid4()), queue)
    child = OutgoingTask("tasks.demo.add", [2, 2], {}, str(uuid.uuid4()), queue, root_id="root-1", parent_id="parent-1")
    assert publish_tasks([plain, child, plain.__class__(**{**plain.__dict__, "task_id": str(uuid.uuid4())})], fast=True) == 3
    by_id = {m["headers"]["id"]: m["headers"] for m in _pop_all(queue)}
    assert (by_id[plain.task_id]["root_id"], by_id[plain.task_id]["parent_id"]) == (plain.task_id, None)
    assert (by_id[child.task_id]["root_id"], by_id[child.task_id]["parent_id"]) == ("root-1", "parent-1")


def _add_messages(n: int) -> tuple[str, list[OutgoingTask]]:
    """A fresh queue and ``n`` ``tasks.demo.add`` messages for it."""
    app.finalize(auto=True)
    queue = f"test-publish-{uuid.uuid4().hex[:8]}"
    return queue, [OutgoingTask("tasks.demo.add", [i, i], {}, str(uuid.uuid4()), queue, {DEAD_LETTER_HEADER: i})
                   for i in range(n)]


def test_slow_and_fast_paths_write_the_same_messages_in_bulk() -> None:
    queue, items = _add_messages(25)
    assert publish_tasks(items, fast=False) == 25
    slow = _pop_all(queue)
    assert publish_tasks(items, fast=True, chunk=7) == 25  # several pipeline flushes
    fast = _pop_all(queue)
    assert [_without_per_message(m) for m in slow] == [_without_per_message(m) for m in fast]


@pytest.mark.worker
def test_worker_runs_a_fast_path_message_and_it_resolves_its_dead_letter(live_worker: Any) -> None:
    row = DeadLetterFactory(task_name="tasks.demo.add", args=[2, 3], kwargs={}, queue="celery",
                            status=DeadLetterStatus.REQUEUED, requeue_count=1)
    new_task_id = str(uuid.uuid4())
    DeadLetter.objects.filter(pk=row.pk).update(last_requeued_task_id=new_task_id)
    publish_tasks([OutgoingTask("tasks.demo.add", [2, 3], {}, new_task_id, "celery", {DEAD_LETTER_HEADER: row.pk})],
                  fast=True)
    resolved = wait_for(lambda: DeadLetter.objects.filter(pk=row.pk, status=DeadLetterStatus.RESOLVED).first(),
                        message="the fast-path run to resolve its dead letter")
    assert resolved.last_requeued_task_id == new_task_id
    from django_celery_results.models import TaskResult

    assert wait_for(lambda: TaskResult.objects.filter(task_id=new_task_id, status="SUCCESS").first()).result == "5"


def _random_scalar(rng: Any) -> Any:
    kind = rng.randrange(7)
    if kind == 0:
        return rng.randrange(-10**rng.randrange(1, 20), 10**rng.randrange(1, 20))
    if kind == 1:
        return rng.choice([0.0, -1.5, 1e-7, 3.14159, 1e300, float(rng.random() * 10**rng.randrange(0, 25))])
    if kind == 2:
        return rng.choice([True, False, None])
    alphabet = "ab '\"\\\n\t\u00e9\u2603\U0001f600{}[],:x"
    return "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 5, 30, 200, 600])))


def test_flat_repr_is_identical_to_saferepr_on_generated_values() -> None:
    """~20,000 generated args/kwargs, around the 1,024-character truncation limit too: the
    direct repr equals Celery's saferepr wherever it does not fall back (None)."""
    import random

    from celery.utils.saferepr import saferepr

    from tasks.broker.publish import flat_repr

    rng = random.Random(8)
    direct = 0
    for i in range(20_000):
        size = rng.choice([0, 1, 2, 3, 8, 40])
        if i % 3 == 0:
            value: Any = {"".join(rng.choice("kéy'_") for _ in range(rng.randrange(1, 6))): _random_scalar(rng)
                          for _ in range(size)}
        elif i % 3 == 1:
            value = [_random_scalar(rng) for _ in range(size)]
        else:
            value = tuple(_random_scalar(rng) for _ in range(size))
        if i % 50 == 0:
            value = [value]  # nested: must fall back
        got = flat_repr(value, 1024)
        if got is not None:
            direct += 1
            assert got == saferepr(value, 1024, maxlevels=3), value
    assert direct > 10_000  # most values take the direct path


def test_uuid4_batch_gives_distinct_version_4_uuids() -> None:
    from tasks.broker.publish import uuid4_batch

    ids = uuid4_batch(5000)
    assert len(set(ids)) == 5000
    for text in ids[:500]:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text


def test_rendered_messages_match_apply_async_for_awkward_arguments() -> None:
    """Every message after the first of a kind comes from the template: each one equals what
    apply_async writes for the same task id (nested, quoted, non-ASCII and long arguments)."""
    app.finalize(auto=True)
    queue = f"test-publish-{uuid.uuid4().hex[:8]}"
    cases = [([1, "it's"], {}), ([[1, 2], {"a": None}], {}), (["\u2603" * 2000, 3], {}),
             ([], {"key": "k\"\\", "failures": 1}), ([1.5, None], {}), (["x"], {"failures": True})]
    items = [OutgoingTask("tasks.demo.flaky", args, kwargs, str(uuid.uuid4()), queue, {DEAD_LETTER_HEADER: i})
             for i, (args, kwargs) in enumerate(cases)]
    for item in items:
        app.tasks[item.name].apply_async(item.args, item.kwargs, task_id=item.task_id, queue=queue,
                                         headers=item.headers, retries=0)
    expected = [_without_per_message(m) for m in _pop_all(queue)]
    from tasks.broker.publish import publish_context

    with publish_context(fast=True) as publisher:
        assert publisher.publish(items) == len(items)
        assert all(t is not None for t in publisher.templates.values())  # the template was verified and used
    assert [_without_per_message(m) for m in _pop_all(queue)] == expected


def test_a_template_that_does_not_reproduce_the_message_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.broker import publish

    queue, items = _add_messages(4)
    assert publish_tasks(items, fast=False) == 4
    slow = _pop_all(queue)
    monkeypatch.setattr(publish._Template, "render", lambda self, *a: "{}")  # a broken template
    with publish.publish_context(fast=True) as publisher:
        assert publisher.publish(items) == 4
        assert list(publisher.templates.values()) == [None]
    assert [_without_per_message(m) for m in _pop_all(queue)] == [_without_per_message(m) for m in slow]
