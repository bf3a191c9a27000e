"""The overview page: counts, the failing tasks and groups, jobs, alerts and the outbox; the
broker panel loads after it."""
from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard import ops
from dashboard.views.common import base_context, requires
from dlq import selectors
from dlq.models import DeadLetterStatus, Role
from tasks.outbox import outbox_stats


@requires(Role.VIEWER)
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    stats = selectors.dead_letter_overview(hours=48)
    labels = [p["hour"].strftime("%d %H:00") for p in stats["per_hour"]]
    counts = [p["count"] for p in stats["per_hour"]]
    return render(request, "dashboard/overview.html", base_context(
        request,
        stats=stats,
        statuses=[(s.value, s.label, stats["by_status"].get(s.value, 0)) for s in DeadLetterStatus],
        chart={"labels": labels, "counts": counts},
        chart_max=max(counts or [0]),
        groups=selectors.failure_groups(filters={"status": DeadLetterStatus.DEAD}, limit=8),
        jobs=list(selectors.redrive_job_active()[:10]),
        alerts=list(selectors.alert_list(open_only=True)[:10]),
        outbox=outbox_stats(),
        outbox_alert_age=settings.OUTBOX_ALERT_AGE_SECONDS,
    ))


@requires(Role.VIEWER)
@require_GET
def broker_panel(request: HttpRequest) -> HttpResponse:
    """Workers and queue depths (loaded by the overview after it renders; ≤ 1 s)."""
    return render(request, "dashboard/_broker.html", {"broker": ops.broker_status(timeout=0.8),
                                                      "flower_url": settings.FLOWER_URL})
