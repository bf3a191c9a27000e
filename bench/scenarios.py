"""The scenarios S1-S7 of issue 8. Each takes the run's ``Sizes`` and ``repeat`` and returns
report rows; ours and the baseline run in the same process, on the same services, alternately."""
from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.harness import Row, p95, queue_depth, redis, sql, wait_until, worker, worker_rss


@dataclass(frozen=True)
class Sizes:
    enqueue: int        # S1 calls per figure
    worker: int         # S2 tasks per figure
    failures: int       # S3 failing tasks per figure
    redrive: tuple[int, int]  # S4 small and large job
    redrive_baseline: int     # S4 messages for the apply_async loop
    search_rows: int    # S5 table size
    samples: int        # S5 query samples per figure
    memory_tasks: int   # S7 tasks before the RSS reading
    big_captures: int   # S7 1 MB captures


TINY = Sizes(enqueue=50, worker=40, failures=20, redrive=(100, 1000), redrive_baseline=100, search_rows=3000,
             samples=5, memory_tasks=50, big_captures=2)
QUICK = Sizes(enqueue=2000, worker=1000, failures=500, redrive=(1000, 10_000), redrive_baseline=2000,
              search_rows=50_000, samples=30, memory_tasks=2000, big_captures=10)
FULL = Sizes(enqueue=10_000, worker=4000, failures=2000, redrive=(10_000, 100_000), redrive_baseline=10_000,
             search_rows=1_000_000, samples=40, memory_tasks=100_000, big_captures=20)


def _alternate(repeat: int, ours: Callable[[], float], baseline: Callable[[], float]) -> tuple[list[float], list[float]]:
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


def _reset_tables() -> None:
    sql("TRUNCATE dlq_deadletterevent, dlq_deadletter, dlq_redrivejob, django_celery_results_taskresult "
        "RESTART IDENTITY CASCADE")


# --- S1: enqueue() against apply_async -------------------------------------------------------

def s1(sizes: Sizes, repeat: int) -> list[Row]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from bench import tasks as bt
    from tasks.enqueue import enqueue

    n, queue = sizes.enqueue, "bench-s1"
    queries: list[int] = []

    def ours() -> float:
        redis().delete(queue)
        with CaptureQueriesContext(connection) as ctx:
            t0 = time.perf_counter()
            for i in range(n):
                enqueue(bt.platform_noop, args=[i], queue=queue)
            dt = time.perf_counter() - t0
        queries.append(len(ctx))
        assert redis().llen(queue) == n
        return n / dt

    def baseline() -> float:
        redis().delete(queue)
        t0 = time.perf_counter()
        for i in range(n):
            bt.plain_noop.apply_async([i], queue=queue)
        dt = time.perf_counter() - t0
        assert redis().llen(queue) == n
        return n / dt

    ours(), baseline()  # warm up: producer pool, connections, imports
    queries.clear()
    a, b = _alternate(repeat, ours, baseline)
    redis().delete(queue)
    rate = Row("S1", "enqueue() from a view (no idempotency key)", "tasks/s", a, b, goal="≥ 0.90×")
    rate.met = (rate.ratio or 0) >= 0.90
    q = Row("S1", "database queries per enqueue()", "queries", [x / n for x in queries], goal="0",
            higher_is_better=False)
    q.met = max(queries) == 0
    return [rate, q]


# --- S2/S3: a real prefork worker draining a queue --------------------------------------------

def _drain_rate(w: Any, queue: str, task_name: str, n: int, make_args: Callable[[int], list[Any]],
                timeout: float = 600, done: Callable[[], bool] | None = None) -> float:
    """Fill ``queue`` with ``n`` messages, let the worker consume it, and time until the
    queue is empty and nothing is unacked (acks_late: acked after the task ran), or, given
    ``done``, until ``done()`` is true (the queue is still drained before returning)."""
    from tasks.publish import OutgoingTask, publish_tasks
    from taskplatform.celery import app

    publish_tasks([OutgoingTask(task_name, make_args(i), {}, str(uuid.uuid4()), queue) for i in range(n)])
    app.control.add_consumer(queue, destination=[w.name], reply=True, timeout=5)
    t0 = time.monotonic()
    t1 = wait_until(done or (lambda: queue_depth(queue) == 0), timeout, what=f"{queue} done")
    wait_until(lambda: queue_depth(queue) == 0, timeout, what=f"{queue} drained")
    app.control.cancel_consumer(queue, destination=[w.name], reply=True, timeout=5)
    return n / (t1 - t0)


def s2(sizes: Sizes, repeat: int) -> list[Row]:
    rows = []
    with worker("bench-idle") as w:
        for results, (ours_task, base_task) in {
            "on": ("bench.platform_noop", "bench.plain_noop"),
            "off": ("bench.platform_noop_noresult", "bench.plain_noop_noresult"),
        }.items():
            _drain_rate(w, "bench-s2", base_task, min(50, sizes.worker), lambda i: [i])  # warm the pool
            a, b = _alternate(
                repeat,
                lambda: _drain_rate(w, "bench-s2", ours_task, sizes.worker, lambda i: [i]),
                lambda: _drain_rate(w, "bench-s2", base_task, sizes.worker, lambda i: [i]),
            )
            row = Row("S2", f"worker success path, results {results}", "tasks/s", a, b, goal="≥ 0.90×")
            row.met = (row.ratio or 0) >= 0.90
            rows.append(row)
            _reset_tables()
    # The Redis fetch itself: our atomic fetch (taskplatform/transport.py) against kombu's BRPOP
    # fetch, same plain task, two otherwise identical workers.
    with worker("bench-idle") as atomic, worker("bench-idle", env={"CELERY_REDIS_ATOMIC_FETCH": "0"}) as stock:
        task = "bench.plain_noop_noresult"
        for w in (atomic, stock):
            _drain_rate(w, "bench-s2", task, min(50, sizes.worker), lambda i: [i])  # warm the pool
        a, b = _alternate(
            repeat,
            lambda: _drain_rate(atomic, "bench-s2", task, sizes.worker, lambda i: [i]),
            lambda: _drain_rate(stock, "bench-s2", task, sizes.worker, lambda i: [i]),
        )
        row = Row("S2", "Redis fetch: atomic fetch vs kombu's BRPOP (plain task, results off)", "tasks/s", a, b,
                  goal="≥ 0.90×")
        row.met = (row.ratio or 0) >= 0.90
        rows.append(row)
    return rows


def s3(sizes: Sizes, repeat: int) -> list[Row]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django_celery_results.models import TaskResult

    from dlq.models import DeadLetter
    from dlq.services import CapturedFailure, dead_letter_capture

    n = sizes.failures
    counts: list[tuple[int, int]] = []
    with worker("bench-idle") as w:
        _drain_rate(w, "bench-s3", "bench.plain_fail", min(20, n), lambda i: [i])

        # The clock stops when the last row is written (polled in the database), not when
        # the broker has the last ack, which comes later and on both sides alike.
        def ours() -> float:
            _reset_tables()
            rate = _drain_rate(w, "bench-s3", "bench.platform_fail", n, lambda i: [i],
                               done=lambda: DeadLetter.objects.count() >= n)
            counts.append((DeadLetter.objects.count(), n))
            return rate

        def baseline() -> float:
            _reset_tables()
            rate = _drain_rate(w, "bench-s3", "bench.plain_fail", n, lambda i: [i],
                               done=lambda: TaskResult.objects.filter(status="FAILURE").count() >= n)
            assert TaskResult.objects.filter(status="FAILURE").count() == n
            return rate

        a, b = _alternate(repeat, ours, baseline)
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
    _reset_tables()
    return [row, q]


# --- Seeding dead letters with SQL -----------------------------------------------------------

def seed_dead_letters(n: int, *, task_name: str | None = None, queue: str = "celery", status_mix: bool = False) -> None:
    """``n`` dead letters in one ``INSERT ... SELECT generate_series``: 50 task names, 20
    exception types and 1,000 rare words in the messages unless ``task_name`` is given."""
    name = "%s::text" if task_name else "'bench.task_' || (i %% 50)"
    status = ("CASE WHEN i %% 20 < 3 THEN 'dead' WHEN i %% 20 = 3 THEN 'discarded' ELSE 'resolved' END"
              if status_mix else "'dead'")
    params = [task_name] if task_name else []
    extra_cols, extra_params = _other_required_columns()
    sql(f"""
        INSERT INTO dlq_deadletter (task_id, task_name, queue, routing_key, args, kwargs, headers, options,
            content_type, content_encoding, exception_type, exception_message, traceback, reason, attempts,
            retries, first_failed_at, last_failed_at, fingerprint, status, requeue_count,
            last_requeued_task_id, version, created_at, updated_at{"".join(", " + c for c in extra_cols)})
        SELECT md5(i::text || clock_timestamp()::text), {name}, %s, %s,
            jsonb_build_array(i, 'sku-' || (i %% 5000)), '{{}}'::jsonb, '{{}}'::jsonb, '{{}}'::jsonb, '', '',
            'bench.Error' || (i %% 20),
            'order ' || i || ' could not be charged: w' || ((i * 7919) %% 1000) || ' gateway timeout',
            'Traceback (most recent call last):' || chr(10) || '  File "billing.py", line ' || (i %% 400)
                || ', in charge' || chr(10) || 'bench.Error' || (i %% 20) || ': gateway timeout',
            'non_retryable', '[]'::jsonb, 0, now() - make_interval(secs => i), now() - make_interval(secs => i),
            md5('fp' || (i %% 20)), {status}, 0, '', 1, now(), now(){", %s" * len(extra_cols)}
        FROM generate_series(1, %s) AS i
    """, [*params, queue, queue, *extra_params, n])


SEEDED = {"id", "task_id", "task_name", "queue", "routing_key", "args", "kwargs", "headers", "options", "content_type",
          "content_encoding", "exception_type", "exception_message", "traceback", "reason", "attempts", "retries",
          "first_failed_at", "last_failed_at", "fingerprint", "status", "requeue_count", "last_requeued_task_id",
          "version", "created_at", "updated_at", "search", "raw_body"}


def _other_required_columns() -> tuple[list[str], list[Any]]:
    """NOT NULL columns added to the model since this seed was written, with their model
    defaults (Django keeps defaults in Python, not in the table)."""
    from dlq.models import DeadLetter

    by_column = {f.column: f for f in DeadLetter._meta.concrete_fields}
    cols, values = [], []
    for (column,) in sql("SELECT column_name FROM information_schema.columns WHERE table_name = 'dlq_deadletter' "
                         "AND is_nullable = 'NO' AND column_default IS NULL AND is_generated = 'NEVER'"):
        if column in SEEDED or column not in by_column:
            continue
        field = by_column[column]
        cols.append(column)
        values.append(field.get_db_prep_save(field.get_default(), connection=_connection()))
    return cols, values


def _connection() -> Any:
    from django.db import connection

    return connection


@dataclass
class _Index:
    name: str
    definition: str


def _bulk_seed(n: int) -> None:
    """Seed a large table fast: drop the secondary indexes, insert, rebuild, ANALYZE."""
    indexes = [_Index(name, definition) for name, definition in sql(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'dlq_deadletter' "
        "AND indexname NOT LIKE '%%pkey' AND indexdef NOT LIKE 'CREATE UNIQUE%%'")]
    for index in indexes:
        sql(f'DROP INDEX "{index.name}"')
    chunk = 250_000
    for start in range(0, n, chunk):
        seed_dead_letters(min(chunk, n - start), status_mix=True)
    sql("SET maintenance_work_mem = '256MB'")
    for index in indexes:
        sql(index.definition)
    sql("VACUUM ANALYZE dlq_deadletter")


# --- S4: bulk redrive -----------------------------------------------------------------------

S4_TASK, S4_QUEUE = "bench.platform_noop", "bench-s4"


def _redrive(n: int) -> tuple[float, dict[str, Any]]:
    from dlq.models import RedriveJob
    from dlq.services import dead_letters_bulk_start, redrive_job_run

    _reset_tables()
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
    ids = [json.loads(m)["headers"]["id"] for m in client.lrange(S4_QUEUE, 0, -1)]
    client.delete(S4_QUEUE)
    check = {"done": job.done, "status": job.status, "in_broker": len(ids), "distinct": len(set(ids))}
    return dt, check


def _redrive_baseline(n: int) -> float:
    """What an operator without us would do: read the rows and apply_async each message."""
    from dlq.capture import DEAD_LETTER_HEADER
    from dlq.models import DeadLetter
    from taskplatform.celery import app

    _reset_tables()
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
    _reset_tables()
    return [*rows, scale, once]


# --- S5/S6: search and pages at scale --------------------------------------------------------

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
    from django.db import transaction

    def run() -> Any:
        with transaction.atomic():
            sql("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off; "
                "SET LOCAL enable_indexonlyscan = off")
            return fn()
    return run


def _admin_user() -> Any:
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    user = user_model.objects.filter(username="bench-admin").first()
    return user or user_model.objects.create_superuser("bench-admin", "bench@example.com", "bench-password")


def s5(sizes: Sizes, repeat: int) -> list[Row]:
    from django.contrib import admin
    from django.test import Client, RequestFactory

    from dlq.models import DeadLetter
    from dlq.selectors import dead_letter_list, dead_letter_page

    n, samples = sizes.search_rows, sizes.samples * repeat
    _reset_tables()
    t0 = time.perf_counter()
    _bulk_seed(n)
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

    user = _admin_user()
    client = Client()
    client.force_login(user)
    ours = _timed(lambda: client.get("/admin/dlq/deadletter/"), max(5, samples // 3))
    factory = RequestFactory()

    def default_admin() -> Any:
        request = factory.get("/admin/dlq/deadletter/")
        request.user = user
        from django.contrib.messages.storage.fallback import FallbackStorage

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


def s6(sizes: Sizes, repeat: int) -> list[Row]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from dlq.models import DeadLetter

    if DeadLetter.objects.count() < 600:
        seed_dead_letters(1000)
    user = _admin_user()
    token, _ = Token.objects.get_or_create(user=user)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    counts = {}
    for size in (1, 50, 500):
        api.get(f"/api/v1/dead-letters/?page_size={size}")  # warm caches (content types, ...)
        with CaptureQueriesContext(connection) as ctx:
            response = api.get(f"/api/v1/dead-letters/?page_size={size}&status=dead")
        assert response.status_code == 200, response.content[:500]
        counts[size] = len(ctx)
    rows = []
    row = Row("S6", "API dead-letters list, queries per page (page_size 1 / 50 / 500)", "queries",
              [float(max(counts.values()))], goal="≤ 3 at any page size", higher_is_better=False,
              notes=" / ".join(str(counts[s]) for s in (1, 50, 500)) + " (token auth included)")
    row.met = max(counts.values()) <= 3
    rows.append(row)
    client = Client()
    client.force_login(user)
    client.get("/dashboard/")
    with CaptureQueriesContext(connection) as ctx:
        response = client.get("/dashboard/")
    assert response.status_code == 200
    row = Row("S6", "dashboard overview, queries", "queries", [float(len(ctx))], goal="≤ 10",
              higher_is_better=False, notes="session auth included")
    row.met = len(ctx) <= 10
    rows.append(row)
    return rows


# --- S7: memory -----------------------------------------------------------------------------

def s7(sizes: Sizes, repeat: int) -> list[Row]:
    n = sizes.memory_tasks
    rss: dict[str, float] = {}
    for label, task in (("plain", "bench.plain_noop"), ("ours", "bench.platform_noop")):
        with worker("bench-idle") as w:
            _drain_rate(w, "bench-s7", task, min(200, n), lambda i: [i])
            done = 0
            while done < n:
                step = min(20_000, n - done)
                _drain_rate(w, "bench-s7", task, step, lambda i: [i])
                done += step
            rss[label] = worker_rss(w) / 2**20
        _reset_tables()
    row = Row("S7", f"worker pool RSS after {n:,} tasks", "MiB", [rss["ours"]], [rss["plain"]],
              goal="≤ +5 %", higher_is_better=False, notes=f"sum over {os.cpu_count()} pool processes")
    row.met = rss["ours"] <= 1.05 * rss["plain"]
    big = "x" * (1 << 20)
    growth: dict[str, tuple[float, float]] = {}
    for label, task in (("plain", "bench.plain_fail"), ("ours", "bench.platform_fail")):
        with worker("bench-idle") as w:
            _drain_rate(w, "bench-s7", task, 4, lambda i: [i, big])  # warm: the first 1 MB messages
            before = worker_rss(w) / 2**20
            _drain_rate(w, "bench-s7", task, sizes.big_captures, lambda i: [i, big])
            growth[label] = (before, worker_rss(w) / 2**20)
        _reset_tables()
    (pb, pa), (ob, oa) = growth["plain"], growth["ours"]
    grow = Row("S7", f"RSS growth over {sizes.big_captures} failures with a 1 MB argument", "MiB", [oa - ob],
               [pa - pb], goal="no growth beyond plain Celery's", higher_is_better=False,
               notes=f"ours {ob:.0f} → {oa:.0f} MiB (dead letter captured); plain {pb:.0f} → {pa:.0f} MiB "
                     "(FAILURE stored with its args)")
    grow.met = (oa - ob) <= max(2.0, (pa - pb) + 2.0)
    _reset_tables()
    return [row, grow]


SCENARIOS: dict[str, Callable[[Sizes, int], list[Row]]] = {
    "S1": s1, "S2": s2, "S3": s3, "S4": s4, "S5": s5, "S6": s6, "S7": s7,
}
