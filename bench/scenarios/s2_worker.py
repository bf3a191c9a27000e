"""S2, the worker's success path: a real prefork worker draining a queue of our tasks against
plain Celery's, results on and off, and our atomic Redis fetch against kombu's BRPOP."""
from __future__ import annotations

from bench.harness import Row, worker
from bench.scenarios.common import Sizes, alternate, drain_rate, reset_tables


def s2(sizes: Sizes, repeat: int) -> list[Row]:
    rows = []
    with worker("bench-idle") as w:
        for results, (ours_task, base_task) in {
            "on": ("bench.platform_noop", "bench.plain_noop"),
            "off": ("bench.platform_noop_noresult", "bench.plain_noop_noresult"),
        }.items():
            drain_rate(w, "bench-s2", base_task, min(50, sizes.worker), lambda i: [i])  # warm the pool
            a, b = alternate(
                repeat,
                lambda ours_task=ours_task: drain_rate(w, "bench-s2", ours_task, sizes.worker, lambda i: [i]),
                lambda base_task=base_task: drain_rate(w, "bench-s2", base_task, sizes.worker, lambda i: [i]),
            )
            row = Row("S2", f"worker success path, results {results}", "tasks/s", a, b, goal="≥ 0.90×")
            row.met = (row.ratio or 0) >= 0.90
            rows.append(row)
            reset_tables()
    # The Redis fetch itself: our atomic fetch (tasks/broker/transport.py) against kombu's BRPOP
    # fetch, same plain task, two otherwise identical workers.
    with worker("bench-idle") as atomic, worker("bench-idle", env={"CELERY_REDIS_ATOMIC_FETCH": "0"}) as stock:
        task = "bench.plain_noop_noresult"
        for w in (atomic, stock):
            drain_rate(w, "bench-s2", task, min(50, sizes.worker), lambda i: [i])  # warm the pool
        a, b = alternate(
            repeat,
            lambda: drain_rate(atomic, "bench-s2", task, sizes.worker, lambda i: [i]),
            lambda: drain_rate(stock, "bench-s2", task, sizes.worker, lambda i: [i]),
        )
        row = Row("S2", "Redis fetch: atomic fetch vs kombu's BRPOP (plain task, results off)", "tasks/s", a, b,
                  goal="≥ 0.90×")
        row.met = (row.ratio or 0) >= 0.90
        rows.append(row)
    return rows
