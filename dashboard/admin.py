"""Django admin registrations. Actions call ``dlq.services`` (one call per row) and report
with ``message_user``; no logic lives here. Rows are read-only: edits go through the
services so that they are validated, versioned and audited.

Dead letters: requeue, discard and export first show a confirmation page (Django's
``delete_selected`` pattern: the action renders a page, and its form posts the action again
with ``post=yes``); discard asks for a reason there. The changelist never counts the whole
table: an unfiltered list shows Postgres' estimate (``pg_class.reltuples``), a filtered one a
bounded count. The search box is the API's full text (``q``), or an exact task id.
"""
from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django_celery_beat.admin import PeriodicTaskAdmin as BeatPeriodicTaskAdmin
from django_celery_beat.models import PeriodicTask
from django_celery_results.admin import TaskResultAdmin
from django_celery_results.models import TaskResult

from dashboard.permissions import has_role
from dlq import exports, services
from dlq.errors import ServiceError
from dlq.jsonsafe import jsonb_safe
from dlq.masking import mask, mask_json_text, mask_text, masked_dead_letter
from dlq.models import Alert, DeadLetter, DeadLetterEvent, QuarantinedEntry, RedriveJob, ReprocessPolicy, Role, user_role
from dlq.selectors import dead_letter_filter

MAX_ACTION_ROWS = 1000  # more than this: use a bulk redrive job (dashboard or API)


class EstimatedCountPaginator(Paginator):
    """Page counts without ``COUNT(*)`` over the whole table.

    Unfiltered, the count is Postgres' planner estimate (``pg_class.reltuples``, kept fresh
    by autovacuum) once it is over ``ESTIMATE_ABOVE`` rows; below that, and for any filtered
    list, a count bounded to ``BOUND`` rows (``SELECT COUNT(*) FROM (... LIMIT n)``), so a
    broad filter on a huge table costs at most ``BOUND`` index entries, never a full scan.
    The admin says "estimated" next to such counts (``count_is_estimate``)."""

    ESTIMATE_ABOVE = 10_000
    BOUND = 10_000

    count_is_estimate = False

    @cached_property
    def count(self) -> int:  # type: ignore[override]
        qs = self.object_list
        if isinstance(qs, QuerySet) and not qs.query.where:
            estimate = self._reltuples(qs.model._meta.db_table)
            if estimate > self.ESTIMATE_ABOVE:
                self.count_is_estimate = True
                return estimate
        if isinstance(qs, QuerySet):
            bounded = qs.order_by()[: self.BOUND + 1].count()
            self.count_is_estimate = bounded > self.BOUND
            return bounded
        return super().count

    @staticmethod
    def _reltuples(table: str) -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [table])
            row = cursor.fetchone()
        return max(int(row[0]), 0) if row and row[0] is not None else 0


class ActionForm(forms.Form):
    """The confirmation page's fields."""

    reason = forms.CharField(required=False, max_length=2000, label="Reason",
                             widget=forms.TextInput(attrs={"size": 60}))
    format = forms.ChoiceField(required=False, choices=[(f, f.upper()) for f in exports.FORMATS], label="Format")


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
    list_filter = ("status", "reason", "task_name", ("last_failed_at", admin.DateFieldListFilter))
    search_fields = ("=task_id",)  # shows the box; get_search_results does the full-text search
    search_help_text = 'Full text over message, traceback and arguments (words, "a phrase", or, -word), or a task id.'
    ordering = ("-last_failed_at", "-id")
    date_hierarchy = None
    list_per_page = 50
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    inlines = [DeadLetterEventInline]
    actions = ["requeue_selected", "discard_selected", "export_selected"]
    fieldsets = (
        (None, {"fields": ("task_id", "task_name", "status", "reason", "queue", "routing_key", "version")}),
        ("Arguments (secrets masked)", {"fields": ("args_masked", "kwargs_masked")}),
        ("Error", {"fields": ("exception_type", "exception_message_masked", "traceback_pre")}),
        ("History", {"fields": ("attempts_pretty", "retries", "first_failed_at", "last_failed_at",
                                "requeue_count", "last_requeued_task_id", "fingerprint")}),
        ("Workflow", {"fields": ("root_id", "parent_id", "group_id")}),
        ("Message", {"classes": ("collapse",), "fields": ("headers_pretty", "options_pretty", "raw_arguments_masked",
                                                          "content_type", "content_encoding", "raw_body_masked", "created_at",
                                                          "updated_at")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[DeadLetter]:
        qs = super().get_queryset(request)
        if request.resolver_match and request.resolver_match.url_name == "dlq_deadletter_changelist":
            qs = qs.defer("traceback", "raw_body", "raw_arguments", "attempts", "headers", "options", "args", "kwargs",
                          "search")
        return qs

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[DeadLetter],
                           search_term: str) -> tuple[QuerySet[DeadLetter], bool]:
        term = search_term.strip()[:1000].replace("\x00", "")
        if not term:
            return queryset, False
        return dead_letter_filter(queryset, {"q": term}) | queryset.filter(task_id=term), False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f for fs in self.fieldsets for f in fs[1]["fields"]]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, Role.OPERATOR)

    def has_discard_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, Role.OPERATOR)

    def has_export_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, Role.ADMIN)

    @admin.display(description="message")
    def short_message(self, obj: DeadLetter) -> str:
        return mask_text(obj.exception_message or "")[:80]

    @admin.display(description="exception message")
    def exception_message_masked(self, obj: DeadLetter) -> str:
        return masked_dead_letter(obj).exception_message

    @admin.display(description="raw body (secrets masked)")
    def raw_body_masked(self, obj: DeadLetter) -> str:
        return masked_dead_letter(obj).raw_body or "–"

    @admin.display(description="args")
    def args_masked(self, obj: DeadLetter) -> str:
        return _pretty(obj.args)

    @admin.display(description="kwargs")
    def kwargs_masked(self, obj: DeadLetter) -> str:
        return _pretty(obj.kwargs)

    @admin.display(description="attempts")
    def attempts_pretty(self, obj: DeadLetter) -> str:
        return _pretty(masked_dead_letter(obj).attempts)

    @admin.display(description="headers")
    def headers_pretty(self, obj: DeadLetter) -> str:
        return _pretty(obj.headers)

    @admin.display(description="exact arguments (kept as text; secrets masked)")
    def raw_arguments_masked(self, obj: DeadLetter) -> str:
        raw = masked_dead_letter(obj).raw_arguments
        if raw is None:
            return "–"
        return _pretty(jsonb_safe(json.loads(raw)))  # NaN, NUL, lone surrogates shown as text

    @admin.display(description="options")
    def options_pretty(self, obj: DeadLetter) -> str:
        return _pretty(obj.options)

    @admin.display(description="traceback")
    def traceback_pre(self, obj: DeadLetter) -> str:
        return format_html("<pre>{}</pre>", masked_dead_letter(obj).traceback)

    # --- Actions: a confirmation page first, then one service call per row ---------------

    def _confirm(self, request: HttpRequest, queryset: QuerySet[DeadLetter], *, action: str, verb: str,
                 form: ActionForm, needs_reason: bool = False, needs_format: bool = False,
                 status: int = 200) -> TemplateResponse:
        rows = list(queryset.order_by("-last_failed_at", "-id").only(
            "id", "task_name", "status", "exception_type", "exception_message", "last_failed_at")[: MAX_ACTION_ROWS + 1])
        context = {
            **self.admin_site.each_context(request),
            "title": f"{verb.capitalize()} dead letters: are you sure?",
            "opts": self.model._meta,
            "rows": rows[:MAX_ACTION_ROWS],
            "too_many": len(rows) > MAX_ACTION_ROWS,
            "max_rows": MAX_ACTION_ROWS,
            "action": action,
            "verb": verb,
            "form": form,
            "needs_reason": needs_reason,
            "needs_format": needs_format,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/dlq/deadletter/action_confirmation.html", context, status=status)

    def _per_row(self, request: HttpRequest, queryset: QuerySet[DeadLetter], verb: str, call: Any) -> None:
        done, failed = 0, []
        for pk in queryset.values_list("pk", flat=True)[:MAX_ACTION_ROWS]:
            try:
                call(pk)
                done += 1
            except ServiceError as exc:
                failed.append(f"#{pk}: {exc.message}")
        if done:
            self.message_user(request, f"{verb.capitalize()}d {done} dead letter(s).", messages.SUCCESS)
        if failed:
            self.message_user(request, f"Not {verb}d ({len(failed)}): " + "; ".join(failed[:20]), messages.WARNING)

    @admin.action(description="Requeue selected dead letters…", permissions=["requeue"])
    def requeue_selected(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> TemplateResponse | None:
        form = ActionForm(request.POST if request.POST.get("post") == "yes" else None)
        if form.is_bound and form.is_valid() and queryset.count() <= MAX_ACTION_ROWS:
            user, reason = request.user.get_username(), form.cleaned_data["reason"] or "requeued from the admin"
            self._per_row(request, queryset, "requeue",
                          lambda pk: services.dead_letter_requeue(dead_letter_id=pk, actor=user, reason=reason,
                                                                 role=user_role(request.user)))
            return None
        return self._confirm(request, queryset, action="requeue_selected", verb="requeue", form=form)

    @admin.action(description="Discard selected dead letters…", permissions=["discard"])
    def discard_selected(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> TemplateResponse | None:
        form = ActionForm(request.POST if request.POST.get("post") == "yes" else None)
        if form.is_bound and form.is_valid():
            if not form.cleaned_data["reason"].strip():
                form.add_error("reason", "A reason is required to discard.")
            elif queryset.count() <= MAX_ACTION_ROWS:
                user, reason = request.user.get_username(), form.cleaned_data["reason"]
                self._per_row(request, queryset, "discard",
                              lambda pk: services.dead_letter_discard(dead_letter_id=pk, actor=user, reason=reason))
                return None
        return self._confirm(request, queryset, action="discard_selected", verb="discard", form=form,
                             needs_reason=True, status=400 if form.errors else 200)

    @admin.action(description="Export selected dead letters…", permissions=["export"])
    def export_selected(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> HttpResponse:
        form = ActionForm(request.POST if request.POST.get("post") == "yes" else None)
        if form.is_bound and form.is_valid():
            fmt = form.cleaned_data["format"] or "csv"
            exports.export_audited(actor=request.user.get_username(), fmt=fmt,
                                   selection={"ids": list(queryset.values_list("pk", flat=True)[:1000])})
            response = StreamingHttpResponse(exports.export_stream(queryset, fmt),
                                             content_type="text/csv" if fmt == "csv" else "application/json")
            response["Content-Disposition"] = f'attachment; filename="dead-letters.{fmt}"'
            return response
        return self._confirm(request, queryset, action="export_selected", verb="export", form=form, needs_format=True)


class RoleViewMixin:
    """Read-only for every role (the API's ``viewer`` and up), whatever model permissions the
    role groups carry: these rows change only through the services."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, Role.VIEWER)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_role(request.user, Role.VIEWER)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(RedriveJob)
class RedriveJobAdmin(RoleViewMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("id", "action", "status", "actor", "total", "done", "failed", "created_at", "finished_at")
    list_filter = ("status", "action")
    readonly_fields = [f.name for f in RedriveJob._meta.fields]


@admin.register(Alert)
class AlertAdmin(RoleViewMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("id", "kind", "status", "message", "opened_at", "resolved_at", "notified_at")
    list_filter = ("status", "kind")
    readonly_fields = [f.name for f in Alert._meta.fields]


@admin.register(QuarantinedEntry)
class QuarantinedEntryAdmin(RoleViewMixin, admin.ModelAdmin):  # type: ignore[type-arg]
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
            return _pretty(json.loads(obj.entry))
        except ValueError:
            return format_html("<pre>{}</pre>", obj.entry[:5000])

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_role(request.user, Role.ADMIN)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        return super().get_actions(request) if has_role(request.user, Role.ADMIN) else {}

    @admin.action(description="Retry writing the selected entries")
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[QuarantinedEntry]) -> None:
        from dlq.spool import quarantine_retry

        written = refused = 0
        for pk in queryset.values_list("pk", flat=True):
            if quarantine_retry(entry_id=pk) == "db":
                written += 1
            else:
                refused += 1
        self.message_user(request, f"{written} written; {refused} refused again (still quarantined).",
                          messages.SUCCESS if not refused else messages.WARNING)


@admin.register(ReprocessPolicy)
class ReprocessPolicyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Viewers read, admins edit (model permissions of the role groups); saved through the service."""

    list_display = ("task_name", "enabled", "reasons", "exception_types", "cooldown_seconds", "backoff_factor",
                    "max_auto_requeues", "circuit_max_failures_per_minute", "updated_at")
    list_filter = ("enabled",)
    search_fields = ("task_name",)

    def save_model(self, request: HttpRequest, obj: ReprocessPolicy, form: Any, change: bool) -> None:
        data = {f: form.cleaned_data[f] for f in form.cleaned_data}
        saved = services.reprocess_policy_save(actor=request.user.get_username(), data=data,
                                               policy_id=obj.pk if change else None)
        obj.pk = saved.pk

    def delete_model(self, request: HttpRequest, obj: ReprocessPolicy) -> None:
        services.reprocess_policy_delete(actor=request.user.get_username(), policy_id=obj.pk)


# Beat's schedules: django-celery-beat's own admin, except that "Run selected tasks" goes
# through the service (it sends with the stored arguments and logs who did it) instead of
# calling apply_async inside the admin.
admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(BeatPeriodicTaskAdmin):  # type: ignore[misc]
    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        # django-celery-beat's actions declare no permission, so any viewer could run,
        # enable or disable schedules; they need the change permission (admin role).
        return super().get_actions(request) if self.has_change_permission(request) else {}

    @admin.action(description="Run selected tasks now")
    def run_tasks(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        sent, failed = [], []
        for pk, name in queryset.values_list("pk", "name"):
            try:
                sent.append(services.periodic_task_run_now(periodic_task_id=pk, actor=request.user.get_username()))
            except ServiceError as exc:
                failed.append(f"{name}: {exc.message}")
        if sent:
            self.message_user(request, f"Sent {len(sent)} task(s) now.", messages.SUCCESS)
        if failed:
            self.message_user(request, "Not sent: " + "; ".join(failed), messages.ERROR)


_RESULT_MASKED = ("task_args", "task_kwargs", "result", "traceback", "meta")


class MaskedTaskResultAdmin(TaskResultAdmin):  # type: ignore[misc]
    """django-celery-results' admin with every value that may carry arguments masked (task
    args and kwargs, result, traceback, meta), and no search over the arguments (a search
    would confirm a guessed secret)."""

    search_fields = ("task_name", "task_id", "status")
    fieldsets = tuple(
        (title, {**options, "fields": tuple(f"{f}_masked" if f in _RESULT_MASKED else f for f in options["fields"])})
        for title, options in TaskResultAdmin.fieldsets)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f for _, options in self.fieldsets for f in options["fields"]]

    def _masked(self, obj: TaskResult, name: str) -> str:
        return format_html("<pre>{}</pre>", mask_text(mask_json_text(getattr(obj, name)) or ""))

    @admin.display(description="task args (secrets masked)")
    def task_args_masked(self, obj: TaskResult) -> str:
        return self._masked(obj, "task_args")

    @admin.display(description="task kwargs (secrets masked)")
    def task_kwargs_masked(self, obj: TaskResult) -> str:
        return self._masked(obj, "task_kwargs")

    @admin.display(description="result")
    def result_masked(self, obj: TaskResult) -> str:
        return self._masked(obj, "result")

    @admin.display(description="traceback")
    def traceback_masked(self, obj: TaskResult) -> str:
        return self._masked(obj, "traceback")

    @admin.display(description="meta")
    def meta_masked(self, obj: TaskResult) -> str:
        return self._masked(obj, "meta")


admin.site.unregister(TaskResult)
admin.site.register(TaskResult, MaskedTaskResultAdmin)
