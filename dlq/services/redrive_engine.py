"""The redrive engine: a job runs in batches, each batch one transaction that moves its rows
and writes their events in ONE statement (``move_batch``), then (requeue) publishes what it
moved after that commit. Exactly-once publishing rests on three things:

- a lease (``claim``): one runner at a time, even when Celery delivers the job's message twice;
- ``pending_publish``: the batch's ``[id, task_id]`` pairs, committed with the batch and cleared
  after its publish, so a runner that died between the two is resumed by the next one, which
  publishes only what ``already_published`` cannot find in the broker;
- the selection re-read per batch, and each row's status re-checked under its lock.

A run's own state (its lease token, its producer, the messages of the batch just moved) lives
in a ``RedriveRun``, never on the job's model instance."""
from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from django_celery_results.models import TaskResult

from dlq.models import (
    TERMINAL_JOB_STATUSES,
    BulkAction,
    DeadLetter,
    DeadLetterEvent,
    DeadLetterStatus,
    RedriveJob,
    RedriveJobStatus,
)
from dlq.roles import INTERNAL_TASK_PREFIXES
from dlq.services.redrive import ELIGIBLE, redrive_job_filters, redrive_selection
from dlq.services.requeue import RequeueSource, requeue_message
from tasks.backpressure import QueueFull, check_capacity
from tasks.broker.publish import OutgoingTask, Publisher, publish_context, publish_tasks
from tasks.counters import incr

if TYPE_CHECKING:
    from kombu.transport.redis import Channel as RedisChannel

logger = logging.getLogger("dlq")

#: A runner renews its lease with every batch; one silent for this long is taken over.
LEASE_SECONDS = 120
#: The status each bulk action moves its rows to.
TARGET_STATUS = {BulkAction.REQUEUE: DeadLetterStatus.REQUEUED, BulkAction.DISCARD: DeadLetterStatus.DISCARDED,
                 BulkAction.RESOLVE: DeadLetterStatus.RESOLVED}


@dataclass
class RedriveRun:
    """One runner's pass over a job. ``token`` is its lease (None: no lease is checked, for a
    caller that plays a runner step by step); ``publisher`` the producer every batch of a
    requeue publishes with; ``to_publish`` the messages of the batch just moved, handed from
    ``job_batch`` to ``publish_job_batch`` so that they are not read twice."""

    job: RedriveJob
    token: str | None = None
    publisher: Publisher | None = None
    to_publish: list[OutgoingTask] = field(default_factory=list)


def claim(*, job_id: int, token: str) -> bool:
    """Take (or renew) the job's lease: one runner at a time, even if Celery delivers the
    job's message twice (a redelivery after the visibility timeout)."""
    now = timezone.now()
    return bool(
        RedriveJob.objects.filter(pk=job_id).exclude(status__in=TERMINAL_JOB_STATUSES).filter(_lease_free(token, now))
        .update(runner=token, heartbeat_at=now)
    )


def _lease_free(token: str, now: datetime) -> Q:
    """The lease may be taken by ``token``: nobody holds it, ``token`` does, or its holder
    stopped renewing it ``LEASE_SECONDS`` ago."""
    stale = now - timedelta(seconds=LEASE_SECONDS)
    return Q(runner="") | Q(runner=token) | Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True)


def redrive_job_run(*, job_id: int, batch_size: int = 1000, time_budget: float = 60.0,
                    sleep: Callable[[float], None] | None = None) -> RedriveJob | None:
    """Run (or resume) a redrive job in batches until it is done, cancelled, or
    ``time_budget`` seconds have passed (then the lease is released and the caller
    continues it in a new task, so no task outlives its time limit). ``sleep`` (default
    ``time.sleep``) is how the run waits for its rate limit or for a full queue."""
    deadline = time.monotonic() + time_budget
    token = uuid.uuid4().hex
    if not claim(job_id=job_id, token=token):
        logger.info("redrive_job.not_claimed job_id=%s", job_id, extra={"job_id": job_id})
        return None
    job = RedriveJob.objects.get(pk=job_id)
    if job.status == RedriveJobStatus.PENDING:
        job.status, job.started_at = RedriveJobStatus.RUNNING, timezone.now()
        job.save(update_fields=["status", "started_at"])
    run = RedriveRun(job=job, token=token)
    if job.action != BulkAction.REQUEUE:
        _run_batches(run, batch_size=batch_size, deadline=deadline, sleep=sleep or time.sleep)
    else:
        # One producer and Redis connection for every batch of this run.
        with publish_context() as publisher:
            run.publisher = publisher
            try:
                _run_batches(run, batch_size=batch_size, deadline=deadline, sleep=sleep or time.sleep)
            finally:
                run.publisher = None
    job.refresh_from_db()
    return job


def _run_batches(run: RedriveRun, *, batch_size: int, deadline: float, sleep: Callable[[float], None]) -> None:
    job, token = run.job, cast(str, run.token)
    if job.pending_publish:
        publish_job_batch(run, resume=True)
    per_batch = batch_size if not job.rate_limit else max(1, min(batch_size, int(job.rate_limit)))
    while True:
        started = time.monotonic()
        if job.action == BulkAction.REQUEUE and not _queues_have_room(job, per_batch):
            # Backpressure: pause rather than push a queue over its high-water mark (keeping the lease).
            if not claim(job_id=job.pk, token=token):
                break
            if time.monotonic() > deadline:
                _release(job, token)
                break
            sleep(1.0)
            continue
        # The lease is checked and renewed under the job's row lock in job_batch: cancelled,
        # finished elsewhere, or the lease lost all end the run there.
        processed = job_batch(run, per_batch)
        if processed is None:
            break
        if job.action == BulkAction.REQUEUE:
            publish_job_batch(run)
        if job.rate_limit:
            pause = processed / job.rate_limit - (time.monotonic() - started)
            if pause > 0:
                sleep(pause)
        if time.monotonic() > deadline:
            _release(job, token)
            break


def _release(job: RedriveJob, token: str) -> None:
    """Out of time: give the lease back so that the next task continues at once."""
    RedriveJob.objects.filter(pk=job.pk, runner=token).update(runner="", heartbeat_at=None)


def _queues_have_room(job: RedriveJob, size: int) -> bool:
    if settings.QUEUE_HIGH_WATER_MARK <= 0 and all(int(m) <= 0 for m in settings.QUEUE_HIGH_WATER_MARKS.values()):
        return True  # backpressure is off for every queue: no need to read the next batch's queues
    if job.queue:
        queues = {job.queue}
    else:
        nxt = redrive_selection(job.action, job.ids, redrive_job_filters(job)).filter(pk__gt=job.last_id,
                                                                                      pk__lte=job.max_id)
        queues = set(nxt.order_by("pk").values_list("queue", flat=True)[:size])
    try:
        for queue in queues:
            check_capacity(queue or settings.CELERY_TASK_DEFAULT_QUEUE, incoming=size, fresh=True)
    except QueueFull as exc:
        logger.info("redrive_job.paused job_id=%s %s", job.pk, exc, extra={"job_id": job.pk})
        return False
    return True


@transaction.atomic
def job_batch(run: RedriveRun, size: int) -> int | None:
    """Move the next batch; returns how many ids it covered, or None when the job is over
    (or, with ``run.token``, when this runner no longer holds the lease: ``claim``'s rule,
    checked under the job's row lock and renewed in the same transaction). A requeue's
    messages wait in ``run.to_publish`` (and their ids in ``pending_publish``) for
    ``publish_job_batch``, after this commit."""
    job, token = run.job, run.token
    jobs = RedriveJob.objects.select_for_update().filter(pk=job.pk)
    if token is not None:
        jobs = jobs.filter(_lease_free(token, timezone.now()))
    locked = jobs.first()
    if locked is None or locked.status != RedriveJobStatus.RUNNING:
        return None  # over, or (with token) another runner took the job over
    if token is not None:
        locked.runner = token
    selection = redrive_selection(job.action, job.ids, redrive_job_filters(job))
    ids = list(selection.filter(pk__gt=locked.last_id, pk__lte=locked.max_id).order_by("pk")
               .values_list("pk", flat=True)[:size])
    if not ids:
        locked.status, locked.finished_at = RedriveJobStatus.FINISHED, timezone.now()
        locked.runner = ""
        locked.save(update_fields=["status", "finished_at", "runner"])
        logger.info("redrive_job.finished job_id=%s done=%s failed=%s", job.pk, locked.done, locked.failed,
                    extra={"job_id": job.pk})
        job.status = locked.status
        return None
    action = BulkAction(job.action)
    moved = move_batch(job, ids, list(ELIGIBLE[action]), TARGET_STATUS[action])
    pending: list[list[Any]] = []
    if action == BulkAction.REQUEUE:
        pending = [[pk, task_id] for pk, task_id, *_ in moved]
        run.to_publish = [requeue_message(_source_of(columns), task_id, job.queue or queue)
                          for pk, task_id, queue, *columns in moved]
    locked.last_id = ids[-1]
    locked.done += len(moved)
    locked.failed += len(ids) - len(moved)
    locked.pending_publish = pending
    locked.heartbeat_at = timezone.now()
    locked.save(update_fields=["last_id", "done", "failed", "pending_publish", "heartbeat_at", "runner"])
    job.last_id, job.pending_publish = locked.last_id, pending
    return len(ids)


#: What ``move_batch`` returns after (id, new task id, queue) for a requeue, in
#: ``RequeueSource``'s order; JSON columns as text.
_SOURCE_COLUMNS = ("id", "task_name", "args::text", "kwargs::text", "raw_arguments", "headers::text", "options::text",
                   "root_id", "parent_id", "group_id")


def _source_of(columns: list[Any]) -> RequeueSource:
    pk, name, args, kwargs, raw, headers, options, root_id, parent_id, group_id = columns
    return RequeueSource(pk, name, json.loads(args) if args is not None else None,
                         json.loads(kwargs) if kwargs is not None else None, raw, json.loads(headers),
                         json.loads(options), root_id, parent_id, group_id)


def move_batch(job: RedriveJob, ids: list[int], eligible: list[str], to_status: str) -> list[tuple[Any, ...]]:
    """Move the rows of ``ids`` still in an eligible status to ``to_status`` and write their
    audit events: ONE statement, an ``UPDATE`` of the rows locked by ``SELECT ... WHERE id =
    ANY(...) AND status = ANY(...) ORDER BY id FOR UPDATE``, ``RETURNING`` the rows that feed
    the events' ``INSERT`` (a data-modifying CTE). A row changed concurrently (a single
    requeue or discard) is re-checked after its lock wait and skipped. Requeues get their new
    task id from ``gen_random_uuid()``; a chord member is not requeued in bulk (it must rejoin
    its chord, ``dead_letter_requeue``) and counts as skipped. Returns, per moved row in id
    order, ``(id, new_task_id, queue, *_SOURCE_COLUMNS)`` for a requeue, ``(id,)`` otherwise."""
    table, events = DeadLetter._meta.db_table, DeadLetterEvent._meta.db_table
    requeue = job.action == BulkAction.REQUEUE
    # The rows are locked in id order (the ordered FOR UPDATE subquery), as every writer of
    # several dead letters does, so two bulk jobs over overlapping rows cannot deadlock
    # whatever plan the UPDATE gets; the lock wait re-checks the status.
    # Not requeued in bulk: a chord member (it must rejoin its chord, one by one) and a task
    # nobody runs by name (``dlq.roles.INTERNAL_TASK_PREFIXES``).
    internal = "".join(f" AND task_name NOT LIKE '{prefix}%%'" for prefix in INTERNAL_TASK_PREFIXES)
    chords = f" AND NOT (options ? 'chord' AND group_id <> ''){internal}" if requeue else ""
    source = (f" FROM (SELECT id, status FROM {table} WHERE id = ANY(%(ids)s) AND status = ANY(%(eligible)s){chords} "
              "ORDER BY id FOR UPDATE) AS old")
    before, where = "m.before", "d.id = old.id"
    set_requeue = (", requeue_count = d.requeue_count + 1, last_requeued_task_id = gen_random_uuid()::text"
                   if requeue else "")
    diff = ("jsonb_build_object('status', jsonb_build_array(" + before + ", %(to)s::text), "
            "'job', jsonb_build_array(NULL, %(job)s::bigint))")
    if requeue:
        diff += (" || jsonb_build_object('requeue_count', jsonb_build_array(m.requeue_count - 1, m.requeue_count), "
                 "'task_id', jsonb_build_array(NULL, m.last_requeued_task_id))"
                 " || CASE WHEN %(queue)s <> '' AND %(queue)s <> m.queue "
                 "THEN jsonb_build_object('queue', jsonb_build_array(m.queue, %(queue)s::text)) ELSE '{}'::jsonb END")
    # A requeue reads what it publishes in the same statement; the other actions only count.
    returned = "".join(f"d.{c.split('::')[0]}, " for c in _SOURCE_COLUMNS if c != "id") if requeue else ""
    selected = f"id, last_requeued_task_id, queue, {', '.join(_SOURCE_COLUMNS)}" if requeue else "id"
    query = f"""
        WITH moved AS (
            UPDATE {table} AS d SET status = %(to)s, version = d.version + 1, updated_at = now(){set_requeue}
            {source} WHERE {where}
            RETURNING d.id, d.requeue_count, d.last_requeued_task_id, d.queue, {returned} old.status AS before
        ), events AS (
            INSERT INTO {events} (dead_letter_id, actor, action, reason, diff, created_at)
            SELECT m.id, %(actor)s, %(action)s, %(reason)s, {diff}, now() FROM moved AS m
        )
        SELECT {selected} FROM moved ORDER BY id
    """
    params: dict[str, int | str | list[int] | list[str]] = {
        "ids": ids, "eligible": eligible, "to": to_status, "job": job.pk, "queue": job.queue or "",
        "actor": job.actor, "action": job.action, "reason": job.reason}
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        rows: list[tuple[Any, ...]] = cursor.fetchall()
        return rows


def publish_job_batch(run: RedriveRun, *, resume: bool = False) -> None:
    """Publish the batch recorded in ``pending_publish``, then clear it. On ``resume`` (a
    previous runner crashed between commit and clear), skip what already reached the broker
    and re-read the rows; otherwise publish what ``job_batch`` just moved (no second read)."""
    job = run.job
    items = run.to_publish
    if resume or not items:
        pending = [(int(pk), str(tid)) for pk, tid in job.pending_publish]
        if resume:
            published = already_published([tid for _, tid in pending])
            pending = [(pk, tid) for pk, tid in pending if tid not in published]
        rows = {r.pk: r for r in DeadLetter.objects.defer("traceback", "raw_body", "attempts", "search")
                .filter(pk__in=[pk for pk, _ in pending])}
        items = [requeue_message(RequeueSource.of(rows[pk]), tid, job.queue or rows[pk].queue)
                 for pk, tid in pending
                 if pk in rows and rows[pk].status == DeadLetterStatus.REQUEUED and rows[pk].last_requeued_task_id == tid]
    run.to_publish = []
    publish_tasks(items, context=run.publisher)
    RedriveJob.objects.filter(pk=job.pk).update(pending_publish=[])
    incr("requeued", "bulk", amount=len(items))
    job.pending_publish = []


_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def already_published(task_ids: list[str]) -> set[str]:
    """Which of ``task_ids`` reached the broker or a worker: a stored result, or (Redis
    broker) a message waiting in a queue or unacked. Used only when resuming a crashed job
    (and by the reconciler of stuck requeues).

    Each message is scanned once for the UUIDs it holds and those are looked up in the
    wanted set (the ids checked here are all UUIDs: ``gen_random_uuid()``/``uuid4``). The
    queues are read whole into memory (a known cost of this rare path)."""
    wanted = set(task_ids)
    found = set(TaskResult.objects.filter(task_id__in=wanted).values_list("task_id", flat=True))
    if not current_app.conf.broker_url.startswith("redis"):
        return found
    with current_app.connection_for_write() as conn:
        client = cast("RedisChannel", conn.default_channel).client
        keys = [k for k in client.scan_iter(count=1000) if client.type(k) in (b"list", "list")]
        blobs = [m for k in keys for m in client.lrange(k, 0, -1)]
        blobs += list(client.hvals("unacked")) if client.exists("unacked") else []
    wanted_bytes = {t.encode(): t for t in wanted - found if _UUID.fullmatch(t.encode())}
    non_uuid = [t for t in wanted - found if t.encode() not in wanted_bytes]
    for blob in blobs:
        data = blob if isinstance(blob, bytes) else str(blob).encode()
        for match in _UUID.findall(data):
            if match in wanted_bytes:
                found.add(wanted_bytes[match])
        for task_id in non_uuid:  # not expected; kept exact for any caller passing other ids
            if task_id.encode() in data:
                found.add(task_id)
    return found
