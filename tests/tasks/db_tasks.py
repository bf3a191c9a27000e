"""Tasks for tests/tasks/test_db_connections.py, loaded into its worker with ``-I``."""
from __future__ import annotations

import os

from celery import shared_task

from tasks.base import PlatformTask


def _backend_pid() -> int:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return int(cur.fetchone()[0])


@shared_task(base=PlatformTask, name="tests.db.backend_pid")
def backend_pid() -> list[int]:
    """[pool process pid, Postgres backend pid] of this run."""
    return [os.getpid(), _backend_pid()]


@shared_task(base=PlatformTask, name="tests.db.write")
def write(key: str) -> list[int]:
    """A committed write, then the pids (the test reads the row from its own connection)."""
    from demo.models import LedgerEntry

    LedgerEntry.objects.create(order_id=key, amount_cents=1)
    return [os.getpid(), _backend_pid()]


class DbTestError(Exception):
    pass


@shared_task(base=PlatformTask, name="tests.db.fail", non_retryable=(DbTestError,))
def fail() -> None:
    raise DbTestError(f"backend {_backend_pid()} in {os.getpid()}")


@shared_task(base=PlatformTask, name="tests.db.leave_transaction", ignore_result=True)
def leave_transaction(mode: str) -> None:
    """Ends with the connection in a state the next task must not inherit."""
    from django.db import connection, transaction

    if mode == "autocommit_off":  # Django knows: its own check closes the connection
        transaction.set_autocommit(False)
        _backend_pid()
        return
    cur = connection.cursor()
    cur.execute("BEGIN")  # behind Django's back: it believes the connection is in autocommit
    _backend_pid()
    if mode == "broken":
        try:
            cur.execute("SELECT 1 / 0")
        except Exception:
            pass


@shared_task(base=PlatformTask, name="tests.db.query_interrupted", soft_time_limit=1, time_limit=30)
def query_interrupted() -> None:
    """A soft time limit arrives while a query runs (psycopg leaves the connection busy)."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT pg_sleep(4)")


@shared_task(base=PlatformTask, name="tests.db.queries_logged")
def queries_logged(big: str = "") -> list[int]:
    """[queries logged when the task started, after one more query] (DEBUG on in the worker)."""
    from django.db import connection

    at_start = len(connection.queries_log)
    with connection.cursor() as cur:
        cur.execute("SELECT length(%s)", [big])
    return [at_start, len(connection.queries_log)]
