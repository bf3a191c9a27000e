"""One JSON error shape for the API: ``{"error": {"code", "message", "fields"?}}``."""
from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from dashboard.api.parsers import PayloadTooLarge
from tasks.errors import ServiceError


def error_response(code: str, message: str, http_status: int, fields: object = None,
                   headers: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    return Response({"error": body}, status=http_status, headers=headers)


_CODES = {
    PayloadTooLarge: "payload_too_large",
    exceptions.ParseError: "malformed_json",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    exceptions.ValidationError: "invalid",
}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceError):
        return error_response(exc.code, exc.message, exc.status, exc.fields)
    if isinstance(exc, RequestDataTooBig):
        return error_response("payload_too_large", str(exc), status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), "error")
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        return error_response(code, "invalid input", status.HTTP_400_BAD_REQUEST, fields)
    detail = getattr(exc, "detail", str(exc))
    return error_response(code, str(detail), response.status_code, headers={
        k: v for k, v in response.items() if k in ("WWW-Authenticate", "Retry-After", "Allow")
    })
