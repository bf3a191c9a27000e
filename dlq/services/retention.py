"""Housekeeping: retention of every table that grows, and the reconcilers that finish what a
crash interrupted (requeues whose message never reached the broker, redrive jobs whose runner
vanished or whose task keeps failing). Run by beat (``dlq.tasks``)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from celery import current_app
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from dlq.models import (
    TERMINAL_JOB_STATUSES,
    Alert,
    AlertStatus,
    ApiToken,
    DeadLetter,
    DeadLetterEvent,
    DeadLetterStatus,
    RedriveJob,
    RedriveJobStatus,
)
from dlq.services.audit import SYSTEM
from dlq.services.dead_letters import dead_letter_event, dead_letter_lock
from dlq.services.redrive import redrive_job_dispatch
from dlq.services.redrive_engine import LEASE_SECONDS, already_published
from tasks.models import EffectKey, IdempotencyKey

logger = logging.getLogger("dlq")

#: Only these are ever pruned: a ``dead`` or ``requeued`` row still waits for someone.
PRUNABLE = (DeadLetterStatus.RESOLVED, DeadLetterStatus.DISCARDED)
#: How many stuck requeues one reconciler pass looks at.
STUCK_BATCH = 1000


@dataclass
class Pruned:
    count: int
    more: bool


def dead_letters_prune(*, older_than_days: int, batch_size: int = 1000, time_budget: float = 240.0) -> Pruned:
    """Delete resolved and discarded dead letters (and their events) not changed for
    ``older_than_days``, in batches by id, each batch its own short transaction, for at most
    ``time_budget`` seconds (``more`` says whether rows are left). Rows in ``dead`` or
    ``requeued`` are never pruned."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    deadline = time.monotonic() + time_budget
    deleted, more = 0, False
    while True:
        ids = list(DeadLetter.objects.filter(status__in=PRUNABLE, updated_at__lt=cutoff)
                   .order_by("id").values_list("id", flat=True)[:batch_size])
        if not ids:
            break
        with transaction.atomic():
            # Lock and re-check: a row changed since the read (requeued again) stays, with its history.
            doomed = list(DeadLetter.objects.select_for_update(of=("self",))
                          .filter(pk__in=ids, status__in=PRUNABLE, updated_at__lt=cutoff).values_list("pk", flat=True))
            DeadLetterEvent.objects.filter(dead_letter_id__in=doomed).delete()
            DeadLetter.objects.filter(pk__in=doomed).delete()
        deleted += len(doomed)
        if time.monotonic() > deadline:
            more = True
            break
    if deleted:
        logger.info("dead_letter.pruned count=%s older_than_days=%s", deleted, older_than_days,
                    extra={"count": deleted})
    return Pruned(count=deleted, more=more)


def housekeeping_prune_other_tables(*, older_than_days: int) -> dict[str, int]:
    """Retention of the other tables that grow: resolved alerts, finished jobs, expired
    idempotency keys, old effect keys, expired API tokens."""
    now = timezone.now()
    cutoff = now - timedelta(days=older_than_days)
    alerts, _ = Alert.objects.filter(status=AlertStatus.RESOLVED, resolved_at__lt=cutoff).delete()
    jobs, _ = RedriveJob.objects.filter(status__in=TERMINAL_JOB_STATUSES, finished_at__lt=cutoff).delete()
    keys, _ = IdempotencyKey.objects.filter(expires_at__lt=now).delete()
    # Effect keys must outlive any later run of their task (requeues of dead letters kept
    # for DLQ_RETENTION_DAYS): keep them for the same ``older_than_days`` (90 by default).
    effects, _ = EffectKey.objects.filter(created_at__lt=cutoff).delete()
    tokens, _ = ApiToken.objects.filter(expiry__lt=now).delete()  # expired: they no longer authenticate
    return {"alerts": alerts, "redrive_jobs": jobs, "idempotency_keys": keys, "effect_keys": effects,
            "expired_tokens": tokens}


def dead_letters_reconcile_stuck_requeues(*, older_than_minutes: int) -> int:
    """Requeued rows whose message reached neither the broker nor a worker (a publish lost
    between commit and send): back to ``dead`` with an event, so they can be requeued again.
    Only with a Redis broker, where the queues can be inspected; elsewhere they are logged."""
    cutoff = timezone.now() - timedelta(minutes=older_than_minutes)
    stuck = list(DeadLetter.objects.filter(status=DeadLetterStatus.REQUEUED, updated_at__lt=cutoff)
                 .values_list("pk", "last_requeued_task_id")[:STUCK_BATCH])
    if not stuck:
        return 0
    if not current_app.conf.broker_url.startswith("redis"):
        logger.warning("dead_letter.requeued_without_result count=%s (cannot inspect this broker)", len(stuck))
        return 0
    seen = already_published([tid for _, tid in stuck])
    returned = 0
    for pk, task_id in stuck:
        if task_id in seen:
            continue
        with transaction.atomic():
            row = dead_letter_lock(pk)
            if row.status == DeadLetterStatus.REQUEUED and row.last_requeued_task_id == task_id:
                row.status = DeadLetterStatus.DEAD
                row.version += 1
                row.save(update_fields=["status", "version", "updated_at"])
                dead_letter_event(row, actor=SYSTEM, action="requeue_lost",
                                  reason=f"message {task_id} never reached a worker; back to dead",
                                  diff={"status": ["requeued", "dead"]})
                returned += 1
    return returned


def redrive_jobs_resume_stalled() -> int:
    """Restart jobs whose runner vanished (no heartbeat) or that never started."""
    stale = timezone.now() - timedelta(seconds=LEASE_SECONDS * 2)
    ids = list(RedriveJob.objects.filter(
        Q(status=RedriveJobStatus.RUNNING, heartbeat_at__lt=stale)
        | Q(status=RedriveJobStatus.RUNNING, heartbeat_at__isnull=True, started_at__lt=stale)
        | Q(status=RedriveJobStatus.PENDING, created_at__lt=stale)
    ).values_list("pk", flat=True))
    for job_id in ids:
        redrive_job_dispatch(job_id=job_id)
    return len(ids)


def redrive_job_fail(*, job_id: int, error: str) -> None:
    """The job's task gave up (its retries are spent): the job ends ``failed`` (an alert opens)."""
    RedriveJob.objects.filter(pk=job_id).exclude(status__in=TERMINAL_JOB_STATUSES).update(
        status=RedriveJobStatus.FAILED, error=error[:2000], finished_at=timezone.now(), runner="")
    logger.error("redrive_job.failed job_id=%s error=%s", job_id, error, extra={"job_id": job_id})
