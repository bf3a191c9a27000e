"""Web-only database guard: every statement a web request runs is bounded.

Aggregates over the whole dead-letter table (the overview, stats, groups, ``/metrics``) or a
search that matches everything must not hold a Postgres connection for minutes. Workers,
beat and the relay do not go through this middleware: their statements are not bounded (a
user's task may legitimately run long queries).
"""
from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse


class StatementTimeoutMiddleware:
    """``SET statement_timeout`` once per database connection a web process opens (a reused
    connection keeps it); ``WEB_STATEMENT_TIMEOUT_MS`` (0 = none). A statement cut short
    raises ``OperationalError`` (``query_canceled``): the API answers 503, pages 500."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        timeout = settings.WEB_STATEMENT_TIMEOUT_MS
        if timeout:
            connection.ensure_connection()
            raw = connection.connection
            if getattr(raw, "_taskplatform_timeout", None) != timeout:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT set_config('statement_timeout', %s, false)", [f"{int(timeout)}ms"])
                raw._taskplatform_timeout = timeout
        return self.get_response(request)
