"""Benchmark tasks, loaded into workers with ``-I bench.tasks``: each plain Celery task has a
``PlatformTask`` twin with the same body, so a ratio measures our layer and nothing else."""
from __future__ import annotations

from typing import Any

from celery import shared_task

from tasks.base import PlatformTask


class BenchError(Exception):
    pass


@shared_task(name="bench.plain_noop")
def plain_noop(i: int = 0, payload: Any = None) -> int:
    return i


@shared_task(name="bench.plain_noop_noresult", ignore_result=True)
def plain_noop_noresult(i: int = 0, payload: Any = None) -> int:
    return i


@shared_task(name="bench.plain_fail")
def plain_fail(i: int = 0, payload: Any = None) -> int:
    raise BenchError(f"bench failure {i}")


@shared_task(base=PlatformTask, name="bench.platform_noop")
def platform_noop(i: int = 0, payload: Any = None) -> int:
    return i


@shared_task(base=PlatformTask, name="bench.platform_noop_noresult", ignore_result=True)
def platform_noop_noresult(i: int = 0, payload: Any = None) -> int:
    return i


@shared_task(base=PlatformTask, name="bench.platform_fail", non_retryable=(BenchError,))
def platform_fail(i: int = 0, payload: Any = None) -> int:
    raise BenchError(f"bench failure {i}")
