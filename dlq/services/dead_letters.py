"""One dead letter's changes: edit, requeue, discard, resolve, and the resolve of a requeued
run that succeeded. Each locks the row it decides on, checks, changes and writes its
``DeadLetterEvent`` in one transaction (the status machine is in DESIGN.md); a requeue
publishes only after that commit."""
from __future__ import annotations

import logging
import uuid
from typing import Any, Final

from django.db import transaction
from django.utils import timezone

from dlq.jsonsafe import all_finite
from dlq.masking import mask, unmask
from dlq.models import DeadLetter, DeadLetterEvent, DeadLetterStatus, search_vector
from dlq.roles import runnable_task
from dlq.services.audit import SYSTEM
from dlq.services.capture import stored_arguments
from dlq.services.requeue import RequeueSource, chord_rejoin, chord_undo, is_chord_member, requeue_message
from tasks.broker.publish import publish_tasks
from tasks.counters import incr
from tasks.errors import BrokerUnavailable, Conflict, NotFound, ValidationFailed
from tasks.queues import validate_queue
from tasks.registry import bind_arguments, get_task

logger = logging.getLogger("dlq")


class _Unset:
    """The default of an argument the caller did not give (None is a value: ``kwargs=None``)."""


UNSET: Final = _Unset()
#: Longest reason kept on an event.
REASON_LIMIT = 2000


def dead_letter_lock(dead_letter_id: int) -> DeadLetter:
    """The row, locked for the caller's transaction (``NotFound``: 404)."""
    row = DeadLetter.objects.select_for_update(of=("self",)).filter(pk=dead_letter_id).first()
    if row is None:
        raise NotFound(f"dead letter {dead_letter_id} does not exist")
    return row


def require_reason(reason: object) -> str:
    """An operator's change carries a reason (400 ``reason_required`` otherwise)."""
    if not isinstance(reason, str) or not reason.strip():
        raise ValidationFailed("a reason is required", code="reason_required", fields={"reason": ["required"]})
    return reason.strip()[:REASON_LIMIT]


def dead_letter_event(row: DeadLetter, *, actor: str, action: str, reason: str, diff: dict[str, Any]) -> None:
    """The row's audit event, in the caller's transaction, and its log line."""
    DeadLetterEvent.objects.create(dead_letter=row, actor=actor, action=action, reason=reason, diff=diff)
    logger.info("dead_letter.%s dead_letter_id=%s actor=%s", action, row.pk, actor,
                extra={"dead_letter_id": row.pk, "task_id": row.task_id, "actor": actor})


@transaction.atomic
def dead_letter_update(
    *, dead_letter_id: int, actor: str, reason: object, version: object,
    args: Any = UNSET, kwargs: Any = UNSET, queue: object = UNSET, role: str | None = None,
) -> DeadLetter:
    """Edit args/kwargs/queue. ``version`` must be the one read (409 otherwise); the new
    arguments must bind to the task's signature; a masked secret sent back keeps its value.
    ``role`` (the actor's; None: the system) must be allowed to run the task
    (``dlq.roles.runnable_task``: 403 otherwise)."""
    reason = require_reason(reason)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValidationFailed("version must be an integer", fields={"version": ["required integer"]})
    row = dead_letter_lock(dead_letter_id)
    if row.version != version:
        raise Conflict(f"stale version {version}: the dead letter is at version {row.version}", code="stale_version")
    if row.status != DeadLetterStatus.DEAD:
        raise Conflict(f"only dead letters in status 'dead' can be edited (this one is {row.status!r})", code="bad_status")
    task = runnable_task(row.task_name, role=role)
    changes: dict[str, list[Any]] = {}
    for name, value in (("args", args), ("kwargs", kwargs)):
        if value is not UNSET and not all_finite(value):
            raise ValidationFailed(f"{name} must not hold NaN or infinite numbers (JSON has none)",
                                   code="invalid_arguments", fields={name: ["non-finite number"]})
    # Edited against the exact values (``raw_arguments`` when jsonb holds a readable copy).
    current_args, current_kwargs = row.arguments()
    new_args = current_args if args is UNSET else unmask(args, current_args)
    new_kwargs = current_kwargs if kwargs is UNSET else unmask(kwargs, current_kwargs)
    if args is not UNSET or kwargs is not UNSET:
        bind_arguments(task, [] if new_args is None and args is UNSET else new_args,
                       {} if new_kwargs is None and kwargs is UNSET else new_kwargs)
        stored_args, stored_kwargs, raw = stored_arguments(new_args, new_kwargs)
        if stored_args != row.args or (args is not UNSET and raw != row.raw_arguments):
            changes["args"] = [mask(row.args), mask(stored_args)]
        if stored_kwargs != row.kwargs or (kwargs is not UNSET and raw != row.raw_arguments):
            changes["kwargs"] = [mask(row.kwargs), mask(stored_kwargs)]
        if changes:
            row.args, row.kwargs, row.raw_arguments = stored_args, stored_kwargs, raw
            row.search = search_vector(row.task_name, row.exception_type, row.exception_message, row.traceback,
                                       row.args, row.kwargs)
    if not isinstance(queue, _Unset):
        queue = validate_queue(queue)
        if queue != row.queue:
            changes["queue"] = [row.queue, queue]
            row.queue = queue
    if not changes:
        return row
    row.version = row.version + 1
    row.save()
    dead_letter_event(row, actor=actor, action="edit", reason=reason, diff=changes)
    return row


def dead_letter_requeue(*, dead_letter_id: int, actor: str, reason: object = "", queue: str | None = None,
                        policy_id: int | None = None, version: object = None, role: str | None = None) -> str:
    """Publish the dead letter again under a new task id that links back to it
    (``requeue_message``: the original message, workflow included).

    The row is locked, checked (must be ``dead``; with ``version``, unchanged since the caller
    read it) and moved to ``requeued`` in one transaction; the message is published only after
    that commit, so concurrent requeues of one row publish exactly once (the others get 409),
    and a click that arrives after a requeued run already failed again is refused as stale
    rather than taken as a new requeue. A chord member rejoins its chord in the same
    transaction, or the requeue is refused (409 ``workflow_not_resumable``). If the broker
    refuses the publish, the row goes back to ``dead`` and the caller gets
    ``BrokerUnavailable`` (503). ``role`` (the actor's; None: the system) must be allowed to
    run the task (``dlq.roles.runnable_task``: 403 otherwise).
    """
    if transaction.get_connection().in_atomic_block:
        # Publishing must follow the commit that moved the row to `requeued`.
        raise RuntimeError("dead_letter_requeue() must not run inside an open transaction")
    reason = reason.strip()[:REASON_LIMIT] if isinstance(reason, str) else ""
    if queue is not None:
        validate_queue(queue)
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise ValidationFailed("version must be an integer", fields={"version": ["integer"]})
    new_task_id = str(uuid.uuid4())
    with transaction.atomic():
        row = dead_letter_lock(dead_letter_id)
        if version is not None and row.version != version:
            raise Conflict(f"stale version {version}: the dead letter is at version {row.version} (it changed since "
                           "you read it)", code="stale_version")
        if row.status != DeadLetterStatus.DEAD:
            raise Conflict(f"only dead letters in status 'dead' can be requeued (this one is {row.status!r})", code="bad_status")
        if row.args is None or row.kwargs is None:
            raise Conflict("this dead letter has no decodable arguments: edit its args/kwargs first", code="not_requeueable")
        try:
            get_task(row.task_name)
        except NotFound as exc:
            raise Conflict(f"task {row.task_name!r} is not registered: it cannot run", code="not_requeueable") from exc
        task = runnable_task(row.task_name, role=role)
        try:
            bind_arguments(task, *row.arguments(), size_limit=False)
        except ValidationFailed as exc:
            raise Conflict(f"arguments do not fit the task: {exc.message}", code="not_requeueable") from exc
        target_queue = queue or row.queue or ""
        previous_run = row.last_requeued_task_id
        if is_chord_member(row):
            chord_rejoin(row, new_task_id)
        before = {"status": row.status, "requeue_count": row.requeue_count}
        row.status = DeadLetterStatus.REQUEUED
        row.requeue_count += 1
        row.last_requeued_task_id = new_task_id
        row.version += 1
        fields = ["status", "requeue_count", "last_requeued_task_id", "version", "updated_at"]
        diff: dict[str, Any] = {
            "status": [before["status"], row.status],
            "requeue_count": [before["requeue_count"], row.requeue_count],
            "task_id": [None, new_task_id],
            **({"queue": [row.queue, target_queue]} if target_queue != row.queue else {}),
        }
        if policy_id is not None:
            diff["auto_requeue_count"] = [row.auto_requeue_count, row.auto_requeue_count + 1]
            diff["policy"] = [None, policy_id]
            row.auto_requeue_count += 1
            row.last_auto_requeued_at = timezone.now()
            fields += ["auto_requeue_count", "last_auto_requeued_at"]
        row.save(update_fields=fields)
        dead_letter_event(row, actor=actor, action="requeue", reason=reason, diff=diff)
    try:
        publish_tasks([requeue_message(RequeueSource.of(row), new_task_id, target_queue)])
    except Exception as exc:  # the broker refused or is unreachable
        _requeue_failed(dead_letter_id=row.pk, task_id=new_task_id, error=exc, previous_run=previous_run)
        raise BrokerUnavailable(f"the broker refused the message; the dead letter is unchanged: {exc}") from exc
    incr("requeued", "single")
    return new_task_id


@transaction.atomic
def _requeue_failed(*, dead_letter_id: int, task_id: str, error: BaseException, previous_run: str) -> None:
    """The publish of ``task_id`` failed: the row as it was (``previous_run``: its earlier
    ``last_requeued_task_id``), and a chord member's chord waiting for that run again."""
    row = dead_letter_lock(dead_letter_id)
    if row.status == DeadLetterStatus.REQUEUED and row.last_requeued_task_id == task_id:
        if is_chord_member(row):
            chord_undo(row, task_id, previous_run or row.task_id)
        row.status = DeadLetterStatus.DEAD
        row.requeue_count = max(0, row.requeue_count - 1)
        row.last_requeued_task_id = previous_run
        row.version += 1
        row.save(update_fields=["status", "requeue_count", "last_requeued_task_id", "version", "updated_at"])
        dead_letter_event(row, actor=SYSTEM, action="requeue_failed", reason=f"publish failed: {error}"[:REASON_LIMIT],
                          diff={"status": [DeadLetterStatus.REQUEUED, DeadLetterStatus.DEAD]})


@transaction.atomic
def dead_letter_discard(*, dead_letter_id: int, actor: str, reason: object) -> DeadLetter:
    reason = require_reason(reason)
    row = dead_letter_lock(dead_letter_id)
    if row.status != DeadLetterStatus.DEAD:
        raise Conflict(f"only dead letters in status 'dead' can be discarded (this one is {row.status!r})", code="bad_status")
    return _transition(row, to=DeadLetterStatus.DISCARDED, actor=actor, action="discard", reason=reason)


@transaction.atomic
def dead_letter_resolve(*, dead_letter_id: int, actor: str, reason: object) -> DeadLetter:
    reason = require_reason(reason)
    row = dead_letter_lock(dead_letter_id)
    if row.status not in (DeadLetterStatus.DEAD, DeadLetterStatus.REQUEUED):
        raise Conflict(f"a {row.status!r} dead letter cannot be resolved", code="bad_status")
    return _transition(row, to=DeadLetterStatus.RESOLVED, actor=actor, action="resolve", reason=reason)


@transaction.atomic
def dead_letter_requeued_run_succeeded(*, dead_letter_id: int, task_id: str) -> bool:
    """The requeued run ``task_id`` succeeded: resolve its dead letter (once)."""
    row = DeadLetter.objects.select_for_update(of=("self",)).filter(pk=dead_letter_id).first()
    if row is None or row.status != DeadLetterStatus.REQUEUED or row.last_requeued_task_id != task_id:
        return False
    _transition(row, to=DeadLetterStatus.RESOLVED, actor=SYSTEM, action="resolve",
                reason=f"requeued run {task_id} succeeded")
    return True


def _transition(row: DeadLetter, *, to: DeadLetterStatus, actor: str, action: str, reason: str) -> DeadLetter:
    before = row.status
    row.status = to
    row.version += 1
    row.save(update_fields=["status", "version", "updated_at"])
    dead_letter_event(row, actor=actor, action=action, reason=reason, diff={"status": [before, to]})
    return row
