"""The chaos harness' tasks, registered only in chaos workers (``celery worker -I tests.chaos.tasks``).

One task, ``chaos.work(key, kind, idempotent, param)``, whose behaviour is chosen by ``kind``:

| kind | behaviour |
| --- | --- |
| ``ok`` | a little work, then its side effect |
| ``retry`` | a transient error on its first ``param`` attempts (counted per key in Redis), then ``ok`` |
| ``fail`` | a non-retryable error at once |
| ``crash`` | SIGKILLs its own pool process (a poison pill, dead-lettered after the cap) |
| ``slow`` | sleeps ``param`` seconds (longer than the visibility timeout in F10), then ``ok`` |
| ``stubborn`` | ignores its soft time limit; only the hard limit (per message) stops it |

The side effect is a row in ``chaos_effect`` (created by the harness with raw SQL). An
idempotent task writes it through ``tasks.idempotency.idempotent`` (the product's helper: an
effect key committed in the same transaction): a second run of the same key writes nothing. A task declared not
idempotent inserts blindly, so the harness sees every duplicate execution.

Negative controls (``CHAOS_CONTROL``, read only here, in the worker) switch off one
protection so that the harness can show it reports the loss:

- ``no_capture``: ``dead_letter = False`` (failures are not recorded);
- ``early_ack``: ``acks_late = False`` (the message is acked before the task runs);
- ``no_spool``: a dead letter that cannot be written is dropped instead of spooled;
- ``no_consumer_capture``: unknown and undecodable messages are dropped by Celery unrecorded;
- ``not_idempotent``: the idempotency key is ignored (every run writes its effect).

With ``CHAOS_COUNT_RUNS=1`` (F15-F17) every run of ``chaos.work`` first records itself in
``chaos_run`` (autocommit, before anything else): a key with two runs was delivered twice,
e.g. a batch that a killed relay published and another relay published again (F17), whether
or not the idempotency key then kept the effect single.

(F15-F16's control ``on_commit_publish`` is read by the chaos view, ``tests/chaos/web.py``;
F17's ``delete_first`` by the relay wrapper, ``tests/chaos/relay.py``.)

(F14's control, ``no_leader_lock``, is not read here: the harness starts its two beats with
django-celery-beat's plain ``DatabaseScheduler``.)
"""
from __future__ import annotations

import logging
import os
import random
import signal
import time
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from tasks.base import PlatformTask

logger = logging.getLogger("chaos")

CONTROL = os.environ.get("CHAOS_CONTROL", "")
BUSY_KEY = "chaos:busy"
MARK_BUSY = os.environ.get("CHAOS_MARK_BUSY") == "1"
COUNT_RUNS = os.environ.get("CHAOS_COUNT_RUNS") == "1"
WORK_MIN = float(os.environ.get("CHAOS_WORK_MIN", "0.02"))
WORK_MAX = float(os.environ.get("CHAOS_WORK_MAX", "0.2"))
# A task that keeps crashing stops crashing after this many deaths and fails instead, so that
# a control run without poison-pill handling still ends (the product's cap is 3).
CRASH_LIMIT = 8


class Transient(Exception):
    """Retryable: a dependency that was briefly unavailable."""


class Permanent(Exception):
    """Non-retryable: the input can never succeed."""


class ChaosTask(PlatformTask):  # type: ignore[misc]
    dead_letter = CONTROL != "no_capture"
    acks_late = CONTROL != "early_ack"


if CONTROL == "no_spool":
    import dlq.spool

    def _drop(kind: str, payload: dict[str, Any]) -> str:
        logger.error("chaos.control no_spool: dropping a %s that could not be written", kind)
        return "dropped"

    dlq.spool.push = _drop

if CONTROL == "no_consumer_capture":
    import dlq.consumer

    def _no_capture(self: Any, message: Any, exc: BaseException | None, reason: str) -> bool:
        return True  # pretend it was recorded: Celery then drops the message

    dlq.consumer.CapturingConsumer._capture = _no_capture


def _redis_incr(key: str) -> int:
    from tasks.redis import redis_client

    client = redis_client()
    value = int(client.incr(key))
    client.expire(key, 86400)
    return value


def _mark_busy(command: str) -> None:
    if not MARK_BUSY:
        return
    from redis.exceptions import RedisError

    from tasks.redis import redis_client

    try:
        getattr(redis_client(), command)(BUSY_KEY, os.getpid())
    except RedisError:
        pass


def record_effect(key: str, idempotent: bool) -> bool:
    """The side effect. Idempotent tasks use the product's ``tasks.idempotency.idempotent``
    helper (effect key and effect in one transaction); returns False when the key was done."""
    from django.db import connection, transaction

    from tasks.idempotency import idempotent as effect_once

    def write() -> None:
        with connection.cursor() as cur:
            cur.execute("INSERT INTO chaos_effect (key, idempotent, pid) VALUES (%s, %s, %s)",
                        [key, idempotent, os.getpid()])

    if idempotent and CONTROL != "not_idempotent":
        with effect_once(f"chaos:{key}") as first_time:
            if first_time:
                write()
        return first_time
    with transaction.atomic():
        write()
    return True


def _record_run(key: str) -> None:
    """One row per execution (``CHAOS_COUNT_RUNS``): how often the key was delivered."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("INSERT INTO chaos_run (key, pid) VALUES (%s, %s)", [key, os.getpid()])


@shared_task(base=ChaosTask, name="chaos.work", bind=True, max_retries=3, retry_backoff=1, retry_backoff_max=2,
             non_retryable=(Permanent,), ignore_result=True)
def work(self: ChaosTask, key: str, kind: str, idempotent: bool = True, param: float = 0) -> str:
    if COUNT_RUNS:
        _record_run(key)
    if kind == "crash":
        if _redis_incr(f"chaos:crash:{key}") <= CRASH_LIMIT:
            os.kill(os.getpid(), signal.SIGKILL)
        raise Permanent(f"{key} crashed {CRASH_LIMIT} times")
    if kind == "fail":
        raise Permanent(f"{key} can never succeed")
    if kind == "retry":
        attempt = _redis_incr(f"chaos:attempt:{key}")
        if attempt <= param:
            raise Transient(f"{key} attempt {attempt} fails on purpose")
    if kind == "slow":
        time.sleep(param)
    if kind == "stubborn":
        deadline = time.monotonic() + param
        while time.monotonic() < deadline:
            try:
                time.sleep(0.1)
            except SoftTimeLimitExceeded:
                continue
    # F1 only (CHAOS_MARK_BUSY): lets the fault aim at a process whose task has not written its
    # effect yet: a kill there is what early acks lose (a kill after the effect proves nothing
    # for the control). Instrumentation must not decide the task's outcome, so Redis errors
    # are ignored here; elsewhere it is off (in F8 a marker blocked on the frozen Redis ran into
    # the soft time limit after the effect and turned a done task into a dead letter).
    _mark_busy("sadd")
    try:
        time.sleep(random.uniform(WORK_MIN, WORK_MAX))
        record_effect(key, bool(idempotent))
    finally:
        _mark_busy("srem")
    # Work after the side effect: a kill here redelivers a task whose effect is already done.
    time.sleep(random.uniform(WORK_MIN, WORK_MAX) / 2)
    return key


@shared_task(base=ChaosTask, name="chaos.tick", bind=True, ignore_result=True)
def tick(self: ChaosTask, name: str) -> None:
    """Scheduled by beat (F14): every run is recorded with the scheduled time its message
    carried (``dlq_scheduled_at``, set by ``dlq.beat.LeaderDatabaseScheduler``; None from a
    plain scheduler). Two runs of one scheduled time are a duplicate."""
    from django.db import connection

    scheduled_at = getattr(self.request, "dlq_scheduled_at", None)
    with connection.cursor() as cur:
        cur.execute("INSERT INTO chaos_tick (name, pid, scheduled_at) VALUES (%s, %s, %s)",
                    [name, os.getpid(), None if scheduled_at is None else int(scheduled_at)])
