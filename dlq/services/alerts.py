"""Alerts: the DLQ watches itself.

``alerts_check()`` runs every minute from beat. Each condition has a key; while it holds
there is exactly one open ``Alert`` for that key (a partial unique index), notified once
when it opens and once when it clears, never every minute. Conditions:

- ``dlq_size``: more than ``DLQ_ALERT_THRESHOLD`` dead letters in status ``dead``;
- ``growth_rate``: more than ``DLQ_ALERT_GROWTH_THRESHOLD`` new dead letters in the last
  ``DLQ_ALERT_GROWTH_WINDOW_MINUTES`` minutes;
- ``new_group:<fingerprint>``: a failure group whose first dead letter is in the last
  ``DLQ_ALERT_NEW_GROUP_WINDOW_MINUTES`` minutes; it clears when the group has no dead rows;
- ``redrive_job_failed:<id>``: a redrive job that failed; it clears after a day;
- ``spool_quarantine``: spooled operations Postgres refused for their content sit in the
  quarantine (``QuarantinedEntry``) waiting for a person; it clears when they are retried or
  deleted;
- ``outbox_stalled``: the oldest message ``enqueue()`` committed has waited in the outbox
  longer than ``OUTBOX_ALERT_AGE_SECONDS`` (no relay running, or the broker unreachable);
  it clears once the outbox drains.

Notifications go to the log always, to ``DLQ_ALERT_WEBHOOK_URL`` (JSON POST, retried with
backoff, then again at the next check until ``MAX_NOTIFY_ATTEMPTS``), and by Django mail to
``DLQ_ALERT_EMAILS`` when ``EMAIL_HOST`` is set.
"""
from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

from dlq.masking import mask, mask_text
from dlq.models import (
    Alert,
    AlertKind,
    AlertStatus,
    DeadLetter,
    DeadLetterStatus,
    QuarantinedEntry,
    RedriveJob,
    RedriveJobStatus,
)
from tasks.outbox import outbox_stats

logger = logging.getLogger("dlq.alerts")

MAX_NOTIFY_ATTEMPTS = 5
WEBHOOK_RETRIES = 3
JOB_ALERT_HOURS = 24


def _conditions(now: datetime) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """What holds now: key → (kind, message, details)."""
    found: dict[str, tuple[str, str, dict[str, Any]]] = {}
    dead = DeadLetter.objects.filter(status=DeadLetterStatus.DEAD).count()
    if dead > settings.DLQ_ALERT_THRESHOLD:
        found["dlq_size"] = (AlertKind.DLQ_SIZE, f"{dead} dead letters wait for triage (threshold {settings.DLQ_ALERT_THRESHOLD})",
                             {"dead": dead, "threshold": settings.DLQ_ALERT_THRESHOLD})
    window = settings.DLQ_ALERT_GROWTH_WINDOW_MINUTES
    recent = DeadLetter.objects.filter(last_failed_at__gte=now - timedelta(minutes=window)).count()
    if recent > settings.DLQ_ALERT_GROWTH_THRESHOLD:
        found["growth_rate"] = (AlertKind.GROWTH_RATE,
                                f"{recent} dead letters in the last {window} minutes (threshold {settings.DLQ_ALERT_GROWTH_THRESHOLD})",
                                {"recent": recent, "window_minutes": window, "threshold": settings.DLQ_ALERT_GROWTH_THRESHOLD})
    cutoff = now - timedelta(minutes=settings.DLQ_ALERT_NEW_GROUP_WINDOW_MINUTES)
    recent_groups = dict(
        DeadLetter.objects.filter(last_failed_at__gte=cutoff, status=DeadLetterStatus.DEAD)
        .values_list("fingerprint").annotate(n=Count("id")).order_by()[:500]
    )
    older = set(DeadLetter.objects.filter(fingerprint__in=list(recent_groups), first_failed_at__lt=cutoff)
                .values_list("fingerprint", flat=True).distinct())
    for fp in set(recent_groups) - older:
        sample = DeadLetter.objects.filter(fingerprint=fp).only("task_name", "exception_type", "exception_message").first()
        if sample is not None:
            found[f"new_group:{fp}"] = (
                AlertKind.NEW_GROUP, f"new failure: {sample.task_name} {sample.exception_type}: {sample.exception_message[:200]}",
                {"fingerprint": fp, "task_name": sample.task_name, "count": recent_groups[fp]})
    # A new-group alert stays open while its group still has dead rows.
    for alert in Alert.objects.filter(status=AlertStatus.OPEN, kind=AlertKind.NEW_GROUP).exclude(key__in=list(found)):
        fp = alert.key.split(":", 1)[1]
        if DeadLetter.objects.filter(fingerprint=fp, status=DeadLetterStatus.DEAD).exists():
            found[alert.key] = (alert.kind, alert.message, alert.details)
    for job in RedriveJob.objects.filter(status=RedriveJobStatus.FAILED,
                                         finished_at__gte=now - timedelta(hours=JOB_ALERT_HOURS)):
        found[f"redrive_job_failed:{job.pk}"] = (
            AlertKind.REDRIVE_JOB_FAILED, f"redrive job #{job.pk} ({job.action}, {job.done}/{job.total}) failed: {job.error[:300]}",
            {"job_id": job.pk, "done": job.done, "total": job.total})
    quarantined = QuarantinedEntry.objects.count()
    if quarantined:
        found["spool_quarantine"] = (
            AlertKind.SPOOL_QUARANTINE,
            f"{quarantined} spool entries were refused by Postgres for their content and wait in the quarantine "
            "(admin: Quarantined spool entries): look at them, retry after a fix, or delete them",
            {"entries": quarantined})
    waiting = outbox_stats()
    if waiting.rows and waiting.oldest_age_seconds > settings.OUTBOX_ALERT_AGE_SECONDS:
        found["outbox_stalled"] = (
            AlertKind.OUTBOX_STALLED,
            f"{waiting.rows} enqueued messages wait in the outbox, the oldest for {waiting.oldest_age_seconds:.0f}s "
            f"(threshold {settings.OUTBOX_ALERT_AGE_SECONDS}s): is an outbox relay running, and the broker reachable?",
            {"rows": waiting.rows, "oldest_age_seconds": round(waiting.oldest_age_seconds, 1),
             "threshold": settings.OUTBOX_ALERT_AGE_SECONDS})
    return found


def alerts_check(*, now: datetime | None = None) -> dict[str, list[str]]:
    """Open alerts for new conditions, resolve cleared ones, (re)notify. Returns what changed."""
    now = now or timezone.now()
    holding = _conditions(now)
    opened, resolved = [], []
    open_alerts = {a.key: a for a in Alert.objects.filter(status=AlertStatus.OPEN)}
    for key, (kind, message, details) in holding.items():
        if key in open_alerts:
            continue
        try:
            with transaction.atomic():
                alert = Alert.objects.create(kind=kind, key=key, message=message, details=details)
        except IntegrityError:
            continue  # another checker opened it at the same moment
        opened.append(key)
        logger.warning("alert.opened kind=%s key=%s %s", kind, key, message, extra={"alert_id": alert.pk, "kind": kind})
        _notify(alert, "open")
    for key, alert in open_alerts.items():
        if key in holding:
            if alert.notified_at is None and alert.notify_attempts < MAX_NOTIFY_ATTEMPTS:
                _notify(alert, "open")
            continue
        changed = Alert.objects.filter(pk=alert.pk, status=AlertStatus.OPEN).update(status=AlertStatus.RESOLVED, resolved_at=now)
        if changed:
            alert.status, alert.resolved_at = AlertStatus.RESOLVED, now
            resolved.append(key)
            logger.info("alert.resolved kind=%s key=%s", alert.kind, key, extra={"alert_id": alert.pk, "kind": alert.kind})
            _notify(alert, "resolved")
    return {"opened": opened, "resolved": resolved}


def alert_payload(alert: Alert, state: str) -> dict[str, Any]:
    """What a webhook or a mail carries (secrets masked: a new group's message quotes an
    exception message)."""
    return {
        "state": state,
        "alert": {
            "id": alert.pk, "kind": alert.kind, "key": alert.key, "message": mask_text(alert.message),
            "details": mask(alert.details),
            "opened_at": alert.opened_at.isoformat() if alert.opened_at else None,
            "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        },
    }


def _post_webhook(url: str, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "taskplatform-alerts"})
    delay = 0.5
    for attempt in range(1, WEBHOOK_RETRIES + 1):
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (operator-configured URL)
                if 200 <= response.status < 300:
                    return
                raise urllib.error.HTTPError(url, response.status, "unexpected status", response.headers, None)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            if attempt == WEBHOOK_RETRIES:
                raise RuntimeError(f"webhook failed after {attempt} attempts: {exc}") from exc
            time.sleep(delay)
            delay *= 2


def _notify(alert: Alert, state: str) -> None:
    payload = alert_payload(alert, state)
    errors = []
    if settings.DLQ_ALERT_WEBHOOK_URL:
        try:
            _post_webhook(settings.DLQ_ALERT_WEBHOOK_URL, payload)
        except RuntimeError as exc:
            errors.append(str(exc))
    if settings.DLQ_ALERT_EMAILS and settings.EMAIL_HOST:
        try:
            send_mail(f"[task platform] {state}: {alert.message[:120]}", json.dumps(payload, indent=2),
                      settings.DEFAULT_FROM_EMAIL, settings.DLQ_ALERT_EMAILS, fail_silently=False)
        except Exception as exc:  # SMTP errors of every kind
            errors.append(f"mail: {exc}")
    fields: dict[str, Any] = {"notify_attempts": alert.notify_attempts + 1, "notify_error": "; ".join(errors)[:2000]}
    if not errors and state == "open":
        fields["notified_at"] = timezone.now()
    Alert.objects.filter(pk=alert.pk).update(**fields)
    if errors:
        logger.error("alert.notify_failed key=%s errors=%s", alert.key, errors, extra={"alert_id": alert.pk})
