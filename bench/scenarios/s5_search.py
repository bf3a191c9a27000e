"""S5, search and pages at scale: filters, full text, deep cursor pages and the admin changelist
on a large seeded table, each against the same query without its indexes or a default admin."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.contrib.messages.storage.fallback import FallbackStorage
from django.db import transaction
from django.test import Client, RequestFactory

from bench.harness import Row, p95, sql
from bench.scenarios.common import Sizes, admin_user, reset_tables
from bench.scenarios.seed import bulk_seed
from dlq.models import DeadLetter
from dlq.selectors import dead_letter_list, dead_letter_page


def _timed(fn: Callable[[], Any], samples: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _seq_scan(fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with transaction.atomic():
            sql("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off; "
                "SET LOCAL enable_indexonlyscan = off")
            return fn()
    return run


def s5(sizes: Sizes, repeat: int) -> list[Row]:
    n, samples = sizes.search_rows, sizes.samples * repeat
    reset_tables()
    t0 = time.perf_counter()
    bulk_seed(n)
    seed_seconds = time.perf_counter() - t0

    def page(filters: dict[str, str], cursor: str | None = None) -> Any:
        return dead_letter_page(dead_letter_list(filters=filters), cursor=cursor, size=50)

    selective = {"task_name": "bench.task_7", "status": "dead"}
    text = {"q": "w123 charged"}
    rows = []
    for label, filters, limit in (("selective filter", selective, 50.0), ("full text", text, 200.0)):
        ours = _timed(lambda f=filters: page(f), samples)
        base = _timed(_seq_scan(lambda f=filters: page(f)), max(3, samples // 5))
        row = Row("S5", f"{label}, page 1 of 50 (p95)", "ms", [p95(ours)], [p95(base)], goal=f"p95 ≤ {limit:.0f} ms",
                  higher_is_better=False, notes="baseline: the same query as a sequential scan")
        row.met = p95(ours) <= limit
        rows.append(row)

    cursor = None
    depth = min(1000, max(2, n // 50 - 1))
    for _ in range(depth - 1):
        _, cursor, _ = page({}, cursor)
    deep_cursor = cursor
    first = _timed(lambda: page({}), samples)
    deep = _timed(lambda: page({}, deep_cursor), samples)
    offset = _timed(lambda: list(DeadLetter.objects.order_by("-last_failed_at", "-id")
                                 [(depth - 1) * 50:depth * 50]), max(3, samples // 5))
    row = Row("S5", f"page {depth:,} by cursor vs page 1 (p95)", "ms", [p95(deep)], [p95(offset)],
              goal="deep ≤ 1.5× page 1", higher_is_better=False,
              notes=f"page 1 p95 {p95(first):.1f} ms; baseline: OFFSET {(depth - 1) * 50:,}")
    row.met = p95(deep) <= 1.5 * max(p95(first), 1.0)
    rows.append(row)

    user = admin_user()
    client = Client()
    client.force_login(user)
    ours = _timed(lambda: client.get("/admin/dlq/deadletter/"), max(5, samples // 3))
    factory = RequestFactory()

    def default_admin() -> Any:
        request = factory.get("/admin/dlq/deadletter/")
        request.user = user
        request.session = {}  # type: ignore[attr-defined]
        request._messages = FallbackStorage(request)  # type: ignore[attr-defined]
        return admin.ModelAdmin(DeadLetter, admin.site).changelist_view(request).render()

    base = _timed(default_admin, max(3, samples // 10))
    row = Row("S5", "admin changelist /admin/dlq/deadletter/ (p95)", "ms", [p95(ours)], [p95(base)],
              goal="p95 ≤ 300 ms", higher_is_better=False, notes="baseline: a default ModelAdmin on the same table")
    row.met = p95(ours) <= 300
    rows.append(row)
    for r in rows:
        r.notes = f"{n:,} rows (seeded in {seed_seconds:.0f} s); " + r.notes
    return rows
