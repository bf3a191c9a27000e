"""Capture: a task given up on becomes a dead letter (the failure hook's service).

A first failure is one ``INSERT ... ON CONFLICT (task_id) DO NOTHING`` (idempotent by task id,
never check-then-create); a requeued run that fails again returns its *same* row to ``dead``
with its attempts appended (``failed_again``)."""
from __future__ import annotations

import logging
from datetime import datetime
from functools import cache
from typing import Any

from django.db import transaction
from django.db.models import F, Field
from django.db.models.constants import OnConflict
from django.utils import timezone

from dlq.jsonsafe import jsonb_exact, jsonb_safe, raw_text
from dlq.masking import scrub, secret_values
from dlq.models import DeadLetter, DeadLetterEvent, DeadLetterStatus, search_vector
from dlq.services.audit import SYSTEM
from tasks.counters import incr
from tasks.failures import FIELD_LIMIT, CapturedFailure, clean_attempts, clean_text, fingerprint, parse_time

logger = logging.getLogger("dlq")

#: Longest exception message and traceback stored (a task can raise with megabytes of text).
EXCEPTION_MESSAGE_LIMIT = 65_536
TRACEBACK_LIMIT = 262_144
#: ``retries`` is an ``integer`` column: a foreign producer's header may say anything.
MAX_RETRIES_STORED = 2**31 - 1


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


def dead_letter_capture(*, failure: CapturedFailure) -> None:
    """Record a task that was given up on. Idempotent by task id: an upsert, never
    check-then-create. A requeued run (``dead_letter_id`` set) returns its row to ``dead``.
    """
    if failure.dead_letter_id is not None:
        _dead_letter_failed_again(failure, dead_letter_id=failure.dead_letter_id)
        return
    row = _new_row(failure)
    # One INSERT ... ON CONFLICT (task_id) DO NOTHING: a second capture of the same task
    # (hook and signal, redelivery, reconciler) changes nothing. Sent as a single statement
    # (bulk_create would wrap it in BEGIN/COMMIT: three round trips instead of one).
    # ``_insert`` is Django's internal single-statement insert, absent from django-stubs.
    DeadLetter.objects._insert(  # type: ignore[attr-defined]
        [row], fields=_capture_fields(), on_conflict=OnConflict.IGNORE)
    incr("captured", failure.task_name, failure.reason)
    logger.info(
        "dead_letter.captured task_id=%s task_name=%s reason=%s",
        failure.task_id, failure.task_name, failure.reason,
        extra={"task_id": failure.task_id, "task_name": failure.task_name, "reason": failure.reason},
    )


def _bounded_text(text: object, limit: int) -> str:
    """Long text kept as its head and tail (a traceback's end is where the error is)."""
    text = clean_text(text)
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n... [{len(text) - limit} characters cut] ...\n{text[-half:]}"


def _first_failed_at(attempts: list[dict[str, Any]], default: datetime) -> datetime:
    return (parse_time(attempts[0]["at"]) if attempts else None) or default


def _retries(value: int) -> int:
    return max(0, min(int(value or 0), MAX_RETRIES_STORED))


@cache
def _capture_fields() -> list[Field[Any, Any]]:
    """The columns a capture writes (``search`` included: an expression over masked text)."""
    return [f for f in DeadLetter._meta.concrete_fields if not f.primary_key]


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
        retries=_retries(failure.retries),
        first_failed_at=_first_failed_at(attempts, at),
        last_failed_at=at,
        fingerprint=fingerprint(failure.task_name, exception_type, exception_message),
        search=search_vector(task_name, exception_type, exception_message, traceback, args, kwargs),
    )


def _scrubbed_attempts(attempts: list[dict[str, Any]], secrets: list[str]) -> list[dict[str, Any]]:
    return [{**a, "message": scrub(a["message"], secrets)} for a in attempts]


@transaction.atomic
def _dead_letter_failed_again(failure: CapturedFailure, *, dead_letter_id: int) -> DeadLetter | None:
    row = DeadLetter.objects.select_for_update(of=("self",)).filter(pk=dead_letter_id).first()
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
    row.retries = _retries(failure.retries)
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
