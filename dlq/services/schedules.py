"""Beat schedules (django-celery-beat's ``PeriodicTask``): the platform's own, seeded
idempotently (after every ``migrate`` and by ``manage.py seed_schedules``), and an operator's
changes to any of them (enable, disable, run now), each audited.

Seeding only creates missing entries and fixes their task name: an operator's later change to
an entry's interval or enabled flag is kept."""
from __future__ import annotations

import json
import logging
from typing import Any, NotRequired, TypedDict

from celery import current_app
from django.conf import settings
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from dlq.services.audit import audit_record
from tasks.errors import BrokerUnavailable, Conflict, NotFound

logger = logging.getLogger("dlq")


class Crontab(TypedDict):
    minute: str
    hour: str


class ScheduleSpec(TypedDict):
    name: str
    task: str
    description: str
    every: NotRequired[int]  # seconds; or
    crontab: NotRequired[Crontab]  # UTC
    development_only: NotRequired[bool]  # example tasks exist only in development


SCHEDULES: list[ScheduleSpec] = [
    {"name": "dlq: alerts (size, growth, new groups)", "task": "dlq.check_alerts", "every": 60,
     "description": "Opens and clears DLQ alerts; notifies once per condition."},
    {"name": "dlq: reconcile (spool, stuck requeues, stalled jobs)", "task": "dlq.reconcile", "every": 60,
     "description": "Writes spooled dead letters; republishes or reports stuck requeues; resumes stalled redrive jobs."},
    {"name": "dlq: reprocess policies", "task": "dlq.apply_reprocess_policies", "every": 60,
     "description": "Requeues dead letters covered by a reprocess policy once their cool-down has passed."},
    {"name": "dlq: retention prune", "task": "dlq.prune", "crontab": {"minute": "17", "hour": "3"},
     "description": "Deletes resolved/discarded dead letters older than DLQ_RETENTION_DAYS in small batches."},
    {"name": "example: daily digest", "task": "tasks.examples.daily_digest", "crontab": {"minute": "0", "hour": "7"},
     "description": "Example application job: logs yesterday's dead letters by task.", "development_only": True},
]


def seed_schedules() -> list[str]:
    """Create the schedules that are missing; return the names created."""
    created = []
    for spec in SCHEDULES:
        if spec.get("development_only") and not settings.DEVELOPMENT:
            continue  # the example tasks exist only in development
        defaults: dict[str, Any] = {"task": spec["task"], "description": spec["description"]}
        if "every" in spec:
            interval, _ = IntervalSchedule.objects.get_or_create(every=spec["every"], period=IntervalSchedule.SECONDS)
            defaults["interval"] = interval
        elif "crontab" in spec:
            crontab, _ = CrontabSchedule.objects.get_or_create(
                minute=spec["crontab"]["minute"], hour=spec["crontab"]["hour"], day_of_week="*",
                day_of_month="*", month_of_year="*", timezone="UTC")
            defaults["crontab"] = crontab
        task, was_created = PeriodicTask.objects.get_or_create(name=spec["name"], defaults=defaults)
        if was_created:
            created.append(spec["name"])
        elif task.task != spec["task"]:
            task.task = spec["task"]
            task.save()
    return created


@transaction.atomic
def periodic_task_set_enabled(*, periodic_task_id: int, enabled: bool, actor: str) -> PeriodicTask:
    """Enable or disable a beat schedule. ``save()`` (not ``update()``) so that
    django-celery-beat notices the change (its ``PeriodicTasks.changed`` signal)."""
    task = PeriodicTask.objects.select_for_update().filter(pk=periodic_task_id).first()
    if task is None:
        raise NotFound(f"schedule {periodic_task_id} does not exist")
    if task.enabled != enabled:
        task.enabled = enabled
        task.save()
        audit_record(actor=actor, action="schedule.enable" if enabled else "schedule.disable", object_type="schedule",
                     object_id=task.name, diff={"enabled": [not enabled, enabled]})
        logger.info("schedule.%s name=%s actor=%s", "enabled" if enabled else "disabled", task.name, actor,
                    extra={"schedule": task.name, "actor": actor})
    return task


def periodic_task_run_now(*, periodic_task_id: int, actor: str) -> str:
    """Send a scheduled task once, now, with its stored arguments; returns the task id."""
    task = PeriodicTask.objects.filter(pk=periodic_task_id).first()
    if task is None:
        raise NotFound(f"schedule {periodic_task_id} does not exist")
    try:
        args, kwargs = json.loads(task.args or "[]"), json.loads(task.kwargs or "{}")
    except ValueError as exc:
        raise Conflict(f"the schedule's stored arguments are not valid JSON: {exc}", code="bad_schedule") from exc
    options: dict[str, Any] = {}
    if task.queue:
        options["queue"] = task.queue
    try:
        result = current_app.send_task(task.task, args=args, kwargs=kwargs, **options)
    except Exception as exc:
        raise BrokerUnavailable(f"the broker refused the message: {exc}") from exc
    audit_record(actor=actor, action="schedule.run_now", object_type="schedule", object_id=task.name,
                 diff={"task_id": [None, str(result.id)], "task": [None, task.task]})
    logger.info("schedule.run_now name=%s task_id=%s actor=%s", task.name, result.id, actor,
                extra={"schedule": task.name, "task_id": result.id, "actor": actor})
    return str(result.id)
