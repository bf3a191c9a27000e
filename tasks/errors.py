"""Errors raised by the services; every shell (API, admin, pages, CLI) maps them the same way."""
from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status = 400
    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None, fields: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.fields = fields


class ValidationFailed(ServiceError):
    status = 400
    code = "invalid"


class Forbidden(ServiceError):
    """The actor's role may not do this (to this task)."""

    status = 403
    code = "permission_denied"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class BrokerUnavailable(ServiceError):
    status = 503
    code = "broker_unavailable"
