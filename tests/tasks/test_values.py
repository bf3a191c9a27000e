"""No value can break the failure path (issue 18): generated values (NaN and infinities, huge
integers, deep nesting, NUL, lone surrogates, long strings, unicode) go through the enqueue
API, a real failing task, capture, edit and requeue. The invariant: a 4xx at the door, or
exactly one dead letter whose row gives back the exact value (and a requeue sends it again);
never a 5xx, never a spool left blocked."""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import tests.tasks.probe_tasks  # noqa: F401  (registers probe.fail in this process, for the enqueue API)
from dlq.models import DeadLetter, QuarantinedEntry, Role
from taskplatform.celery import app
from tests.tasks.probe_tasks import seen
from tests.workers import Worker, wait_for

pytestmark = pytest.mark.worker
QUEUE = "values"


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.integers(min_value=10**300, max_value=10**1000),  # far beyond 64 bits (jsonb numeric takes them)
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=40),  # NUL, lone surrogates, any plane
    st.sampled_from(["\x00", "\ud800", "a\udfffb", "𝄞", "\u202e", "x" * 70_000, "é" * 300_000]),
)
values = st.one_of(
    st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(st.characters(codec=None, exclude_categories=()), max_size=8), inner, max_size=4), max_leaves=12),
    st.integers(min_value=1, max_value=400).map(nested),
)


@pytest.fixture(scope="module")
def values_worker(django_db_setup: Any, django_db_blocker: Any) -> Iterator[Worker]:
    w = Worker(queues=QUEUE, concurrency=2, extra_args=["-I", "tests.tasks.probe_tasks"]).start()
    yield w
    w.stop()


@pytest.fixture
def ready(values_worker: Worker, relay: Any, transactional_db: Any, settings: Any, api_client_for: Any) -> Any:
    from dlq import spool
    from tasks.redis import redis_client

    settings.TASK_QUEUES = [*settings.TASK_QUEUES, QUEUE]
    redis_client().delete(spool.SPOOL_KEY)
    return api_client_for(Role.ADMIN)


def exact(value: Any) -> str:
    """A value's identity for comparison: its JSON text (NaN equals NaN, surrogates escaped,
    -0.0 is not 0.0, 1e16 is not 10**16), object keys sorted (jsonb does not keep their order,
    and it carries no meaning)."""
    return json.dumps(value, sort_keys=True)


def post_raw(client: Any, path: str, body: Any, method: str = "post") -> Any:
    """The body as any client may send it: Python's JSON, NaN and surrogates included."""
    return getattr(client, method)(path, json.dumps(body), content_type="application/json")


def dies_once_and_round_trips(task_id: str, key: str, value: Any) -> DeadLetter:
    row = wait_for(lambda: DeadLetter.objects.filter(task_id=task_id).first(), timeout=30,
                   message=f"the dead letter of {task_id}")
    assert DeadLetter.objects.filter(task_id=task_id).count() == 1
    assert exact(row.arguments()[0]) == exact([key, value])
    assert exact(seen(key)[0]["value"]) == exact(value)  # what the task received
    if row.raw_arguments is None:  # stored as they are: jsonb gives them back exactly
        assert exact(row.args) == exact([key, value])
    return row


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(value=values)
# The cases that once broke capture or were answered with a 500, always run:
@example(value=[float("nan"), float("inf"), -float("inf")])
@example(value={"text": "nul\x00 and \ud800 lone", "\udfff": 1})
@example(value=[1e16, -0.0, 1.7976931348623157e308, 5e-324])
@example(value=10**999)
@example(value=nested(300))
@example(value="é" * 300_000)
def test_any_value_is_refused_at_the_door_or_dies_into_one_round_tripping_dead_letter(ready: Any, value: Any) -> None:
    from dlq import spool
    from tasks.redis import redis_client

    client = ready
    # 1. The enqueue API: a 4xx, or accepted and then one dead letter.
    key = f"api-{uuid.uuid4().hex}"
    response = post_raw(client, "/api/v1/tasks/enqueue/", {"task": "probe.fail", "args": [key, value], "queue": QUEUE})
    assert response.status_code < 500, response.content[:500]
    if response.status_code == 202:
        dies_once_and_round_trips(response.json()["task_id"], key, value)
    else:
        assert 400 <= response.status_code < 500 and "error" in response.json()

    # 2. Another producer sends it straight to the broker (kombu's JSON takes NaN, surrogates,
    #    NUL): the task fails and exactly one dead letter holds the exact value.
    key = f"raw-{uuid.uuid4().hex}"
    sent = app.send_task("probe.fail", args=[key, value], queue=QUEUE)
    row = dies_once_and_round_trips(sent.id, key, value)

    # 3. Edit: the value sent back through the API is a 4xx or a 200, never a 5xx; a 4xx changes nothing.
    patched = post_raw(client, f"/api/v1/dead-letters/{row.pk}/",
                       {"args": [key, value], "reason": "property test", "version": row.version}, method="patch")
    assert patched.status_code < 500, patched.content[:500]
    after = DeadLetter.objects.get(pk=row.pk)
    if patched.status_code != 200:
        assert after.version == row.version and exact(after.arguments()) == exact(row.arguments())

    # 4. Requeue: the requeued run receives the exact value again, and dies into the same row.
    requeued = client.post(f"/api/v1/dead-letters/{row.pk}/requeue/", {"version": after.version}, format="json")
    assert requeued.status_code == 202, requeued.content[:500]
    wait_for(lambda: len(seen(key)) == 2, timeout=30, message="the requeued run")
    assert exact(seen(key)[1]["value"]) == exact(after.arguments()[0][1])
    wait_for(lambda: DeadLetter.objects.get(pk=row.pk).status == "dead", timeout=30, message="dead again")
    assert DeadLetter.objects.filter(task_id=sent.id).count() == 1

    # Never a blocked spool.
    assert redis_client().llen(spool.SPOOL_KEY) == 0 and not QuarantinedEntry.objects.exists()
