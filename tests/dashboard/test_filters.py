"""The dead-letter filters have one home, ``dlq.filters.DeadLetterFilterSet``: the API's list,
groups and export, the bulk body's ``filter``, the ops page's search form and its bulk
"every row matching the filters" all accept and refuse the same values, with the same
400 ``invalid_filter`` and per-field messages."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from dlq import selectors
from dlq.filters import FILTER_KEYS, NOT_DATETIME, NOT_TEXT, DeadLetterFilterForm
from dlq.models import DeadLetter, RedriveJob, Role
from tasks.errors import ValidationFailed
from tests.factories import DeadLetterFactory

pytestmark = pytest.mark.django_db(transaction=True)
BAD = [
    ({"status": "zombie"}, "status", "must be one of dead, discarded, requeued, resolved"),
    ({"reason": "<script>"}, "reason", None),
    ({"failed_after": "yesterday"}, "failed_after", NOT_DATETIME),
    ({"failed_before": "2024-13-45T99:00"}, "failed_before", NOT_DATETIME),
    ({"task_name": "x" * 1001}, "task_name", NOT_TEXT),
]


@pytest.mark.parametrize(("params", "field", "message"), BAD)
def test_a_bad_filter_is_the_same_400_in_every_shell(admin: APIClient, login: Any, params: dict[str, str],
                                                     field: str, message: str | None) -> None:
    DeadLetterFactory()
    answers = [admin.get("/api/v1/dead-letters/", params), admin.get("/api/v1/groups/", params),
               admin.get("/api/v1/dead-letters/export/", {**params, "format": "json"}),
               admin.post("/api/v1/dead-letters/bulk/", {"action": "discard", "filter": params, "dry_run": True},
                          format="json")]
    for response in answers:
        assert response.status_code == 400, response.content
        error = response.json()["error"]
        assert (error["code"], error["message"], list(error["fields"])) == ("invalid_filter", "invalid filters", [field])
        if message:
            assert error["fields"][field] == [message]
        else:
            assert error["fields"][field][0].startswith("must be one of ")
    page = login(Role.ADMIN)
    listing = page.get("/dashboard/dead-letters/", params)
    assert listing.status_code == 400 and b"invalid filters" in listing.content
    bulk = page.post("/dashboard/dead-letters/bulk/", {"action": "discard", "scope": "filter",
                                                       **{f"f_{key}": value for key, value in params.items()}})
    assert bulk.status_code == 400 and b"invalid filters" in bulk.content
    assert not RedriveJob.objects.exists() and DeadLetter.objects.get().status == "dead"


def test_a_filter_object_is_checked_key_by_key(admin: APIClient) -> None:
    """A bulk body (JSON) may hold unknown keys and values that are not strings."""
    response = admin.post("/api/v1/dead-letters/bulk/",
                          {"action": "discard", "filter": {"nope": "1", "status": 5, "queue": ""}, "dry_run": True},
                          format="json")
    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert list(fields) == ["nope", "status"]  # in the order given; a blank value is no filter
    assert fields["nope"] == [f"unknown filter; known: {', '.join(FILTER_KEYS)}"]
    with pytest.raises(ValidationFailed) as refused:
        selectors.clean_filters({"status": 5, "q": "a\x00b", "failed_after": []})
    assert refused.value.fields == {"status": [NOT_TEXT], "q": [NOT_TEXT], "failed_after": [NOT_TEXT]}
    assert selectors.clean_filters(None) == {} and selectors.clean_filters({"status": None, "q": ""}) == {}


def test_values_are_taken_as_given_and_naive_times_are_the_current_zone(viewer: APIClient) -> None:
    row = DeadLetterFactory(task_name="tasks.demo.add")
    found = lambda **params: [r["id"] for r in viewer.get("/api/v1/dead-letters/", params).json()["results"]]  # noqa: E731
    assert found(task_name="tasks.demo.add") == [row.pk]
    assert found(task_name=" tasks.demo.add") == []  # not stripped
    naive = timezone.localtime(row.last_failed_at).replace(tzinfo=None)
    assert found(failed_after=(naive - timedelta(seconds=1)).isoformat()) == [row.pk]
    assert found(failed_before=naive.isoformat()) == []  # before: strictly earlier
    assert found(failed_after=row.last_failed_at.isoformat(), failed_before="") == [row.pk]
    cleaned = selectors.clean_filters({"failed_after": naive.isoformat(), "status": "dead"})
    assert cleaned == {"failed_after": row.last_failed_at.replace(microsecond=cleaned["failed_after"].microsecond),
                       "status": "dead"}
    assert cleaned["failed_after"].tzinfo is not None


def test_the_search_form_is_the_filter_sets_form(login: Any) -> None:
    page = login(Role.VIEWER).get("/dashboard/dead-letters/", {"status": "dead", "q": "timeout"})
    form = page.context["form"]
    assert isinstance(form, DeadLetterFilterForm) and list(form.fields)[:3] == ["q", "status", "reason"]
    assert set(form.fields) == set(FILTER_KEYS)
    html = page.content.decode()
    assert '<option value="">any</option>' in html and '<option value="dead" selected>Dead</option>' in html
    assert 'type="search"' in html and 'type="datetime-local"' in html and 'value="timeout"' in html


def test_the_schema_documents_every_filter_of_the_list() -> None:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    names = {p["name"] for p in schema["paths"]["/api/v1/dead-letters/"]["get"]["parameters"]}
    assert names == {*FILTER_KEYS, "cursor", "page_size"}


def test_the_selectors_keep_their_signatures(client: Client) -> None:
    dead, resolved = DeadLetterFactory(), DeadLetterFactory(status="resolved")
    assert list(selectors.dead_letter_list(filters={"status": "resolved"})) == [resolved]
    assert [g["count"] for g in selectors.failure_groups(filters={"status": "dead"})] == [1]
    assert list(selectors.dead_letter_filter(DeadLetter.objects.all(), {"status": "dead"})) == [dead]
