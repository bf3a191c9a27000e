"""S4, bulk redrive: a redrive job end to end against an ``apply_async`` loop over the same rows,
its scaling, and one message in the broker per dead letter."""
from __future__ import annotations

import time
from typing import Any

from bench.harness import Row, broker_task_ids, redis, sql
from bench.scenarios.common import Sizes, reset_tables
from bench.scenarios.seed import seed_dead_letters
from dlq.models import DeadLetter, RedriveJob
from dlq.services import dead_letters_bulk_start, redrive_job_run
from taskplatform.celery import app
from tasks.failures import DEAD_LETTER_HEADER

S4_TASK, S4_QUEUE = "bench.platform_noop", "bench-s4"


def _redrive(n: int) -> tuple[float, dict[str, Any]]:
    reset_tables()
    seed_dead_letters(n, task_name=S4_TASK, queue=S4_QUEUE)
    sql("ANALYZE dlq_deadletter")
    client = redis()
    client.delete(S4_QUEUE)
    t0 = time.perf_counter()
    job = dead_letters_bulk_start(actor="bench", action="requeue", reason="bench redrive",
                                  filters={"task_name": S4_TASK})
    redrive_job_run(job_id=job.pk, batch_size=1000, time_budget=3600)
    dt = time.perf_counter() - t0
    client.delete("celery")  # the job's own run_redrive_job message: this run executed it in-process
    job = RedriveJob.objects.get(pk=job.pk)
    ids = broker_task_ids(S4_QUEUE)
    client.delete(S4_QUEUE)
    check = {"done": job.done, "status": job.status, "in_broker": len(ids), "distinct": len(set(ids))}
    return dt, check


def _redrive_baseline(n: int) -> float:
    """What an operator without us would do: read the rows and apply_async each message."""
    reset_tables()
    seed_dead_letters(n, task_name=S4_TASK, queue=S4_QUEUE)
    client = redis()
    client.delete(S4_QUEUE)
    task = app.tasks[S4_TASK]
    t0 = time.perf_counter()
    rows = DeadLetter.objects.filter(task_name=S4_TASK, status="dead").values_list("pk", "args", "kwargs", "queue")
    with app.producer_or_acquire() as producer:
        for pk, args, kwargs, queue in rows.iterator(chunk_size=2000):
            task.apply_async(args, kwargs, queue=queue, headers={DEAD_LETTER_HEADER: pk}, producer=producer)
    dt = time.perf_counter() - t0
    assert client.llen(S4_QUEUE) == n
    client.delete(S4_QUEUE)
    return n / dt


def s4(sizes: Sizes, repeat: int) -> list[Row]:
    small, large = sizes.redrive
    checks: list[dict[str, Any]] = []
    times: dict[int, list[float]] = {small: [], large: []}
    baseline = [_redrive_baseline(sizes.redrive_baseline) for _ in range(repeat)]
    for _ in range(repeat):
        for n in (small, large):
            dt, check = _redrive(n)
            times[n].append(dt)
            checks.append({"n": n, **check})
    rows = []
    for n in (small, large):
        row = Row("S4", f"bulk redrive of {n:,} dead letters, end to end", "messages/s", [n / t for t in times[n]],
                  baseline, goal="≥ 4× and ≥ 10,000/s",
                  notes=f"baseline: apply_async loop over {sizes.redrive_baseline:,} of the same rows")
        row.met = (row.ratio or 0) >= 4 and (row.ours_median or 0) >= 10_000
        rows.append(row)
    scale = Row("S4", f"time({large:,}) / time({small:,})", "ratio",
                [bl / sm for bl, sm in zip(times[large], times[small], strict=True)], goal="≤ 11",
                higher_is_better=False)
    scale.met = (scale.ours_median or 99) <= 11
    once_ok = all(c["in_broker"] == c["n"] == c["distinct"] == c["done"] and c["status"] == "finished" for c in checks)
    once = Row("S4", "messages in the broker per dead letter", "messages", [c["in_broker"] / c["n"] for c in checks],
               goal="exactly 1 (counted in Redis)", higher_is_better=False,
               notes=f"{sum(c['in_broker'] for c in checks):,} messages, all distinct task ids: {once_ok}")
    once.met = once_ok
    reset_tables()
    return [*rows, scale, once]
