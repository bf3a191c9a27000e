"""Signal wiring, connected from ``DlqConfig.ready()``."""
from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import task_postrun, task_prerun, worker_process_shutdown, worker_ready
from django.db import DatabaseError, InterfaceError, connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from psycopg.pq import TransactionStatus

from dlq.roles import ensure_role_groups
from dlq.services.schedules import seed_schedules
from dlq.spool import drain
from tasks.counters import on_process_shutdown, on_task_postrun


def create_role_groups(sender: Any, **kwargs: Any) -> None:
    """After every migrate (permissions exist by then): the viewer/operator/admin groups."""
    if getattr(sender, "label", None) != "dlq":
        return
    ensure_role_groups()
    seed_schedules()


def drain_spool_at_worker_start(sender: Any = None, **kwargs: Any) -> None:
    """Write what was spooled while Postgres was down, without delaying the worker's start."""
    def run() -> None:
        try:
            drain()
        except Exception:
            logging.getLogger("dlq.spool").exception("dead_letter.spool_drain_failed at worker start")
        finally:
            connection.close()

    threading.Thread(target=run, name="dlq-spool-drain", daemon=True).start()


def recycle_db_connections(sender: Any = None, **kwargs: Any) -> None:
    """Before and after every task, what Django does around every request: forget the
    logged queries (``reset_queries``: with DEBUG on, ``queries_log`` kept each task's SQL,
    a 1 MB argument included) and close connections that are unusable or past CONN_MAX_AGE
    (``close_old_connections``; CONN_HEALTH_CHECKS then checks a reused one before its first
    query). Celery's own fixup, which closed every connection around every task, is turned
    off by ``CELERY_DB_REUSE_MAX`` in the settings (celery#9824).

    One more case Django does not look at: a connection left inside a transaction the
    wrapper does not know about (a raw ``BEGIN`` never committed, a failed statement in it,
    a soft time limit that interrupted a query) is closed rather than handed to the next task.
    """
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    for conn in connections.all(initialized_only=True):
        conn.queries_log.clear()
        if conn.connection is None:
            continue
        try:
            if not conn.in_atomic_block and _server_transaction_open(conn):
                conn.close()
            else:
                conn.close_if_unusable_or_obsolete()
        except (DatabaseError, InterfaceError):
            # Closing a broken connection can fail; the next query opens a new one.
            conn.connection = None


def _server_transaction_open(conn: BaseDatabaseWrapper) -> bool:
    """True when the server side of ``conn`` is not idle (psycopg 3: in a transaction, in a
    failed one, still running a query, or in an unknown state)."""
    info = getattr(conn.connection, "info", None)
    status = getattr(info, "transaction_status", None)
    if status is None:
        return False
    return bool(status != TransactionStatus.IDLE)


def connect_signals() -> None:
    task_prerun.connect(recycle_db_connections, dispatch_uid="dlq.recycle_db_connections.prerun")
    task_postrun.connect(recycle_db_connections, dispatch_uid="dlq.recycle_db_connections.postrun")
    worker_ready.connect(drain_spool_at_worker_start, dispatch_uid="dlq.drain_spool_at_worker_start")
    task_postrun.connect(on_task_postrun, dispatch_uid="dlq.metrics.task_postrun")
    worker_process_shutdown.connect(on_process_shutdown, dispatch_uid="dlq.metrics.process_shutdown")
