"""The ops pages under /dashboard/: a login first, then each role sees and may do exactly its
own part; every input has a label and every form its CSRF token."""
from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from dlq.models import DeadLetter, DeadLetterEvent, DeadLetterStatus, RedriveJob, Role
from tests.dashboard.conftest import dead_url
from tests.factories import DeadLetterFactory

pytestmark = pytest.mark.django_db(transaction=True)

WRITE_ACTIONS = re.compile(rb'action="[^"]*/(edit|requeue|discard|resolve|bulk|cancel|enable|disable|run)/"')


def test_pages_need_a_login(client: Client) -> None:
    row = DeadLetterFactory()
    for url in ("/dashboard/", "/dashboard/dead-letters/", dead_url(row.pk), "/dashboard/groups/",
                f"/dashboard/groups/{row.fingerprint}/", "/dashboard/jobs/", "/dashboard/schedules/",
                "/dashboard/ops/broker/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url
    response = client.post(dead_url(row.pk, "discard"), {"reason": "x"})
    assert response.status_code == 302
    assert DeadLetter.objects.get().status == DeadLetterStatus.DEAD


def test_a_user_without_a_role_gets_403(login: Any) -> None:
    client = login(None)
    response = client.get("/dashboard/")
    assert response.status_code == 403 and b"viewer role" in response.content


def test_viewer_reads_everything_and_sees_no_write_button(login: Any) -> None:

    row = DeadLetterFactory(exception_message="card declined")
    job = RedriveJob.objects.create(action="requeue", actor="x", reason="r", total=5, done=2, status="running")
    every = IntervalSchedule.objects.create(every=5, period="minutes")
    PeriodicTask.objects.create(name="demo add", task="tasks.demo.add", interval=every, args="[1, 2]")
    client = login(Role.VIEWER)
    pages = ["/dashboard/", "/dashboard/dead-letters/", dead_url(row.pk), "/dashboard/groups/",
             f"/dashboard/groups/{row.fingerprint}/", "/dashboard/jobs/", f"/dashboard/jobs/{job.pk}/",
             f"/dashboard/jobs/{job.pk}/progress/", "/dashboard/schedules/"]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        assert not WRITE_ACTIONS.search(response.content), (url, WRITE_ACTIONS.search(response.content))
        assert b'type="checkbox" name="ids"' not in response.content
    assert b"card declined" in client.get(dead_url(row.pk)).content
    # ... and every write answers 403 and changes nothing.
    for url, data in [(dead_url(row.pk, "requeue"), {}), (dead_url(row.pk, "discard"), {"reason": "x"}),
                      (dead_url(row.pk, "resolve"), {"reason": "x"}),
                      (dead_url(row.pk, "edit"), {"args": "[1]", "kwargs": "{}", "reason": "x", "version": "1", "intent": "save"}),
                      ("/dashboard/dead-letters/bulk/", {"action": "discard", "scope": "filter"}),
                      (f"/dashboard/jobs/{job.pk}/cancel/", {}),
                      (f"/dashboard/schedules/{PeriodicTask.objects.get(name='demo add').pk}/disable/", {})]:
        assert client.post(url, data).status_code == 403, url
    row.refresh_from_db()
    job.refresh_from_db()
    assert row.status == DeadLetterStatus.DEAD and row.version == 1 and not DeadLetterEvent.objects.exists()
    assert job.status == "running" and PeriodicTask.objects.get(name="demo add").enabled


def test_operator_sees_row_actions_but_no_bulk_admin_sees_bulk(login: Any) -> None:
    row = DeadLetterFactory()
    operator = login(Role.OPERATOR, "opal")
    detail = operator.get(dead_url(row.pk)).content
    for verb in (b"edit", b"requeue", b"discard", b"resolve"):
        assert b'action="/dashboard/dead-letters/%d/%s/"' % (row.pk, verb) in detail
    listing = operator.get("/dashboard/dead-letters/").content
    assert b"/dashboard/dead-letters/bulk/" not in listing
    assert operator.post("/dashboard/dead-letters/bulk/", {"action": "discard", "scope": "filter"}).status_code == 403
    admin = login(Role.ADMIN, "ada")
    listing = admin.get("/dashboard/dead-letters/").content
    assert b'action="/dashboard/dead-letters/bulk/"' in listing and b'name="ids"' in listing


def test_forms_have_labels_and_csrf(login: Any) -> None:
    row = DeadLetterFactory()
    client = login(Role.ADMIN)
    for url in ("/dashboard/dead-letters/", dead_url(row.pk), "/accounts/login/"):
        html = client.get(url).content.decode()
        ids = set(re.findall(r'<(?:input|select|textarea)[^>]*\bid="([^"]+)"', html))
        labelled = set(re.findall(r'<label[^>]*for="([^"]+)"', html)) | set(
            re.findall(r'<(?:input|select|textarea)[^>]*aria-label="[^"]+"[^>]*\bid="([^"]+)"', html)) | set(
            re.findall(r'<(?:input|select|textarea)[^>]*\bid="([^"]+)"[^>]*aria-label="[^"]+"', html))
        hidden = set(re.findall(r'<input type="hidden"[^>]*\bid="([^"]+)"', html))
        assert ids - hidden <= labelled, (url, ids - hidden - labelled)
        for form in re.findall(r"<form[^>]*method=\"post\".*?</form>", html, flags=re.S):
            assert "csrfmiddlewaretoken" in form, (url, form[:200])
