"""Dead letters seeded with SQL (``INSERT ... SELECT generate_series``): S4's redrive jobs, S5's
large table, S6's pages."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import connection

from bench.harness import sql
from dlq.models import DeadLetter


def seed_dead_letters(n: int, *, task_name: str | None = None, queue: str = "celery", status_mix: bool = False) -> None:
    """``n`` dead letters in one ``INSERT ... SELECT generate_series``: 50 task names, 20
    exception types and 1,000 rare words in the messages unless ``task_name`` is given."""
    name = "%s::text" if task_name else "'bench.task_' || (i %% 50)"
    status = ("CASE WHEN i %% 20 < 3 THEN 'dead' WHEN i %% 20 = 3 THEN 'discarded' ELSE 'resolved' END"
              if status_mix else "'dead'")
    params = [task_name] if task_name else []
    extra_cols, extra_params = _other_required_columns()
    sql(f"""
        INSERT INTO dlq_deadletter (task_id, task_name, queue, routing_key, args, kwargs, headers, options,
            content_type, content_encoding, exception_type, exception_message, traceback, reason, attempts,
            retries, first_failed_at, last_failed_at, fingerprint, status, requeue_count,
            last_requeued_task_id, version, created_at, updated_at{"".join(", " + c for c in extra_cols)})
        SELECT md5(i::text || clock_timestamp()::text), {name}, %s, %s,
            jsonb_build_array(i, 'sku-' || (i %% 5000)), '{{}}'::jsonb, '{{}}'::jsonb, '{{}}'::jsonb, '', '',
            'bench.Error' || (i %% 20),
            'order ' || i || ' could not be charged: w' || ((i * 7919) %% 1000) || ' gateway timeout',
            'Traceback (most recent call last):' || chr(10) || '  File "billing.py", line ' || (i %% 400)
                || ', in charge' || chr(10) || 'bench.Error' || (i %% 20) || ': gateway timeout',
            'non_retryable', '[]'::jsonb, 0, now() - make_interval(secs => i), now() - make_interval(secs => i),
            md5('fp' || (i %% 20)), {status}, 0, '', 1, now(), now(){", %s" * len(extra_cols)}
        FROM generate_series(1, %s) AS i
    """, [*params, queue, queue, *extra_params, n])


SEEDED = {"id", "task_id", "task_name", "queue", "routing_key", "args", "kwargs", "headers", "options", "content_type",
          "content_encoding", "exception_type", "exception_message", "traceback", "reason", "attempts", "retries",
          "first_failed_at", "last_failed_at", "fingerprint", "status", "requeue_count", "last_requeued_task_id",
          "version", "created_at", "updated_at", "search", "raw_body"}


def _other_required_columns() -> tuple[list[str], list[Any]]:
    """NOT NULL columns added to the model since this seed was written, with their model
    defaults (Django keeps defaults in Python, not in the table)."""
    by_column = {f.column: f for f in DeadLetter._meta.concrete_fields}
    cols, values = [], []
    for (column,) in sql("SELECT column_name FROM information_schema.columns WHERE table_name = 'dlq_deadletter' "
                         "AND is_nullable = 'NO' AND column_default IS NULL AND is_generated = 'NEVER'"):
        if column in SEEDED or column not in by_column:
            continue
        field = by_column[column]
        cols.append(column)
        values.append(field.get_db_prep_save(field.get_default(), connection=connection))
    return cols, values


@dataclass
class _Index:
    name: str
    definition: str


def bulk_seed(n: int) -> None:
    """Seed a large table fast: drop the secondary indexes, insert, rebuild, ANALYZE."""
    indexes = [_Index(name, definition) for name, definition in sql(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'dlq_deadletter' "
        "AND indexname NOT LIKE '%%pkey' AND indexdef NOT LIKE 'CREATE UNIQUE%%'")]
    for index in indexes:
        sql(f'DROP INDEX "{index.name}"')
    chunk = 250_000
    for start in range(0, n, chunk):
        seed_dead_letters(min(chunk, n - start), status_mix=True)
    sql("SET maintenance_work_mem = '256MB'")
    for index in indexes:
        sql(index.definition)
    sql("VACUUM ANALYZE dlq_deadletter")
