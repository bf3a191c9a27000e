"""S7, memory: the worker pool's RSS after many tasks, and its growth over failures with a
1 MB argument, ours against plain Celery's."""
from __future__ import annotations

import os

from bench.harness import Row, worker, worker_rss
from bench.scenarios.common import Sizes, drain_rate, reset_tables


def s7(sizes: Sizes, repeat: int) -> list[Row]:
    n = sizes.memory_tasks
    rss: dict[str, float] = {}
    for label, task in (("plain", "bench.plain_noop"), ("ours", "bench.platform_noop")):
        with worker("bench-idle") as w:
            drain_rate(w, "bench-s7", task, min(200, n), lambda i: [i])
            done = 0
            while done < n:
                step = min(20_000, n - done)
                drain_rate(w, "bench-s7", task, step, lambda i: [i])
                done += step
            rss[label] = worker_rss(w) / 2**20
        reset_tables()
    row = Row("S7", f"worker pool RSS after {n:,} tasks", "MiB", [rss["ours"]], [rss["plain"]],
              goal="≤ +5 %", higher_is_better=False, notes=f"sum over {os.cpu_count()} pool processes")
    row.met = rss["ours"] <= 1.05 * rss["plain"]
    big = "x" * (1 << 20)
    growth: dict[str, tuple[float, float]] = {}
    for label, task in (("plain", "bench.plain_fail"), ("ours", "bench.platform_fail")):
        with worker("bench-idle") as w:
            drain_rate(w, "bench-s7", task, 4, lambda i: [i, big])  # warm: the first 1 MB messages
            before = worker_rss(w) / 2**20
            drain_rate(w, "bench-s7", task, sizes.big_captures, lambda i: [i, big])
            growth[label] = (before, worker_rss(w) / 2**20)
        reset_tables()
    (pb, pa), (ob, oa) = growth["plain"], growth["ours"]
    grow = Row("S7", f"RSS growth over {sizes.big_captures} failures with a 1 MB argument", "MiB", [oa - ob],
               [pa - pb], goal="no growth beyond plain Celery's", higher_is_better=False,
               notes=f"ours {ob:.0f} → {oa:.0f} MiB (dead letter captured); plain {pb:.0f} → {pa:.0f} MiB "
                     "(FAILURE stored with its args)")
    grow.met = (oa - ob) <= max(2.0, (pa - pb) + 2.0)
    reset_tables()
    return [row, grow]
