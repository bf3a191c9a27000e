"""S3, the failure path: failing tasks captured as dead letters against plain Celery storing
FAILURE results, and the statements of one capture."""
from __future__ import annotations

import uuid

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_celery_results.models import TaskResult

from bench.harness import Row, worker
from bench.scenarios.common import Sizes, alternate, drain_rate, reset_tables
from dlq.models import DeadLetter
from dlq.services import CapturedFailure, dead_letter_capture


def s3(sizes: Sizes, repeat: int) -> list[Row]:
    n = sizes.failures
    counts: list[tuple[int, int]] = []
    with worker("bench-idle") as w:
        drain_rate(w, "bench-s3", "bench.plain_fail", min(20, n), lambda i: [i])

        # The clock stops when the last row is written (polled in the database), not when
        # the broker has the last ack, which comes later and on both sides alike.
        def ours() -> float:
            reset_tables()
            rate = drain_rate(w, "bench-s3", "bench.platform_fail", n, lambda i: [i],
                               done=lambda: DeadLetter.objects.count() >= n)
            counts.append((DeadLetter.objects.count(), n))
            return rate

        def baseline() -> float:
            reset_tables()
            rate = drain_rate(w, "bench-s3", "bench.plain_fail", n, lambda i: [i],
                               done=lambda: TaskResult.objects.filter(status="FAILURE").count() >= n)
            assert TaskResult.objects.filter(status="FAILURE").count() == n
            return rate

        a, b = alternate(repeat, ours, baseline)
    row = Row("S3", "failure path, dead letters captured", "dead letters/s", a, b, goal="≥ 0.75×")
    row.met = (row.ratio or 0) >= 0.75 and all(c == e for c, e in counts)
    row.notes = f"rows written per run: {counts[-1][0]} of {n}; baseline stores FAILURE in django-celery-results"
    failure = CapturedFailure(task_id=str(uuid.uuid4()), task_name="bench.platform_fail", reason="non_retryable",
                              exception_type="bench.tasks.BenchError", exception_message="bench failure 1",
                              traceback="Traceback ...", queue="bench-s3", routing_key="bench-s3", args=[1], kwargs={},
                              attempts=[{"number": 1, "at": "2025-01-01T00:00:00+00:00"}])
    with CaptureQueriesContext(connection) as ctx:
        dead_letter_capture(failure=failure)
    statements = [q["sql"] for q in ctx.captured_queries]
    inserts = [s for s in statements if s.upper().startswith('INSERT INTO "DLQ_DEADLETTER"')]
    q = Row("S3", "statements per capture (dead_letter_capture)", "statements", [len(statements)],
            goal="exactly one INSERT", higher_is_better=False,
            notes="; ".join(s.split(" (")[0][:60] for s in statements))
    q.met = len(inserts) == 1 and len(statements) - statements.count("BEGIN") - statements.count("COMMIT") == 1
    reset_tables()
    return [row, q]
