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
from datetime import datetime
from typing import Any

from celery import states
from celery.app.task import Context
from django.db import DEFAULT_DB_ALIAS, DatabaseError, InterfaceError, connections
from django.db.models import Field
from django.utils import timezone
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult

from dlq.db import close_broken_connection

logger = logging.getLogger("dlq.backend")


class ResilientDatabaseBackend(DatabaseBackend):  # type: ignore[misc]  # django-celery-results' backends have no type hints
    def store_result(self, task_id: str, result: Any, state: str, traceback: str | None = None,
                     request: Context | None = None, **kwargs: Any) -> Any:
        try:
            return super().store_result(task_id, result, state, traceback=traceback, request=request, **kwargs)
        except (DatabaseError, InterfaceError):
            logger.exception("result.store_failed task_id=%s state=%s", task_id, state,
                             extra={"task_id": task_id, "state": state})
            close_broken_connection()
            return result

    def _store_result(self, task_id: str, result: Any, status: str, traceback: str | None = None,
                      request: Context | None = None, using: str | None = None) -> Any:
        if status == states.SUCCESS:  # the success path pays nothing extra
            return super()._store_result(task_id, result, status, traceback=traceback, request=request, using=using)
        # The same columns django-celery-results writes, in one statement that cannot
        # overwrite a SUCCESS: INSERT ... ON CONFLICT (task_id) DO UPDATE ... WHERE status <>
        # 'SUCCESS'. Postgres takes the row lock itself: an insert of the same task id in
        # flight is waited for, a committed SUCCESS row is left alone, and a SUCCESS stored
        # after this one overwrites it (its get_or_create finds this row). It replaces a
        # transaction of five statements (BEGIN, placeholder INSERT, SELECT FOR UPDATE, SELECT,
        # UPDATE, COMMIT) that wrote the row twice.
        content_type, content_encoding, encoded = self.encode_content(result)
        meta = {**self._get_meta_from_request(request), "children": self.current_task_children(request)}
        _, _, encoded_meta = self.encode_content(meta)
        values: dict[str, Any] = {
            "task_id": task_id, "status": status, "result": encoded, "traceback": traceback, "meta": encoded_meta,
            "content_encoding": content_encoding, "content_type": content_type,
        }
        values.update(self._get_extended_properties(request, traceback))
        now = timezone.now()
        values["date_done"] = now
        if status == states.STARTED:
            values["date_started"] = now
        _upsert_unless_success(values, now, using or DEFAULT_DB_ALIAS)
        return encoded


def _column(name: str) -> str:
    """The column of a ``TaskResult`` field (every one used here is a plain column)."""
    field = TaskResult._meta.get_field(name)
    if not isinstance(field, Field) or field.column is None:
        raise LookupError(f"TaskResult.{name} is not a column")
    return field.column


def _upsert_unless_success(values: dict[str, Any], now: datetime, using: str) -> None:
    db = connections[using]
    quote = db.ops.quote_name
    row = {**values, "date_created": now}  # date_created only when the row is new
    column = {name: quote(_column(name)) for name in row}
    table = quote(TaskResult._meta.db_table)
    sql = (f"INSERT INTO {table} ({', '.join(column[n] for n in row)}) VALUES ({', '.join(['%s'] * len(row))}) "
           f"ON CONFLICT ({column['task_id']}) DO UPDATE SET "
           + ", ".join(f"{column[n]} = EXCLUDED.{column[n]}" for n in values if n != "task_id")
           + f" WHERE {table}.{quote(_column('status'))} <> %s")
    with db.cursor() as cursor:
        cursor.execute(sql, [*row.values(), states.SUCCESS])
