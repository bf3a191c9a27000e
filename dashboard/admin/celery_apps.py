"""The admins of django-celery-beat's schedules and django-celery-results' results, each
their package's own with one change: "Run selected tasks" goes through the service (it sends
with the stored arguments and logs who did it), and results show no secrets."""
from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django_celery_beat.admin import PeriodicTaskAdmin as BeatPeriodicTaskAdmin
from django_celery_beat.models import PeriodicTask
from django_celery_results.admin import TaskResultAdmin
from django_celery_results.models import TaskResult

from dlq import services
from dlq.masking import mask_json_text, mask_text
from tasks.errors import ServiceError

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldsetSpec

admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(BeatPeriodicTaskAdmin):  # type: ignore[misc]  # django-celery-beat is untyped
    def get_actions(self, request: HttpRequest) -> dict[str, object]:
        # django-celery-beat's actions declare no permission, so any viewer could run,
        # enable or disable schedules; they need the change permission (admin role).
        actions: dict[str, object] = super().get_actions(request) if self.has_change_permission(request) else {}
        return actions

    @admin.action(description="Run selected tasks now")
    def run_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
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


def _masked_name(name: str) -> str:
    return f"{name}_masked" if name in _RESULT_MASKED else name


class MaskedTaskResultAdmin(TaskResultAdmin):
    """django-celery-results' admin with every value that may carry arguments masked (task
    args and kwargs, result, traceback, meta), and no search over the arguments (a search
    would confirm a guessed secret)."""

    def get_search_fields(self, request: HttpRequest) -> tuple[str, ...]:
        return ("task_name", "task_id", "status")

    def get_fieldsets(self, request: HttpRequest, obj: TaskResult | None = None) -> _FieldsetSpec:
        return [(title, {**options, "fields": [_masked_name(name) for name in options["fields"] if isinstance(name, str)]})
                for title, options in TaskResultAdmin.fieldsets]

    def get_readonly_fields(self, request: HttpRequest, obj: TaskResult | None = None) -> list[str]:
        return [name for _, options in self.get_fieldsets(request, obj) for name in options["fields"]
                if isinstance(name, str)]

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
