"""Django admin registrations. Actions call ``dlq.services`` (one call per row) and report
with ``message_user``; no logic lives here. Rows are read-only: edits go through the
services so that they are validated, versioned and audited."""
from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from dashboard.permissions import has_role
from dlq import services
from dlq.errors import ServiceError
from dlq.masking import mask
from dlq.models import Alert, DeadLetter, DeadLetterEvent, RedriveJob, Role


class DeadLetterEventInline(admin.TabularInline):  # type: ignore[type-arg]
    model = DeadLetterEvent
    extra = 0
    can_delete = False
    fields = ("created_at", "actor", "action", "reason", "diff")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _pretty(value: Any) -> str:
    return format_html("<pre>{}</pre>", json.dumps(mask(value), indent=2, ensure_ascii=False))


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("id", "task_name", "status", "reason", "exception_type", "short_message", "requeue_count", "last_failed_at")
    list_filter = ("status", "reason", "task_name")
    search_fields = ("=task_id", "task_name", "exception_message")
    ordering = ("-last_failed_at", "-id")
    date_hierarchy = None
    list_per_page = 50
    show_full_result_count = False
    inlines = [DeadLetterEventInline]
    actions = ["requeue_selected"]
    fieldsets = (
        (None, {"fields": ("task_id", "task_name", "status", "reason", "queue", "routing_key", "version")}),
        ("Arguments (secrets masked)", {"fields": ("args_masked", "kwargs_masked")}),
        ("Error", {"fields": ("exception_type", "exception_message", "traceback_pre")}),
        ("History", {"fields": ("attempts_pretty", "retries", "first_failed_at", "last_failed_at",
                                "requeue_count", "last_requeued_task_id", "fingerprint")}),
        ("Message", {"classes": ("collapse",), "fields": ("headers_pretty", "options_pretty", "content_type",
                                                          "content_encoding", "raw_body", "created_at", "updated_at")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[DeadLetter]:
        qs = super().get_queryset(request)
        if request.resolver_match and request.resolver_match.url_name == "dlq_deadletter_changelist":
            qs = qs.defer("traceback", "raw_body", "attempts", "headers", "options", "args", "kwargs")
        return qs

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f for fs in self.fieldsets for f in fs[1]["fields"]]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, Role.OPERATOR)

    @admin.display(description="message")
    def short_message(self, obj: DeadLetter) -> str:
        return (obj.exception_message or "")[:80]

    @admin.display(description="args")
    def args_masked(self, obj: DeadLetter) -> str:
        return _pretty(obj.args)

    @admin.display(description="kwargs")
    def kwargs_masked(self, obj: DeadLetter) -> str:
        return _pretty(obj.kwargs)

    @admin.display(description="attempts")
    def attempts_pretty(self, obj: DeadLetter) -> str:
        return _pretty(obj.attempts)

    @admin.display(description="headers")
    def headers_pretty(self, obj: DeadLetter) -> str:
        return _pretty(obj.headers)

    @admin.display(description="options")
    def options_pretty(self, obj: DeadLetter) -> str:
        return _pretty(obj.options)

    @admin.display(description="traceback")
    def traceback_pre(self, obj: DeadLetter) -> str:
        return format_html("<pre>{}</pre>", obj.traceback)

    @admin.action(description="Requeue selected dead letters", permissions=["requeue"])
    def requeue_selected(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        done, failed = 0, []
        for pk in queryset.values_list("pk", flat=True):
            try:
                services.dead_letter_requeue(dead_letter_id=pk, actor=request.user.get_username(),
                                             reason="requeued from the admin")
                done += 1
            except ServiceError as exc:
                failed.append(f"#{pk}: {exc.message}")
        if done:
            self.message_user(request, f"Requeued {done} dead letter(s).", messages.SUCCESS)
        if failed:
            self.message_user(request, "Not requeued: " + "; ".join(failed[:20]), messages.WARNING)


@admin.register(RedriveJob)
class RedriveJobAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("id", "action", "status", "actor", "total", "done", "failed", "created_at", "finished_at")
    list_filter = ("status", "action")
    readonly_fields = [f.name for f in RedriveJob._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("id", "kind", "status", "message", "opened_at", "resolved_at", "notified_at")
    list_filter = ("status", "kind")
    readonly_fields = [f.name for f in Alert._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
