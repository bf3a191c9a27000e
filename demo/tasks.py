"""Demo tasks: the contract's ``tasks.demo.*`` (names kept from when they lived in
``tasks/demo.py``). Registered in development only (the ``demo`` app is installed only then):
they crash workers and sleep on purpose."""
from __future__ import annotations

import os
import signal
import time

from celery import shared_task

from tasks.base import PlatformTask
from tasks.redis import redis_client


class TransientError(Exception):
    """A failure that a later attempt may not see (a dependency that was briefly down)."""


@shared_task(base=PlatformTask, name="tasks.demo.add", enqueueable=True)
def add(x: float, y: float) -> float:
    return x + y


@shared_task(base=PlatformTask, name="tasks.demo.divide", enqueueable=True, non_retryable=(ZeroDivisionError,))
def divide(x: float, y: float) -> float:
    return x / y


@shared_task(
    base=PlatformTask, name="tasks.demo.flaky", enqueueable=True,
    max_retries=3, retry_backoff=1, retry_backoff_max=4,
)
def flaky(key: str, failures: int) -> int:
    """Raises ``TransientError`` on its first ``failures`` attempts (counted per key in Redis)."""
    attempt = int(redis_client().incr(f"demo:flaky:{key}"))
    redis_client().expire(f"demo:flaky:{key}", 86400)
    if attempt <= failures:
        raise TransientError(f"attempt {attempt} of key {key!r} fails on purpose ({failures} failures asked)")
    return attempt


@shared_task(base=PlatformTask, name="tasks.demo.sleep", enqueueable=True, soft_time_limit=10, time_limit=15)
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@shared_task(base=PlatformTask, name="tasks.demo.crash", enqueueable=True)
def crash() -> None:
    """Kills its own worker process, as an OOM kill would."""
    os.kill(os.getpid(), signal.SIGKILL)
