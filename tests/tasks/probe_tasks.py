"""Tasks for tests/tasks/test_celery_semantics.py and test_values.py, loaded into their worker
with ``-I``. Each records what its run saw in Redis (``probe:<key>``), so the tests read the
truth from the broker side rather than from logs."""
from __future__ import annotations

import json
from typing import Any

from celery import shared_task

from tasks.base import PlatformTask


class Transient(Exception):
    """Retryable."""


class Permanent(Exception):
    """Non-retryable."""


def _record(key: str, value: Any) -> None:
    from tasks.redis import redis_client

    redis_client().rpush(f"probe:{key}", json.dumps(value))
    redis_client().expire(f"probe:{key}", 3600)


def seen(key: str) -> list[Any]:
    from tasks.redis import redis_client

    return [json.loads(v) for v in redis_client().lrange(f"probe:{key}", 0, -1)]


@shared_task(base=PlatformTask, name="probe.headers", bind=True, max_retries=2, retry_backoff=False,
             default_retry_delay=0, retry_jitter=False)
def headers(self: PlatformTask, key: str, failures: int) -> int:
    """Records the run's custom headers and retry count, then fails (retryably) on its first
    ``failures`` runs."""
    runs = len(seen(key))
    _record(key, {"headers": dict(self.request.headers or {}), "retries": self.request.retries})
    if runs < failures:
        raise Transient(f"run {runs + 1} of {key} fails on purpose")
    return runs + 1


@shared_task(base=PlatformTask, name="probe.fail", bind=True, non_retryable=(Permanent,))
def fail(self: PlatformTask, key: str, value: Any) -> None:
    """Records the value it received, then dies at once (non-retryable)."""
    _record(key, {"value": value, "task_id": self.request.id})
    raise Permanent(f"{key} always fails")


@shared_task(base=PlatformTask, name="probe.echo", bind=True)
def echo(self: PlatformTask, key: str, value: Any) -> Any:
    """Records the value it received and returns it."""
    _record(key, {"value": value, "task_id": self.request.id})
    return value


class DependencyDown(Exception):
    """The (simulated) remote service did not answer."""


@shared_task(base=PlatformTask, name="probe.dependency", max_retries=1, retry_backoff=1, retry_backoff_max=2)
def dependency(service: str) -> str:
    """Calls a remote service, simulated by a Redis flag the test sets (``probe:up:<service>``):
    fails while it is down, so reprocess policies can heal it once it is back."""
    from tasks.redis import redis_client

    if not redis_client().exists(f"probe:up:{service}"):
        raise DependencyDown(f"{service} is unreachable")
    return "ok"
