"""The reprocess-policy admin: the same rules as the API and the pages. Its form's ``clean``
calls ``dlq.services.reprocess_policy_validate`` (registered task, one policy per task,
ranges, known reasons) and shows each refused field's message on that field; saving and
deleting go through the audited services."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from dlq import services
from dlq.models import ReprocessPolicy
from dlq.services.reprocess import POLICY_FIELDS
from tasks.errors import ValidationFailed

if TYPE_CHECKING:  # subscriptable in type checking only (see dashboard.admin.dead_letters)
    _PolicyModelForm = forms.ModelForm[ReprocessPolicy]
    _PolicyAdmin = admin.ModelAdmin[ReprocessPolicy]
else:
    _PolicyModelForm, _PolicyAdmin = forms.ModelForm, admin.ModelAdmin


class ReprocessPolicyForm(_PolicyModelForm):
    class Meta:
        model = ReprocessPolicy
        fields = POLICY_FIELDS

    def clean_reasons(self) -> object:
        return self.cleaned_data["reasons"] or []  # blank: every reason (the model's default)

    def clean_exception_types(self) -> object:
        return self.cleaned_data["exception_types"] or []

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:  # a field that did not even parse: its own message says why
            return cleaned
        try:
            return services.reprocess_policy_validate(data=dict(cleaned), policy_id=self.instance.pk)
        except ValidationFailed as exc:
            for field, problems in (exc.fields or {}).items():
                self.add_error(field if field in self.fields else None, list(problems))
        return cleaned


@admin.register(ReprocessPolicy)
class ReprocessPolicyAdmin(_PolicyAdmin):
    """Viewers read, admins edit (model permissions of the role groups)."""

    form = ReprocessPolicyForm
    list_display = ("task_name", "enabled", "reasons", "exception_types", "cooldown_seconds", "backoff_factor",
                    "max_auto_requeues", "circuit_max_failures_per_minute", "updated_at")
    list_filter = ("enabled",)
    search_fields = ("task_name",)

    def save_model(self, request: HttpRequest, obj: ReprocessPolicy, form: _PolicyModelForm,
                   change: bool) -> None:
        data = {name: form.cleaned_data[name] for name in POLICY_FIELDS if name in form.cleaned_data}
        saved = services.reprocess_policy_save(actor=request.user.get_username(), data=data,
                                               policy_id=obj.pk if change else None)
        obj.pk = saved.pk

    def delete_model(self, request: HttpRequest, obj: ReprocessPolicy) -> None:
        services.reprocess_policy_delete(actor=request.user.get_username(), policy_id=obj.pk)
