"""Roles are Django groups: viewer (read), operator (+ edit, requeue, discard, resolve,
enqueue allow-listed tasks), admin (+ bulk actions, export, cancel jobs, enqueue any task).
Superusers are admins."""
from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib.auth.models import AnonymousUser, User
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from dlq.models import Role, user_role
from dlq.roles import role_at_least

if TYPE_CHECKING:  # DRF's views import the permission classes: no import at run time
    from rest_framework.views import APIView


def has_role(user: User | AnonymousUser, role: str) -> bool:
    return role_at_least(user_role(user), role)


def required_role(view: APIView, request: Request) -> str:
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

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        return has_role(request.user, required_role(view, request))
