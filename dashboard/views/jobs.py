"""Redrive jobs: the list, a job's page with its progress (polled), and cancelling one."""
from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from dashboard.views.common import Context, actor, base_context, error_response, requires
from dlq import selectors, services
from dlq.models import TERMINAL_JOB_STATUSES, RedriveJob, RedriveJobStatus, Role
from tasks.errors import ServiceError


def _job_context(job: RedriveJob) -> Context:
    processed = job.done + job.failed
    finished = job.status == RedriveJobStatus.FINISHED
    percent = 100 if finished else (int(processed * 100 / job.total) if job.total else 0)
    elapsed = ((job.finished_at or timezone.now()) - job.started_at).total_seconds() if job.started_at else 0
    return {"job": job, "percent": min(percent, 100), "processed": processed,
            "rate": round(processed / elapsed, 1) if elapsed > 0 else None,
            "running": job.status not in TERMINAL_JOB_STATUSES}


@requires(Role.VIEWER)
@require_GET
def job_list(request: HttpRequest) -> HttpResponse:
    jobs = [_job_context(job) for job in selectors.redrive_job_list()[:100]]
    return render(request, "dashboard/jobs.html", base_context(request, jobs=jobs))


@requires(Role.VIEWER)
@require_GET
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = selectors.redrive_job_get(id=pk)
    return render(request, "dashboard/job.html", base_context(request, **_job_context(job)))


@requires(Role.VIEWER)
@require_GET
def job_progress(request: HttpRequest, pk: int) -> HttpResponse:
    """The progress fragment htmx polls every second until the job is over."""
    job = selectors.redrive_job_get(id=pk)
    return render(request, "dashboard/_job_progress.html", base_context(request, **_job_context(job)))


@requires(Role.ADMIN)
@require_POST
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = selectors.redrive_job_get(id=pk)
    try:
        services.redrive_job_cancel(job_id=job.pk, actor=actor(request))
    except ServiceError as exc:
        return error_response(request, exc, "dashboard/job.html",
                              base_context(request, **_job_context(selectors.redrive_job_get(id=pk))))
    messages.success(request, f"Job #{job.pk} cancelled; rows already processed stay processed.")
    return redirect("dashboard-job", pk=job.pk)
