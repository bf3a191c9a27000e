"""Forms of the ops pages: input parsing and labels only. Rules (what may change, who may
do what, what a reason is) live in ``dlq.services``; these forms turn text into the values
the services take and give every input a label."""
from __future__ import annotations

from typing import Any

from django import forms

from dlq.errors import ValidationFailed
from dlq.jsonsafe import parse_json
from dlq.models import BulkAction, DeadLetterStatus, DeathReason
from dlq.selectors import FILTER_KEYS


def _blank(choices: Any, label: str = "any") -> list[tuple[str, str]]:
    return [("", label), *choices]


class SearchForm(forms.Form):
    """The dead-letter search box: the API's filters and full text, by the same names."""

    q = forms.CharField(required=False, label="Search", max_length=1000,
                        help_text='Full text over message, traceback and arguments: words, "a phrase", or, -word.',
                        widget=forms.TextInput(attrs={"type": "search", "placeholder": 'e.g. timeout -"card declined"'}))
    status = forms.ChoiceField(required=False, choices=_blank(DeadLetterStatus.choices))
    reason = forms.ChoiceField(required=False, choices=_blank(DeathReason.choices))
    task_name = forms.CharField(required=False, max_length=1000, label="Task name")
    exception_type = forms.CharField(required=False, max_length=1000, label="Exception type")
    queue = forms.CharField(required=False, max_length=1000)
    task_id = forms.CharField(required=False, max_length=1000, label="Task id")
    fingerprint = forms.CharField(required=False, max_length=1000)
    root_id = forms.CharField(required=False, max_length=1000, label="Root id", help_text="Every dead letter of one workflow.")
    parent_id = forms.CharField(required=False, max_length=1000, label="Parent id")
    group_id = forms.CharField(required=False, max_length=1000, label="Group id")
    failed_after = forms.CharField(required=False, max_length=64, label="Failed after",
                                   widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    failed_before = forms.CharField(required=False, max_length=64, label="Failed before",
                                    widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))

    def filters(self) -> dict[str, str]:
        """The raw filters (validated by ``dlq.selectors.clean_filters`` when used)."""
        data = self.data
        return {key: str(data.get(key)) for key in FILTER_KEYS if data.get(key) not in (None, "")}


def parse_json_field(text: str, *, kind: type, name: str) -> Any:
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


class BulkForm(forms.Form):
    """A bulk action over checked rows (``ids``) or every row matching the filters (``f_*``)."""

    action = forms.ChoiceField(choices=BulkAction.choices, label="Action")
    scope = forms.ChoiceField(choices=[("selected", "checked rows"), ("filter", "every row matching the filters")],
                              initial="selected", label="Apply to")
    ids = forms.CharField(required=False)
    reason = forms.CharField(required=False, max_length=2000, label="Reason")
    rate_limit = forms.FloatField(required=False, min_value=0.001, label="Rate limit (messages per second)")

    def selection(self, data: Any) -> dict[str, Any]:
        """``{"ids": [...]}`` or ``{"filters": {...}}`` for the bulk services."""
        if self.cleaned_data["scope"] == "filter":
            return {"filters": {key: str(data.get(f"f_{key}")) for key in FILTER_KEYS
                                if data.get(f"f_{key}") not in (None, "")}}
        ids: list[int] = []
        for raw in data.getlist("ids"):
            for part in str(raw).split(","):
                if part.strip().isdigit():
                    ids.append(int(part))
        return {"ids": ids}
