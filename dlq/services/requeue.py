"""What a requeue sends, shared by a single requeue (``dead_letters.dead_letter_requeue``) and
the bulk redrive engine (``redrive_engine``): the original message under a new task id, and a
chord member's place in its chord."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django_celery_results.models import ChordCounter  # type: ignore[attr-defined]  # absent from celery-types' stub

from dlq.models import DeadLetter
from tasks.broker.publish import OutgoingTask
from tasks.errors import Conflict
from tasks.failures import DEAD_LETTER_HEADER, INTERNAL_HEADER_PREFIX

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


def requeue_message(source: RequeueSource, task_id: str, queue: str | None) -> OutgoingTask:
    """The message a requeue publishes: the original one (arguments exactly as the message
    carried them, custom headers, priority, own time limits, workflow links, chain, chord,
    group, root and parent ids) under a new task id that links back to the dead letter."""
    args, kwargs = (json.loads(source.raw_arguments) if source.raw_arguments is not None
                    else (source.args, source.kwargs))
    headers = {k: v for k, v in source.headers.items() if not k.startswith(INTERNAL_HEADER_PREFIX)}
    headers[DEAD_LETTER_HEADER] = source.pk
    options = {k: source.options[k] for k in REQUEUE_OPTIONS if source.options.get(k) not in (None, [], {}, "")}
    if source.group_id:
        options["group_id"] = source.group_id
    return OutgoingTask(source.task_name, args or [], kwargs or {}, task_id, queue or None, headers, options=options,
                        root_id=source.root_id or None, parent_id=source.parent_id or None)


def is_chord_member(row: DeadLetter) -> bool:
    return bool(row.group_id and (row.options or {}).get("chord"))


def chord_rejoin(row: DeadLetter, task_id: str) -> None:
    """A chord member goes back into its chord under ``task_id``: django-celery-results'
    ``ChordCounter`` waits for one more member, and ``task_id`` replaces the dead run's id in
    the results the callback will join. Possible only while the chord is still open: once its
    last member returned (this one dead), its callback already failed with a ``ChordError``
    and the counter is gone. Runs in the caller's transaction, under the counter's row lock."""
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


def chord_undo(row: DeadLetter, task_id: str, previous: str) -> None:
    """The publish of ``task_id`` failed: the chord waits for the earlier run again."""
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
