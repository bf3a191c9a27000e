"""The dead-letter filters: one ``FilterSet``, the only place that says which filters exist,
what a valid value is and what query each one makes.

Every shell goes through it: the selectors apply it (``dead_letter_list(filters=...)``,
``failure_groups``, the bulk services and the export), the API uses it as the dead-letter
list's ``filterset_class`` (so the OpenAPI schema documents the filters), the ops page
renders its ``.form`` as the search form, and the bulk "every row matching the filters" path
validates its filter object with it.

Rules (the API contract, unchanged): each value is a string of at most 1000 characters
without NUL, taken as is (not stripped); ``status`` and ``reason`` are one of their choices;
``failed_after`` / ``failed_before`` are ISO 8601 date-times (naive ones in the current time
zone) compared with ``last_failed_at``; ``q`` is Postgres' ``websearch_to_tsquery('simple',
q)`` over the generated ``search`` column (any string is valid). A bad value is a
``ValidationFailed`` with the code ``invalid_filter`` and one message per field; a filter
object (a bulk body) with an unknown key is refused the same way, while query strings
simply carry other parameters (``cursor``, ``page_size``) beside the filters.
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypedDict, cast

import django_filters  # type: ignore[import-untyped]  # django-filter ships no type information
from django import forms
from django.contrib.postgres.search import SearchQuery
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from dlq.models import DeadLetter, DeadLetterStatus
from tasks.errors import ValidationFailed
from tasks.failures import DeathReason

MAX_VALUE_LENGTH = 1000
NOT_TEXT = f"must be a string of at most {MAX_VALUE_LENGTH} characters without NUL"
NOT_DATETIME = "must be an ISO 8601 date-time"


class DeadLetterFilters(TypedDict, total=False):
    """Cleaned filters: only the keys given with a non-empty value."""

    status: str
    task_id: str
    task_name: str
    exception_type: str
    reason: str
    queue: str
    fingerprint: str
    root_id: str
    parent_id: str
    group_id: str
    failed_after: datetime
    failed_before: datetime
    q: str


def _blank(value: object) -> bool:
    """No value: the filter is not applied (an empty list in a bulk body is a bad value)."""
    return value is None or (isinstance(value, str) and value == "")


def _text(value: object) -> str:
    """``value`` when it is a filter's text; a bulk body may hold any JSON value."""
    if not isinstance(value, str) or len(value) > MAX_VALUE_LENGTH or "\x00" in value:
        raise ValidationError(NOT_TEXT, code="invalid")
    return value


# --- Form fields: Django's, with the API's messages and no stripping ----------------------

class FilterTextField(forms.CharField):
    """Text taken as is: ``task_name=" x"`` looks for that name, spaces included."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", MAX_VALUE_LENGTH)  # the page's input gets ``maxlength``
        super().__init__(strip=False, **kwargs)

    def to_python(self, value: Any) -> str:
        return "" if _blank(value) else _text(value)


class FilterChoiceField(django_filters.fields.ChoiceField):  # type: ignore[misc]  # an untyped base class
    """One of the choices; the page's select offers "any" (blank) first."""

    def __init__(self, **kwargs: Any) -> None:
        allowed = ", ".join(sorted(str(value) for value, _ in kwargs["choices"]))
        kwargs.setdefault("error_messages", {"invalid_choice": f"must be one of {allowed}"})
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> str:
        return "" if _blank(value) else _text(value)


class FilterDateTimeField(forms.DateTimeField):
    """``django.utils.dateparse.parse_datetime``'s ISO 8601 and nothing else (no locale
    formats, no stripping); a naive value is in the current time zone."""

    def to_python(self, value: Any) -> datetime | None:
        if _blank(value):
            return None
        try:
            parsed = parse_datetime(_text(value))
        except ValueError:
            parsed = None
        if parsed is None:
            raise ValidationError(NOT_DATETIME, code="invalid")
        return parsed if parsed.tzinfo else timezone.make_aware(parsed)


class TextFilter(django_filters.CharFilter):  # type: ignore[misc]  # an untyped base class
    field_class = FilterTextField


class ChoiceTextFilter(django_filters.ChoiceFilter):  # type: ignore[misc]  # an untyped base class
    field_class = FilterChoiceField


class DateTimeTextFilter(django_filters.IsoDateTimeFilter):  # type: ignore[misc]  # an untyped base class
    field_class = FilterDateTimeField


class DeadLetterFilterForm(forms.Form):
    """The ops page's order: the search box first, then the filters people use most."""

    field_order = ["q", "status", "reason", "task_name", "exception_type", "queue", "task_id", "fingerprint",
                   "root_id", "parent_id", "group_id", "failed_after", "failed_before"]


class DeadLetterFilterSet(django_filters.FilterSet):  # type: ignore[misc]  # an untyped base class
    """The dead-letter filters (declared in the API's order, which ``FILTER_KEYS`` keeps)."""

    status = ChoiceTextFilter(choices=DeadLetterStatus.choices, empty_label="any", label="Status")
    task_id = TextFilter(label="Task id")
    task_name = TextFilter(label="Task name")
    exception_type = TextFilter(label="Exception type")
    reason = ChoiceTextFilter(choices=DeathReason.choices, empty_label="any", label="Reason")
    queue = TextFilter(label="Queue")
    fingerprint = TextFilter(label="Fingerprint")
    root_id = TextFilter(label="Root id", help_text="Every dead letter of one workflow (task tree).")
    parent_id = TextFilter(label="Parent id")
    group_id = TextFilter(label="Group id", help_text="Every dead letter of one group or chord header.")
    failed_after = DateTimeTextFilter(field_name="last_failed_at", lookup_expr="gte", label="Failed after",
                                      widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    failed_before = DateTimeTextFilter(field_name="last_failed_at", lookup_expr="lt", label="Failed before",
                                       widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    q = TextFilter(method="full_text", label="Search",
                   help_text='Full text over message, traceback and arguments: words, "a phrase", or, -word.',
                   widget=forms.TextInput(attrs={"type": "search", "placeholder": 'e.g. timeout -"card declined"'}))

    class Meta:
        model = DeadLetter
        fields: list[str] = []  # every filter is declared above
        form = DeadLetterFilterForm

    def full_text(self, queryset: QuerySet[DeadLetter], name: str, value: str) -> QuerySet[DeadLetter]:
        """Words are ANDed, ``"quoted phrases"`` match in order, ``or`` between words, ``-word``
        excludes; no string is a syntax error. The vector is a generated column with a GIN index."""
        return queryset.filter(search=SearchQuery(value, search_type="websearch", config="simple"))

    def cleaned(self) -> DeadLetterFilters:
        """The valid filters with a value, or ``ValidationFailed`` (``invalid_filter``)."""
        if not self.is_valid():
            raise invalid_filters({name: list(messages) for name, messages in self.errors.items()})
        values = {name: value for name, value in self.form.cleaned_data.items() if not _blank(value)}
        return cast(DeadLetterFilters, values)  # the form's fields are the TypedDict's keys

    def filtered(self) -> QuerySet[DeadLetter]:
        """The filter set's queryset narrowed by its data, or ``ValidationFailed``."""
        queryset: QuerySet[DeadLetter] = self.queryset
        return self.apply(queryset, self.cleaned())

    def apply(self, queryset: QuerySet[DeadLetter], filters: DeadLetterFilters) -> QuerySet[DeadLetter]:
        """``queryset`` narrowed by already-cleaned ``filters``, each as its filter says."""
        for name, value in filters.items():
            queryset = self.filters[name].filter(queryset, value)
        return queryset


FILTER_KEYS: tuple[str, ...] = tuple(DeadLetterFilterSet.base_filters)


def invalid_filters(errors: dict[str, list[str]]) -> ValidationFailed:
    return ValidationFailed("invalid filters", code="invalid_filter", fields=errors)


def filters_from_query(params: Mapping[str, Any]) -> dict[str, str]:
    """The filters among a query string's parameters (non-empty values of known names);
    other parameters (``cursor``, ``page_size``, ``format``) are not filters."""
    return {key: params[key] for key in FILTER_KEYS if params.get(key) not in (None, "")}


def dead_letter_filters_clean(raw: object) -> DeadLetterFilters:
    """Validate a filter object (a bulk body's ``filter``, a stored job's filters, query
    parameters already picked by ``filters_from_query``). Raises ``ValidationFailed``."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValidationFailed("filter must be an object", fields={"filter": ["must be an object"]})
    unknown = {str(key)[:64]: [f"unknown filter; known: {', '.join(FILTER_KEYS)}"]
               for key in raw if key not in FILTER_KEYS}
    filterset = DeadLetterFilterSet({key: value for key, value in raw.items() if key in FILTER_KEYS})
    try:
        cleaned = filterset.cleaned()
    except ValidationFailed as exc:
        unknown.update(exc.fields or {})
        # In the order the keys were given, as the message has always listed them.
        order = [str(key)[:64] for key in raw]
        ranked = sorted(unknown, key=lambda key: order.index(key) if key in order else len(order))
        raise invalid_filters({key: unknown[key] for key in ranked}) from None
    if unknown:
        raise invalid_filters(unknown)
    return cleaned


def dead_letter_filters_apply(queryset: QuerySet[DeadLetter], filters: DeadLetterFilters) -> QuerySet[DeadLetter]:
    """``queryset`` narrowed by already-cleaned filters (``dead_letter_filters_clean``)."""
    return DeadLetterFilterSet(queryset=queryset).apply(queryset, filters)
