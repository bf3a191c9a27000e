"""Models every role reads in the admin and nobody edits there: redrive jobs, alerts, and
spooled entries Postgres refused (which an admin may retry or delete)."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from dashboard.admin.dead_letters import pretty_json
from dashboard.permissions import has_role
from dlq.models import Alert, QuarantinedEntry, RedriveJob, Role
from dlq.spool import quarantine_retry

if TYPE_CHECKING:  # subscriptable in type checking only (see dashboard.admin.dead_letters)
    _RedriveJobAdmin = admin.ModelAdmin[RedriveJob]
    _AlertAdmin = admin.ModelAdmin[Alert]
    _QuarantinedEntryAdmin = admin.ModelAdmin[QuarantinedEntry]
else:
    _RedriveJobAdmin = _AlertAdmin = _QuarantinedEntryAdmin = admin.ModelAdmin


class RoleViewMixin:
    """Read-only for every role (the API's ``viewer`` and up), whatever model permissions the
    role groups carry: these rows change only through the services."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, Role.VIEWER)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return has_role(request.user, Role.VIEWER)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(RedriveJob)
class RedriveJobAdmin(RoleViewMixin, _RedriveJobAdmin):
    list_display = ("id", "action", "status", "actor", "total", "done", "failed", "created_at", "finished_at")
    list_filter = ("status", "action")
    readonly_fields = [f.name for f in RedriveJob._meta.fields]


@admin.register(Alert)
class AlertAdmin(RoleViewMixin, _AlertAdmin):
    list_display = ("id", "kind", "status", "message", "opened_at", "resolved_at", "notified_at")
    list_filter = ("status", "kind")
    readonly_fields = [f.name for f in Alert._meta.fields]


@admin.register(QuarantinedEntry)
class QuarantinedEntryAdmin(RoleViewMixin, _QuarantinedEntryAdmin):
    """Spooled operations Postgres refused for their content (``dlq.spool``): every role reads
    them (secrets masked); admins retry one after a fix, or delete it."""

    list_display = ("id", "kind", "task_id", "short_error", "attempts", "created_at")
    list_filter = ("kind",)
    search_fields = ("=task_id",)
    fields = ("kind", "task_id", "entry_masked", "error", "attempts", "created_at")
    readonly_fields = fields
    actions = ["retry_selected"]

    @admin.display(description="error")
    def short_error(self, obj: QuarantinedEntry) -> str:
        return obj.error[:120]

    @admin.display(description="entry (secrets masked)")
    def entry_masked(self, obj: QuarantinedEntry) -> str:
        try:
            return pretty_json(json.loads(obj.entry))
        except ValueError:
            return format_html("<pre>{}</pre>", obj.entry[:5000])

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return has_role(request.user, Role.ADMIN)

    def get_actions(self, request: HttpRequest) -> dict[str, tuple[Callable[..., str], str, str] | None]:
        return super().get_actions(request) if has_role(request.user, Role.ADMIN) else {}

    @admin.action(description="Retry writing the selected entries")
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[QuarantinedEntry]) -> None:
        written = refused = 0
        for pk in queryset.values_list("pk", flat=True):
            if quarantine_retry(entry_id=pk) == "db":
                written += 1
            else:
                refused += 1
        self.message_user(request, f"{written} written; {refused} refused again (still quarantined).",
                          messages.SUCCESS if not refused else messages.WARNING)
