"""Beat's schedules (django-celery-beat): the list with each one's next run, and enable,
disable or run one now (admin)."""
from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_celery_beat.models import PeriodicTask

from dashboard.views.common import Context, actor, base_context, error_response, requires
from dlq import selectors, services
from dlq.models import Role
from tasks.errors import ServiceError


def _next_run(task: PeriodicTask, now: datetime) -> datetime | None:
    """When beat will next send ``task`` (an estimate; ``None`` when unknown or disabled)."""
    if not task.enabled:
        return None
    try:
        remaining: timedelta = task.schedule.remaining_estimate(task.last_run_at or task.date_changed or now)
    except Exception:  # a clocked/solar schedule without an estimate, a bad crontab
        return None
    return now + max(remaining, timedelta(0))


def _schedules_context(request: HttpRequest) -> Context:
    now = timezone.now()
    rows = [{"task": t, "next_run": _next_run(t, now)} for t in selectors.periodic_task_list()]
    return base_context(request, schedules=rows)


@requires(Role.VIEWER)
@require_GET
def schedule_list(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/schedules.html", _schedules_context(request))


@requires(Role.ADMIN)
@require_POST
def schedule_action(request: HttpRequest, pk: int, verb: str) -> HttpResponse:
    try:
        if verb == "run":
            task_id = services.periodic_task_run_now(periodic_task_id=pk, actor=actor(request))
            messages.success(request, f"Sent once now as task {task_id}.")
        elif verb in ("enable", "disable"):
            task = services.periodic_task_set_enabled(periodic_task_id=pk, enabled=verb == "enable", actor=actor(request))
            messages.success(request, f"{task.name}: {'enabled' if task.enabled else 'disabled'}.")
        else:
            raise Http404("unknown schedule action")
    except ServiceError as exc:
        return error_response(request, exc, "dashboard/schedules.html", _schedules_context(request))
    return redirect("dashboard-schedules")
