"""The dead-letter admin.

Requeue, discard and export first show a confirmation page (Django's ``delete_selected``
pattern: the action renders a page, and its form posts the action again with ``post=yes``);
discard asks for a reason there. The changelist never counts the whole table: an unfiltered
list shows Postgres' estimate (``pg_class.reltuples``), a filtered one a bounded count. The
search box is the API's full text (``q``), or an exact task id.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.utils.functional import cached_property
from django.utils.html import format_html

from dashboard.permissions import has_role
from dlq import exports, services
from dlq.filters import DeadLetterFilters, dead_letter_filters_apply
from dlq.jsonsafe import jsonb_safe
from dlq.masking import mask, mask_text, masked_dead_letter
from dlq.models import DeadLetter, DeadLetterEvent, Role, user_role
from tasks.errors import ServiceError

MAX_ACTION_ROWS = 1000  # more than this: use a bulk redrive job (dashboard or API)

# Django's generic classes take a model only in type checking (django-stubs); at run time
# they are not subscriptable (django-stubs-ext's monkeypatch is not a runtime dependency).
if TYPE_CHECKING:
    _Paginator = Paginator[Model]
    _EventInline = admin.TabularInline[DeadLetterEvent, DeadLetter]
    _DeadLetterAdmin = admin.ModelAdmin[DeadLetter]
else:
    _Paginator, _EventInline, _DeadLetterAdmin = Paginator, admin.TabularInline, admin.ModelAdmin


class EstimatedCountPaginator(_Paginator):
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
    def count(self) -> int:
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


class DeadLetterEventInline(_EventInline):
    model = DeadLetterEvent
    extra = 0
    can_delete = False
    fields = ("created_at", "actor", "action", "reason", "diff")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: DeadLetter | None = None) -> bool:
        return False


def pretty_json(value: object) -> str:
    """``value`` as indented JSON in a ``<pre>``, secrets masked."""
    return format_html("<pre>{}</pre>", json.dumps(mask(value), indent=2, ensure_ascii=False))


@admin.register(DeadLetter)
class DeadLetterAdmin(_DeadLetterAdmin):
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
        full_text: DeadLetterFilters = {"q": term}
        return dead_letter_filters_apply(queryset, full_text) | queryset.filter(task_id=term), False

    def get_readonly_fields(self, request: HttpRequest, obj: DeadLetter | None = None) -> list[str]:
        return [name for _, options in self.fieldsets for name in options["fields"] if isinstance(name, str)]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: DeadLetter | None = None) -> bool:
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
        return pretty_json(obj.args)

    @admin.display(description="kwargs")
    def kwargs_masked(self, obj: DeadLetter) -> str:
        return pretty_json(obj.kwargs)

    @admin.display(description="attempts")
    def attempts_pretty(self, obj: DeadLetter) -> str:
        return pretty_json(masked_dead_letter(obj).attempts)

    @admin.display(description="headers")
    def headers_pretty(self, obj: DeadLetter) -> str:
        return pretty_json(obj.headers)

    @admin.display(description="exact arguments (kept as text; secrets masked)")
    def raw_arguments_masked(self, obj: DeadLetter) -> str:
        raw = masked_dead_letter(obj).raw_arguments
        if raw is None:
            return "–"
        return pretty_json(jsonb_safe(json.loads(raw)))  # NaN, NUL, lone surrogates shown as text

    @admin.display(description="options")
    def options_pretty(self, obj: DeadLetter) -> str:
        return pretty_json(obj.options)

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
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/dlq/deadletter/action_confirmation.html", context, status=status)

    def _per_row(self, request: HttpRequest, queryset: QuerySet[DeadLetter], verb: str,
                 call: Callable[[int], object]) -> None:
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
    def export_selected(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> HttpResponseBase:
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
