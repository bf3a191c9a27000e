"""Roles are Django groups: viewer (read), operator (+ edit, requeue, discard, resolve,
enqueue allow-listed tasks), admin (+ bulk, export, schedules). Superusers are admins."""
from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from dlq.models import Role, user_role

RANK = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


def has_role(user: Any, role: str) -> bool:
    current = user_role(user)
    return current is not None and RANK[Role(current)] >= RANK[Role(role)]


class RolePermission(BasePermission):
    """Reads need ``viewer``; writes need the view's ``write_role`` (default ``operator``)."""

    message = "your role does not allow this action"

    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        if request.method in SAFE_METHODS:
            return has_role(request.user, Role.VIEWER)
        return has_role(request.user, getattr(view, "write_role", Role.OPERATOR))
