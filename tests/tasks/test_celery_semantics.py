"""A PlatformTask keeps what plain Celery does (headers, argument checks, canvas, DjangoTask)
and a requeue sends the original message again, workflow included (issue 18). Real worker."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import chain, chord, group
from django.db import transaction
from django_celery_results.models import ChordCounter, TaskResult

from dlq import services
from dlq.models import DeadLetter, DeadLetterStatus
from taskplatform.celery import app
from tasks.errors import Conflict
from tests.tasks.probe_tasks import seen
from tests.workers import Worker, wait_for

pytestmark = pytest.mark.worker
QUEUE = "semantics"


@pytest.fixture(scope="module")
def probe_worker(django_db_setup: Any, django_db_blocker: Any) -> Iterator[Worker]:
    """A worker with the probe tasks, on a queue of its own (4 processes: a chord's members
    run side by side)."""
    w = Worker(queues=QUEUE, concurrency=4, extra_args=["-I", "tests.tasks.probe_tasks"]).start()
    yield w
    w.stop()


@pytest.fixture
def worker_db(probe_worker: Worker, transactional_db: Any, settings: Any) -> Worker:
    settings.TASK_QUEUES = [*settings.TASK_QUEUES, QUEUE]
    return probe_worker


def dead(task_id: str, timeout: float = 30) -> DeadLetter:
    return wait_for(lambda: DeadLetter.objects.filter(task_id=task_id).first(), timeout=timeout,
                    message=f"the dead letter of {task_id}")


def result_of(task_id: str, timeout: float = 30) -> Any:
    row = wait_for(lambda: TaskResult.objects.filter(task_id=task_id, status="SUCCESS").first(), timeout=timeout,
                   message=f"the result of {task_id}")
    return row.result


def test_custom_headers_survive_retries_and_requeues(worker_db: Worker) -> None:
    key = uuid.uuid4().hex
    probe = app.tasks["probe.headers"]
    # Two retries allowed, five failures asked: it dies after three runs.
    result = probe.apply_async([key, 5], queue=QUEUE, headers={"x-test-header": "kept", "x-tenant": 7})
    row = dead(result.id)
    runs = seen(key)
    assert [r["retries"] for r in runs] == [0, 1, 2]
    assert all(r["headers"]["x-test-header"] == "kept" and r["headers"]["x-tenant"] == 7 for r in runs), runs
    assert [a["number"] for a in row.attempts] == [1, 2, 3]  # our history travelled beside them
    assert row.headers == {"x-test-header": "kept", "x-tenant": 7}  # ours (dlq_*) are not stored as headers

    row = services.dead_letter_update(dead_letter_id=row.pk, actor="ops", reason="no more failures",
                                      version=row.version, args=[key, 0])
    new_id = services.dead_letter_requeue(dead_letter_id=row.pk, actor="ops", version=row.version)
    wait_for(lambda: DeadLetter.objects.filter(pk=row.pk, status=DeadLetterStatus.RESOLVED).exists(),
             message="the requeued run resolved it")
    requeued_run = seen(key)[-1]
    assert requeued_run["headers"]["x-test-header"] == "kept" and requeued_run["headers"]["x-tenant"] == 7
    assert requeued_run["headers"]["dlq_dead_letter_id"] == row.pk
    assert TaskResult.objects.get(task_id=new_id).status == "SUCCESS"


def test_arguments_that_do_not_bind_fail_once_with_their_own_reason(worker_db: Worker) -> None:
    result = app.send_task("probe.headers", args=[uuid.uuid4().hex], queue=QUEUE)  # `failures` missing
    row = dead(result.id)
    assert row.reason == "invalid_arguments"
    assert row.retries == 0 and len(row.attempts) == 1
    assert row.exception_type == "tasks.base.InvalidArguments"
    assert "probe.headers(key: str, failures: int) -> int" in row.exception_message
    assert "failures" in row.exception_message


def test_a_type_error_inside_the_task_is_still_retried(worker_db: Worker) -> None:
    result = app.send_task("tasks.demo.divide", args=["a", 1], queue=QUEUE)  # str / int: TypeError in the body
    row = dead(result.id, timeout=90)
    assert row.reason == "max_retries_exceeded" and row.retries > 0


def test_a_chain_whose_middle_step_dies_runs_to_the_end_after_a_fix(worker_db: Worker) -> None:
    add, divide = app.tasks["tasks.demo.add"], app.tasks["tasks.demo.divide"]
    workflow = chain(add.s(1, 1).set(queue=QUEUE), divide.s(0).set(queue=QUEUE), add.s(10).set(queue=QUEUE)).apply_async()
    middle = dead(workflow.parent.id)
    assert middle.args == [2, 0] and middle.root_id == workflow.parent.parent.id
    assert middle.parent_id == workflow.parent.parent.id
    assert [step["task"] for step in middle.options["chain"]] == ["tasks.demo.add"]
    detail = services.dead_letter_update(dead_letter_id=middle.pk, actor="ops", reason="divide by 1",
                                         version=middle.version, args=[2, 1])
    services.dead_letter_requeue(dead_letter_id=middle.pk, actor="ops", version=detail.version)
    assert result_of(workflow.id) == "12.0"  # the last step ran with the fixed middle's result
    wait_for(lambda: DeadLetter.objects.get(pk=middle.pk).status == DeadLetterStatus.RESOLVED, message="resolved")


def test_links_and_errbacks_are_kept(worker_db: Worker) -> None:
    add = app.tasks["tasks.demo.add"]
    divide = app.tasks["tasks.demo.divide"]
    result = divide.apply_async([6, 0], queue=QUEUE, link=add.s(1).set(queue=QUEUE), priority=5)
    row = dead(result.id)
    assert row.options["link"][0]["task"] == "tasks.demo.add" and row.options["priority"] == 5
    row = services.dead_letter_update(dead_letter_id=row.pk, actor="ops", reason="fix", version=row.version, args=[6, 3])
    services.dead_letter_requeue(dead_letter_id=row.pk, actor="ops")
    wait_for(lambda: TaskResult.objects.filter(task_name="tasks.demo.add", result="3.0").exists(),
             message="the link ran after the requeued run")


def test_a_chord_member_rejoins_its_open_chord(worker_db: Worker) -> None:
    add, divide, sleep = (app.tasks[n] for n in ("tasks.demo.add", "tasks.demo.divide", "tasks.demo.sleep"))
    accumulate = app.tasks["celery.accumulate"]
    # The slow member keeps the chord open while the failed one is fixed and requeued.
    header = group(add.s(1, 1).set(queue=QUEUE), divide.s(1, 0).set(queue=QUEUE), sleep.s(6).set(queue=QUEUE))
    result = chord(header, accumulate.s().set(queue=QUEUE)).apply_async()
    failed = dead(result.parent.results[1].id)
    assert failed.group_id and failed.options.get("chord")
    from dlq.selectors import dead_letter_workflow

    assert dead_letter_workflow(failed)["resumable"] is True
    failed = services.dead_letter_update(dead_letter_id=failed.pk, actor="ops", reason="fix", version=failed.version,
                                         args=[1, 4])
    services.dead_letter_requeue(dead_letter_id=failed.pk, actor="ops")
    assert result_of(result.id, timeout=60) == "[[2, 0.25, 6]]"  # celery.accumulate returns its args


def test_a_chord_that_completed_cannot_be_resumed(worker_db: Worker) -> None:
    add, divide = app.tasks["tasks.demo.add"], app.tasks["tasks.demo.divide"]
    accumulate = app.tasks["celery.accumulate"]
    result = chord(group(add.s(1, 1).set(queue=QUEUE), divide.s(1, 0).set(queue=QUEUE)),
                   accumulate.s().set(queue=QUEUE)).apply_async()
    failed = dead(result.parent.results[1].id)
    wait_for(lambda: not ChordCounter.objects.filter(group_id=failed.group_id).exists(), message="the chord closed")
    failed = services.dead_letter_update(dead_letter_id=failed.pk, actor="ops", reason="fix", version=failed.version,
                                         args=[1, 4])
    with pytest.raises(Conflict) as refused:
        services.dead_letter_requeue(dead_letter_id=failed.pk, actor="ops")
    assert refused.value.code == "workflow_not_resumable" and "ChordError" in refused.value.message
    assert DeadLetter.objects.get(pk=failed.pk).status == DeadLetterStatus.DEAD  # nothing changed


def test_delay_on_commit_is_djangos(worker_db: Worker) -> None:
    echo = app.tasks["probe.echo"]
    key = uuid.uuid4().hex
    with transaction.atomic():
        echo.apply_async_on_commit([key, 1], queue=QUEUE)
        assert seen(key) == []
    wait_for(lambda: seen(key), message="the task ran after the commit")
    with pytest.raises(RuntimeError), transaction.atomic():
        echo.apply_async_on_commit([key + "-rolled-back", 1], queue=QUEUE)
        raise RuntimeError
    assert seen(key + "-rolled-back") == []
