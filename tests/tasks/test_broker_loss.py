"""The broker goes away while a late-ack task runs (chaos scenario F12, with a real broker).

Celery (``worker_cancel_long_running_tasks_on_connection_loss``) terminates the run and
leaves the message unacked so that it is delivered again. The run must then leave no trace:
no retry published and no dead letter recorded by the terminated pool process, and no ack
from the main process, or the task ends up both dead-lettered and done (or lost)."""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.faults import own_redis
from tests.workers import Worker, wait_for

pytestmark = pytest.mark.worker


def test_a_broker_outage_mid_run_ends_with_one_effect_and_no_dead_letter(
        transactional_db: Any, tmp_path: Path) -> None:
    from demo.models import LedgerEntry
    from dlq.models import DeadLetter
    from taskplatform.celery import app

    key = f"loss-{uuid.uuid4().hex[:8]}"
    with own_redis(tmp_path) as rd:
        env = {"CELERY_BROKER_URL": rd.url, "REDIS_URL": rd.url, "CELERY_VISIBILITY_TIMEOUT": "10",
               "CELERY_UNACKED_RESTORE_SECONDS": "1", "TASK_DEFAULT_SOFT_TIME_LIMIT": "8",
               "TASK_DEFAULT_TIME_LIMIT": "9"}
        worker = Worker(queues="brokerloss", env=env, extra_args=["-I", "tests.tasks.loss_tasks"]).start()
        try:
            with app.connection_for_write(rd.url) as conn:
                result = app.send_task("tests.cleanup_needs_the_broker", args=[key, 6], queue="brokerloss",
                                       connection=conn)
            wait_for(lambda: LedgerEntry.objects.filter(order_id=f"{key}-run").exists(), timeout=30,
                     message="first run started")
            time.sleep(1.5)  # the main process has taken the run as active (it cancels only those)
            rd.stop()  # SIGTERM: AOF is written, the unacked message survives
            time.sleep(3)
            rd.start()
            if worker.proc is not None and worker.proc.poll() is not None:
                # kombu 5.7 can crash the worker while it closes the broken connection
                # ("Unrecoverable error: AttributeError ... 'hostname'" in restore_unacked);
                # a supervisor restarts it, so does this test.
                worker = Worker(queues="brokerloss", env=env, extra_args=["-I", "tests.tasks.loss_tasks"]).start()
            wait_for(lambda: LedgerEntry.objects.filter(order_id=key).exists(), timeout=60,
                     message="the task ran again after the outage and finished")
            time.sleep(12)  # longer than the visibility timeout: no further delivery may follow
        finally:
            worker.stop()
    # Two runs when Celery cancelled the first one (delivered again), one when the worker
    # finished it after the outage; the effect and the outcome exactly once either way.
    assert LedgerEntry.objects.filter(order_id=f"{key}-run").count() in (1, 2)
    assert LedgerEntry.objects.filter(order_id=key).count() == 1
    assert not DeadLetter.objects.filter(task_id=result.id).exists()
