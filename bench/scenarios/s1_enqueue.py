"""S1, enqueue from a view: the outbox (``enqueue()`` and a relay process) against
``transaction.on_commit(apply_async)``, and the statements ``enqueue()`` adds to the caller's
transaction."""
from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from django.db import connection
from django.test import RequestFactory, override_settings
from django.test.utils import CaptureQueriesContext

from bench.harness import Row, broker_task_ids, fmt, redis, sql, wait_until
from bench.relay import relay
from bench.scenarios.common import Sizes, alternate, outbox_reset, outbox_rows

S1_QUEUE = "bench-s1"
# Backpressure on, as in production, with a mark no S1 run reaches: enqueue() pays its cached
# read (broker LLENs and an outbox count, at most once a second) and is never refused.
S1_SETTINGS = {"DEBUG": False, "QUEUE_HIGH_WATER_MARK": 1_000_000_000}


def _call_view(view: Callable[[Any], Any], n: int, queue: str, task_ids: list[str]) -> float:
    """``n`` POSTs built with ``RequestFactory`` and passed to ``view`` (the view function
    alone: no middleware, no URL resolution); returns the seconds they took."""
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
            wait_until(lambda: outbox_rows() == 0, 60, what="S1 outbox empty")
        in_broker = broker_task_ids(queue)
        orders = int(sql(f"SELECT count(*) FROM {TABLE}")[0][0])
        if not (len(in_broker) == count == orders == len(set(ids)) and set(in_broker) == set(ids)):
            raise AssertionError(f"S1: {count} views, {orders} orders, {len(in_broker)} messages in Redis, "
                                 f"{len(set(in_broker))} distinct, equal to the views' task ids: "
                                 f"{set(in_broker) == set(ids)}")
        client.delete(queue)
        return count / dt

    outbox_reset()
    with relay():
        run(order_create, min(n, 200), True)  # warm up: connections, producer, templates, the relay
        run(order_create_on_commit, min(n, 200), False)
        lags.clear()
        a, b = alternate(repeat, lambda: run(order_create, n, True), lambda: run(order_create_on_commit, n, False))
        statements = _s1_statements(queue, min(n, 500))
        wait_until(lambda: outbox_rows() == 0, 60, what="S1 outbox empty")
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
