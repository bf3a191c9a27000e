"""Benchmark tasks, loaded into workers with ``-I bench.tasks``: each plain Celery task has a
``PlatformTask`` twin with the same body, so a ratio measures our layer and nothing else.

The plain tasks store their results with django-celery-results' own ``DatabaseBackend``, as a
plain Celery + django-celery-results project would; the twins use the app's backend, ours
(``dlq.backend.ResilientDatabaseBackend``), whose cost is part of our layer."""
from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from tasks.base import PlatformTask


class PlainTask(Task):  # type: ignore[misc]
    """A stock Celery task whose results go to django-celery-results' stock backend."""

    _stock_backend: Any = None

    @property
    def backend(self) -> Any:
        if PlainTask._stock_backend is None:
            from django_celery_results.backends import DatabaseBackend

            PlainTask._stock_backend = DatabaseBackend(app=self.app)
        return PlainTask._stock_backend


class BenchError(Exception):
    pass


@shared_task(base=PlainTask, name="bench.plain_noop")
def plain_noop(i: int = 0, payload: Any = None) -> int:
    return i


@shared_task(base=PlainTask, name="bench.plain_noop_noresult", ignore_result=True)
def plain_noop_noresult(i: int = 0, payload: Any = None) -> int:
    return i


@shared_task(base=PlainTask, name="bench.plain_fail")
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
