"""DRF throttles counted in the shared cache (Redis), failing open: a Redis outage must not
turn every API request into a 500 (the counts resume when it is back)."""
from __future__ import annotations

import logging
from typing import Any

from rest_framework.throttling import ScopedRateThrottle, UserRateThrottle

logger = logging.getLogger("dashboard.api")


class _FailOpen:
    def allow_request(self, request: Any, view: Any) -> bool:
        try:
            return bool(super().allow_request(request, view))  # type: ignore[misc]
        except Exception as exc:  # the cache (Redis) is unreachable
            logger.warning("throttle.cache_unavailable error=%r; allowing", exc)
            return True


class UserThrottle(_FailOpen, UserRateThrottle):  # type: ignore[misc]
    pass


class ScopedThrottle(_FailOpen, ScopedRateThrottle):  # type: ignore[misc]
    pass
