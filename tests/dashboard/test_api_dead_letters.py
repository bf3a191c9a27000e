"""The dead-letter REST API: list, filters and search, detail, edit, requeue / discard /
resolve, groups and stats, roles, and bad input."""
from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from dlq.models import DeadLetter, DeadLetterEvent, Role
from dlq.selectors import dead_letter_list
from tests.dashboard.conftest import queue_length
from tests.factories import DeadLetterFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("test_queues")]


def test_list_filters_full_text_and_cursor_pages(viewer: APIClient) -> None:
    rows = DeadLetterFactory.create_batch(7)
    DeadLetterFactory(task_name="tasks.demo.divide", exception_type="ZeroDivisionError",
                      exception_message="division by zero", reason="max_retries_exceeded", status="discarded")
    response = viewer.get("/api/v1/dead-letters/", {"page_size": 3})
    body = response.json()
    assert response.status_code == 200 and len(body["results"]) == 3 and body["previous"] is None
    ids = [r["id"] for r in body["results"]]
    seen = list(ids)
    while body["next"]:
        body = viewer.get(body["next"]).json()
        seen += [r["id"] for r in body["results"]]
    assert len(seen) == 8 == len(set(seen))
    expected = list(DeadLetter.objects.order_by("-last_failed_at", "-id").values_list("id", flat=True))
    assert seen == expected
    back = viewer.get(viewer.get("/api/v1/dead-letters/", {"page_size": 3}).json()["next"]).json()
    assert [r["id"] for r in viewer.get(back["previous"]).json()["results"]] == ids

    assert [r["task_name"] for r in viewer.get("/api/v1/dead-letters/", {"status": "discarded"}).json()["results"]] == ["tasks.demo.divide"]
    assert len(viewer.get("/api/v1/dead-letters/", {"reason": "non_retryable"}).json()["results"]) == 7
    assert len(viewer.get("/api/v1/dead-letters/", {"q": "division zero"}).json()["results"]) == 1
    assert len(viewer.get("/api/v1/dead-letters/", {"q": "charged"}).json()["results"]) == 7
    assert viewer.get("/api/v1/dead-letters/", {"task_id": rows[0].task_id}).json()["results"][0]["id"] == rows[0].pk
    assert len(viewer.get("/api/v1/dead-letters/", {"fingerprint": rows[0].fingerprint}).json()["results"]) == 7  # numbers normalised away
    after = rows[3].last_failed_at.isoformat()
    assert len(viewer.get("/api/v1/dead-letters/", {"failed_after": after}).json()["results"]) == 5


@pytest.mark.parametrize("params", [
    {"cursor": "forged"}, {"cursor": "eyJ0IjogMX0"}, {"page_size": 0}, {"page_size": 501}, {"page_size": "x"},
    {"status": "zombie"}, {"failed_after": "yesterday"}, {"reason": "<script>"},
])
def test_bad_list_parameters_are_400(viewer: APIClient, params: dict[str, Any]) -> None:
    response = viewer.get("/api/v1/dead-letters/", params)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"]


@pytest.mark.parametrize("q", ["'; DROP TABLE dlq_deadletter; --", "<script>alert(1)</script>", "{{ 7*7 }}", "{% debug %}",
                               "a & | ! : * ( )", "\\", "\"unclosed", "-", "or or or"])
def test_hostile_search_strings_are_harmless(viewer: APIClient, q: str) -> None:
    DeadLetterFactory()
    response = viewer.get("/api/v1/dead-letters/", {"q": q})
    assert response.status_code == 200
    assert DeadLetter.objects.count() == 1


def test_full_text_uses_the_gin_index() -> None:

    qs = dead_letter_list(filters={"q": "division"})
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        plan = qs.explain()
        cursor.execute("RESET enable_seqscan")
    assert "dlq_search_gin" in plan


def test_list_costs_the_same_few_queries_at_any_page_size(viewer: APIClient, django_assert_max_num_queries: Any) -> None:
    DeadLetterFactory.create_batch(100)
    viewer.get("/api/v1/stats/")  # once per connection and token: the statement timeout, the token's last use
    for size in (10, 100):
        with django_assert_max_num_queries(3):
            response = viewer.get("/api/v1/dead-letters/", {"page_size": size})
        assert len(response.json()["results"]) == size


def test_detail_masks_secrets_and_edit_keeps_a_masked_secret(api_client_for: Any) -> None:
    operator = api_client_for(Role.OPERATOR)
    row = DeadLetterFactory(task_name="tasks.examples.validate_order",
                            args=[{"sku": "", "quantity": 1, "api_key": "sk-live-1"}], kwargs={})
    detail = operator.get(f"/api/v1/dead-letters/{row.pk}/").json()
    assert detail["args"] == [{"sku": "", "quantity": 1, "api_key": "********"}]
    assert "traceback" in detail and detail["attempts"] and detail["version"] == 1
    response = operator.patch(f"/api/v1/dead-letters/{row.pk}/", {
        "args": [{"sku": "A-1", "quantity": 1, "api_key": "********"}], "reason": "sku was empty", "version": 1}, format="json")
    assert response.status_code == 200, response.content
    row.refresh_from_db()
    assert row.args == [{"sku": "A-1", "quantity": 1, "api_key": "sk-live-1"}] and row.version == 2
    event = DeadLetterEvent.objects.get(dead_letter=row)
    assert event.action == "edit" and event.actor == "user-operator" and event.reason == "sku was empty"
    assert "sk-live-1" not in json.dumps(event.diff)
    events = operator.get(f"/api/v1/dead-letters/{row.pk}/events/").json()["results"]
    assert [e["action"] for e in events] == ["edit"]


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"args": [1, 2], "reason": "x", "version": 1}, 409, "stale_version"),
    ({"args": [1], "reason": "x", "version": 2}, 400, "invalid_arguments"),
    ({"args": [1, 2, 3], "reason": "x", "version": 2}, 400, "invalid_arguments"),
    ({"args": {"x": 1}, "reason": "x", "version": 2}, 400, "invalid"),
    ({"args": [1, 2], "version": 2}, 400, "invalid"),
    ({"args": [1, 2], "reason": "x"}, 400, "invalid"),
    ({"args": [1, 2], "reason": "x", "version": "2"}, 200, None),
    ({"queue": "bad queue", "reason": "x", "version": 2}, 400, "unknown_queue"),
])
def test_edit_rules(api_client_for: Any, body: dict[str, Any], status: int, code: str | None) -> None:
    operator = api_client_for(Role.OPERATOR)
    row = DeadLetterFactory(version=2)
    response = operator.patch(f"/api/v1/dead-letters/{row.pk}/", body, format="json")
    assert response.status_code == status, response.content
    if code:
        assert response.json()["error"]["code"] == code
        row.refresh_from_db()
        assert row.version == 2 and row.args == [1, 2]


def test_bad_json_bodies_change_nothing(api_client_for: Any) -> None:
    operator = api_client_for(Role.OPERATOR)
    row = DeadLetterFactory()
    url = f"/api/v1/dead-letters/{row.pk}/"
    for raw in ['{"args": [1,', '[1, 2]', '"text"', '{"args": ["\\u0000", 2], "reason": "x", "version": 1}',
                '{"args": ["\\udc00", 2], "reason": "x", "version": 1}',
                '{"args": ' + "[" * 200 + "]" * 200 + ', "reason": "x", "version": 1}']:
        response = operator.patch(url, raw, content_type="application/json")
        assert 400 <= response.status_code < 500, (raw[:40], response.content)
        assert "error" in response.json()
    big = json.dumps({"args": ["x" * (1024 * 1024), 2], "reason": "x", "version": 1})
    response = operator.patch(url, big, content_type="application/json")
    assert 400 <= response.status_code < 500
    row.refresh_from_db()
    assert row.version == 1 and row.args == [1, 2] and not DeadLetterEvent.objects.exists()
    assert operator.get("/api/v1/dead-letters/999999/").status_code == 404
    assert operator.get("/api/v1/dead-letters/abc/").status_code == 404


def test_requeue_discard_resolve(api_client_for: Any) -> None:
    operator = api_client_for(Role.OPERATOR)
    a, b, c = DeadLetterFactory.create_batch(3, queue="api-test")
    response = operator.post(f"/api/v1/dead-letters/{a.pk}/requeue/", {"reason": "retry"}, format="json")
    assert response.status_code == 202
    a.refresh_from_db()
    assert a.status == "requeued" and a.last_requeued_task_id == response.json()["task_id"]
    assert queue_length("api-test") == 1
    assert operator.post(f"/api/v1/dead-letters/{a.pk}/requeue/", {}, format="json").status_code == 409
    response = operator.post(f"/api/v1/dead-letters/{b.pk}/requeue/", {"queue": "other-q"}, format="json")
    assert response.status_code == 202 and queue_length("other-q") == 1
    assert operator.post(f"/api/v1/dead-letters/{c.pk}/discard/", {}, format="json").status_code == 400  # reason required
    assert operator.post(f"/api/v1/dead-letters/{c.pk}/discard/", {"reason": "obsolete"}, format="json").json()["status"] == "discarded"
    assert operator.post(f"/api/v1/dead-letters/{c.pk}/resolve/", {"reason": "x"}, format="json").status_code == 409
    assert operator.post(f"/api/v1/dead-letters/{a.pk}/resolve/", {"reason": "done by hand"}, format="json").json()["status"] == "resolved"
    actions = sorted(DeadLetterEvent.objects.values_list("action", flat=True))
    assert actions == ["discard", "requeue", "requeue", "resolve"]


def test_requeue_of_an_undecodable_or_unknown_row_is_409(api_client_for: Any) -> None:
    operator = api_client_for(Role.OPERATOR)
    undecodable = DeadLetterFactory(args=None, kwargs=None, reason="decode_error", raw_body="gAR9lC4=")
    unknown = DeadLetterFactory(task_name="billing.gone", reason="unregistered_task")
    for row in (undecodable, unknown):
        response = operator.post(f"/api/v1/dead-letters/{row.pk}/requeue/", {}, format="json")
        assert response.status_code == 409 and response.json()["error"]["code"] == "not_requeueable"
        assert response.json()["error"]["message"]
    fixed = operator.patch(f"/api/v1/dead-letters/{undecodable.pk}/", {"args": [1, 2], "kwargs": {}, "reason": "rebuilt",
                                                                       "version": 1}, format="json")
    assert fixed.status_code == 200
    assert operator.post(f"/api/v1/dead-letters/{undecodable.pk}/requeue/", {}, format="json").status_code == 202


def test_fifty_concurrent_requeues_publish_exactly_once(api_client_for: Any) -> None:
    row = DeadLetterFactory(queue="api-test")
    clients = [api_client_for(Role.OPERATOR) if i == 0 else None for i in range(1)]
    token = clients[0]._credentials["HTTP_AUTHORIZATION"]
    barrier = threading.Barrier(50)
    codes: list[int] = []

    def hit() -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=token)
        barrier.wait()
        codes.append(client.post(f"/api/v1/dead-letters/{row.pk}/requeue/", {"reason": "race"}, format="json").status_code)
        connection.close()

    threads = [threading.Thread(target=hit) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [202] + [409] * 49
    assert queue_length("api-test") == 1
    row.refresh_from_db()
    assert row.requeue_count == 1 and DeadLetterEvent.objects.filter(action="requeue").count() == 1


def test_broker_down_on_requeue_is_503_and_leaves_the_row_dead(api_client_for: Any, broker_down: str) -> None:
    operator = api_client_for(Role.OPERATOR)
    row = DeadLetterFactory()
    response = operator.post(f"/api/v1/dead-letters/{row.pk}/requeue/", {"reason": "x"}, format="json")
    assert response.status_code == 503 and response.json()["error"]["code"] == "broker_unavailable"
    row.refresh_from_db()
    assert row.status == "dead" and row.requeue_count == 0
    assert list(DeadLetterEvent.objects.order_by("id").values_list("action", flat=True)) == ["requeue", "requeue_failed"]


def test_groups_and_stats(viewer: APIClient) -> None:
    DeadLetterFactory.create_batch(3, exception_message="order 1 not found", task_name="tasks.demo.add")
    DeadLetterFactory(exception_message="card declined", exception_type="CardError")
    groups = viewer.get("/api/v1/groups/").json()["results"]
    assert [g["count"] for g in groups] == [3, 1]
    assert groups[0]["exception_type"] == "ValueError" and groups[0]["sample_message"]
    assert set(groups[0]) == {"fingerprint", "task_name", "exception_type", "sample_message", "count", "first_seen", "last_seen"}
    stats = viewer.get("/api/v1/stats/").json()
    assert stats["total"] == 4 and stats["by_status"] == {"dead": 4} and stats["by_reason"] == {"non_retryable": 4}
    assert stats["by_task"] == {"tasks.demo.add": 4}
    assert len(stats["per_hour"]) == 48 and stats["per_hour"][-1]["count"] == 4


def test_roles_walk_every_action(api_client_for: Any) -> None:
    clients = {role: api_client_for(role) for role in (Role.VIEWER, Role.OPERATOR, Role.ADMIN)}
    clients[None] = api_client_for(None)
    anonymous = APIClient()
    matrix = [
        ("get", "/api/v1/dead-letters/", None, {Role.VIEWER, Role.OPERATOR, Role.ADMIN}),
        ("get", "/api/v1/dead-letters/{id}/", None, {Role.VIEWER, Role.OPERATOR, Role.ADMIN}),
        ("get", "/api/v1/dead-letters/{id}/events/", None, {Role.VIEWER, Role.OPERATOR, Role.ADMIN}),
        ("get", "/api/v1/groups/", None, {Role.VIEWER, Role.OPERATOR, Role.ADMIN}),
        ("get", "/api/v1/stats/", None, {Role.VIEWER, Role.OPERATOR, Role.ADMIN}),
        ("get", "/api/v1/redrive-jobs/", None, {Role.VIEWER, Role.OPERATOR, Role.ADMIN}),
        ("get", "/api/v1/tasks/", None, {Role.VIEWER, Role.OPERATOR, Role.ADMIN}),
        ("patch", "/api/v1/dead-letters/{id}/", {"reason": "r", "version": 1}, {Role.OPERATOR, Role.ADMIN}),
        ("post", "/api/v1/dead-letters/{id}/discard/", {"reason": "r"}, {Role.OPERATOR, Role.ADMIN}),
        ("post", "/api/v1/dead-letters/{id}/resolve/", {"reason": "r"}, {Role.OPERATOR, Role.ADMIN}),
        ("post", "/api/v1/dead-letters/{id}/requeue/", {"queue": "api-test"}, {Role.OPERATOR, Role.ADMIN}),
        ("post", "/api/v1/dead-letters/bulk/", {"action": "discard", "filter": {}, "dry_run": True}, {Role.ADMIN}),
        ("get", "/api/v1/dead-letters/export/", None, {Role.ADMIN}),
        ("post", "/api/v1/tasks/enqueue/", {"task": "tasks.demo.add", "args": [1, 2], "queue": "api-test"}, {Role.OPERATOR, Role.ADMIN}),
    ]
    for method, url, body, allowed in matrix:
        for role, client in clients.items():
            row = DeadLetterFactory()
            response = getattr(client, method)(url.format(id=row.pk), body, format="json")
            if role in allowed:
                assert response.status_code < 400, (method, url, role, response.content)
            else:
                assert response.status_code == 403, (method, url, role, response.status_code)
                row.refresh_from_db()
                assert row.status == "dead" and row.version == 1
        assert getattr(anonymous, method)(url.format(id=1), body, format="json").status_code == 401


def test_unknown_api_path_is_a_json_404(viewer: APIClient) -> None:
    response = viewer.get("/api/v1/nope/")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
