"""The audit trail page: operator changes and dead letters' events, newest first."""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard.views.common import base_context, error_response, query_string, requires
from dlq import audit_trail
from dlq.models import Role
from tasks.errors import ServiceError


@requires(Role.VIEWER)
@require_GET
def audit_list(request: HttpRequest) -> HttpResponse:
    filters = {key: request.GET[key] for key in audit_trail.AUDIT_FILTERS if request.GET.get(key)}
    try:
        events, next_cursor = audit_trail.audit_events(filters=filters, cursor=request.GET.get("cursor") or None, size=50)
    except ServiceError as exc:
        return error_response(request, exc, "dashboard/audit.html", base_context(request, events=[], filters=filters))
    return render(request, "dashboard/audit.html", base_context(
        request, events=events, filters=filters,
        next_url=query_string(filters, cursor=next_cursor) if next_cursor else None))
