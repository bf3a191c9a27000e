"""The project's URLs: the probes, the admin, login, the API, its schema and the ops pages."""
from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern, URLResolver, include, path
from django.views import defaults
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from dashboard import health

urlpatterns: list[URLPattern | URLResolver] = [
    path("", RedirectView.as_view(url="/dashboard/", permanent=False)),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="/accounts/login/"), name="logout"),
    path("api/v1/", include("dashboard.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),  # sidecar assets
    path("dashboard/", include("dashboard.urls")),
]
if settings.DEVELOPMENT:  # the demo page enqueues the demo tasks, which exist only in development
    urlpatterns.append(path("demo/", include("demo.urls")))


def _not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Under /api/ the API's JSON error shape; elsewhere Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"error": {"code": "not_found", "message": f"no API endpoint at {request.path}"}}, status=404)
    return defaults.page_not_found(request, exception)


def _server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse({"error": {"code": "server_error", "message": "internal error; it was logged"}}, status=500)
    return defaults.server_error(request)


handler404 = _not_found
handler500 = _server_error
