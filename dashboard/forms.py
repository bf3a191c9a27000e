"""Forms of the ops pages: input parsing and labels only. Rules (what may change, who may
do what, what a reason is) live in ``dlq.services``; these forms turn text into the values
the services take and give every input a label. The search form is the dead-letter filter
set's own (``dlq.filters.DeadLetterFilterSet.form``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import forms
from django.http import QueryDict

from dlq.filters import FILTER_KEYS
from dlq.jsonsafe import parse_json
from dlq.models import BulkAction
from tasks.errors import ValidationFailed


def parse_json_field(text: str, *, kind: type[list[Any]] | type[dict[str, Any]], name: str) -> Any:
    """``text`` as JSON of type ``kind`` (``list`` or ``dict``), with the API's limits (size,
    depth, no NaN/Infinity/NUL); raises ``ValidationError``."""
    try:
        value = parse_json(text, name=name)
    except ValidationFailed as exc:
        raise forms.ValidationError(exc.message) from None
    if not isinstance(value, kind):
        raise forms.ValidationError(f"{name} must be a JSON {'array' if kind is list else 'object'}")
    return value


class EditForm(forms.Form):
    """Args/kwargs edited as JSON text; ``version`` is the one the page was rendered with."""

    args = forms.CharField(required=True, label="Args (JSON array)", strip=False,
                           widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false", "data-json": "array"}))
    kwargs = forms.CharField(required=True, label="Kwargs (JSON object)", strip=False,
                             widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false", "data-json": "object"}))
    queue = forms.CharField(required=False, max_length=255, label="Queue")
    reason = forms.CharField(required=True, max_length=2000, label="Reason for the change",
                             widget=forms.TextInput(attrs={"placeholder": "why these arguments are right"}))
    version = forms.IntegerField(widget=forms.HiddenInput)

    def clean_args(self) -> Any:
        return parse_json_field(self.cleaned_data["args"], kind=list, name="args")

    def clean_kwargs(self) -> Any:
        return parse_json_field(self.cleaned_data["kwargs"], kind=dict, name="kwargs")


@dataclass(frozen=True)
class BulkSelection:
    """What a bulk action applies to: the checked rows (``ids``) or every row matching the
    filters (``filters``, validated by the bulk service through ``dlq.filters``)."""

    ids: list[int] | None = None
    filters: dict[str, str] | None = None


class BulkForm(forms.Form):
    """A bulk action over checked rows (``ids``) or every row matching the filters (``f_*``)."""

    action = forms.ChoiceField(choices=BulkAction.choices, label="Action")
    scope = forms.ChoiceField(choices=[("selected", "checked rows"), ("filter", "every row matching the filters")],
                              initial="selected", label="Apply to")
    ids = forms.CharField(required=False)
    reason = forms.CharField(required=False, max_length=2000, label="Reason")
    rate_limit = forms.FloatField(required=False, min_value=0.001, label="Rate limit (messages per second)")

    def selection(self, data: QueryDict) -> BulkSelection:
        if self.cleaned_data["scope"] == "filter":
            return BulkSelection(filters={key: str(data.get(f"f_{key}")) for key in FILTER_KEYS
                                          if data.get(f"f_{key}") not in (None, "")})
        ids: list[int] = []
        for raw in data.getlist("ids"):
            for part in str(raw).split(","):
                if part.strip().isdigit():
                    ids.append(int(part))
        return BulkSelection(ids=ids)


class CommaListField(forms.Field):
    """Comma-separated text as a list of its non-blank items."""

    def to_python(self, value: Any) -> list[str]:
        text = "" if value in self.empty_values else str(value)
        return [item.strip() for item in text.split(",") if item.strip()]


class PolicyForm(forms.Form):
    """The policies page's fields as typed values. The rules (registered task, ranges, known
    reasons) are the service's, ``dlq.services.reprocess_policy_validate``, as for the API
    and the admin."""

    task_name = forms.CharField(required=False)
    reasons = CommaListField(required=False)
    exception_types = CommaListField(required=False)
    cooldown_seconds = forms.IntegerField()
    backoff_factor = forms.FloatField()
    max_auto_requeues = forms.IntegerField()
    circuit_max_failures_per_minute = forms.IntegerField()
    enabled = forms.BooleanField(required=False)

    def policy_data(self) -> dict[str, Any]:
        """The policy's data for ``reprocess_policy_save``, or ``ValidationFailed`` for text
        that is not even a number."""
        if not self.is_valid():
            errors = {field: [str(message) for message in messages] for field, messages in self.errors.items()}
            shown = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in errors.items())
            raise ValidationFailed(f"invalid policy: {shown}", fields=errors)
        return dict(self.cleaned_data)

