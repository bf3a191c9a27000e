"""Template context every page gets."""
from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def platform(request: HttpRequest) -> dict[str, object]:
    """``development``: the demo page and tasks exist (DJANGO_ENV=development only)."""
    return {"development": settings.DEVELOPMENT}
