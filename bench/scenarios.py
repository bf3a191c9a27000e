"""The scenarios S1-S7 of issue 8, and S8 of issue 17 (which reworked S1 for the outbox). Each takes
the run's ``Sizes`` and ``repeat`` and returns report rows; ours and the baseline run in the same
process, on the same services, alternately."""
from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.harness import (Row, fmt, p95, percentile, queue_depth, redis, relay, spread, sql, wait_until, worker,
                           worker_rss)


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


# --- S1: enqueue from a view: the outbox against on_commit(apply_async) -----------------------

S1_QUEUE = "bench-s1"
# Backpressure on, as in production, with a mark no S1 run reaches: enqueue() pays its cached
# read (broker LLENs and an outbox count, at most once a second) and is never refused.
S1_SETTINGS = {"DEBUG": False, "QUEUE_HIGH_WATER_MARK": 1_000_000_000}


def _outbox_reset() -> None:
    sql("TRUNCATE tasks_outboxmessage RESTART IDENTITY")


def _outbox_rows() -> int:
    return int(sql("SELECT count(*) FROM tasks_outboxmessage")[0][0])


def _broker_task_ids(queue: str) -> list[str]:
    """The task id of every message waiting in ``queue`` (Redis list, kombu's JSON envelope)."""
    return [json.loads(m)["headers"]["id"] for m in redis().lrange(queue, 0, -1)]


def _call_view(view: Callable[[Any], Any], n: int, queue: str, task_ids: list[str]) -> float:
    """``n`` POSTs built with ``RequestFactory`` and passed to ``view`` (the view function
    alone: no middleware, no URL resolution); returns the seconds they took."""
    from django.test import RequestFactory

    factory = RequestFactory()
    t0 = time.perf_counter()
    for i in range(n):
        request = factory.post("/orders/", data=json.dumps({"n": i, "queue": queue, "note": f"order {i}"}),
                               content_type="application/json")
        response = view(request)
        if response.status_code != 202:
            raise AssertionError(f"view answered {response.status_code}: {response.content[:300]!r}")
        task_ids.append(json.loads(response.content)["task_id"])
    return time.perf_counter() - t0


def _s1_statements(queue: str, calls: int) -> Row:
    """The statements of ``calls`` views (with ``CaptureQueriesContext``) sorted into the view's
    own and ``enqueue()``'s, transaction by transaction."""
    from django.db import connection
    from django.test import override_settings
    from django.test.utils import CaptureQueriesContext

    from bench.views import TABLE, order_create, orders_table_reset

    orders_table_reset()
    time.sleep(1.05)  # let backpressure's one-second cache expire: the first call reads it
    ids: list[str] = []
    with override_settings(**S1_SETTINGS), CaptureQueriesContext(connection) as ctx:
        _call_view(order_create, calls, queue, ids)
    transactions: list[list[str]] = []
    outside: list[str] = []
    current: list[str] | None = None
    for q in ctx.captured_queries:
        statement = q["sql"]
        if statement == "BEGIN":
            current = []
        elif statement == "COMMIT":
            transactions.append(current or [])
            current = None
        elif current is not None:
            current.append(statement)
        else:
            outside.append(statement)
    outbox = ("INSERT INTO tasks_outboxmessage", 'INSERT INTO "tasks_outboxmessage"')
    outbox_inserts = [sum(1 for st in tx if st.startswith(outbox)) for tx in transactions]
    others: dict[str, int] = {}
    for tx in transactions:
        for st in tx:
            if st.startswith((f"INSERT INTO {TABLE} ", *outbox)):
                continue
            label = st.split(" WHERE ")[0][:70]
            others[label] = others.get(label, 0) + 1
    ok = len(transactions) == calls and not outside and all(c == 1 for c in outbox_inserts) \
        and not any(label.split()[0] in ("INSERT", "UPDATE", "DELETE") for label in others)
    other_text = "; ".join(f"{count} × {label}" for label, count in others.items()) or "none"
    row = Row("S1", "statements per enqueue() inside the caller's transaction: INSERTs", "INSERTs",
              [sum(outbox_inserts) / max(1, calls)], goal="exactly one INSERT, inside the caller's transaction",
              higher_is_better=False,
              notes=f"{calls} views, one transaction each (BEGIN, INSERT {TABLE}, enqueue(), COMMIT); "
                    f"{sum(outbox_inserts)} INSERT INTO tasks_outboxmessage, each inside its view's transaction; "
                    f"enqueue()'s other statements over those calls: {other_text} (backpressure's outbox count, "
                    f"at most once a second with its broker LLENs); statements outside a transaction: {len(outside)}")
    row.met = ok
    return row


def s1(sizes: Sizes, repeat: int) -> list[Row]:
    """A view writes an order and starts its task in one ``transaction.atomic()``: ours with
    ``enqueue()`` (one outbox INSERT, published by a relay process running alongside), the
    baseline with ``transaction.on_commit(apply_async)``. Views/s of the views themselves; ours
    counts only once the relay has put every message in Redis (checked, its lag noted)."""
    from django.test import override_settings

    from bench.views import TABLE, order_create, order_create_on_commit, orders_table_reset

    n, queue = sizes.enqueue, S1_QUEUE
    client = redis()
    lags: list[float] = []

    def run(view: Callable[[Any], Any], count: int, relayed: bool) -> float:
        client.delete(queue)
        orders_table_reset()
        ids: list[str] = []
        with override_settings(**S1_SETTINGS):
            dt = _call_view(view, count, queue, ids)
        last_view = time.monotonic()
        if relayed:
            lags.append(wait_until(lambda: client.llen(queue) >= count, 120, 0.005, "S1 messages relayed")
                        - last_view)
            wait_until(lambda: _outbox_rows() == 0, 60, what="S1 outbox empty")
        in_broker = _broker_task_ids(queue)
        orders = int(sql(f"SELECT count(*) FROM {TABLE}")[0][0])
        if not (len(in_broker) == count == orders == len(set(ids)) and set(in_broker) == set(ids)):
            raise AssertionError(f"S1: {count} views, {orders} orders, {len(in_broker)} messages in Redis, "
                                 f"{len(set(in_broker))} distinct, equal to the views' task ids: "
                                 f"{set(in_broker) == set(ids)}")
        client.delete(queue)
        return count / dt

    _outbox_reset()
    with relay():
        run(order_create, min(n, 200), True)  # warm up: connections, producer, templates, the relay
        run(order_create_on_commit, min(n, 200), False)
        lags.clear()
        a, b = _alternate(repeat, lambda: run(order_create, n, True), lambda: run(order_create_on_commit, n, False))
        statements = _s1_statements(queue, min(n, 500))
        wait_until(lambda: _outbox_rows() == 0, 60, what="S1 outbox empty")
    client.delete(queue)
    rate = Row("S1", "enqueue from a view (order row + task in one transaction)", "views/s", a, b, goal="≥ 1.0×",
               notes=f"view function called with RequestFactory (no middleware), DEBUG off; ours enqueue() with "
                     f"backpressure on, an outbox_relay process running alongside; baseline "
                     f"on_commit(plain_noop.apply_async); every run checked: one order row per view, and (ours) "
                     f"Redis holding the {n:,} messages, each task id once, those the views answered, outbox "
                     f"empty: the relay got there {fmt(statistics.median(lags) * 1000)} ms (max "
                     f"{fmt(max(lags) * 1000)}) after the last view")
    rate.met = (rate.ratio or 0) >= 1.0
    return [rate, statements]


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
    from rest_framework.test import APIClient

    from dlq.models import ApiToken, DeadLetter

    if DeadLetter.objects.count() < 600:
        seed_dead_letters(1000)
    user = _admin_user()
    _, key = ApiToken.objects.create(user=user)  # django-rest-knox: the key is shown once
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
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


# --- S8: the outbox relay -------------------------------------------------------------------

S8_TASK, S8_QUEUE = "bench.platform_noop", "bench-s8"
S8_RATE = 500  # enqueues/s of the latency figure
S8_WARMUP = 20  # unmeasured messages before each latency run


def _outbox_seed(n: int) -> set[str]:
    """``n`` committed outbox rows in one statement, each what ``enqueue(platform_noop,
    args=[i], queue=S8_QUEUE)`` writes (checked against a real, rolled-back ``enqueue()``);
    returns their task ids."""
    from django.db import transaction

    from bench import tasks as bt
    from tasks.enqueue import enqueue

    columns = "task_name, queue, payload, headers, options, idempotency_key"
    with transaction.atomic():
        task_id = enqueue(bt.platform_noop, args=[7], queue=S8_QUEUE)
        real = sql(f"SELECT {columns} FROM tasks_outboxmessage WHERE task_id = %s", [task_id])
        transaction.set_rollback(True)
    generated = ("%s, %s, '[[' || i || '], {}]', '{}'::jsonb, '{}'::jsonb, ''")
    seeded = sql(f"SELECT {generated} FROM (SELECT 7 AS i) AS one", [S8_TASK, S8_QUEUE])
    if real != seeded:
        raise AssertionError(f"S8 seed differs from enqueue()'s row: {seeded} != {real}")
    sql(f"INSERT INTO tasks_outboxmessage (task_id, {columns}) SELECT gen_random_uuid()::text, {generated} "
        "FROM generate_series(0, %s - 1) AS i", [S8_TASK, S8_QUEUE, n])
    return {task_id for (task_id,) in sql("SELECT task_id FROM tasks_outboxmessage")}


def _relay_throughput(n: int, checks: list[dict[str, Any]]) -> float:
    """Commit ``n`` rows, then start one relay process; time from its start signal (first
    heartbeat) to the moment Redis holds all ``n`` messages."""
    client = redis()
    _outbox_reset()
    client.delete(S8_QUEUE)
    expected = _outbox_seed(n)
    with relay(wait_started=False) as process:
        t0 = process.started_at()
        wait_until(lambda: client.llen(S8_QUEUE) >= n, 600, 0.005, "S8 messages in Redis")
        t1 = time.time()
        wait_until(lambda: _outbox_rows() == 0, 60, 0.005, "S8 outbox empty")
        emptied = time.time()
    ids = _broker_task_ids(S8_QUEUE)
    client.delete(S8_QUEUE)
    check = {"n": n, "in_broker": len(ids), "distinct": len(set(ids)), "same_ids": set(ids) == expected,
             "empty_after_ms": (emptied - t1) * 1000, "seconds": t1 - t0}
    checks.append(check)
    if not (check["in_broker"] == check["distinct"] == n and check["same_ids"]):
        raise AssertionError(f"S8: messages not published exactly once: {check}")
    return n / (t1 - t0)


def _apply_async_loop(n: int) -> float:
    """The baseline: the same ``n`` messages with a plain ``apply_async`` loop on one producer."""
    from bench import tasks as bt
    from taskplatform.celery import app

    client = redis()
    client.delete(S8_QUEUE)
    with app.producer_or_acquire() as producer:
        t0 = time.perf_counter()
        for i in range(n):
            bt.platform_noop.apply_async([i], queue=S8_QUEUE, producer=producer)
        dt = time.perf_counter() - t0
    if client.llen(S8_QUEUE) != n:
        raise AssertionError(f"S8 baseline: {client.llen(S8_QUEUE)} messages in Redis, {n} sent")
    client.delete(S8_QUEUE)
    return n / dt


def _consume(queue: str, stop: threading.Event, arrivals: list[tuple[float, bytes]]) -> None:
    """Stamp each message as it appears in ``queue`` (``BRPOP``, a connection of its own)."""
    client = redis()
    while not stop.is_set():
        got = client.brpop([queue], timeout=1)
        if got is not None:
            arrivals.append((time.time(), got[1]))


def _commit_latency(seconds: float, outbox: bool, stats: list[dict[str, Any]]) -> float:
    """A producer paced at ``S8_RATE`` commits one task per transaction for ``seconds``: ours
    with ``enqueue()`` (a relay must be running), the baseline with ``on_commit(apply_async)``.
    The commit time is taken by an ``on_commit`` callback (right after COMMIT; on the baseline
    registered before the publish), the arrival by a ``BRPOP`` thread; returns the p99 in ms.
    ``S8_WARMUP`` messages go first, unmeasured (the relay's first batch opens its publisher)."""
    from django.db import transaction
    from django.test import override_settings

    from bench import tasks as bt
    from tasks.enqueue import enqueue

    client = redis()
    client.delete(S8_QUEUE)
    n = max(1, int(seconds * S8_RATE))
    commits: dict[str, float] = {}
    arrivals: list[tuple[float, bytes]] = []
    stop = threading.Event()

    def produce(count: int) -> float:
        t0 = time.perf_counter()
        for k in range(count):
            delay = t0 + k / S8_RATE - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            with transaction.atomic():
                if outbox:
                    task_id = enqueue(bt.platform_noop, args=[k], queue=S8_QUEUE)
                    transaction.on_commit(lambda t=task_id: commits.__setitem__(t, time.time()))
                else:
                    task_id = str(uuid.uuid4())
                    transaction.on_commit(lambda t=task_id: commits.__setitem__(t, time.time()))
                    transaction.on_commit(lambda t=task_id, i=k: bt.platform_noop.apply_async(
                        [i], queue=S8_QUEUE, task_id=t))
        return time.perf_counter() - t0

    consumer = threading.Thread(target=_consume, args=(S8_QUEUE, stop, arrivals), name="s8-consumer", daemon=True)
    consumer.start()
    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # the consumer thread gets the GIL within 0.5 ms, not 5 ms
    try:
        with override_settings(DEBUG=False):
            produce(S8_WARMUP)
            wait_until(lambda: len(arrivals) >= S8_WARMUP, 60, what="S8 warm-up messages consumed")
            commits.clear()
            arrivals.clear()
            produced = produce(n)
        wait_until(lambda: len(arrivals) >= n, 120, what="S8 latency messages consumed")
        time.sleep(0.05)  # a duplicate, if any, arrives with its batch
    finally:
        stop.set()
        consumer.join(timeout=5)
        sys.setswitchinterval(switch)
    got = [(at, json.loads(raw)["headers"]["id"]) for at, raw in arrivals]
    ids = [task_id for _, task_id in got]
    if not (len(ids) == len(set(ids)) == n and set(ids) == set(commits)):
        raise AssertionError(f"S8 latency: {n} committed, {len(ids)} consumed, {len(set(ids))} distinct")
    latencies = [(at - commits[task_id]) * 1000 for at, task_id in got]
    stats.append({"n": n, "rate": n / produced, "p50": percentile(latencies, 0.50),
                  "p99": percentile(latencies, 0.99), "max": max(latencies), "min": min(latencies)})
    return percentile(latencies, 0.99)


def s8(sizes: Sizes, repeat: int) -> list[Row]:
    """The relay: throughput from a full outbox to the broker, and latency from commit to broker."""
    n = sizes.relay
    checks: list[dict[str, Any]] = []
    _apply_async_loop(min(n, 200))  # warm up the producer
    a, b = _alternate(repeat, lambda: _relay_throughput(n, checks), lambda: _apply_async_loop(n))
    once = all(c["in_broker"] == c["distinct"] == c["n"] and c["same_ids"] for c in checks)
    throughput = Row(
        "S8", f"outbox relay: {n:,} committed messages to the broker, end to end", "messages/s", a, b,
        goal="≥ 10,000/s",
        notes=f"one outbox_relay process (batch {_relay_batch_size()}) started after the rows were committed, "
              f"timed from its first heartbeat to Redis holding all {n:,} (polled every 5 ms), subtracting "
              f"nothing; outbox empty {fmt(statistics.median(c['empty_after_ms'] for c in checks))} ms later; "
              f"{sum(c['in_broker'] for c in checks):,} messages counted in Redis, each task id exactly once and "
              f"equal to the outbox's: {once}; baseline: an apply_async loop of the same {n:,} messages "
              f"(platform_noop, one producer)")
    throughput.met = (throughput.ours_median or 0) >= 10_000 and once

    ours_stats: list[dict[str, Any]] = []
    base_stats: list[dict[str, Any]] = []

    def ours() -> float:
        _outbox_reset()
        with relay():
            return _commit_latency(sizes.latency_seconds, True, ours_stats)

    a, b = _alternate(repeat, ours, lambda: _commit_latency(sizes.latency_seconds, False, base_stats))
    per_run = ours_stats[0]["n"]
    latency = Row(
        "S8", f"commit → message in the broker at {S8_RATE} enqueues/s, p99", "ms", a, b, goal="p99 ≤ 50 ms",
        higher_is_better=False,
        notes=f"{per_run:,} enqueues per run after {S8_WARMUP} unmeasured, one per transaction, paced at "
              f"{S8_RATE}/s (achieved: ours {_spread_of(ours_stats, 'rate')}/s, baseline "
              f"{_spread_of(base_stats, 'rate')}/s), one relay process running; commit stamped by an on_commit "
              f"callback, arrival by a BRPOP thread on its own connection; ours p50 "
              f"{_spread_of(ours_stats, 'p50')} ms, max {_spread_of(ours_stats, 'max')} ms; baseline "
              f"on_commit(apply_async) p50 {_spread_of(base_stats, 'p50')} ms, max {_spread_of(base_stats, 'max')} "
              f"ms; every message consumed exactly once")
    # Below the pace, ours is not the figure asked for (a busy machine starves the producer).
    paced = all(st["rate"] >= 0.95 * S8_RATE for st in ours_stats)
    latency.met = (latency.ours_median or 1e9) <= 50 if paced else None
    if not paced:
        latency.notes += f"; NOT AT PACE: our producer fell below {0.95 * S8_RATE:.0f}/s, so no verdict"
    elif any(st["rate"] < 0.95 * S8_RATE for st in base_stats):
        latency.notes += f"; the baseline's producer fell below {0.95 * S8_RATE:.0f}/s"
    _outbox_reset()
    return [throughput, latency]


def _spread_of(stats: list[dict[str, Any]], key: str) -> str:
    return spread([s[key] for s in stats])


def _relay_batch_size() -> int:
    from django.conf import settings

    return int(settings.OUTBOX_RELAY_BATCH_SIZE)


SCENARIOS: dict[str, Callable[[Sizes, int], list[Row]]] = {
    "S1": s1, "S2": s2, "S3": s3, "S4": s4, "S5": s5, "S6": s6, "S7": s7, "S8": s8,
}
