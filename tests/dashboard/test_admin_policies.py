"""The reprocess-policy admin and the policies page go through the same rules as the API
(``dlq.services.reprocess_policy_validate``): what the API refuses, they refuse, and
nothing is saved; what the admin saves is audited."""
from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from dlq.models import AuditEvent, ReprocessPolicy, Role
from tests.conftest import make_user

pytestmark = pytest.mark.django_db
API = "/api/v1/reprocess-policies/"
ADD = "/admin/dlq/reprocesspolicy/add/"
VALID = {"task_name": "tasks.demo.flaky", "reasons": ["max_retries_exceeded"], "exception_types": [],
         "cooldown_seconds": 60, "backoff_factor": 2.0, "max_auto_requeues": 3, "circuit_max_failures_per_minute": 10,
         "enabled": True}


def admin_form(data: dict[str, Any]) -> dict[str, str]:
    """``data`` as the admin's add form posts it (JSON fields as text, a checked box)."""
    form = {key: json.dumps(value) if isinstance(value, list) else str(value) for key, value in data.items()
            if key != "enabled"}
    return {**form, **({"enabled": "on"} if data.get("enabled") else {}), "_save": "Save"}


@pytest.fixture
def admin_page(client: Client) -> Client:
    client.force_login(make_user("policy-admin", Role.ADMIN))
    return client


@pytest.mark.parametrize(("change", "field"), [
    ({"task_name": "no.such.task"}, "task_name"),
    ({"max_auto_requeues": 5000}, "max_auto_requeues"),  # the model's PositiveIntegerField takes it
    ({"backoff_factor": 0.5}, "backoff_factor"),
    ({"cooldown_seconds": 30 * 86400 + 1}, "cooldown_seconds"),
    ({"reasons": ["zombie"]}, "reasons"),
    ({"exception_types": ["  "]}, "exception_types"),
])
def test_the_admin_refuses_what_the_api_refuses(api_client_for: Any, admin_page: Client, change: dict[str, Any],
                                                field: str) -> None:
    data = {**VALID, **change}
    api = api_client_for(Role.ADMIN).post(API, data, format="json")
    assert api.status_code == 400 and field in api.json()["error"]["fields"], api.json()
    page = admin_page.post(ADD, admin_form(data))
    assert page.status_code == 200  # the form again, with the error on the field
    assert field in page.context["adminform"].form.errors, page.context["adminform"].form.errors
    assert not ReprocessPolicy.objects.exists() and not AuditEvent.objects.exists()


def page_form(data: dict[str, Any]) -> dict[str, str]:
    """``data`` as the policies page posts it (lists comma-separated, a checked box)."""
    form = {key: ", ".join(value) if isinstance(value, list) else str(value) for key, value in data.items()
            if key != "enabled"}
    return {**form, **({"enabled": "on"} if data.get("enabled") else {})}


@pytest.mark.parametrize("change", [{"task_name": "no.such.task"}, {"max_auto_requeues": 5000},
                                    {"backoff_factor": 0.5}, {"reasons": ["zombie"]}, {"cooldown_seconds": "soon"}])
def test_the_policies_page_refuses_what_the_api_refuses(api_client_for: Any, admin_page: Client,
                                                        change: dict[str, Any]) -> None:
    data = {**VALID, **change}
    assert api_client_for(Role.ADMIN).post(API, data, format="json").status_code == 400
    page = admin_page.post("/dashboard/policies/new/", page_form(data))
    assert page.status_code == 400 and b"invalid policy" in page.content
    assert not ReprocessPolicy.objects.exists() and not AuditEvent.objects.exists()
    assert admin_page.post("/dashboard/policies/new/", page_form(VALID)).status_code == 302


def test_the_admin_refuses_a_second_policy_for_a_task(admin_page: Client) -> None:
    ReprocessPolicy.objects.create(task_name="tasks.demo.flaky")
    page = admin_page.post(ADD, admin_form(VALID))
    assert page.status_code == 200 and "task_name" in page.context["adminform"].form.errors
    assert ReprocessPolicy.objects.count() == 1


def test_the_admin_saves_and_deletes_through_the_audited_services(admin_page: Client) -> None:
    assert admin_page.post(ADD, admin_form({**VALID, "reasons": []})).status_code == 302
    policy = ReprocessPolicy.objects.get()
    assert (policy.task_name, policy.reasons, policy.cooldown_seconds) == ("tasks.demo.flaky", [], 60)
    change = admin_page.post(f"/admin/dlq/reprocesspolicy/{policy.pk}/change/",
                             admin_form({**VALID, "max_auto_requeues": 1001}))
    assert change.status_code == 200 and "max_auto_requeues" in change.context["adminform"].form.errors
    assert admin_page.post(f"/admin/dlq/reprocesspolicy/{policy.pk}/change/",
                           admin_form({**VALID, "max_auto_requeues": 7})).status_code == 302
    policy.refresh_from_db()
    assert policy.max_auto_requeues == 7
    assert admin_page.post(f"/admin/dlq/reprocesspolicy/{policy.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not ReprocessPolicy.objects.exists()
    assert list(AuditEvent.objects.order_by("id").values_list("action", "actor")) == [
        ("policy.create", "policy-admin"), ("policy.update", "policy-admin"), ("policy.delete", "policy-admin")]
