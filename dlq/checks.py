"""System checks: settings that would lose or duplicate messages."""
from __future__ import annotations

from typing import Any

from celery import current_app
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register


@register()
def celery_policy(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    problems: list[CheckMessage] = []
    accept = set(getattr(settings, "CELERY_ACCEPT_CONTENT", []))
    if accept - {"json", "application/json"}:
        problems.append(Error(f"CELERY_ACCEPT_CONTENT must be JSON only, got {sorted(accept)}", id="dlq.E001"))
    if settings.CELERY_BROKER_URL.startswith("redis"):
        vt = settings.CELERY_VISIBILITY_TIMEOUT
        longest = max([settings.CELERY_TASK_TIME_LIMIT or 0] + [
            int(getattr(t, "time_limit", 0) or 0) for t in current_app.tasks.values()])
        if longest >= vt:
            problems.append(Error(
                f"a task time limit ({longest}s) is not below CELERY_VISIBILITY_TIMEOUT ({vt}s): Redis would "
                "deliver a running task a second time", id="dlq.E002"))
    if not settings.CELERY_TASK_ACKS_LATE:
        problems.append(Warning("CELERY_TASK_ACKS_LATE is off: a crashed worker loses its task", id="dlq.W001"))
    return problems
