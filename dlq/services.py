"""Writes on dead letters. Each service owns its transaction and writes its audit event in it;
messages are published after commit, never while a row lock is held."""
from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Count, F, Max, Q, QuerySet
from django.db.models.constants import OnConflict
from django.utils import timezone

from dlq.capture import (
    DEAD_LETTER_HEADER,
    FIELD_LIMIT,
    INTERNAL_HEADER_PREFIX,
    clean_attempts,
    clean_text,
    fingerprint,
    parse_time,
)
from dlq.audit import audit_record
from dlq.errors import BrokerUnavailable, Conflict, Forbidden, NotFound, ValidationFailed
from dlq.jsonsafe import all_finite, jsonb_exact, jsonb_safe, raw_text
from dlq.masking import mask, scrub, secret_values, unmask
from dlq.roles import INTERNAL_TASK_PREFIXES, runnable_task
from tasks.queues import validate_queue
from dlq.models import (
    BulkAction,
    DeadLetter,
    DeadLetterEvent,
    DeadLetterStatus,
    DeathReason,
    RedriveJob,
    RedriveJobStatus,
    search_vector,
)

logger = logging.getLogger("dlq")

SYSTEM = "system"
_UNSET: Any = object()
@dataclass
class CapturedFailure:
    """Everything the capture service needs; built by ``tasks.base`` from a Celery request."""

    task_id: str
    task_name: str
    reason: str
    exception_type: str
    exception_message: str
    traceback: str = ""
    queue: str = ""
    routing_key: str = ""
    args: Any = None
    kwargs: Any = None
    headers: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    retries: int = 0
    raw_body: str | None = None
    content_type: str = ""
    content_encoding: str = ""
    dead_letter_id: int | None = None
    root_id: str = ""
    parent_id: str = ""
    group_id: str = ""
    #: Set when the arguments could only be kept as text (``dlq.spool.write_capture``).
    raw_arguments: str | None = None


#: Longest exception message and traceback stored (a task can raise with megabytes of text).
EXCEPTION_MESSAGE_LIMIT = 65_536
TRACEBACK_LIMIT = 262_144


def stored_arguments(args: Any, kwargs: Any) -> tuple[Any, Any, str | None]:
    """``(args, kwargs, raw)`` as a dead letter stores them. Values jsonb cannot hold (NaN,
    infinities, NUL, lone surrogates) or would not give back as they are (``jsonb_exact``) are
    stored as a readable copy (``jsonb_safe``) and ``raw`` keeps the exact ``[args, kwargs]``
    as JSON text, from which a requeue sends them; ``raw`` is None when jsonb holds them exactly."""
    try:
        safe_args, safe_kwargs = jsonb_safe(args), jsonb_safe(kwargs)
    except (RecursionError, ValueError, TypeError):  # nested too deep to walk: text only
        return None, None, raw_text([args, kwargs])
    if safe_args is args and safe_kwargs is kwargs and jsonb_exact([args, kwargs]):
        return args, kwargs, None
    return safe_args, safe_kwargs, raw_text([args, kwargs])


def _bounded_text(text: Any, limit: int) -> str:
    """Long text kept as its head and tail (a traceback's end is where the error is)."""
    text = clean_text(text)
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n... [{len(text) - limit} characters cut] ...\n{text[-half:]}"


def _first_failed_at(attempts: list[dict[str, Any]], default: Any) -> Any:
    return (parse_time(attempts[0]["at"]) if attempts else None) or default


@cache
def _capture_fields() -> list[Any]:
    """The columns a capture writes (``search`` included: an expression over masked text)."""
    return [f for f in DeadLetter._meta.concrete_fields if not f.primary_key]


def dead_letter_capture(*, failure: CapturedFailure) -> None:
    """Record a task that was given up on. Idempotent by task id: an upsert, never
    check-then-create. A requeued run (``dead_letter_id`` set) returns its row to ``dead``.
    """
    if failure.dead_letter_id is not None:
        _dead_letter_failed_again(failure)
        return
    row = _new_row(failure)
    # One INSERT ... ON CONFLICT (task_id) DO NOTHING: a second capture of the same task
    # (hook and signal, redelivery, reconciler) changes nothing. Sent as a single statement
    # (bulk_create would wrap it in BEGIN/COMMIT: three round trips instead of one).
    DeadLetter.objects._insert([row], fields=_capture_fields(), on_conflict=OnConflict.IGNORE)
    from dlq.metrics import incr

    incr("captured", failure.task_name, failure.reason)
    logger.info(
        "dead_letter.captured task_id=%s task_name=%s reason=%s",
        failure.task_id, failure.task_name, failure.reason,
        extra={"task_id": failure.task_id, "task_name": failure.task_name, "reason": failure.reason},
    )


def _new_row(failure: CapturedFailure) -> DeadLetter:
    """The row of a failure: every value made storable (``stored_arguments``, ``jsonb_safe``)
    and every field taken from a message header cleaned and bounded (foreign producers send
    what they send)."""
    at = timezone.now()
    args, kwargs, raw = stored_arguments(failure.args, failure.kwargs)
    if failure.raw_arguments is not None:
        raw = failure.raw_arguments
    secrets = secret_values(failure.args, failure.kwargs, failure.headers)
    attempts = _scrubbed_attempts(clean_attempts(failure.attempts), secrets)
    task_name = clean_text(failure.task_name, FIELD_LIMIT)
    exception_type = clean_text(failure.exception_type, FIELD_LIMIT)
    exception_message = scrub(_bounded_text(failure.exception_message, EXCEPTION_MESSAGE_LIMIT), secrets)
    traceback = scrub(_bounded_text(failure.traceback, TRACEBACK_LIMIT), secrets)
    return DeadLetter(
        task_id=clean_text(failure.task_id, FIELD_LIMIT),
        task_name=task_name,
        queue=clean_text(failure.queue, FIELD_LIMIT),
        routing_key=clean_text(failure.routing_key, FIELD_LIMIT),
        root_id=clean_text(failure.root_id, FIELD_LIMIT),
        parent_id=clean_text(failure.parent_id, FIELD_LIMIT),
        group_id=clean_text(failure.group_id, FIELD_LIMIT),
        args=args,
        kwargs=kwargs,
        raw_arguments=raw,
        headers=jsonb_safe(failure.headers if isinstance(failure.headers, dict) else {}),
        options=jsonb_safe(failure.options if isinstance(failure.options, dict) else {}),
        raw_body=clean_text(failure.raw_body) if failure.raw_body is not None else None,
        content_type=clean_text(failure.content_type, FIELD_LIMIT),
        content_encoding=clean_text(failure.content_encoding, 64),
        exception_type=exception_type,
        exception_message=exception_message,
        traceback=traceback,
        reason=failure.reason,
        attempts=attempts,
        retries=max(0, min(int(failure.retries or 0), 2**31 - 1)),
        first_failed_at=_first_failed_at(attempts, at),
        last_failed_at=at,
        fingerprint=fingerprint(failure.task_name, exception_type, exception_message),
        search=search_vector(task_name, exception_type, exception_message, traceback, args, kwargs),
    )


def _scrubbed_attempts(attempts: list[dict[str, Any]], secrets: list[str]) -> list[dict[str, Any]]:
    return [{**a, "message": scrub(a["message"], secrets)} for a in attempts]


@transaction.atomic
def _dead_letter_failed_again(failure: CapturedFailure) -> DeadLetter | None:
    row = DeadLetter.objects.select_for_update(of=("self",)).filter(pk=failure.dead_letter_id).first()
    if row is None or row.status != DeadLetterStatus.REQUEUED or row.last_requeued_task_id != failure.task_id:
        # Not the run this row waits for (an old run, or already handled): nothing to do.
        return None
    before = {"status": row.status}
    row.status = DeadLetterStatus.DEAD
    current_args, current_kwargs = row.arguments()
    secrets = secret_values(current_args, current_kwargs, row.headers, failure.args, failure.kwargs)
    row.attempts = [*row.attempts, *_scrubbed_attempts(clean_attempts(failure.attempts), secrets)]
    row.exception_type = clean_text(failure.exception_type, FIELD_LIMIT)
    row.exception_message = scrub(_bounded_text(failure.exception_message, EXCEPTION_MESSAGE_LIMIT), secrets)
    row.traceback = scrub(_bounded_text(failure.traceback, TRACEBACK_LIMIT), secrets)
    row.search = search_vector(row.task_name, row.exception_type, row.exception_message, row.traceback, row.args,
                                row.kwargs)
    row.reason = failure.reason
    row.retries = max(0, min(int(failure.retries or 0), 2**31 - 1))
    row.last_failed_at = timezone.now()
    row.fingerprint = fingerprint(row.task_name, row.exception_type, row.exception_message)
    row.version = F("version") + 1
    row.save()
    DeadLetterEvent.objects.create(
        dead_letter=row,
        actor=SYSTEM,
        action="failed_again",
        reason=f"requeued run {failure.task_id} failed: {failure.exception_type}",
        diff={"status": [before["status"], DeadLetterStatus.DEAD]},
    )
    logger.info("dead_letter.failed_again dead_letter_id=%s task_id=%s", row.pk, failure.task_id,
                extra={"dead_letter_id": row.pk, "task_id": failure.task_id})
    return row


def _locked(dead_letter_id: int) -> DeadLetter:
    row = DeadLetter.objects.select_for_update(of=("self",)).filter(pk=dead_letter_id).first()
    if row is None:
        raise NotFound(f"dead letter {dead_letter_id} does not exist")
    return row


def _require_reason(reason: Any) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise ValidationFailed("a reason is required", code="reason_required", fields={"reason": ["required"]})
    return reason.strip()[:2000]


def _event(row: DeadLetter, *, actor: str, action: str, reason: str, diff: dict[str, Any]) -> None:
    DeadLetterEvent.objects.create(dead_letter=row, actor=actor, action=action, reason=reason, diff=diff)
    logger.info("dead_letter.%s dead_letter_id=%s actor=%s", action, row.pk, actor,
                extra={"dead_letter_id": row.pk, "task_id": row.task_id, "actor": actor})


@transaction.atomic
def dead_letter_update(
    *, dead_letter_id: int, actor: str, reason: Any, version: Any,
    args: Any = _UNSET, kwargs: Any = _UNSET, queue: Any = _UNSET, role: str | None = None,
) -> DeadLetter:
    """Edit args/kwargs/queue. ``version`` must be the one read (409 otherwise); the new
    arguments must bind to the task's signature; a masked secret sent back keeps its value.
    ``role`` (the actor's; None: the system) must be allowed to run the task
    (``dlq.roles.runnable_task``: 403 otherwise)."""
    from tasks.registry import bind_arguments

    reason = _require_reason(reason)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValidationFailed("version must be an integer", fields={"version": ["required integer"]})
    row = _locked(dead_letter_id)
    if row.version != version:
        raise Conflict(f"stale version {version}: the dead letter is at version {row.version}", code="stale_version")
    if row.status != DeadLetterStatus.DEAD:
        raise Conflict(f"only dead letters in status 'dead' can be edited (this one is {row.status!r})", code="bad_status")
    task = runnable_task(row.task_name, role=role)
    changes: dict[str, list[Any]] = {}
    for name, value in (("args", args), ("kwargs", kwargs)):
        if value is not _UNSET and not all_finite(value):
            raise ValidationFailed(f"{name} must not hold NaN or infinite numbers (JSON has none)",
                                   code="invalid_arguments", fields={name: ["non-finite number"]})
    # Edited against the exact values (``raw_arguments`` when jsonb holds a readable copy).
    current_args, current_kwargs = row.arguments()
    new_args = current_args if args is _UNSET else unmask(args, current_args)
    new_kwargs = current_kwargs if kwargs is _UNSET else unmask(kwargs, current_kwargs)
    if args is not _UNSET or kwargs is not _UNSET:
        bind_arguments(task, [] if new_args is None and args is _UNSET else new_args,
                       {} if new_kwargs is None and kwargs is _UNSET else new_kwargs)
        stored_args, stored_kwargs, raw = stored_arguments(new_args, new_kwargs)
        if stored_args != row.args or (args is not _UNSET and raw != row.raw_arguments):
            changes["args"] = [mask(row.args), mask(stored_args)]
        if stored_kwargs != row.kwargs or (kwargs is not _UNSET and raw != row.raw_arguments):
            changes["kwargs"] = [mask(row.kwargs), mask(stored_kwargs)]
        if changes:
            row.args, row.kwargs, row.raw_arguments = stored_args, stored_kwargs, raw
            row.search = search_vector(row.task_name, row.exception_type, row.exception_message, row.traceback,
                                        row.args, row.kwargs)
    if queue is not _UNSET:
        validate_queue(queue)
        if queue != row.queue:
            changes["queue"] = [row.queue, queue]
            row.queue = queue
    if not changes:
        return row
    row.version = row.version + 1
    row.save()
    _event(row, actor=actor, action="edit", reason=reason, diff=changes)
    return row


#: The options of the original message a requeue sends again (the rest of ``options`` is
#: kept for the record: a past eta or expiry, the exchange, the origin).
REQUEUE_OPTIONS = ("priority", "time_limit", "soft_time_limit", "link", "link_error", "chain", "chord",
                   "group_index", "shadow")


@dataclass(frozen=True)
class RequeueSource:
    """What a requeue sends, read from a dead letter (a row, or the columns a bulk batch returns)."""

    pk: int
    task_name: str
    args: Any
    kwargs: Any
    raw_arguments: str | None
    headers: dict[str, Any]
    options: dict[str, Any]
    root_id: str
    parent_id: str
    group_id: str

    @classmethod
    def of(cls, row: DeadLetter) -> RequeueSource:
        return cls(row.pk, row.task_name, row.args, row.kwargs, row.raw_arguments, row.headers or {}, row.options or {},
                   row.root_id, row.parent_id, row.group_id)


def requeue_message(source: RequeueSource, task_id: str, queue: str | None) -> Any:
    """The message a requeue publishes: the original one (arguments exactly as the message
    carried them, custom headers, priority, own time limits, workflow links, chain, chord,
    group, root and parent ids) under a new task id that links back to the dead letter."""
    from tasks.publish import OutgoingTask

    args, kwargs = (json.loads(source.raw_arguments) if source.raw_arguments is not None
                    else (source.args, source.kwargs))
    headers = {k: v for k, v in source.headers.items() if not k.startswith(INTERNAL_HEADER_PREFIX)}
    headers[DEAD_LETTER_HEADER] = source.pk
    options = {k: source.options[k] for k in REQUEUE_OPTIONS if source.options.get(k) not in (None, [], {}, "")}
    if source.group_id:
        options["group_id"] = source.group_id
    return OutgoingTask(source.task_name, args or [], kwargs or {}, task_id, queue or None, headers, options=options,
                        root_id=source.root_id or None, parent_id=source.parent_id or None)


def _chord_rejoin(row: DeadLetter, task_id: str) -> None:
    """A chord member goes back into its chord under ``task_id``: django-celery-results'
    ``ChordCounter`` waits for one more member, and ``task_id`` replaces the dead run's id in
    the results the callback will join. Possible only while the chord is still open: once its
    last member returned (this one dead), its callback already failed with a ``ChordError``
    and the counter is gone. Runs in the caller's transaction, under the counter's row lock."""
    from django_celery_results.models import ChordCounter

    counter = ChordCounter.objects.select_for_update().filter(group_id=row.group_id).first()
    if counter is None:
        raise Conflict(
            f"this task is a member of chord {row.group_id}, which has already completed with this member failed "
            "(its callback got a ChordError): the chord cannot be resumed. Run the whole workflow again.",
            code="workflow_not_resumable")
    members = json.loads(counter.sub_tasks)
    previous = {row.task_id, row.last_requeued_task_id} - {""}
    for member in members:  # AsyncResult.as_tuple(): [[task_id, parent], None]
        if isinstance(member, list) and member and isinstance(member[0], list) and member[0] and member[0][0] in previous:
            member[0][0] = task_id
            break
    else:
        raise Conflict(f"chord {row.group_id} does not list this task: it cannot be resumed",
                       code="workflow_not_resumable")
    counter.sub_tasks = json.dumps(members)
    counter.count += 1
    counter.save(update_fields=["sub_tasks", "count"])


def _chord_undo(row: DeadLetter, task_id: str, previous: str) -> None:
    """The publish of ``task_id`` failed: the chord waits for the earlier run again."""
    from django_celery_results.models import ChordCounter

    counter = ChordCounter.objects.select_for_update().filter(group_id=row.group_id).first()
    if counter is None:
        return
    members = json.loads(counter.sub_tasks)
    for member in members:
        if isinstance(member, list) and member and isinstance(member[0], list) and member[0] and member[0][0] == task_id:
            member[0][0] = previous
            counter.sub_tasks = json.dumps(members)
            counter.count = max(0, counter.count - 1)
            counter.save(update_fields=["sub_tasks", "count"])
            return


def is_chord_member(row: DeadLetter) -> bool:
    return bool(row.group_id and (row.options or {}).get("chord"))


def dead_letter_requeue(*, dead_letter_id: int, actor: str, reason: Any = "", queue: str | None = None,
                        policy_id: int | None = None, version: Any = None, role: str | None = None) -> str:
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
    from tasks.registry import bind_arguments, get_task

    if transaction.get_connection().in_atomic_block:
        # Publishing must follow the commit that moved the row to `requeued`.
        raise RuntimeError("dead_letter_requeue() must not run inside an open transaction")
    reason = reason.strip()[:2000] if isinstance(reason, str) else ""
    if queue is not None:
        validate_queue(queue)
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise ValidationFailed("version must be an integer", fields={"version": ["integer"]})
    new_task_id = str(uuid.uuid4())
    with transaction.atomic():
        row = _locked(dead_letter_id)
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
            _chord_rejoin(row, new_task_id)
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
        _event(row, actor=actor, action="requeue", reason=reason, diff=diff)
    try:
        from tasks.publish import publish_tasks

        publish_tasks([requeue_message(RequeueSource.of(row), new_task_id, target_queue)])
    except Exception as exc:  # the broker refused or is unreachable
        _requeue_failed(dead_letter_id=row.pk, task_id=new_task_id, error=exc, previous_run=previous_run)
        raise BrokerUnavailable(f"the broker refused the message; the dead letter is unchanged: {exc}") from exc
    from dlq.metrics import incr

    incr("requeued", "single")
    return new_task_id


@transaction.atomic
def _requeue_failed(*, dead_letter_id: int, task_id: str, error: BaseException, previous_run: str) -> None:
    """The publish of ``task_id`` failed: the row as it was (``previous_run``: its earlier
    ``last_requeued_task_id``), and a chord member's chord waiting for that run again."""
    row = _locked(dead_letter_id)
    if row.status == DeadLetterStatus.REQUEUED and row.last_requeued_task_id == task_id:
        if is_chord_member(row):
            _chord_undo(row, task_id, previous_run or row.task_id)
        row.status = DeadLetterStatus.DEAD
        row.requeue_count = max(0, row.requeue_count - 1)
        row.last_requeued_task_id = previous_run
        row.version += 1
        row.save(update_fields=["status", "requeue_count", "last_requeued_task_id", "version", "updated_at"])
        _event(row, actor=SYSTEM, action="requeue_failed", reason=f"publish failed: {error}"[:2000],
               diff={"status": [DeadLetterStatus.REQUEUED, DeadLetterStatus.DEAD]})


@transaction.atomic
def dead_letter_discard(*, dead_letter_id: int, actor: str, reason: Any) -> DeadLetter:
    reason = _require_reason(reason)
    row = _locked(dead_letter_id)
    if row.status != DeadLetterStatus.DEAD:
        raise Conflict(f"only dead letters in status 'dead' can be discarded (this one is {row.status!r})", code="bad_status")
    return _transition(row, to=DeadLetterStatus.DISCARDED, actor=actor, action="discard", reason=reason)


@transaction.atomic
def dead_letter_resolve(*, dead_letter_id: int, actor: str, reason: Any) -> DeadLetter:
    reason = _require_reason(reason)
    row = _locked(dead_letter_id)
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


def _transition(row: DeadLetter, *, to: str, actor: str, action: str, reason: str) -> DeadLetter:
    before = row.status
    row.status = to
    row.version += 1
    row.save(update_fields=["status", "version", "updated_at"])
    _event(row, actor=actor, action=action, reason=reason, diff={"status": [before, to]})
    return row


# --- Bulk actions: redrive jobs ----------------------------------------------------------

ELIGIBLE = {
    BulkAction.REQUEUE: (DeadLetterStatus.DEAD,),
    BulkAction.DISCARD: (DeadLetterStatus.DEAD,),
    BulkAction.RESOLVE: (DeadLetterStatus.DEAD, DeadLetterStatus.REQUEUED),
}
MAX_BULK_IDS = 10_000
LEASE_SECONDS = 120
TERMINAL = (RedriveJobStatus.FINISHED, RedriveJobStatus.CANCELLED, RedriveJobStatus.FAILED)


def _bulk_args(action: Any, ids: Any, filters: Any) -> tuple[str, list[int] | None, dict[str, Any]]:
    from dlq.selectors import clean_filters

    if action not in BulkAction.values:
        raise ValidationFailed(f"action must be one of {', '.join(BulkAction.values)}", fields={"action": ["invalid"]})
    if ids is None and filters is None:
        raise ValidationFailed("give ids or a filter", code="no_selection", fields={"ids": ["ids or filter required"]})
    clean_ids: list[int] | None = None
    if ids is not None:
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise ValidationFailed("ids must be a list of integers", fields={"ids": ["list of integers"]})
        if len(ids) > MAX_BULK_IDS:
            raise ValidationFailed(f"at most {MAX_BULK_IDS} ids; use a filter for more", fields={"ids": ["too many"]})
        clean_ids = sorted(set(ids))
    return action, clean_ids, clean_filters(filters)


def _selection(action: str, ids: list[int] | None, filters: dict[str, Any]) -> QuerySet[DeadLetter]:
    from dlq.selectors import dead_letter_filter

    qs = dead_letter_filter(DeadLetter.objects.all(), filters).filter(status__in=ELIGIBLE[BulkAction(action)])
    if ids is not None:
        qs = qs.filter(pk__in=ids)
    return qs


def dead_letters_bulk_preview(*, action: Any, ids: Any = None, filters: Any = None, sample_size: int = 10) -> dict[str, Any]:
    """Dry run: how many rows the action would touch, and a few of them."""
    action, ids, filters = _bulk_args(action, ids, filters)
    qs = _selection(action, ids, filters)
    sample = list(qs.order_by("-last_failed_at", "-id").values(
        "id", "task_name", "exception_type", "status", "last_failed_at")[:sample_size])
    return {"action": action, "count": qs.count(), "sample": sample}


@transaction.atomic
def dead_letters_bulk_start(
    *, actor: str, action: Any, reason: Any, ids: Any = None, filters: Any = None,
    rate_limit: Any = None, queue: Any = None,
) -> RedriveJob:
    """Create a redrive job over the selection and start it (a Celery task, after commit)."""
    reason = _require_reason(reason)
    action, ids, filters = _bulk_args(action, ids, filters)
    if rate_limit is not None and (isinstance(rate_limit, bool) or not isinstance(rate_limit, (int, float))
                                   or not 0 < rate_limit <= 1_000_000):
        raise ValidationFailed("rate_limit must be a positive number of messages per second",
                               fields={"rate_limit": ["positive number"]})
    if queue is not None:
        validate_queue(queue)
    if queue and action != BulkAction.REQUEUE:
        raise ValidationFailed("queue only applies to requeue", fields={"queue": ["only with requeue"]})
    qs = _selection(action, ids, filters)
    summary = qs.aggregate(total=Count("id"), max_id=Max("id"))
    job = RedriveJob.objects.create(
        action=action, actor=actor, reason=reason, filters={k: str(v) for k, v in filters.items()}
        if filters else {}, ids=ids, queue=queue or "", rate_limit=rate_limit,
        total=summary["total"] or 0, max_id=summary["max_id"] or 0,
    )
    audit_record(actor=actor, action="job.start", object_type="redrive_job", object_id=job.pk, reason=reason,
                 diff={"action": [None, action], "total": [None, job.total], "filters": [None, job.filters],
                       "ids": [None, len(ids) if ids is not None else None], "queue": [None, job.queue],
                       "rate_limit": [None, rate_limit]})
    logger.info("redrive_job.created job_id=%s action=%s total=%s actor=%s", job.pk, action, job.total, actor,
                extra={"job_id": job.pk, "actor": actor})
    transaction.on_commit(lambda: _start_job_task(job.pk))
    return job


def _start_job_task(job_id: int) -> None:
    from dlq.tasks import run_redrive_job

    run_redrive_job.apply_async([job_id])


@transaction.atomic
def redrive_job_cancel(*, job_id: int, actor: str) -> RedriveJob:
    job = RedriveJob.objects.select_for_update().filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"redrive job {job_id} does not exist")
    if job.status in TERMINAL:
        raise Conflict(f"the job is already {job.status}", code="bad_status")
    before = job.status
    job.status = RedriveJobStatus.CANCELLED
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "finished_at"])
    audit_record(actor=actor, action="job.cancel", object_type="redrive_job", object_id=job.pk,
                 diff={"status": [before, job.status], "done": [None, job.done]})
    logger.info("redrive_job.cancelled job_id=%s actor=%s", job.pk, actor, extra={"job_id": job.pk, "actor": actor})
    return job


def _claim(job_id: int, token: str) -> bool:
    """Take (or renew) the job's lease: one runner at a time, even if Celery delivers the
    job's message twice (a redelivery after the visibility timeout)."""
    now = timezone.now()
    return bool(
        RedriveJob.objects.filter(pk=job_id).exclude(status__in=TERMINAL).filter(_lease_free(token, now))
        .update(runner=token, heartbeat_at=now)
    )


def _lease_free(token: str, now: Any) -> Q:
    """The lease may be taken by ``token``: nobody holds it, ``token`` does, or its holder
    stopped renewing it ``LEASE_SECONDS`` ago."""
    stale = now - timedelta(seconds=LEASE_SECONDS)
    return Q(runner="") | Q(runner=token) | Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True)


def redrive_job_run(*, job_id: int, batch_size: int = 1000, time_budget: float = 60.0,
                    sleep: Any = None) -> RedriveJob | None:
    """Run (or resume) a redrive job in batches until it is done, cancelled, or
    ``time_budget`` seconds have passed (then the lease is released and the caller
    continues it in a new task, so no task outlives its time limit)."""
    import time

    sleep = sleep or time.sleep
    deadline = time.monotonic() + time_budget
    token = uuid.uuid4().hex
    if not _claim(job_id, token):
        logger.info("redrive_job.not_claimed job_id=%s", job_id, extra={"job_id": job_id})
        return None
    job = RedriveJob.objects.get(pk=job_id)
    if job.status == RedriveJobStatus.PENDING:
        job.status, job.started_at = RedriveJobStatus.RUNNING, timezone.now()
        job.save(update_fields=["status", "started_at"])
    if job.action != BulkAction.REQUEUE:
        _run_batches(job, token, batch_size=batch_size, deadline=deadline, sleep=sleep)
    else:
        from tasks.publish import publish_context

        # One producer and Redis connection for every batch of this run.
        with publish_context() as publisher:
            job.publisher = publisher  # type: ignore[attr-defined]
            try:
                _run_batches(job, token, batch_size=batch_size, deadline=deadline, sleep=sleep)
            finally:
                job.publisher = None  # type: ignore[attr-defined]
    job.refresh_from_db()
    return job


def _run_batches(job: RedriveJob, token: str, *, batch_size: int, deadline: float, sleep: Any) -> None:
    import time

    job_id = job.pk
    if job.pending_publish:
        _publish_job_batch(job, resume=True)
    per_batch = batch_size if not job.rate_limit else max(1, min(batch_size, int(job.rate_limit)))
    while True:
        started = time.monotonic()
        if job.action == BulkAction.REQUEUE and not _queues_have_room(job, per_batch):
            # Backpressure: pause rather than push a queue over its high-water mark (keeping the lease).
            if not _claim(job_id, token):
                break
            if time.monotonic() > deadline:
                RedriveJob.objects.filter(pk=job_id, runner=token).update(runner="", heartbeat_at=None)
                break
            sleep(1.0)
            continue
        # The lease is checked and renewed under the job's row lock in _job_batch: cancelled,
        # finished elsewhere, or the lease lost all end the run there.
        processed = _job_batch(job, per_batch, token=token)
        if processed is None:
            break
        if job.action == BulkAction.REQUEUE:
            _publish_job_batch(job)
        if job.rate_limit:
            pause = processed / job.rate_limit - (time.monotonic() - started)
            if pause > 0:
                sleep(pause)
        if time.monotonic() > deadline:
            RedriveJob.objects.filter(pk=job_id, runner=token).update(runner="", heartbeat_at=None)
            break


def _queues_have_room(job: RedriveJob, size: int) -> bool:
    from django.conf import settings

    from tasks.backpressure import QueueFull, check_capacity

    if settings.QUEUE_HIGH_WATER_MARK <= 0 and all(int(m) <= 0 for m in settings.QUEUE_HIGH_WATER_MARKS.values()):
        return True  # backpressure is off for every queue: no need to read the next batch's queues
    if job.queue:
        queues = {job.queue}
    else:
        nxt = _selection(job.action, job.ids, _job_filters(job)).filter(pk__gt=job.last_id, pk__lte=job.max_id)
        queues = set(nxt.order_by("pk").values_list("queue", flat=True)[:size])
    try:
        for queue in queues:
            check_capacity(queue or settings.CELERY_TASK_DEFAULT_QUEUE, incoming=size, fresh=True)
    except QueueFull as exc:
        logger.info("redrive_job.paused job_id=%s %s", job.pk, exc, extra={"job_id": job.pk})
        return False
    return True


@transaction.atomic
def _job_batch(job: RedriveJob, size: int, *, token: str | None = None) -> int | None:
    """Move the next batch; returns how many ids it covered, or None when the job is over
    (or, with ``token``, when this runner no longer holds the lease: ``_claim``'s rule,
    checked under the job's row lock and renewed in the same transaction)."""
    jobs = RedriveJob.objects.select_for_update().filter(pk=job.pk)
    if token is not None:
        jobs = jobs.filter(_lease_free(token, timezone.now()))
    locked = jobs.first()
    if locked is None or locked.status != RedriveJobStatus.RUNNING:
        return None  # over, or (with token) another runner took the job over
    if token is not None:
        locked.runner = token
    selection = _selection(job.action, job.ids, _job_filters(job))
    ids = list(selection.filter(pk__gt=locked.last_id, pk__lte=locked.max_id).order_by("pk")
               .values_list("pk", flat=True)[:size])
    if not ids:
        locked.status, locked.finished_at = RedriveJobStatus.FINISHED, timezone.now()
        locked.runner = ""
        locked.save(update_fields=["status", "finished_at", "runner"])
        logger.info("redrive_job.finished job_id=%s done=%s failed=%s", job.pk, locked.done, locked.failed,
                    extra={"job_id": job.pk})
        job.status = locked.status
        return None
    eligible = list(ELIGIBLE[BulkAction(job.action)])
    to_status = {BulkAction.REQUEUE: DeadLetterStatus.REQUEUED, BulkAction.DISCARD: DeadLetterStatus.DISCARDED,
                 BulkAction.RESOLVE: DeadLetterStatus.RESOLVED}[BulkAction(job.action)]
    moved = _move_batch(job, ids, eligible, to_status)
    pending: list[list[Any]] = []
    if job.action == BulkAction.REQUEUE:
        pending = [[pk, task_id] for pk, task_id, *_ in moved]
        job.to_publish = [  # type: ignore[attr-defined]  (the batch just moved, for _publish_job_batch)
            requeue_message(_source_of(columns), task_id, job.queue or queue)
            for pk, task_id, queue, *columns in moved]
    locked.last_id = ids[-1]
    locked.done += len(moved)
    locked.failed += len(ids) - len(moved)
    locked.pending_publish = pending
    locked.heartbeat_at = timezone.now()
    locked.save(update_fields=["last_id", "done", "failed", "pending_publish", "heartbeat_at", "runner"])
    job.last_id, job.pending_publish = locked.last_id, pending
    return len(ids)


#: What ``_move_batch`` returns after (id, new task id, queue) for a requeue, in
#: ``RequeueSource``'s order; JSON columns as text.
_SOURCE_COLUMNS = ("id", "task_name", "args::text", "kwargs::text", "raw_arguments", "headers::text", "options::text",
                   "root_id", "parent_id", "group_id")


def _source_of(columns: list[Any]) -> RequeueSource:
    pk, name, args, kwargs, raw, headers, options, root_id, parent_id, group_id = columns
    return RequeueSource(pk, name, json.loads(args) if args is not None else None,
                         json.loads(kwargs) if kwargs is not None else None, raw, json.loads(headers),
                         json.loads(options), root_id, parent_id, group_id)


def _move_batch(job: RedriveJob, ids: list[int], eligible: list[str], to_status: str) -> list[tuple[Any, ...]]:
    """Move the rows of ``ids`` still in an eligible status to ``to_status`` and write their
    audit events: ONE statement, an ``UPDATE`` of the rows locked by ``SELECT ... WHERE id =
    ANY(...) AND status = ANY(...) ORDER BY id FOR UPDATE``, ``RETURNING`` the rows that feed
    the events' ``INSERT`` (a data-modifying CTE). A row changed concurrently (a single
    requeue or discard) is re-checked after its lock wait and skipped. Requeues get their new
    task id from ``gen_random_uuid()``; a chord member is not requeued in bulk (it must rejoin
    its chord, ``dead_letter_requeue``) and counts as skipped. Returns, per moved row in id
    order, ``(id, new_task_id, queue, *_SOURCE_COLUMNS)`` for a requeue, ``(id,)`` otherwise."""
    table, events = DeadLetter._meta.db_table, DeadLetterEvent._meta.db_table
    requeue = job.action == BulkAction.REQUEUE
    # The rows are locked in id order (the ordered FOR UPDATE subquery), as every writer of
    # several dead letters does, so two bulk jobs over overlapping rows cannot deadlock
    # whatever plan the UPDATE gets; the lock wait re-checks the status.
    # Not requeued in bulk: a chord member (it must rejoin its chord, one by one) and a task
    # nobody runs by name (``dlq.roles.INTERNAL_TASK_PREFIXES``).
    internal = "".join(f" AND task_name NOT LIKE '{prefix}%%'" for prefix in INTERNAL_TASK_PREFIXES)
    chords = f" AND NOT (options ? 'chord' AND group_id <> ''){internal}" if requeue else ""
    source = (f" FROM (SELECT id, status FROM {table} WHERE id = ANY(%(ids)s) AND status = ANY(%(eligible)s){chords} "
              "ORDER BY id FOR UPDATE) AS old")
    before, where = "m.before", "d.id = old.id"
    set_requeue = (", requeue_count = d.requeue_count + 1, last_requeued_task_id = gen_random_uuid()::text"
                   if requeue else "")
    diff = ("jsonb_build_object('status', jsonb_build_array(" + before + ", %(to)s::text), "
            "'job', jsonb_build_array(NULL, %(job)s::bigint))")
    if requeue:
        diff += (" || jsonb_build_object('requeue_count', jsonb_build_array(m.requeue_count - 1, m.requeue_count), "
                 "'task_id', jsonb_build_array(NULL, m.last_requeued_task_id))"
                 " || CASE WHEN %(queue)s <> '' AND %(queue)s <> m.queue "
                 "THEN jsonb_build_object('queue', jsonb_build_array(m.queue, %(queue)s::text)) ELSE '{}'::jsonb END")
    # A requeue reads what it publishes in the same statement; the other actions only count.
    returned = "".join(f"d.{c.split('::')[0]}, " for c in _SOURCE_COLUMNS if c != "id") if requeue else ""
    selected = f"id, last_requeued_task_id, queue, {', '.join(_SOURCE_COLUMNS)}" if requeue else "id"
    query = f"""
        WITH moved AS (
            UPDATE {table} AS d SET status = %(to)s, version = d.version + 1, updated_at = now(){set_requeue}
            {source} WHERE {where}
            RETURNING d.id, d.requeue_count, d.last_requeued_task_id, d.queue, {returned} old.status AS before
        ), events AS (
            INSERT INTO {events} (dead_letter_id, actor, action, reason, diff, created_at)
            SELECT m.id, %(actor)s, %(action)s, %(reason)s, {diff}, now() FROM moved AS m
        )
        SELECT {selected} FROM moved ORDER BY id
    """
    params = {"ids": ids, "eligible": eligible, "to": to_status, "job": job.pk,
              "queue": job.queue or "", "actor": job.actor, "action": job.action, "reason": job.reason}
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall()


def _job_filters(job: RedriveJob) -> dict[str, Any]:
    from dlq.selectors import clean_filters

    return clean_filters(job.filters or {})


def _publish_job_batch(job: RedriveJob, *, resume: bool = False) -> None:
    """Publish the batch recorded in ``pending_publish``, then clear it. On ``resume`` (a
    previous runner crashed between commit and clear), skip what already reached the broker
    and re-read the rows; otherwise publish what ``_job_batch`` just moved (no second read)."""
    from tasks.publish import publish_tasks

    items: list[Any] = getattr(job, "to_publish", None) or []
    if resume or not items:
        pending = [(int(pk), str(tid)) for pk, tid in job.pending_publish]
        if resume:
            published = already_published([tid for _, tid in pending])
            pending = [(pk, tid) for pk, tid in pending if tid not in published]
        rows = {r.pk: r for r in DeadLetter.objects.defer("traceback", "raw_body", "attempts", "search")
                .filter(pk__in=[pk for pk, _ in pending])}
        items = [requeue_message(RequeueSource.of(rows[pk]), tid, job.queue or rows[pk].queue)
                 for pk, tid in pending
                 if pk in rows and rows[pk].status == DeadLetterStatus.REQUEUED and rows[pk].last_requeued_task_id == tid]
    job.to_publish = []  # type: ignore[attr-defined]
    publish_tasks(items, context=getattr(job, "publisher", None))
    RedriveJob.objects.filter(pk=job.pk).update(pending_publish=[])
    from dlq.metrics import incr

    incr("requeued", "bulk", amount=len(items))
    job.pending_publish = []


_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def already_published(task_ids: list[str]) -> set[str]:
    """Which of ``task_ids`` reached the broker or a worker: a stored result, or (Redis
    broker) a message waiting in a queue or unacked. Used only when resuming a crashed job.

    Each message is scanned once for the UUIDs it holds and those are looked up in the
    wanted set (the ids checked here are all UUIDs: ``gen_random_uuid()``/``uuid4``). The
    queues are read whole into memory (a known cost of this rare path)."""
    from django_celery_results.models import TaskResult

    from taskplatform.celery import app

    wanted = set(task_ids)
    found = set(TaskResult.objects.filter(task_id__in=wanted).values_list("task_id", flat=True))
    if not app.conf.broker_url.startswith("redis"):
        return found
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        keys = [k for k in client.scan_iter(count=1000) if client.type(k) in (b"list", "list")]
        blobs = [m for k in keys for m in client.lrange(k, 0, -1)]
        blobs += list(client.hvals("unacked")) if client.exists("unacked") else []
    wanted_bytes = {t.encode(): t for t in wanted - found if _UUID.fullmatch(t.encode())}
    non_uuid = [t for t in wanted - found if t.encode() not in wanted_bytes]
    for blob in blobs:
        data = blob if isinstance(blob, bytes) else str(blob).encode()
        for match in _UUID.findall(data):
            if match in wanted_bytes:
                found.add(wanted_bytes[match])
        for task_id in non_uuid:  # not expected; kept exact for any caller passing other ids
            if task_id.encode() in data:
                found.add(task_id)
    return found


# --- Beat schedules (django-celery-beat's PeriodicTask) ------------------------------------

@transaction.atomic
def periodic_task_set_enabled(*, periodic_task_id: int, enabled: bool, actor: str) -> Any:
    """Enable or disable a beat schedule. ``save()`` (not ``update()``) so that
    django-celery-beat notices the change (its ``PeriodicTasks.changed`` signal)."""
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.select_for_update().filter(pk=periodic_task_id).first()
    if task is None:
        raise NotFound(f"schedule {periodic_task_id} does not exist")
    if task.enabled != enabled:
        task.enabled = enabled
        task.save()
        audit_record(actor=actor, action="schedule.enable" if enabled else "schedule.disable", object_type="schedule",
                     object_id=task.name, diff={"enabled": [not enabled, enabled]})
        logger.info("schedule.%s name=%s actor=%s", "enabled" if enabled else "disabled", task.name, actor,
                    extra={"schedule": task.name, "actor": actor})
    return task


def periodic_task_run_now(*, periodic_task_id: int, actor: str) -> str:
    """Send a scheduled task once, now, with its stored arguments; returns the task id."""
    from django_celery_beat.models import PeriodicTask

    from taskplatform.celery import app

    task = PeriodicTask.objects.filter(pk=periodic_task_id).first()
    if task is None:
        raise NotFound(f"schedule {periodic_task_id} does not exist")
    try:
        args, kwargs = json.loads(task.args or "[]"), json.loads(task.kwargs or "{}")
    except ValueError as exc:
        raise Conflict(f"the schedule's stored arguments are not valid JSON: {exc}", code="bad_schedule") from exc
    options: dict[str, Any] = {}
    if task.queue:
        options["queue"] = task.queue
    try:
        result = app.send_task(task.task, args=args, kwargs=kwargs, **options)
    except Exception as exc:
        raise BrokerUnavailable(f"the broker refused the message: {exc}") from exc
    audit_record(actor=actor, action="schedule.run_now", object_type="schedule", object_id=task.name,
                 diff={"task_id": [None, str(result.id)], "task": [None, task.task]})
    logger.info("schedule.run_now name=%s task_id=%s actor=%s", task.name, result.id, actor,
                extra={"schedule": task.name, "task_id": result.id, "actor": actor})
    return str(result.id)


# --- Housekeeping: retention, stuck requeues, stalled jobs, failed jobs ----------------------

PRUNABLE = (DeadLetterStatus.RESOLVED, DeadLetterStatus.DISCARDED)


@dataclass
class Pruned:
    count: int
    more: bool


def dead_letters_prune(*, older_than_days: int, batch_size: int = 1000, time_budget: float = 240.0) -> Pruned:
    """Delete resolved and discarded dead letters (and their events) not changed for
    ``older_than_days``, in batches by id, each batch its own short transaction, for at most
    ``time_budget`` seconds (``more`` says whether rows are left). Rows in ``dead`` or
    ``requeued`` are never pruned."""
    import time

    cutoff = timezone.now() - timedelta(days=older_than_days)
    deadline = time.monotonic() + time_budget
    deleted, more = 0, False
    while True:
        ids = list(DeadLetter.objects.filter(status__in=PRUNABLE, updated_at__lt=cutoff)
                   .order_by("id").values_list("id", flat=True)[:batch_size])
        if not ids:
            break
        with transaction.atomic():
            # Lock and re-check: a row changed since the read (requeued again) stays, with its history.
            doomed = list(DeadLetter.objects.select_for_update(of=("self",))
                          .filter(pk__in=ids, status__in=PRUNABLE, updated_at__lt=cutoff).values_list("pk", flat=True))
            DeadLetterEvent.objects.filter(dead_letter_id__in=doomed).delete()
            DeadLetter.objects.filter(pk__in=doomed).delete()
        deleted += len(doomed)
        if time.monotonic() > deadline:
            more = True
            break
    if deleted:
        logger.info("dead_letter.pruned count=%s older_than_days=%s", deleted, older_than_days,
                    extra={"count": deleted})
    return Pruned(count=deleted, more=more)


def housekeeping_prune_other_tables(*, older_than_days: int) -> dict[str, int]:
    """Retention of the other tables that grow: resolved alerts, finished jobs."""
    from dlq.models import Alert, AlertStatus

    from dlq.models import EffectKey, IdempotencyKey

    now = timezone.now()
    cutoff = now - timedelta(days=older_than_days)
    alerts, _ = Alert.objects.filter(status=AlertStatus.RESOLVED, resolved_at__lt=cutoff).delete()
    jobs, _ = RedriveJob.objects.filter(status__in=TERMINAL, finished_at__lt=cutoff).delete()
    keys, _ = IdempotencyKey.objects.filter(expires_at__lt=now).delete()
    # Effect keys must outlive any later run of their task (requeues of dead letters kept
    # for DLQ_RETENTION_DAYS): keep them for the same ``older_than_days`` (90 by default).
    effects, _ = EffectKey.objects.filter(created_at__lt=cutoff).delete()
    from dlq.models import ApiToken

    tokens, _ = ApiToken.objects.filter(expiry__lt=now).delete()  # expired: they no longer authenticate
    return {"alerts": alerts, "redrive_jobs": jobs, "idempotency_keys": keys, "effect_keys": effects,
            "expired_tokens": tokens}


def dead_letters_reconcile_stuck_requeues(*, older_than_minutes: int) -> int:
    """Requeued rows whose message reached neither the broker nor a worker (a publish lost
    between commit and send): back to ``dead`` with an event, so they can be requeued again.
    Only with a Redis broker, where the queues can be inspected; elsewhere they are logged."""
    from taskplatform.celery import app

    cutoff = timezone.now() - timedelta(minutes=older_than_minutes)
    stuck = list(DeadLetter.objects.filter(status=DeadLetterStatus.REQUEUED, updated_at__lt=cutoff)
                 .values_list("pk", "last_requeued_task_id")[:1000])
    if not stuck:
        return 0
    if not app.conf.broker_url.startswith("redis"):
        logger.warning("dead_letter.requeued_without_result count=%s (cannot inspect this broker)", len(stuck))
        return 0
    seen = already_published([tid for _, tid in stuck])
    returned = 0
    for pk, task_id in stuck:
        if task_id in seen:
            continue
        with transaction.atomic():
            row = _locked(pk)
            if row.status == DeadLetterStatus.REQUEUED and row.last_requeued_task_id == task_id:
                row.status = DeadLetterStatus.DEAD
                row.version += 1
                row.save(update_fields=["status", "version", "updated_at"])
                _event(row, actor=SYSTEM, action="requeue_lost",
                       reason=f"message {task_id} never reached a worker; back to dead", diff={"status": ["requeued", "dead"]})
                returned += 1
    return returned


def redrive_jobs_resume_stalled() -> int:
    """Restart jobs whose runner vanished (no heartbeat) or that never started."""
    stale = timezone.now() - timedelta(seconds=LEASE_SECONDS * 2)
    ids = list(RedriveJob.objects.filter(
        Q(status=RedriveJobStatus.RUNNING, heartbeat_at__lt=stale)
        | Q(status=RedriveJobStatus.RUNNING, heartbeat_at__isnull=True, started_at__lt=stale)
        | Q(status=RedriveJobStatus.PENDING, created_at__lt=stale)
    ).values_list("pk", flat=True))
    for job_id in ids:
        _start_job_task(job_id)
    return len(ids)


def redrive_job_fail(*, job_id: int, error: str) -> None:
    RedriveJob.objects.filter(pk=job_id).exclude(status__in=TERMINAL).update(
        status=RedriveJobStatus.FAILED, error=error[:2000], finished_at=timezone.now(), runner="")
    logger.error("redrive_job.failed job_id=%s error=%s", job_id, error, extra={"job_id": job_id})


# --- Automatic reprocessing (ReprocessPolicy) ------------------------------------------------

NEVER_AUTO = (DeathReason.DECODE_ERROR, DeathReason.UNREGISTERED_TASK)


def reprocess_policies_apply(*, now: Any = None, limit_per_policy: int = 500) -> dict[str, int]:
    """Requeue the dead letters that the enabled policies cover and whose cool-down has
    passed, through ``dead_letter_requeue`` (actor ``system``). Holds a task's requeues while
    it still fails more often than its circuit allows; leaves a note once a dead letter has
    used up its automatic requeues."""
    from dlq.models import ReprocessPolicy

    now = now or timezone.now()
    totals = {"requeued": 0, "held_by_circuit": 0, "exhausted": 0, "skipped": 0}
    for policy in ReprocessPolicy.objects.filter(enabled=True):
        covered = DeadLetter.objects.filter(status=DeadLetterStatus.DEAD, task_name=policy.task_name) \
            .exclude(reason__in=NEVER_AUTO)
        if policy.reasons:
            covered = covered.filter(reason__in=policy.reasons)
        if policy.exception_types:
            covered = covered.filter(exception_type__in=policy.exception_types)
        _note_exhausted(policy, covered.filter(auto_requeue_count__gte=policy.max_auto_requeues), totals)
        candidates = list(covered.filter(auto_requeue_count__lt=policy.max_auto_requeues)
                          .order_by("last_failed_at").values_list("pk", "auto_requeue_count", "last_failed_at")[:limit_per_policy])
        if not candidates:
            continue
        recent_failures = DeadLetter.objects.filter(task_name=policy.task_name,
                                                    last_failed_at__gt=now - timedelta(minutes=1)).count()
        if recent_failures > policy.circuit_max_failures_per_minute:
            totals["held_by_circuit"] += len(candidates)
            logger.info("reprocess.circuit_open task=%s failures_last_minute=%s max=%s", policy.task_name,
                        recent_failures, policy.circuit_max_failures_per_minute, extra={"policy_id": policy.pk})
            continue
        for pk, auto_count, last_failed_at in candidates:
            wait = timedelta(seconds=policy.cooldown_seconds * (policy.backoff_factor ** auto_count))
            if last_failed_at + wait > now:
                continue
            try:
                dead_letter_requeue(dead_letter_id=pk, actor=SYSTEM, policy_id=policy.pk,
                                    reason=f"reprocess policy #{policy.pk} ({policy.task_name}): automatic requeue "
                                           f"{auto_count + 1} of {policy.max_auto_requeues}")
                totals["requeued"] += 1
            except (Conflict, NotFound, Forbidden):
                totals["skipped"] += 1  # changed meanwhile (an operator acted), or a task nobody runs by name
    return totals


def _note_exhausted(policy: Any, exhausted: QuerySet[DeadLetter], totals: dict[str, int]) -> None:
    """Once per dead letter: say that automatic reprocessing stopped and a person is needed."""
    for row in exhausted.exclude(events__action="auto_requeue_exhausted")[:500]:
        with transaction.atomic():
            _event(row, actor=SYSTEM, action="auto_requeue_exhausted", diff={},
                   reason=f"reprocess policy #{policy.pk} stopped after {row.auto_requeue_count} automatic requeues; "
                          "it still fails: needs a person")
        totals["exhausted"] += 1


@transaction.atomic
def reprocess_policy_save(*, actor: str, data: dict[str, Any], policy_id: int | None = None) -> Any:
    """Create or change a reprocess policy (one per task name)."""
    from django.db import IntegrityError

    from dlq.models import ReprocessPolicy

    fields = [f.name for f in ReprocessPolicy._meta.concrete_fields if f.name not in ("id", "created_at", "updated_at")]
    if policy_id is None:
        policy = ReprocessPolicy(**data)
        before: dict[str, Any] = {}
    else:
        policy = ReprocessPolicy.objects.select_for_update().filter(pk=policy_id).first()
        if policy is None:
            raise NotFound(f"policy {policy_id} does not exist")
        before = {f: getattr(policy, f) for f in fields}
        for key, value in data.items():
            setattr(policy, key, value)
    try:
        with transaction.atomic():
            policy.save()
    except IntegrityError as exc:
        raise Conflict(f"a policy for {policy.task_name!r} exists already", code="duplicate") from exc
    after = {f: getattr(policy, f) for f in fields}
    audit_record(actor=actor, action="policy.create" if policy_id is None else "policy.update",
                 object_type="reprocess_policy", object_id=policy.pk,
                 diff={f: [before.get(f), after[f]] for f in fields if before.get(f) != after[f]})
    logger.info("reprocess_policy.saved policy_id=%s task=%s actor=%s", policy.pk, policy.task_name, actor,
                extra={"policy_id": policy.pk, "actor": actor})
    return policy


@transaction.atomic
def reprocess_policy_delete(*, actor: str, policy_id: int) -> None:
    from dlq.models import ReprocessPolicy

    policy = ReprocessPolicy.objects.select_for_update().filter(pk=policy_id).first()
    if policy is None:
        raise NotFound(f"policy {policy_id} does not exist")
    policy.delete()
    audit_record(actor=actor, action="policy.delete", object_type="reprocess_policy", object_id=policy_id,
                 diff={"task_name": [policy.task_name, None], "enabled": [policy.enabled, None]})
    logger.info("reprocess_policy.deleted policy_id=%s actor=%s", policy_id, actor, extra={"policy_id": policy_id})


# --- Enqueueing by name (the API, the demo page) ---------------------------------------------

@dataclass(frozen=True)
class Enqueued:
    task_id: str
    written: bool  # False: an earlier request with the same idempotency key wrote it


def task_enqueue(*, actor: str, role: str | None, task_name: Any, args: Any, kwargs: Any, queue: Any = None,
                 countdown: Any = None, idempotency_key: Any = None, idempotency_scope: str = "") -> Enqueued:
    """A person (or a client) enqueues a task by name: the role's task rule
    (``dlq.roles.runnable_task``), arguments that bind and fit, a known queue; then the outbox
    row and its audit record in one transaction. Raises ``QueueFull`` when the queue is full."""
    from tasks.enqueue import enqueue_once
    from tasks.registry import bind_arguments

    task = runnable_task(task_name, role=role)
    bind_arguments(task, args, kwargs)
    if queue is not None:
        validate_queue(queue)
    with transaction.atomic():
        task_id, written = enqueue_once(task, args=args, kwargs=kwargs, queue=queue, countdown=countdown,
                                        idempotency_key=idempotency_key, idempotency_scope=idempotency_scope)
        if written:
            audit_record(actor=actor, action="task.enqueue", object_type="task", object_id=task_id,
                         diff={"task": [None, task.name], "args": [None, args], "kwargs": [None, kwargs],
                               "queue": [None, queue], "countdown": [None, countdown],
                               "idempotency_key": [None, idempotency_key]})
    return Enqueued(task_id=task_id, written=written)
