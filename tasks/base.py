"""``PlatformTask``: the base class of the project's tasks.

Policy (every attribute can be overridden per task, as with any Celery task option):

- ``acks_late`` and ``reject_on_worker_lost``: a message is acked only after the task ran.
- ``max_retries`` (``TASK_DEFAULT_MAX_RETRIES``) with exponential backoff and full jitter
  (Celery's ``autoretry_for`` machinery), for every exception except ``non_retryable``.
- Soft and hard time limits (``TASK_DEFAULT_SOFT_TIME_LIMIT`` / ``TASK_DEFAULT_TIME_LIMIT``);
  a time limit is never retried.
- Arguments that do not bind to the task's signature (the ``TypeError`` of the call itself,
  which plain Celery also fails at once) are never retried: one attempt, reason
  ``invalid_arguments``. A ``TypeError`` raised *inside* the task is retried like any error.
- When the task is finally given up on, ``on_failure`` records one dead letter
  (through the handler ``TASK_FAILURE_HANDLER`` names: the dead-letter capture),
  idempotently by task id. ``dead_letter = False``
  turns that off for tasks whose failures nobody will act on.
- Each attempt's error travels to the next attempt in a message header, so retries cost no
  database write; a requeued run carries the id of its dead letter and resolves it on success.
  Retries keep every header Celery carries (custom ones included) and add these two.

Everything else is Celery's (``DjangoTask``: ``delay_on_commit``/``apply_async_on_commit``
work as in a plain Celery + Django project); only what happens at the task's death differs.
"""
from __future__ import annotations

import logging
from typing import Any

from billiard.common import terminate_handler_fired  # type: ignore[attr-defined]  # not in billiard's stubs
from billiard.einfo import ExceptionInfo
from celery import Task
from celery.contrib.django.task import DjangoTask
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded, TimeLimitExceeded
from django.conf import settings
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tasks.failures import (
    ATTEMPTS_HEADER,
    DEAD_LETTER_HEADER,
    DeathReason,
    attempts_with,
    capture_failure,
    int_or_none,
    requeued_run_succeeded,
)
from tasks.redis import redis_client
from tasks.registry import task_signature

logger = logging.getLogger("tasks")

#: What a publish raises when the broker cannot be reached (kombu wraps transport errors in
#: OperationalError).
BROKER_UNREACHABLE: tuple[type[BaseException], ...] = (OperationalError, OSError, RedisConnectionError,
                                                       RedisTimeoutError)


class InvalidArguments(TypeError):
    """The message's arguments do not bind to the task's signature: no attempt can succeed."""


NEVER_RETRIED: tuple[type[BaseException], ...] = (Reject, SoftTimeLimitExceeded, TimeLimitExceeded, InvalidArguments)


class PlatformTask(DjangoTask[Any, Any]):
    acks_late = True
    reject_on_worker_lost = True
    max_retries = settings.TASK_DEFAULT_MAX_RETRIES
    autoretry_for: tuple[type[BaseException], ...] = (Exception,)
    retry_backoff = settings.TASK_RETRY_BACKOFF
    retry_backoff_max = settings.TASK_RETRY_BACKOFF_MAX
    retry_jitter = True
    #: Exceptions that dead-letter at once, without a retry.
    non_retryable: tuple[type[BaseException], ...] = ()
    #: Record a dead letter when the task is given up on.
    dead_letter = True
    #: Listed by ``GET /api/v1/tasks/`` and accepted by the enqueue API and the demo page.
    enqueueable = False
    #: How many times a worker may die on one message before it is dead-lettered.
    poison_pill_cap = settings.DLQ_POISON_PILL_CAP
    #: Parent-side hooks: hard time limits, lost workers, Reject (see tasks.request).
    Request = "tasks.request:PlatformRequest"

    @property
    def dont_autoretry_for(self) -> tuple[type[BaseException], ...]:
        # Read by celery.app.autoretry when the task is created; a property so that a task's
        # own ``non_retryable`` (set by the decorator on the generated subclass) counts.
        return (*NEVER_RETRIED, *self.non_retryable)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Bind before the body (and before autoretry, which wraps ``run``): a call whose
        # arguments do not fit fails once, as in plain Celery, instead of being retried.
        # ``__header__`` is the signature check Celery compiles for ``apply_async``.
        check = getattr(self, "__header__", None)
        if self.typing and check is not None:
            try:
                check(*args, **kwargs)
            except TypeError as exc:
                raise InvalidArguments(f"arguments do not fit {self.name}{_signature(self)}: {exc}") from None
        return super().__call__(*args, **kwargs)

    def death_reason(self, exc: BaseException) -> str:
        if isinstance(exc, InvalidArguments):
            return DeathReason.INVALID_ARGUMENTS
        if isinstance(exc, (SoftTimeLimitExceeded, TimeLimitExceeded)):
            return DeathReason.TIME_LIMIT
        if isinstance(exc, Reject):
            return DeathReason.REJECTED
        if isinstance(exc, self.non_retryable) or not isinstance(exc, self.autoretry_for):
            return DeathReason.NON_RETRYABLE
        return DeathReason.MAX_RETRIES_EXCEEDED

    def terminated_during_run(self) -> bool:
        """True when this pool process received its terminate signal during the current run.

        The worker's main process sends it when it cancels a late-ack task after losing the
        broker connection (``worker_cancel_long_running_tasks_on_connection_loss``: the
        message is delivered again), at a hard time limit (the main process records that dead
        letter), or for ``revoke(terminate=True)``. The signal raises ``SystemExit`` inside the
        task; code that turns it into another exception (a ``finally`` that talks to a broker
        that is down) must not make this process publish a retry or record a dead letter: the
        main process decides what becomes of the message. billiard's flag stays set in a
        process whose task swallowed the SystemExit, so it is compared with its value when
        the run started (``before_start``).
        """
        return terminate_handler_fired() and not getattr(self.request, "dlq_terminated_before", False)

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        self.request.dlq_terminated_before = terminate_handler_fired()  # type: ignore[attr-defined]  # our mark on Celery's Context
        # A beat tick sent twice (two beats around a leader change) carries the same
        # schedule name and scheduled time: only the first message runs (see dlq/beat.py).
        schedule = getattr(self.request, "dlq_schedule", None)
        if schedule is None:
            return
        key = f"beat:ran:{schedule}:{getattr(self.request, 'dlq_scheduled_at', '')}"
        client = redis_client()
        if not client.set(key, task_id, nx=True, ex=7 * 86400) and client.get(key) != task_id.encode():
            logger.warning("beat.duplicate_tick_skipped schedule=%s task_id=%s", schedule, task_id,
                           extra={"task_id": task_id, "schedule": schedule})
            raise Ignore()

    def retry(self, args: Any = None, kwargs: Any = None, exc: Exception | None = None, throw: bool = True,
              eta: Any = None, countdown: Any = None, max_retries: int | None = None, **options: Any) -> Any:
        if exc is not None and self.terminated_during_run():
            # The parent cancelled this run (see ``terminated_during_run``): it comes back,
            # so a retry published now would run the task twice.
            raise exc
        # Celery carries the request's custom headers to the retry (``signature_from_request``
        # puts ``request.headers`` in its options), but a ``headers`` option replaces them: so
        # start from what Celery would carry, add the caller's, then this attempt's history.
        headers = {**(self.request.as_execution_options().get("headers") or {}), **(options.pop("headers", None) or {})}
        headers[ATTEMPTS_HEADER] = attempts_with(self.request, exc)
        try:
            return super().retry(args=args, kwargs=kwargs, exc=exc, throw=throw, eta=eta, countdown=countdown,
                                 max_retries=max_retries, headers=headers, **options)
        except Reject as rejected:
            # Celery could not publish the retry and answers Reject(requeue=False), which
            # drops the message. (celery-types does not declare Reject's attributes.)
            reason: Any = rejected.reason  # type: ignore[attr-defined]
            if rejected.requeue or not self.dead_letter:  # type: ignore[attr-defined]
                raise
            if isinstance(reason, BROKER_UNREACHABLE):
                # The broker is down. The message being retried is still unacked there: hand
                # it back instead (or, when the main process cannot reach the broker either,
                # it comes back after the visibility timeout) and the attempt runs again.
                # Dead-lettering it here would end the task both dead and, once the message
                # is redelivered, done (chaos F12).
                logger.warning("task.retry_unpublished_requeued task_id=%s: %s", self.request.id, reason,
                               extra={"task_id": self.request.id})
                raise Reject(reason, requeue=True) from rejected  # type: ignore[arg-type]  # Celery keeps any reason
            # Anything else (the retry cannot be built or serialized) would fail again: record
            # the dead letter here, in the pool process, before the message is dropped.
            capture_failure(self, exc or rejected, str(self.request.id), self.request.args, self.request.kwargs, None,
                            reason=DeathReason.REJECTED,
                            attempts=attempts_with(self.request, exc, message=f"retry could not be published: {reason}"))
            raise

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        dead_letter_id = getattr(self.request, DEAD_LETTER_HEADER, None)
        if dead_letter_id is not None:
            # A requeued run succeeded: the handler the settings name resolves its dead letter
            # (spooled, not raised, when Postgres is down: raising here would make Celery
            # treat the successful run as a failure).
            if int_or_none(dead_letter_id) is not None:
                requeued_run_succeeded(dead_letter_id=int(dead_letter_id), task_id=task_id)

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: ExceptionInfo) -> None:
        if self.dead_letter and not self.terminated_during_run():
            capture_failure(self, exc, task_id, args, kwargs, einfo, reason=self.death_reason(exc))
        super().on_failure(exc, task_id, args, kwargs, einfo)  # type: ignore[arg-type]  # Celery passes any BaseException


def _signature(task: Task[Any, Any]) -> str:
    return str(task_signature(task))
