"""Roles are Django groups: viewer (read), operator (+ edit, requeue, discard, resolve,
enqueue allow-listed tasks), admin (+ bulk actions, export, cancel jobs, enqueue any task).
Superusers are admins."""
from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from dlq.models import Role, user_role
from dlq.roles import role_at_least


def has_role(user: Any, role: str) -> bool:
    return role_at_least(user_role(user), role)


def required_role(view: Any, request: Request) -> str:
    """The view's ``action_roles[action]``, else viewer for reads and ``write_role``
    (default operator) for writes."""
    action = getattr(view, "action", None)
    roles = getattr(view, "action_roles", {})
    if action in roles:
        return str(roles[action])
    if request.method in SAFE_METHODS:
        return Role.VIEWER
    return str(getattr(view, "write_role", Role.OPERATOR))


class RolePermission(BasePermission):
    message = "your role does not allow this action"

    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        return has_role(request.user, required_role(view, request))
