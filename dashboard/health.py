"""Probes and metrics: /healthz (the process answers), /readyz (database and broker
reachable) and /metrics (Prometheus). They live with the shells, not in the project package:
/metrics authenticates like the API (its tokens, its roles)."""
from __future__ import annotations

import hmac

from celery import current_app
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from rest_framework.exceptions import AuthenticationFailed

from dashboard.api.authentication import ApiTokenAuthentication
from dashboard.permissions import has_role
from dlq.metrics import PlatformCollector
from dlq.models import Role


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means not ready
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        with current_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)


def _metrics_allowed(request: HttpRequest) -> bool:
    """``Authorization: Bearer $METRICS_TOKEN`` when that is set, else an API token or a
    logged-in user with at least the viewer role."""
    header = request.headers.get("Authorization", "")
    if settings.METRICS_TOKEN and header.startswith("Bearer "):
        return hmac.compare_digest(header[7:].strip(), settings.METRICS_TOKEN)
    if header.startswith("Token "):
        try:
            user, _ = ApiTokenAuthentication().authenticate_credentials(header[6:].strip().encode())
        except AuthenticationFailed:
            return False
        return has_role(user, Role.VIEWER)
    return has_role(request.user, Role.VIEWER)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition, collected fresh on each scrape."""
    if not _metrics_allowed(request):
        return HttpResponse("authentication required\n", status=401, content_type="text/plain",
                            headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PlatformCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
