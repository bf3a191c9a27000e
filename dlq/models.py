"""Dead letters and their audit trail."""
from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from django.db.models import Value
from knox.models import AbstractAuthToken

from dlq.masking import search_text
from tasks.failures import DeathReason as DeathReason  # DeadLetter.reason's choices: importable from here too


class DeadLetterStatus(models.TextChoices):
    DEAD = "dead", "Dead"
    REQUEUED = "requeued", "Requeued"
    RESOLVED = "resolved", "Resolved"
    DISCARDED = "discarded", "Discarded"


class DeadLetter(models.Model):
    """A task that was finally given up on. One row per original task id."""

    # Unique by a constraint (below), not unique=True: that also builds a varchar_pattern_ops
    # index for LIKE that nothing queries and every status change writes (issue 8, S4).
    task_id = models.CharField(max_length=255, help_text="Celery id of the task that died.")
    task_name = models.CharField(max_length=255, db_index=False, help_text="Registered name of the task.")
    queue = models.CharField(max_length=255, blank=True, default="", help_text="Queue the message was consumed from.")
    routing_key = models.CharField(max_length=255, blank=True, default="", help_text="Routing key of the delivery.")
    root_id = models.CharField(max_length=255, blank=True, default="", help_text="Workflow: the id of the first task of its tree.")
    parent_id = models.CharField(max_length=255, blank=True, default="", help_text="Workflow: the task that sent this one.")
    group_id = models.CharField(max_length=255, blank=True, default="", help_text="Workflow: its group or chord header.")
    args = models.JSONField(null=True, blank=True, help_text="Positional arguments (null when undecodable).")
    kwargs = models.JSONField(null=True, blank=True, help_text="Keyword arguments (null when undecodable).")
    raw_arguments = models.TextField(
        null=True, blank=True,
        help_text="The exact [args, kwargs] as JSON text, when jsonb cannot hold them (NaN, Infinity, NUL, lone "
                  "surrogates): args/kwargs are then a readable copy, and a requeue sends these.")
    headers = models.JSONField(default=dict, blank=True, help_text="The message's custom headers (sent again on requeue).")
    options = models.JSONField(default=dict, blank=True,
                               help_text="Priority, own time limits, links, errbacks, chain, chord, group index; "
                                         "eta, expires, exchange and origin for the record.")
    raw_body = models.TextField(null=True, blank=True, help_text="Undecodable body (base64 when not text).")
    content_type = models.CharField(max_length=255, blank=True, default="", help_text="Content type of an undecodable message.")
    content_encoding = models.CharField(max_length=64, blank=True, default="", help_text="Content encoding of an undecodable message.")
    exception_type = models.CharField(max_length=255, blank=True, default="", help_text="Qualified exception class name.")
    exception_message = models.TextField(blank=True, default="", help_text="str() of the exception.")
    traceback = models.TextField(blank=True, default="", help_text="Formatted traceback of the final failure.")
    reason = models.CharField(max_length=32, choices=DeathReason.choices, help_text="Why the task was given up on.")
    attempts = models.JSONField(default=list, blank=True, help_text="Attempts: {number, at, exception_type, message, worker}.")
    retries = models.PositiveIntegerField(default=0, help_text="Retries Celery made before giving up.")
    first_failed_at = models.DateTimeField(help_text="When the first attempt failed.")
    last_failed_at = models.DateTimeField(help_text="When the final attempt failed.")
    fingerprint = models.CharField(max_length=64, blank=True, default="", help_text="Groups dead letters with the same cause.")
    status = models.CharField(
        max_length=16, choices=DeadLetterStatus.choices, default=DeadLetterStatus.DEAD, help_text="Triage status."
    )
    requeue_count = models.PositiveIntegerField(default=0, help_text="How many times it was requeued.")
    last_requeued_task_id = models.CharField(
        max_length=255, blank=True, default="", help_text="Task id of the latest requeued run."
    )
    version = models.PositiveIntegerField(default=1, help_text="Optimistic-lock version, bumped on every change.")
    auto_requeue_count = models.PositiveIntegerField(default=0, help_text="Requeues made by a reprocess policy.")
    last_auto_requeued_at = models.DateTimeField(null=True, blank=True, help_text="Last automatic requeue.")
    created_at = models.DateTimeField(auto_now_add=True, help_text="When the dead letter was recorded.")
    updated_at = models.DateTimeField(auto_now=True, help_text="Last change.")
    # Maintained by a trigger (migration 0005), recomputed only when one of its source columns
    # is written: a stored generated column would be recomputed on every status update, which
    # made bulk requeues several times slower.
    search = SearchVectorField(null=True, editable=False,
                               help_text="Full-text vector over task, exception, message, traceback and arguments.")

    class Meta:
        ordering = ("-last_failed_at", "-id")
        indexes = [
            GinIndex(fields=["search"], name="dlq_search_gin"),
            models.Index(fields=["status", "-last_failed_at", "-id"], name="dlq_status_failed_idx"),
            models.Index(fields=["-last_failed_at", "-id"], name="dlq_failed_idx"),
            # "this task's dead letters, newest first": the triage query.
            models.Index(fields=["task_name", "status", "-last_failed_at", "-id"], name="dlq_task_status_failed_idx"),
            models.Index(fields=["fingerprint"], name="dlq_fingerprint_idx"),
            models.Index(fields=["root_id"], name="dlq_root_idx", condition=~models.Q(root_id="")),
            models.Index(fields=["parent_id"], name="dlq_parent_idx", condition=~models.Q(parent_id="")),
            models.Index(fields=["group_id"], name="dlq_group_idx", condition=~models.Q(group_id="")),
        ]
        constraints = [models.UniqueConstraint(fields=["task_id"], name="dlq_deadletter_task_id_key")]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}] {self.status}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self._state.adding and self.search is None:  # rows made outside capture (fixtures, the shell)
            self.search = search_vector(self.task_name, self.exception_type, self.exception_message, self.traceback,
                                        self.args, self.kwargs)
        super().save(*args, **kwargs)

    def arguments(self) -> tuple[Any, Any]:
        """(args, kwargs) exactly as the message carried them (``raw_arguments`` when set)."""
        if self.raw_arguments is not None:
            args, kwargs = json.loads(self.raw_arguments)
            return args, kwargs
        return self.args, self.kwargs


def search_vector(task_name: str, exception_type: str, exception_message: str, traceback: str, args: Any,
                  kwargs: Any) -> SearchVector:
    """The full-text vector, written with the row: built from masked arguments and bounded
    text (``dlq.masking.search_text``), so a search can never confirm a secret."""
    text = search_text(task_name=task_name, exception_type=exception_type, exception_message=exception_message,
                       traceback=traceback, args=args, kwargs=kwargs)
    return SearchVector(Value(text), config="simple")


class DeadLetterEvent(models.Model):
    """Audit trail: one row per transition or edit, written in the same transaction."""

    # No index of its own: dlq_event_dl_idx (dead_letter, -created_at) serves the lookups.
    dead_letter = models.ForeignKey(DeadLetter, on_delete=models.CASCADE, related_name="events", db_index=False,
                                    help_text="The dead letter.")
    actor = models.CharField(max_length=150, help_text="Username, or 'system'.")
    action = models.CharField(max_length=32, help_text="requeue, discard, resolve, edit, failed_again, ...")
    reason = models.TextField(blank=True, default="", help_text="Why the actor did it.")
    diff = models.JSONField(default=dict, blank=True, help_text="{field: [before, after]}.")
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it happened.")

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [
            models.Index(fields=["dead_letter", "-created_at"], name="dlq_event_dl_idx"),
            models.Index(fields=["-created_at", "-id"], name="dlq_event_at_idx"),  # the audit list, newest first
        ]

    def __str__(self) -> str:
        return f"{self.actor} {self.action} #{self.dead_letter_id}"


class RedriveJobStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    FINISHED = "finished", "Finished"
    CANCELLED = "cancelled", "Cancelled"
    FAILED = "failed", "Failed"


#: A job in one of these statuses is over: it never runs again (services, pages, retention).
TERMINAL_JOB_STATUSES = (RedriveJobStatus.FINISHED, RedriveJobStatus.CANCELLED, RedriveJobStatus.FAILED)


class BulkAction(models.TextChoices):
    REQUEUE = "requeue", "Requeue"
    DISCARD = "discard", "Discard"
    RESOLVE = "resolve", "Resolve"


class RedriveJob(models.Model):
    """A bulk action over a selection of dead letters, run in batches by a Celery task.

    The selection is fixed when the job is created (``filters`` + ``ids``, bounded by
    ``max_id``) and walked in id order (``last_id`` is the cursor). A batch's rows change
    state in one transaction with their events; for requeues, the batch's ids are kept in
    ``pending_publish`` until their messages are published, so a runner that crashes in
    between can finish that batch without publishing anything twice.
    """

    action = models.CharField(max_length=16, choices=BulkAction.choices, help_text="requeue, discard or resolve.")
    status = models.CharField(max_length=16, choices=RedriveJobStatus.choices, default=RedriveJobStatus.PENDING,
                              help_text="pending, running, finished, cancelled, failed.")
    actor = models.CharField(max_length=150, help_text="Who started it.")
    reason = models.TextField(blank=True, default="", help_text="Why, copied to every event.")
    filters = models.JSONField(default=dict, blank=True, help_text="The search filters that select the rows.")
    ids = models.JSONField(null=True, blank=True, help_text="Explicit ids, when the job was started with ids.")
    queue = models.CharField(max_length=255, blank=True, default="", help_text="Target queue for requeues (default: original).")
    rate_limit = models.FloatField(null=True, blank=True, help_text="Messages per second, or null for no limit.")
    total = models.PositiveIntegerField(default=0, help_text="Rows selected when the job was created.")
    done = models.PositiveIntegerField(default=0, help_text="Rows processed.")
    failed = models.PositiveIntegerField(default=0, help_text="Rows skipped (no longer eligible) or failed.")
    max_id = models.BigIntegerField(default=0, help_text="Highest dead letter id in the selection.")
    last_id = models.BigIntegerField(default=0, help_text="Cursor: every id up to here is processed.")
    pending_publish = models.JSONField(default=list, blank=True, help_text="[dead_letter_id, task_id] not yet published.")
    runner = models.CharField(max_length=64, blank=True, default="", help_text="Lease holder (one runner at a time).")
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="Last sign of life of the runner.")
    error = models.TextField(blank=True, default="", help_text="Why the job failed.")
    created_at = models.DateTimeField(auto_now_add=True, help_text="Created.")
    started_at = models.DateTimeField(null=True, blank=True, help_text="First batch started.")
    finished_at = models.DateTimeField(null=True, blank=True, help_text="Finished, cancelled or failed.")

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [models.Index(fields=["status", "-created_at"], name="dlq_job_status_idx")]

    def __str__(self) -> str:
        return f"{self.action} job #{self.pk} {self.status} {self.done}/{self.total}"


class ReprocessPolicy(models.Model):
    """Automatic reprocessing of one task's dead letters (applied every minute by beat).

    A dead letter of ``task_name`` whose reason and exception type match is requeued once
    ``cooldown_seconds * backoff_factor ** auto_requeue_count`` have passed since it last
    failed, at most ``max_auto_requeues`` times, and never while the task is still failing
    more than ``circuit_max_failures_per_minute`` times in the last minute (the circuit
    waits for the dependency to come back)."""

    task_name = models.CharField(max_length=255, unique=True, help_text="The task whose dead letters it requeues.")
    reasons = models.JSONField(default=list, blank=True, help_text="Death reasons it covers (empty: all but decode/unregistered).")
    exception_types = models.JSONField(default=list, blank=True, help_text="Exception types it covers (empty: all).")
    cooldown_seconds = models.PositiveIntegerField(default=300, help_text="Wait after the failure before the first requeue.")
    backoff_factor = models.FloatField(default=2.0, help_text="The cool-down grows by this factor per automatic requeue.")
    max_auto_requeues = models.PositiveIntegerField(default=3, help_text="Then it is left for a person.")
    circuit_max_failures_per_minute = models.PositiveIntegerField(
        default=10, help_text="Hold requeues while the task fails more often than this in the last minute.")
    enabled = models.BooleanField(default=True, help_text="Off: the policy does nothing.")
    created_at = models.DateTimeField(auto_now_add=True, help_text="Created.")
    updated_at = models.DateTimeField(auto_now=True, help_text="Last change.")

    class Meta:
        ordering = ("task_name",)
        verbose_name_plural = "reprocess policies"

    def __str__(self) -> str:
        return f"policy {self.task_name} ({'on' if self.enabled else 'off'})"


class AlertKind(models.TextChoices):
    DLQ_SIZE = "dlq_size", "DLQ size over threshold"
    GROWTH_RATE = "growth_rate", "DLQ growth rate over threshold"
    NEW_GROUP = "new_group", "New failure group"
    REDRIVE_JOB_FAILED = "redrive_job_failed", "Redrive job failed"
    OUTBOX_STALLED = "outbox_stalled", "Outbox not draining"
    SPOOL_QUARANTINE = "spool_quarantine", "Spool entries quarantined"


class AlertStatus(models.TextChoices):
    OPEN = "open", "Open"
    RESOLVED = "resolved", "Resolved"


class Alert(models.Model):
    """A condition worth a person's attention. One open alert per ``key`` (a partial unique
    index), so a condition is notified once, not every minute, until it clears."""

    kind = models.CharField(max_length=32, choices=AlertKind.choices, help_text="What kind of condition.")
    key = models.CharField(max_length=255, help_text="Identity of the condition, e.g. 'new_group:<fingerprint>'.")
    status = models.CharField(max_length=16, choices=AlertStatus.choices, default=AlertStatus.OPEN, help_text="open or resolved.")
    message = models.TextField(help_text="What a person reads.")
    details = models.JSONField(default=dict, blank=True, help_text="Numbers behind the message.")
    opened_at = models.DateTimeField(auto_now_add=True, help_text="When the condition was first seen.")
    last_seen_at = models.DateTimeField(auto_now=True, help_text="Last time the condition was still true.")
    resolved_at = models.DateTimeField(null=True, blank=True, help_text="When the condition cleared.")
    notified_at = models.DateTimeField(null=True, blank=True, help_text="When the notification was delivered.")
    notify_attempts = models.PositiveIntegerField(default=0, help_text="Delivery attempts so far.")
    notify_error = models.TextField(blank=True, default="", help_text="Last delivery error.")

    class Meta:
        ordering = ("-opened_at", "-id")
        constraints = [
            models.UniqueConstraint(fields=["key"], condition=models.Q(status="open"), name="dlq_alert_one_open_per_key"),
        ]
        indexes = [models.Index(fields=["status", "-opened_at"], name="dlq_alert_status_idx")]

    def __str__(self) -> str:
        return f"{self.kind} {self.status}: {self.message[:60]}"


class QuarantinedEntry(models.Model):
    """A spooled operation Postgres refused for its content (not because it was down): kept
    here as text, out of the spool's way, so the spool drains on and an operator can look,
    retry it after a fix (``dlq.spool.quarantine_retry``) or delete it."""

    kind = models.CharField(max_length=32, help_text="capture or resolve.")
    task_id = models.CharField(max_length=255, blank=True, default="", help_text="The task it was about, if known.")
    entry = models.TextField(help_text="The spool entry as JSON text (NUL and lone surrogates escaped).")
    error = models.TextField(help_text="What Postgres said.")
    attempts = models.PositiveIntegerField(default=1, help_text="Writes tried.")
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was quarantined.")

    class Meta:
        ordering = ("-created_at", "-id")
        verbose_name_plural = "quarantined spool entries"

    def __str__(self) -> str:
        return f"{self.kind} {self.task_id}: {self.error[:60]}"


class AuditEvent(models.Model):
    """Every operator change that is not a dead letter's own (those are ``DeadLetterEvent``):
    reprocess policies, schedules, redrive jobs, exports, API enqueues, tokens. Written in the
    same transaction as the change; ``GET /api/v1/audit-events/`` serves both tables."""

    at = models.DateTimeField(auto_now_add=True, help_text="When it happened.")
    actor = models.CharField(max_length=150, help_text="Username, or 'system'.")
    action = models.CharField(max_length=64, help_text="e.g. policy.create, schedule.disable, job.start, export.")
    object_type = models.CharField(max_length=64, help_text="reprocess_policy, schedule, redrive_job, task, token, ...")
    object_id = models.CharField(max_length=255, blank=True, default="", help_text="The object's id or name.")
    reason = models.TextField(blank=True, default="", help_text="Why, when the actor said.")
    diff = models.JSONField(default=dict, blank=True, help_text="{field: [before, after]} or the action's parameters.")

    class Meta:
        ordering = ("-at", "-id")
        indexes = [
            models.Index(fields=["-at", "-id"], name="dlq_audit_at_idx"),
            models.Index(fields=["object_type", "object_id"], name="dlq_audit_object_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.actor} {self.action} {self.object_type}:{self.object_id}"


class ApiToken(AbstractAuthToken):  # type: ignore[misc]  # django-rest-knox has no type hints
    """An API token (django-rest-knox): only its SHA-512 digest is stored, it expires
    (``API_TOKEN_TTL_DAYS`` unless issued with another expiry), and it can be revoked
    (deleted). ``last_used_at`` is written at most once a minute."""

    name = models.CharField(max_length=100, blank=True, default="", help_text="What the token is for.")
    last_used_at = models.DateTimeField(null=True, blank=True, help_text="Last request made with it (to the minute).")

    class Meta:
        ordering = ("-created",)
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.token_key}… of {self.user_id}"


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    OPERATOR = "operator", "Operator"
    ADMIN = "admin", "Admin"


def user_role(user: User | AnonymousUser) -> Role | None:
    """The strongest role a user has (superusers are admins)."""
    if not getattr(user, "is_authenticated", False):
        return None
    if user.is_superuser:
        return Role.ADMIN
    names = {g.name for g in user.groups.all()}
    for role in (Role.ADMIN, Role.OPERATOR, Role.VIEWER):
        if role in names:
            return role
    return None
