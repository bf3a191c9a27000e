"""DRF throttles counted in the shared cache (Redis), failing open: a Redis outage must not
turn every API request into a 500 (the counts resume when it is back)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle, ScopedRateThrottle, UserRateThrottle

if TYPE_CHECKING:  # a runtime import is circular: DRF loads the throttles while importing its views
    from rest_framework.views import APIView

logger = logging.getLogger("dashboard.api")


class _FailOpen(BaseThrottle):
    def allow_request(self, request: Request, view: APIView) -> bool:
        try:
            return bool(super().allow_request(request, view))
        except Exception as exc:  # the cache (Redis) is unreachable
            logger.warning("throttle.cache_unavailable error=%r; allowing", exc)
            return True


class UserThrottle(_FailOpen, UserRateThrottle):
    pass


class ScopedThrottle(_FailOpen, ScopedRateThrottle):
    pass
