"""Database connections in the worker's pool processes: reused across tasks (Celery's Django
fixup closed them around every task, celery#9824), recycled the way Django does per request
(CONN_MAX_AGE, health checks, queries log), and never handed to the next task broken or
inside a transaction. Real prefork workers, one pool process each."""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django_celery_results.models import TaskResult

from tests.workers import Worker, wait_for

pytestmark = pytest.mark.worker

TASKS = ["-I", "tests.tasks.db_tasks"]


def start_worker(queue: str, **env: str) -> Worker:
    return Worker(queues=queue, concurrency=1, env=env, extra_args=TASKS).start()


@pytest.fixture(scope="module")
def reusing_worker(django_db_setup: Any, django_db_blocker: Any) -> Iterator[tuple[Worker, str]]:
    queue = f"dbconn-{uuid.uuid4().hex[:8]}"
    w = start_worker(queue, DEBUG="true")
    yield w, queue
    w.stop()


def run(queue: str, name: str, *args: Any) -> Any:
    """Send ``name`` to ``queue`` and return its stored result."""
    from taskplatform.celery import app

    task_id = app.send_task(name, args=list(args), queue=queue).id
    row = wait_for(lambda: TaskResult.objects.filter(task_id=task_id).first(), timeout=30, message=f"{name} result")
    assert row.status == "SUCCESS", (row.status, row.result, row.traceback)
    return json.loads(row.result)


def run_failing(queue: str) -> Any:
    from dlq.models import DeadLetter
    from taskplatform.celery import app

    task_id = app.send_task("tests.db.fail", queue=queue).id
    return wait_for(lambda: DeadLetter.objects.filter(task_id=task_id).first(), timeout=30, message="dead letter")


def send(queue: str, name: str, *args: Any) -> None:
    from taskplatform.celery import app

    app.send_task(name, args=list(args), queue=queue)


def test_the_connection_is_reused_across_tasks(reusing_worker: tuple[Worker, str], transactional_db: Any) -> None:
    _, queue = reusing_worker
    first, second = run(queue, "tests.db.backend_pid"), run(queue, "tests.db.backend_pid")
    assert first[0] == second[0]  # the same pool process
    assert first[1] == second[1]  # the same Postgres backend: no reconnect between tasks
    row = run_failing(queue)
    assert row.exception_message == f"backend {first[1]} in {first[0]}"  # the failure path too


def test_conn_max_age_zero_connects_for_every_task(transactional_db: Any) -> None:
    queue = f"dbconn0-{uuid.uuid4().hex[:8]}"
    w = start_worker(queue, DB_CONN_MAX_AGE="0")
    try:
        first, second = run(queue, "tests.db.backend_pid"), run(queue, "tests.db.backend_pid")
    finally:
        w.stop()
    assert first[0] == second[0]
    assert first[1] != second[1]


def test_a_terminated_connection_is_replaced(reusing_worker: tuple[Worker, str], transactional_db: Any) -> None:
    _, queue = reusing_worker
    pool_pid, backend = run(queue, "tests.db.backend_pid")
    with connection.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", [backend])
        assert cur.fetchone()[0] is True
    wait_for(lambda: not _backend_alive(backend), timeout=10, message="the backend gone")
    row = run_failing(queue)  # the dead letter is still captured, on a new connection
    assert row.exception_message.startswith("backend ") and row.exception_message != f"backend {backend} in {pool_pid}"
    assert run(queue, "tests.db.backend_pid")[0] == pool_pid  # the process survived


def _backend_alive(pid: int) -> bool:
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
        return bool(cur.fetchone()[0])


@pytest.mark.parametrize("mode", ["open", "broken", "autocommit_off"])
def test_a_transaction_left_open_does_not_reach_the_next_task(reusing_worker: tuple[Worker, str],
                                                              transactional_db: Any, mode: str) -> None:
    from demo.models import LedgerEntry

    _, queue = reusing_worker
    send(queue, "tests.db.leave_transaction", mode)
    key = f"after-{mode}-{uuid.uuid4().hex[:8]}"
    run(queue, "tests.db.write", key)  # its result row is committed, so is its write
    assert LedgerEntry.objects.filter(order_id=key).count() == 1
    assert run_failing(queue).exception_type.endswith("DbTestError")
    with connection.cursor() as cur:  # no backend of the test database is left idle in a transaction
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state LIKE 'idle in transaction%%'")
        assert cur.fetchone()[0] == 0


def test_a_query_interrupted_by_a_soft_time_limit_does_not_reach_the_next_task(
        reusing_worker: tuple[Worker, str], transactional_db: Any) -> None:
    from dlq.models import DeadLetter
    from taskplatform.celery import app

    _, queue = reusing_worker
    task_id = app.send_task("tests.db.query_interrupted", queue=queue).id
    row = wait_for(lambda: DeadLetter.objects.filter(task_id=task_id).first(), timeout=30, message="dead letter")
    assert row.reason == "time_limit"
    key = f"after-limit-{uuid.uuid4().hex[:8]}"
    run(queue, "tests.db.write", key)
    from demo.models import LedgerEntry

    assert LedgerEntry.objects.filter(order_id=key).count() == 1


def test_logged_queries_are_forgotten_between_tasks(reusing_worker: tuple[Worker, str], transactional_db: Any) -> None:
    _, queue = reusing_worker
    big = "x" * 100_000
    at_start, after = run(queue, "tests.db.queries_logged", big)
    assert after > at_start  # DEBUG is on in this worker: queries are logged during a task
    assert run(queue, "tests.db.queries_logged")[0] == 0  # ... and forgotten at its end
