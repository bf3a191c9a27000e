"""Ops pages (server-rendered). Each page calls one selector or service."""
from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from dlq.selectors import dead_letter_counts, dead_letter_list


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    counts = dead_letter_counts()
    latest = dead_letter_list(filters={"status": "dead"})[:20]
    return render(request, "dashboard/overview.html", {
        "counts": counts, "latest": latest, "flower_url": settings.FLOWER_URL,
    })
