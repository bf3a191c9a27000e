"""Probes: /healthz (the process answers) and /readyz (database and broker reachable)."""
from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    from taskplatform.celery import app

    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means not ready
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition. Auth: ``Authorization: Bearer $METRICS_TOKEN`` when that is
    set, else a logged-in user or an API token with at least the viewer role."""
    import hmac

    from django.conf import settings
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    from dashboard.permissions import has_role
    from dlq.metrics import PlatformCollector
    from dlq.models import Role

    header = request.headers.get("Authorization", "")
    allowed = False
    if settings.METRICS_TOKEN and header.startswith("Bearer "):
        allowed = hmac.compare_digest(header[7:].strip(), settings.METRICS_TOKEN)
    elif header.startswith("Token "):
        from rest_framework.exceptions import AuthenticationFailed

        from dashboard.api.authentication import ApiTokenAuthentication

        try:
            user, _ = ApiTokenAuthentication().authenticate_credentials(header[6:].strip().encode())
            allowed = has_role(user, Role.VIEWER)
        except AuthenticationFailed:
            allowed = False
    else:
        allowed = has_role(request.user, Role.VIEWER)
    if not allowed:
        return HttpResponse("authentication required\n", status=401, content_type="text/plain",
                            headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PlatformCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
