"""S6, queries per page: the API's dead-letter list at three page sizes and the dashboard overview."""
from __future__ import annotations

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from bench.harness import Row
from bench.scenarios.common import Sizes, admin_user
from bench.scenarios.seed import seed_dead_letters
from dlq.models import ApiToken, DeadLetter


def s6(sizes: Sizes, repeat: int) -> list[Row]:
    if DeadLetter.objects.count() < 600:
        seed_dead_letters(1000)
    user = admin_user()
    _, key = ApiToken.objects.create(user=user)  # django-rest-knox: the key is shown once
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    counts = {}
    for size in (1, 50, 500):
        api.get(f"/api/v1/dead-letters/?page_size={size}")  # warm caches (content types, ...)
        with CaptureQueriesContext(connection) as ctx:
            response = api.get(f"/api/v1/dead-letters/?page_size={size}&status=dead")
        assert response.status_code == 200, response.content[:500]
        counts[size] = len(ctx)
    rows = []
    row = Row("S6", "API dead-letters list, queries per page (page_size 1 / 50 / 500)", "queries",
              [float(max(counts.values()))], goal="≤ 3 at any page size", higher_is_better=False,
              notes=" / ".join(str(counts[s]) for s in (1, 50, 500)) + " (token auth included)")
    row.met = max(counts.values()) <= 3
    rows.append(row)
    client = Client()
    client.force_login(user)
    client.get("/dashboard/")
    with CaptureQueriesContext(connection) as ctx:
        response = client.get("/dashboard/")
    assert response.status_code == 200
    row = Row("S6", "dashboard overview, queries", "queries", [float(len(ctx))], goal="≤ 10",
              higher_is_better=False, notes="session auth included")
    row.met = len(ctx) <= 10
    rows.append(row)
    return rows
