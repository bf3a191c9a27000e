"""Signal wiring, connected from ``DlqConfig.ready()``."""
from __future__ import annotations

from typing import Any


def create_role_groups(sender: Any, **kwargs: Any) -> None:
    """After every migrate (permissions exist by then): the viewer/operator/admin groups."""
    if getattr(sender, "label", None) != "dlq":
        return
    from dlq.roles import ensure_role_groups
    from dlq.schedules import seed_schedules

    ensure_role_groups()
    seed_schedules()


def drain_spool_at_worker_start(sender: Any = None, **kwargs: Any) -> None:
    """Write what was spooled while Postgres was down, without delaying the worker's start."""
    import threading

    from dlq.spool import drain

    def run() -> None:
        import logging

        try:
            drain()
        except Exception:
            logging.getLogger("dlq.spool").exception("dead_letter.spool_drain_failed at worker start")
        finally:
            from django.db import connection

            connection.close()

    threading.Thread(target=run, name="dlq-spool-drain", daemon=True).start()


def connect_signals() -> None:
    from celery.signals import task_postrun, worker_process_shutdown, worker_ready

    from dlq.metrics import on_process_shutdown, on_task_postrun

    worker_ready.connect(drain_spool_at_worker_start, dispatch_uid="dlq.drain_spool_at_worker_start")
    task_postrun.connect(on_task_postrun, dispatch_uid="dlq.metrics.task_postrun")
    worker_process_shutdown.connect(on_process_shutdown, dispatch_uid="dlq.metrics.process_shutdown")
