"""Issue 19: each role gets exactly its powers, secrets stay masked everywhere, logins and
expensive reads are throttled, every operator change is audited."""
from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.urls import URLPattern, URLResolver
from django.utils import timezone
from rest_framework.test import APIClient

from dlq.models import ApiToken, AuditEvent, DeadLetter, RedriveJob, ReprocessPolicy, Role
from tests.conftest import make_user
from tests.factories import DeadLetterFactory

pytestmark = pytest.mark.django_db(transaction=True)
ROLES: list[str | None] = [Role.VIEWER, Role.OPERATOR, Role.ADMIN, None]
RANK = {None: 0, Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


# --- Every route, every role ------------------------------------------------------------------

# (method, path, body, the least role allowed). `{id}` is a fresh dead letter, `{job}` a job,
# `{policy}` a policy, `{fp}` the dead letter's fingerprint.
API = [
    ("get", "/api/v1/dead-letters/", None, Role.VIEWER),
    ("get", "/api/v1/dead-letters/{id}/", None, Role.VIEWER),
    ("get", "/api/v1/dead-letters/{id}/events/", None, Role.VIEWER),
    ("patch", "/api/v1/dead-letters/{id}/", {"reason": "r", "version": 1, "args": [1, 1]}, Role.OPERATOR),
    ("post", "/api/v1/dead-letters/{id}/requeue/", {}, Role.OPERATOR),
    ("post", "/api/v1/dead-letters/{id}/discard/", {"reason": "r"}, Role.OPERATOR),
    ("post", "/api/v1/dead-letters/{id}/resolve/", {"reason": "r"}, Role.OPERATOR),
    ("post", "/api/v1/dead-letters/bulk/", {"action": "discard", "filter": {}, "dry_run": True}, Role.ADMIN),
    ("get", "/api/v1/dead-letters/export/", None, Role.ADMIN),
    ("get", "/api/v1/redrive-jobs/", None, Role.VIEWER),
    ("get", "/api/v1/redrive-jobs/{job}/", None, Role.VIEWER),
    ("post", "/api/v1/redrive-jobs/{job}/cancel/", {}, Role.ADMIN),
    ("get", "/api/v1/groups/", None, Role.VIEWER),
    ("get", "/api/v1/stats/", None, Role.VIEWER),
    ("get", "/api/v1/audit-events/", None, Role.VIEWER),
    ("get", "/api/v1/tasks/", None, Role.VIEWER),
    ("post", "/api/v1/tasks/enqueue/", {"task": "tasks.demo.add", "args": [1, 2]}, Role.OPERATOR),
    ("get", "/api/v1/reprocess-policies/", None, Role.VIEWER),
    ("post", "/api/v1/reprocess-policies/", {"task_name": "tasks.demo.flaky"}, Role.ADMIN),
    ("get", "/api/v1/reprocess-policies/{policy}/", None, Role.VIEWER),
    ("patch", "/api/v1/reprocess-policies/{policy}/", {"enabled": False}, Role.ADMIN),
    ("delete", "/api/v1/reprocess-policies/{policy}/", None, Role.ADMIN),
]
PAGES = [
    ("get", "/dashboard/", Role.VIEWER),
    ("get", "/dashboard/ops/broker/", Role.VIEWER),
    ("get", "/dashboard/dead-letters/", Role.VIEWER),
    ("post", "/dashboard/dead-letters/bulk/", Role.ADMIN),
    ("get", "/dashboard/dead-letters/{id}/", Role.VIEWER),
    ("get", "/dashboard/dead-letters/{id}/status/", Role.VIEWER),
    ("post", "/dashboard/dead-letters/{id}/edit/", Role.OPERATOR),
    ("post", "/dashboard/dead-letters/{id}/requeue/", Role.OPERATOR),
    ("post", "/dashboard/dead-letters/{id}/discard/", Role.OPERATOR),
    ("post", "/dashboard/dead-letters/{id}/resolve/", Role.OPERATOR),
    ("get", "/dashboard/groups/", Role.VIEWER),
    ("get", "/dashboard/groups/{fp}/", Role.VIEWER),
    ("get", "/dashboard/jobs/", Role.VIEWER),
    ("get", "/dashboard/jobs/{job}/", Role.VIEWER),
    ("get", "/dashboard/jobs/{job}/progress/", Role.VIEWER),
    ("post", "/dashboard/jobs/{job}/cancel/", Role.ADMIN),
    ("get", "/dashboard/schedules/", Role.VIEWER),
    ("post", "/dashboard/schedules/{schedule}/disable/", Role.ADMIN),
    ("get", "/dashboard/policies/", Role.VIEWER),
    ("post", "/dashboard/policies/new/", Role.ADMIN),
    ("post", "/dashboard/policies/{policy}/", Role.ADMIN),
    ("get", "/dashboard/audit/", Role.VIEWER),
]


def _routes(patterns: list[Any], prefix: str = "") -> set[str]:
    found: set[str] = set()
    for p in patterns:
        if isinstance(p, URLResolver):
            found |= _routes(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            found.add(prefix + str(p.pattern))
    return found


def test_the_matrix_covers_every_route() -> None:
    """A route added without a line in the matrix fails here."""
    from dashboard import urls as page_urls
    from dashboard.api import urls as api_urls

    def normal(route: str) -> str:
        route = re.sub(r"\(\?P<[^>]+>[^)]+\)", "{x}", route)
        return re.sub(r"<[^>]+>", "{x}", route).replace("^", "").replace("$", "")

    api = {normal(r) for r in _routes(api_urls.urlpatterns) if "format" not in r} - {""}
    covered = {re.sub(r"\{[a-z]+\}", "{x}", path.removeprefix("/api/v1/")) for _, path, _, _ in API}
    assert api <= covered, sorted(api - covered)
    pages = {re.sub(r"<[^>]+>", "{x}", r) for r in _routes(page_urls.urlpatterns)}
    covered_pages = {re.sub(r"\{[a-z]+\}", "{x}", path.removeprefix("/dashboard/")).replace("disable/", "{x}/")
                     for _, path, _ in PAGES}
    assert pages <= covered_pages, sorted(pages - covered_pages)


def _objects() -> dict[str, Any]:
    from django_celery_beat.models import PeriodicTask

    row = DeadLetterFactory(task_name="tasks.demo.add", args=[1, 0], queue="celery")
    job = RedriveJob.objects.create(action="discard", actor="x", reason="r", total=0, status="running")
    policy, _ = ReprocessPolicy.objects.get_or_create(task_name="tasks.demo.add")
    schedule = PeriodicTask.objects.order_by("id").first()
    return {"id": row.pk, "job": job.pk, "policy": policy.pk, "fp": row.fingerprint, "schedule": schedule.pk}


def _expired_token_client() -> APIClient:
    user = make_user("expired-admin", Role.ADMIN)
    token, key = ApiToken.objects.create(user=user, expiry=timedelta(days=1))
    ApiToken.objects.filter(pk=token.pk).update(expiry=timezone.now() - timedelta(seconds=1))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.mark.parametrize(("method", "path", "body", "needed"), API, ids=[f"{m} {p}" for m, p, _, _ in API])
def test_every_api_route_gives_each_role_exactly_its_powers(api_client_for: Any, method: str, path: str, body: Any,
                                                            needed: str, settings: Any) -> None:
    settings.QUEUE_HIGH_WATER_MARK = 0
    for role in ROLES:
        client = api_client_for(role)
        url = path.format(**_objects())
        response = getattr(client, method)(url, body, format="json")
        if RANK[role] >= RANK[needed]:
            assert response.status_code < 400 or response.status_code == 409, (role, response.status_code,
                                                                               response.content[:300])
        else:
            assert response.status_code == 403, (role, response.status_code)
            assert response.json()["error"]["code"] == "permission_denied"
    url = path.format(**_objects())
    assert getattr(APIClient(), method)(url, body, format="json").status_code == 401
    assert getattr(_expired_token_client(), method)(url, body, format="json").status_code == 401


@pytest.mark.parametrize(("method", "path", "needed"), PAGES, ids=[f"{m} {p}" for m, p, _ in PAGES])
def test_every_page_gives_each_role_exactly_its_powers(method: str, path: str, needed: str) -> None:
    for role in ROLES:
        client = Client()
        client.force_login(make_user(f"page-{role}", role))
        response = getattr(client, method)(path.format(**_objects()))
        if RANK[role] >= RANK[needed]:
            assert response.status_code != 403, (role, response.status_code)
        else:
            assert response.status_code == 403, (role, response.status_code)
    anonymous = getattr(Client(), method)(path.format(**_objects()))
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]


# --- Task rules by role -----------------------------------------------------------------------

def test_operators_run_only_allow_listed_tasks_and_nobody_runs_internal_ones(api_client_for: Any) -> None:
    operator, admin = api_client_for(Role.OPERATOR), api_client_for(Role.ADMIN)
    body = {"task": "tasks.examples.daily_digest", "args": []}  # registered, not allow-listed
    assert operator.post("/api/v1/tasks/enqueue/", body, format="json").status_code == 403
    assert admin.post("/api/v1/tasks/enqueue/", body, format="json").status_code == 202
    for name in ("celery.map", "dlq.prune", "celery.chord_unlock"):
        response = admin.post("/api/v1/tasks/enqueue/", {"task": name, "args": []}, format="json")
        assert response.status_code in (400, 403), (name, response.content)
        row = DeadLetterFactory(task_name=name, args=[], kwargs={})
        requeue = admin.post(f"/api/v1/dead-letters/{row.pk}/requeue/", {}, format="json")
        edit = admin.patch(f"/api/v1/dead-letters/{row.pk}/", {"args": [], "reason": "r", "version": 1}, format="json")
        assert requeue.status_code in (403, 409) and edit.status_code in (400, 403), (name, requeue.content, edit.content)
        row.refresh_from_db()
        assert row.status == "dead" and row.version == 1
    digest = DeadLetterFactory(task_name="tasks.examples.daily_digest", args=[], kwargs={})
    assert operator.post(f"/api/v1/dead-letters/{digest.pk}/requeue/", {}, format="json").status_code == 403
    assert admin.post(f"/api/v1/dead-letters/{digest.pk}/requeue/", {}, format="json").status_code == 202


def test_bulk_requeue_skips_internal_tasks(api_client_for: Any, monkeypatch: Any) -> None:
    from dlq import services
    from dlq.services import redrive

    monkeypatch.setattr(redrive, "redrive_job_dispatch", lambda *, job_id: None)
    internal = DeadLetterFactory(task_name="celery.map", args=[], kwargs={})
    normal = DeadLetterFactory(task_name="tasks.demo.add", args=[1, 2])
    job = services.dead_letters_bulk_start(actor="ops", action="requeue", reason="r", ids=[internal.pk, normal.pk])
    services.redrive_job_run(job_id=job.pk)
    assert DeadLetter.objects.get(pk=internal.pk).status == "dead"
    assert DeadLetter.objects.get(pk=normal.pk).status in ("requeued", "resolved")  # a session worker may run it
    assert RedriveJob.objects.get(pk=job.pk).failed == 1


# --- Idempotency keys -------------------------------------------------------------------------

def test_idempotency_keys_belong_to_a_client_and_a_request(api_client_for: Any) -> None:
    alice, bob = api_client_for(Role.OPERATOR), APIClient()
    _, key = ApiToken.objects.create(user=make_user("bob-op", Role.OPERATOR))
    bob.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    body = {"task": "tasks.demo.add", "args": [1, 2], "idempotency_key": "order-123"}
    first = alice.post("/api/v1/tasks/enqueue/", body, format="json")
    assert first.status_code == 202
    again = alice.post("/api/v1/tasks/enqueue/", body, format="json")
    assert again.status_code == 200 and again.json()["task_id"] == first.json()["task_id"]
    other_args = alice.post("/api/v1/tasks/enqueue/", {**body, "args": [9, 9]}, format="json")
    other_task = alice.post("/api/v1/tasks/enqueue/", {**body, "task": "tasks.demo.divide"}, format="json")
    for response in (other_args, other_task):
        assert response.status_code == 409 and response.json()["error"]["code"] == "idempotency_key_reused"
    # Another client's key of the same name is its own.
    assert bob.post("/api/v1/tasks/enqueue/", body, format="json").status_code == 202
    # The standard header works like the field; the two must not disagree.
    header = alice.post("/api/v1/tasks/enqueue/", {"task": "tasks.demo.add", "args": [1, 2]}, format="json",
                        HTTP_IDEMPOTENCY_KEY="order-123")
    assert header.status_code == 200 and header.json()["task_id"] == first.json()["task_id"]
    both = alice.post("/api/v1/tasks/enqueue/", body, format="json", HTTP_IDEMPOTENCY_KEY="order-999")
    assert both.status_code == 400


# --- Secrets ----------------------------------------------------------------------------------

SECRETS = ("hunter2-PLANTED", "AKIA-PLANTED-77", "sk_live_PLANTED")


def _plant() -> DeadLetter:
    from dlq.services import CapturedFailure, dead_letter_capture

    dead_letter_capture(failure=CapturedFailure(
        task_id="t-secret", task_name="tasks.demo.add", reason="non_retryable", exception_type="ValueError",
        exception_message=f"login failed for password={SECRETS[0]} with key {SECRETS[1]}",
        traceback=f'Traceback...\n  charge(api_key="{SECRETS[1]}", token=\'{SECRETS[2]}\')\nValueError: denied',
        args=[1], kwargs={"password": SECRETS[0], "api_key": SECRETS[1], "nested": {"stripe_token": SECRETS[2]}},
        headers={"authorization": f"Bearer {SECRETS[2]}"},
        attempts=[{"number": 1, "at": timezone.now().isoformat(), "exception_type": "ValueError",
                   "message": f"password={SECRETS[0]}", "worker": "w"}]))
    return DeadLetter.objects.get(task_id="t-secret")


def _assert_clean(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret} leaked in {where}"


def test_planted_secrets_leave_through_no_door(api_client_for: Any, settings: Any) -> None:
    from dlq.models import Alert
    from dlq.services import alert_payload, alerts_check

    settings.DLQ_ALERT_NEW_GROUP_WINDOW_MINUTES = 60
    row = _plant()
    stored = DeadLetter.objects.filter(pk=row.pk).values_list("exception_message", "traceback", "attempts").get()
    _assert_clean("the stored message, traceback and attempts", json.dumps(stored))
    admin = api_client_for(Role.ADMIN)
    for url in (f"/api/v1/dead-letters/{row.pk}/", "/api/v1/dead-letters/", f"/api/v1/dead-letters/{row.pk}/events/",
                "/api/v1/groups/", "/api/v1/stats/", "/api/v1/dead-letters/export/?format=csv",
                "/api/v1/dead-letters/export/?format=json", "/api/v1/audit-events/"):
        response = admin.get(url)
        assert response.status_code == 200, url
        _assert_clean(url, b"".join(response.streaming_content).decode() if response.streaming
                      else response.content.decode())
    for secret in SECRETS:  # a search cannot confirm a guess
        assert admin.get("/api/v1/dead-letters/", {"q": secret}).json()["results"] == []
    client = Client()
    client.force_login(get_user_model().objects.get(username="user-admin"))
    for url in (f"/dashboard/dead-letters/{row.pk}/", "/dashboard/dead-letters/", f"/dashboard/groups/{row.fingerprint}/",
                "/dashboard/", f"/admin/dlq/deadletter/{row.pk}/change/", "/admin/dlq/deadletter/",
                "/dashboard/audit/"):
        response = client.get(url)
        assert response.status_code == 200, url
        _assert_clean(url, response.content.decode())
    alerts_check()
    for alert in Alert.objects.all():
        _assert_clean(f"alert {alert.key}", json.dumps(alert_payload(alert, "open")))


def test_task_results_in_the_admin_are_masked(admin_client: Any) -> None:
    from django_celery_results.models import TaskResult

    result = TaskResult.objects.create(task_id="r-1", task_name="tasks.demo.add", status="FAILURE",
                                       task_args="[1]", task_kwargs=f"{{'password': '{SECRETS[0]}'}}",
                                       result=json.dumps({"exc_message": [f"api_key={SECRETS[1]}"]}),
                                       traceback=f"token='{SECRETS[2]}'")
    page = admin_client.get(f"/admin/django_celery_results/taskresult/{result.pk}/change/")
    assert page.status_code == 200
    _assert_clean("the task result admin", page.content.decode())
    search = admin_client.get("/admin/django_celery_results/taskresult/", {"q": SECRETS[0]})
    assert "r-1" not in search.content.decode()


def test_log_lines_are_masked(caplog: Any) -> None:
    import logging

    from taskplatform.logfilters import MaskSecrets

    record = logging.LogRecord("celery", logging.ERROR, __file__, 1, "Task failed: password=%s api_key='%s'",
                               (SECRETS[0], SECRETS[1]), None)
    MaskSecrets().filter(record)
    _assert_clean("a log line", record.getMessage())


def test_csv_cells_cannot_be_formulas(api_client_for: Any) -> None:
    DeadLetterFactory(queue="-1-1", exception_message='=HYPERLINK("http://evil","click")', task_name="@SUM(1)")
    response = api_client_for(Role.ADMIN).get("/api/v1/dead-letters/export/?format=csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0]["queue"] == "'-1-1" and rows[0]["exception_message"].startswith("'=HYPERLINK")
    assert rows[0]["task_name"] == "'@SUM(1)"


# --- Throttling, lockout, timeouts, pagination ------------------------------------------------

def test_six_wrong_passwords_lock_the_account_out(client: Client) -> None:
    make_user("locky", Role.VIEWER)
    codes = [client.post("/accounts/login/", {"username": "locky", "password": "wrong"}).status_code for _ in range(6)]
    assert codes[:4] == [200] * 4 and codes[-1] == 429
    # Locked out: even the right password is refused until the cool-off (or axes_reset).
    assert client.post("/accounts/login/", {"username": "locky", "password": "pw-locky"}).status_code == 429
    from django.core.management import call_command

    call_command("axes_reset", verbosity=0)
    ok = client.post("/accounts/login/", {"username": "locky", "password": "pw-locky"})
    assert ok.status_code == 302


def test_expensive_reads_are_throttled(api_client_for: Any) -> None:
    admin = api_client_for(Role.ADMIN)
    codes = [admin.get("/api/v1/dead-letters/export/?format=json").status_code for _ in range(11)]
    assert codes[:10] == [200] * 10 and codes[10] == 429
    assert admin.get("/api/v1/dead-letters/").status_code == 200  # other reads have their own budget


def test_web_requests_run_with_a_statement_timeout(client: Client, settings: Any) -> None:
    settings.WEB_STATEMENT_TIMEOUT_MS = 1500
    client.get("/healthz")
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "1500ms"


def test_the_jobs_list_is_paginated_without_ids(api_client_for: Any) -> None:
    for _ in range(60):
        RedriveJob.objects.create(action="discard", actor="x", reason="r", ids=list(range(1000)), total=1000)
    page = api_client_for(Role.VIEWER).get("/api/v1/redrive-jobs/")
    body = page.json()
    assert len(body["results"]) == 50 and body["next"]
    assert all("ids" not in job and job["ids_count"] == 1000 for job in body["results"])
    assert len(api_client_for(Role.ADMIN).get(body["next"]).json()["results"]) == 10


# --- Audit ------------------------------------------------------------------------------------

def test_every_operator_change_is_audited(api_client_for: Any, monkeypatch: Any) -> None:
    from django_celery_beat.models import PeriodicTask

    from dlq import services
    from dlq.services import redrive

    monkeypatch.setattr(redrive, "redrive_job_dispatch", lambda *, job_id: None)
    admin = api_client_for(Role.ADMIN)
    policy = admin.post("/api/v1/reprocess-policies/", {"task_name": "tasks.demo.flaky"}, format="json").json()
    admin.patch(f"/api/v1/reprocess-policies/{policy['id']}/", {"enabled": False}, format="json")
    admin.delete(f"/api/v1/reprocess-policies/{policy['id']}/")
    schedule = PeriodicTask.objects.order_by("id").first()
    services.periodic_task_set_enabled(periodic_task_id=schedule.pk, enabled=not schedule.enabled, actor="user-admin")
    row = DeadLetterFactory(task_name="tasks.demo.add", args=[1, 2])
    services.dead_letter_resolve(dead_letter_id=row.pk, actor="user-admin", reason="done by hand")  # its own event
    DeadLetterFactory(task_name="tasks.demo.add", args=[1, 2])
    job = admin.post("/api/v1/dead-letters/bulk/", {"action": "discard", "filter": {}, "reason": "cleanup"},
                     format="json").json()["job"]
    admin.post(f"/api/v1/redrive-jobs/{job['id']}/cancel/", {}, format="json")
    b"".join(admin.get("/api/v1/dead-letters/export/?format=csv").streaming_content)
    admin.post("/api/v1/tasks/enqueue/", {"task": "tasks.demo.add", "args": [1, 2]}, format="json")
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions == ["policy.create", "policy.update", "policy.delete", "schedule.disable" if schedule.enabled
                       else "schedule.enable", "job.start", "job.cancel", "export", "task.enqueue"], actions
    assert set(AuditEvent.objects.exclude(action__startswith="schedule").values_list("actor", flat=True)) == {"user-admin"}
    viewer = api_client_for(Role.VIEWER)
    listed = viewer.get("/api/v1/audit-events/", {"object_type": "reprocess_policy"}).json()
    assert [e["action"] for e in listed["results"]] == ["policy.delete", "policy.update", "policy.create"]
    assert listed["results"][1]["diff"] == {"enabled": [True, False]}
    everything = viewer.get("/api/v1/audit-events/", {"page_size": 500}).json()["results"]
    assert {"dead_letter"} <= {e["object_type"] for e in everything}  # the dead letters' own events are in the list
