"""The platform's own beat schedules, seeded idempotently (after every ``migrate`` and by
``manage.py seed_schedules``). An operator's later change to an entry's interval or enabled
flag is kept: seeding only creates missing entries and fixes their task name."""
from __future__ import annotations

from typing import Any

SCHEDULES: list[dict[str, Any]] = [
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
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    from django.conf import settings

    created = []
    for spec in SCHEDULES:
        if spec.get("development_only") and not settings.DEVELOPMENT:
            continue  # the example tasks exist only in development
        defaults: dict[str, Any] = {"task": spec["task"], "description": spec["description"]}
        if "every" in spec:
            interval, _ = IntervalSchedule.objects.get_or_create(every=spec["every"], period=IntervalSchedule.SECONDS)
            defaults["interval"] = interval
        else:
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
