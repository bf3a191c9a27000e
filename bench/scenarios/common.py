"""What the scenarios share: the run's sizes, the alternation of ours and the baseline, table
resets, and a worker draining a queue (S2, S3, S7)."""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model

from bench.harness import queue_depth, sql, wait_until
from taskplatform.celery import app
from tasks.broker.publish import OutgoingTask, publish_tasks


@dataclass(frozen=True)
class Sizes:
    enqueue: int        # S1 views per figure
    worker: int         # S2 tasks per figure
    failures: int       # S3 failing tasks per figure
    redrive: tuple[int, int]  # S4 small and large job
    redrive_baseline: int     # S4 messages for the apply_async loop
    search_rows: int    # S5 table size
    samples: int        # S5 query samples per figure
    memory_tasks: int   # S7 tasks before the RSS reading
    big_captures: int   # S7 1 MB captures
    relay: int          # S8 outbox rows for the relay's throughput
    latency_seconds: float  # S8 paced producer's run


TINY = Sizes(enqueue=50, worker=40, failures=20, redrive=(100, 1000), redrive_baseline=100, search_rows=3000,
             samples=5, memory_tasks=50, big_captures=2, relay=1000, latency_seconds=1.5)
QUICK = Sizes(enqueue=2000, worker=1000, failures=500, redrive=(1000, 10_000), redrive_baseline=2000,
              search_rows=50_000, samples=30, memory_tasks=2000, big_captures=10, relay=20_000,
              latency_seconds=5)
FULL = Sizes(enqueue=10_000, worker=4000, failures=2000, redrive=(10_000, 100_000), redrive_baseline=10_000,
             search_rows=1_000_000, samples=40, memory_tasks=100_000, big_captures=20, relay=100_000,
             latency_seconds=20)


def alternate(repeat: int, ours: Callable[[], float], baseline: Callable[[], float]) -> tuple[list[float], list[float]]:
    """Run both ``repeat`` times, alternating which goes first (drift hits both alike)."""
    a: list[float] = []
    b: list[float] = []
    for i in range(repeat):
        if i % 2 == 0:
            a.append(ours())
            b.append(baseline())
        else:
            b.append(baseline())
            a.append(ours())
    return a, b


def reset_tables() -> None:
    sql("TRUNCATE dlq_deadletterevent, dlq_deadletter, dlq_redrivejob, django_celery_results_taskresult "
        "RESTART IDENTITY CASCADE")


def outbox_reset() -> None:
    sql("TRUNCATE tasks_outboxmessage RESTART IDENTITY")


def outbox_rows() -> int:
    return int(sql("SELECT count(*) FROM tasks_outboxmessage")[0][0])


def drain_rate(w: Any, queue: str, task_name: str, n: int, make_args: Callable[[int], list[Any]],
               timeout: float = 600, done: Callable[[], bool] | None = None) -> float:
    """Fill ``queue`` with ``n`` messages, let the worker consume it, and time until the
    queue is empty and nothing is unacked (acks_late: acked after the task ran), or, given
    ``done``, until ``done()`` is true (the queue is still drained before returning)."""
    publish_tasks([OutgoingTask(task_name, make_args(i), {}, str(uuid.uuid4()), queue) for i in range(n)])
    app.control.add_consumer(queue, destination=[w.name], reply=True, timeout=5)
    t0 = time.monotonic()
    t1 = wait_until(done or (lambda: queue_depth(queue) == 0), timeout, what=f"{queue} done")
    wait_until(lambda: queue_depth(queue) == 0, timeout, what=f"{queue} drained")
    app.control.cancel_consumer(queue, destination=[w.name], reply=True, timeout=5)
    return n / (t1 - t0)


def admin_user() -> Any:
    """The bench's superuser (S5's admin page, S6's API and dashboard)."""
    user_model = get_user_model()
    user = user_model.objects.filter(username="bench-admin").first()
    return user or user_model.objects.create_superuser("bench-admin", "bench@example.com", "bench-password")
