"""django-celery-results' database backend, made unable to break the failure path.

Celery stores FAILURE *before* it calls ``on_failure`` and sends ``task_failure``
(``celery.app.trace.TraceInfo.handle_failure``). With Postgres down that store raises,
neither hook runs, and the acks-late message is still acked: the failure would vanish.
Here a result that cannot be stored is logged and dropped instead, so the dead-letter
capture runs (and spools). Results are informational; dead letters are the record.

Like Celery's key-value backends (``BaseKeyValueStoreBackend._store_result``), a stored
SUCCESS is never overwritten: a retry published with a zero countdown can run and succeed
before the retrying process stores RETRY for the same task id, and a redelivered run can
end after the first one succeeded. django-celery-results would let the later write win.
"""
from __future__ import annotations

import logging
from typing import Any

from celery import states
from django.db import DEFAULT_DB_ALIAS, DatabaseError, InterfaceError, transaction
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult

logger = logging.getLogger("dlq.backend")


class ResilientDatabaseBackend(DatabaseBackend):  # type: ignore[misc]
    def store_result(self, task_id: str, result: Any, state: str, traceback: Any = None,
                     request: Any = None, **kwargs: Any) -> Any:
        try:
            return super().store_result(task_id, result, state, traceback=traceback, request=request, **kwargs)
        except (DatabaseError, InterfaceError):
            logger.exception("result.store_failed task_id=%s state=%s", task_id, state,
                             extra={"task_id": task_id, "state": state})
            from dlq.spool import _reset_connection

            _reset_connection()
            return result

    def _store_result(self, task_id: str, result: Any, status: str, traceback: Any = None, request: Any = None,
                      using: Any = None) -> Any:
        if status == states.SUCCESS:  # the success path pays nothing extra
            return super()._store_result(task_id, result, status, traceback=traceback, request=request, using=using)
        # Check and write under the row's lock: the row is created first if missing (a
        # concurrent SUCCESS insert then waits for us, or we see it), so a SUCCESS stored or
        # being stored by another process is never overwritten by this state.
        using = using or DEFAULT_DB_ALIAS
        with transaction.atomic(using=using):
            TaskResult.objects.using(using).bulk_create(
                [TaskResult(task_id=task_id, status=states.PENDING)], ignore_conflicts=True)
            current = (TaskResult.objects.using(using).select_for_update().filter(task_id=task_id)
                       .values_list("status", flat=True).first())
            if current == states.SUCCESS:
                return result
            return super()._store_result(task_id, result, status, traceback=traceback, request=request,
                                         using=using)
