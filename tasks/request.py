"""``PlatformRequest``: the worker-side (parent process) request of ``PlatformTask``.

Three ways a task dies never reach ``Task.on_failure`` in the pool child, so they are
captured here, in the worker's main process, from ``celery.worker.request.Request``'s
hooks (read ``Request.on_failure`` / ``on_timeout`` for when Celery acks):

- **hard time limit**: the child is killed. Celery 5.7 calls ``task.on_failure`` from the
  parent but without the task's request on the stack; we push it so the hook sees the
  delivery, headers and attempts.
- **worker lost** (SIGKILL, OOM): with ``reject_on_worker_lost`` the message is requeued.
  Each loss is counted per task id in Redis; past ``poison_pill_cap`` the dead letter is
  recorded and the message acked instead of requeued, so a poison pill cannot take
  workers down forever.
- **Reject(requeue=False)**, including Celery's own reject when a retry cannot be
  published: the message would be dropped; the dead letter is recorded first.

In every case the dead letter is written (or spooled) *before* the message is acked.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from billiard.einfo import ExceptionInfo
from billiard.exceptions import WorkerLostError
from celery.exceptions import Reject
from celery.worker.request import Request

from tasks.failures import DeathReason, attempt_record, bounded, capture_failure, previous_attempts
from tasks.redis import redis_client

logger = logging.getLogger("tasks.request")

LOST_KEY = "dlq:lost:{task_id}"
LOST_TTL = 7 * 24 * 3600


class PlatformRequest(Request):
    # ``_context``, ``_already_cancelled`` and ``_already_revoked`` are Celery's own attributes
    # of a Request that celery-types does not declare (hence the attr-defined ignores below).
    def on_timeout(self, soft: bool, timeout: float) -> None:
        if soft:
            return super().on_timeout(soft, timeout)
        self.task.request_stack.push(self._context)  # type: ignore[attr-defined]
        try:
            super().on_timeout(soft, timeout)
        finally:
            self.task.request_stack.pop()

    def on_failure(self, exc_info: ExceptionInfo, send_failed_event: bool = True, return_ok: bool = False) -> None:
        if self._already_cancelled and self.task.acks_late:  # type: ignore[attr-defined]
            # We terminated this run after losing the broker connection, and Celery leaves
            # such a message unacked so that it is delivered again. Celery does so only when
            # the child reports the SystemExit; a task that turned it into another exception
            # (cleanup code failing while the broker is down) would otherwise be acked here,
            # or rejected, with nothing recorded (the pool process skipped its hooks).
            logger.warning("task.cancelled_run_left_for_redelivery task_id=%s", self.id, extra={"task_id": self.id})
            return None
        exc = getattr(exc_info, "exception", None)
        exc = getattr(exc, "exc", exc)  # ExceptionWithTraceback
        if getattr(self.task, "dead_letter", False):
            if isinstance(exc, Reject) and not exc.requeue:  # type: ignore[attr-defined]
                self._capture(exc, exc_info, DeathReason.REJECTED)
            elif (isinstance(exc, WorkerLostError) or isinstance(exc, (SystemExit, KeyboardInterrupt))) \
                    and self._poison_pill(exc, exc_info):
                return
        return super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)

    def _capture(self, exc: BaseException, exc_info: ExceptionInfo | None, reason: str,
                 attempts: list[dict[str, Any]] | None = None) -> str:
        return capture_failure(self.task, exc, self.id, self.args, self.kwargs, exc_info,
                               reason=reason, request=self._context, attempts=attempts)  # type: ignore[attr-defined]

    def _poison_pill(self, exc: BaseException, exc_info: ExceptionInfo) -> bool:
        """Count this loss; past the cap, dead-letter and ack. True when handled here."""
        if self._already_cancelled or self._already_revoked:  # type: ignore[attr-defined]
            return False
        if not (self.task.acks_late and self.task.reject_on_worker_lost):
            return False
        key = LOST_KEY.format(task_id=self.id)
        record = attempt_record(0, None, self.hostname, exception_type="billiard.exceptions.WorkerLostError",
                                message=str(exc) or "worker process lost")
        try:
            pipe = redis_client().pipeline()
            pipe.rpush(key, json.dumps(record))
            pipe.ltrim(key, -20, -1)
            pipe.expire(key, LOST_TTL)
            pipe.incr(f"{key}:count")
            pipe.expire(f"{key}:count", LOST_TTL)
            losses = int(pipe.execute()[3])
            history = [json.loads(x) for x in redis_client().lrange(key, 0, -1)]
        except Exception:
            # Cannot count: requeue as Celery would (at worst one more delivery).
            logger.exception("poison_pill.count_failed task_id=%s", self.id, extra={"task_id": self.id})
            return False
        cap = int(getattr(self.task, "poison_pill_cap", 3))
        logger.warning("worker_lost task_id=%s losses=%s cap=%s", self.id, losses, cap,
                       extra={"task_id": self.id, "losses": losses})
        if losses <= cap:
            return False
        previous = previous_attempts(self._context)  # type: ignore[attr-defined]
        # Losses before the trimmed history still count in the numbering.
        base = (previous[-1]["number"] if previous else 0) + max(0, losses - len(history))
        for offset, item in enumerate(history, start=1):
            item["number"] = base + offset
        attempts = bounded([*previous, *history])
        try:
            self._capture(WorkerLostError(f"worker lost {losses} times on this task (cap {cap})"), exc_info,
                          DeathReason.WORKER_LOST, attempts=attempts)
        except Exception:
            logger.exception("poison_pill.capture_failed task_id=%s; requeueing", self.id, extra={"task_id": self.id})
            return False
        self.acknowledge()
        self.send_event("task-failed", exception=f"WorkerLostError('lost {losses} times')")
        try:
            redis_client().delete(key, f"{key}:count")
        except Exception:
            pass
        return True

