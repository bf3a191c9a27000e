"""Automatic reprocessing (``ReprocessPolicy``): the rules a policy must satisfy (one home,
called by the API, the pages and the admin alike), its changes (each audited), and the
minutely pass that requeues what the enabled policies cover (actor ``system``)."""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from dlq.models import DeadLetter, DeadLetterStatus, ReprocessPolicy
from dlq.services.audit import SYSTEM, audit_record
from dlq.services.dead_letters import dead_letter_event, dead_letter_requeue
from tasks.errors import Conflict, Forbidden, NotFound, ValidationFailed
from tasks.failures import DeathReason
from tasks.registry import get_task

logger = logging.getLogger("dlq")

#: Never requeued automatically: nothing can run them until a person edits them.
NEVER_AUTO = (DeathReason.DECODE_ERROR, DeathReason.UNREGISTERED_TASK)
#: The limits of a policy's numbers: ``(lowest, highest)``; all whole but ``FRACTIONAL``.
POLICY_LIMITS: dict[str, tuple[float, float]] = {
    "cooldown_seconds": (0, 30 * 86400),
    "backoff_factor": (1.0, 100.0),
    "max_auto_requeues": (0, 1000),
    "circuit_max_failures_per_minute": (0, 1_000_000),
}
FRACTIONAL = ("backoff_factor",)
MAX_REASONS, MAX_EXCEPTION_TYPES, NAME_LIMIT = 20, 50, 255
#: What a policy's data may hold (the rest of the model is its id and timestamps).
POLICY_FIELDS = ("task_name", "reasons", "exception_types", "cooldown_seconds", "backoff_factor",
                 "max_auto_requeues", "circuit_max_failures_per_minute", "enabled")


def reprocess_policy_validate(*, data: dict[str, Any], policy_id: int | None = None) -> dict[str, Any]:
    """The rules of a reprocess policy, for a new one (``policy_id`` None: ``task_name``
    required) or a change to one (only the fields given). Returns the cleaned data; raises
    ``ValidationFailed`` (400) with every field's errors. Values arrive typed (the API's
    serializer and the admin's form parse text): an int where an int belongs, a list of
    strings for ``reasons`` and ``exception_types``."""
    errors: dict[str, list[str]] = {}
    clean: dict[str, Any] = {}
    for key in data:
        if key not in POLICY_FIELDS:
            errors[key] = ["unknown field"]
    if policy_id is None and "task_name" not in data:
        errors["task_name"] = ["This field is required."]
    checks: dict[str, Callable[[object], object]] = {
        "task_name": lambda value: _task_name(value, policy_id),
        "reasons": _reasons,
        "exception_types": _exception_types,
        "enabled": _boolean,
        **{name: _number_check(name) for name in POLICY_LIMITS},
    }
    for key, check in checks.items():
        if key not in data:
            continue
        try:
            clean[key] = check(data[key])
        except ValueError as exc:
            errors[key] = [str(exc)]
    if errors:
        shown = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in errors.items())
        raise ValidationFailed(f"invalid policy: {shown}", fields=errors)
    return clean


def _task_name(value: object, policy_id: int | None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("This field may not be blank.")
    name = value.strip()
    if len(name) > NAME_LIMIT:
        raise ValueError(f"Ensure this field has no more than {NAME_LIMIT} characters.")
    try:
        get_task(name)
    except NotFound:
        raise ValueError("not a registered task") from None
    others = ReprocessPolicy.objects.filter(task_name=name)
    if (others.exclude(pk=policy_id) if policy_id is not None else others).exists():
        raise ValueError("reprocess policy with this task name already exists.")
    return name


def _string_list(value: object, limit: int) -> list[str]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f'Expected a list of items but got type "{type(value).__name__}".')
    if len(value) > limit:
        raise ValueError(f"Ensure this field has no more than {limit} elements.")
    if not all(isinstance(item, str) for item in value):
        raise ValueError("Not a valid string.")
    return list(value)


def _reasons(value: object) -> list[str]:
    reasons = _string_list(value, MAX_REASONS)
    unknown = [reason for reason in reasons if reason not in DeathReason.values]
    if unknown:
        raise ValueError(f'"{unknown[0]}" is not a valid choice.')
    return reasons


def _exception_types(value: object) -> list[str]:
    types = [item.strip() for item in _string_list(value, MAX_EXCEPTION_TYPES)]
    if not all(types):
        raise ValueError("This field may not be blank.")
    if any(len(item) > NAME_LIMIT for item in types):
        raise ValueError(f"Ensure this field has no more than {NAME_LIMIT} characters.")
    return types


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("Must be a valid boolean.")
    return value


def _number_check(name: str) -> Callable[[object], float]:
    lowest, highest = POLICY_LIMITS[name]
    whole = name not in FRACTIONAL

    def check(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not isinstance(value, int)):
            raise ValueError("A valid integer is required." if whole else "A valid number is required.")
        if not value >= lowest:  # (NaN compares false: refused)
            raise ValueError(f"Ensure this value is greater than or equal to {lowest}.")
        if not value <= highest:
            raise ValueError(f"Ensure this value is less than or equal to {highest}.")
        return value if whole else float(value)

    return check


@transaction.atomic
def reprocess_policy_save(*, actor: str, data: dict[str, Any], policy_id: int | None = None) -> ReprocessPolicy:
    """Create or change a reprocess policy (one per task name), after
    ``reprocess_policy_validate``."""
    data = reprocess_policy_validate(data=data, policy_id=policy_id)
    fields = [f.name for f in ReprocessPolicy._meta.concrete_fields if f.name not in ("id", "created_at", "updated_at")]
    before: dict[str, Any] = {}
    if policy_id is None:
        policy = ReprocessPolicy(**data)
    else:
        found = ReprocessPolicy.objects.select_for_update().filter(pk=policy_id).first()
        if found is None:
            raise NotFound(f"policy {policy_id} does not exist")
        policy = found
        before = {f: getattr(policy, f) for f in fields}
        for key, value in data.items():
            setattr(policy, key, value)
    try:
        with transaction.atomic():
            policy.save()
    except IntegrityError as exc:  # the same task's policy created at the same moment
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
    policy = ReprocessPolicy.objects.select_for_update().filter(pk=policy_id).first()
    if policy is None:
        raise NotFound(f"policy {policy_id} does not exist")
    policy.delete()
    audit_record(actor=actor, action="policy.delete", object_type="reprocess_policy", object_id=policy_id,
                 diff={"task_name": [policy.task_name, None], "enabled": [policy.enabled, None]})
    logger.info("reprocess_policy.deleted policy_id=%s actor=%s", policy_id, actor, extra={"policy_id": policy_id})


def reprocess_policies_apply(*, now: datetime | None = None, limit_per_policy: int = 500) -> dict[str, int]:
    """Requeue the dead letters that the enabled policies cover and whose cool-down has
    passed, through ``dead_letter_requeue`` (actor ``system``). Holds a task's requeues while
    it still fails more often than its circuit allows; leaves a note once a dead letter has
    used up its automatic requeues."""
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
                          .order_by("last_failed_at").values_list("pk", "auto_requeue_count", "last_failed_at")
                          [:limit_per_policy])
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


def _note_exhausted(policy: ReprocessPolicy, exhausted: QuerySet[DeadLetter], totals: dict[str, int]) -> None:
    """Once per dead letter: say that automatic reprocessing stopped and a person is needed."""
    for row in exhausted.exclude(events__action="auto_requeue_exhausted")[:500]:
        with transaction.atomic():
            dead_letter_event(row, actor=SYSTEM, action="auto_requeue_exhausted", diff={},
                              reason=f"reprocess policy #{policy.pk} stopped after {row.auto_requeue_count} automatic "
                                     "requeues; it still fails: needs a person")
        totals["exhausted"] += 1
