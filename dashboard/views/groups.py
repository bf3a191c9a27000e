"""Failure groups (one row per fingerprint) and one group's dead letters."""
from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard.views.common import base_context, error_response, paged, requires
from dlq import selectors
from dlq.models import DeadLetterStatus, Role
from tasks.errors import ServiceError


@requires(Role.VIEWER)
@require_GET
def group_list(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status", DeadLetterStatus.DEAD)
    filters = {"status": status} if status else {}
    try:
        groups = selectors.failure_groups(filters=filters, limit=200)
    except ServiceError as exc:
        return error_response(request, exc, "dashboard/groups.html", base_context(request, groups=[], status=status))
    return render(request, "dashboard/groups.html", base_context(
        request, groups=groups, status=status, statuses=DeadLetterStatus.choices))


@requires(Role.VIEWER)
@require_GET
def group_detail(request: HttpRequest, fingerprint: str) -> HttpResponse:
    summary = selectors.failure_groups(filters={"fingerprint": fingerprint}, limit=1)
    if not summary:
        raise Http404("no dead letter has this fingerprint")
    filters = {"fingerprint": fingerprint}
    if request.GET.get("status"):
        filters["status"] = request.GET["status"]
    context = base_context(request, group=summary[0], fingerprint=fingerprint, statuses=DeadLetterStatus.choices,
                           status=request.GET.get("status", ""))
    try:
        context.update(paged(request, filters))
    except ServiceError as exc:
        return error_response(request, exc, "dashboard/group.html", context)
    return render(request, "dashboard/group.html", context)
