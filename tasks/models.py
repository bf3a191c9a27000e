"""The task runtime's tables: the outbox of enqueue() and its idempotency keys, and the effect
keys of ``tasks.idempotency``."""
from django.db import models
from django.db.models.functions import Now


class OutboxMessage(models.Model):
    """A message ``enqueue()`` wrote in its caller's transaction, waiting for the relay
    (``tasks.relay``) to publish it; the relay deletes the row once the broker has it.

    ``payload`` is ``[args, kwargs]`` as JSON text written with kombu's encoder, the same
    encoding the broker message carries (so NaN, NUL and kombu's tagged dates survive, which
    jsonb would refuse). A statement trigger (migration 0002) sends ``NOTIFY
    taskplatform_outbox`` in the inserting transaction: the relay wakes when it commits.
    """

    task_id = models.CharField(max_length=255, help_text="Celery id of the task (returned by enqueue()).")
    task_name = models.CharField(max_length=255, help_text="Registered name of the task.")
    queue = models.CharField(max_length=255, blank=True, default="", help_text="Target queue.")
    payload = models.TextField(help_text="[args, kwargs] as JSON (kombu's encoder).")
    headers = models.JSONField(default=dict, blank=True, help_text="Custom message headers.")
    options = models.JSONField(default=dict, blank=True, help_text="eta (ISO 8601), root_id, parent_id.")
    idempotency_key = models.CharField(max_length=255, blank=True, default="", help_text="The producer's key, if any.")
    created_at = models.DateTimeField(db_default=Now(), help_text="When enqueue() wrote it (transaction start).")
    available_at = models.DateTimeField(db_default=Now(), help_text="The relay takes it from then on.")
    attempts = models.PositiveIntegerField(db_default=0, help_text="Failed publish attempts of this row alone.")
    last_error = models.TextField(blank=True, db_default="", help_text="Why the last publish of this row failed.")

    class Meta:
        ordering = ("id",)
        verbose_name = "outbox message"

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}] waiting since {self.created_at}"


class IdempotencyKey(models.Model):
    """``enqueue(..., idempotency_key=K)``: the first task id written for ``K``, in the caller's
    transaction (a rolled-back request leaves no key behind). A key belongs to its ``scope``
    (the API user who sent it; empty for application code) and to one request: the same key
    with another task, other arguments or another queue is a conflict, never a silent reuse."""

    scope = models.CharField(max_length=150, blank=True, default="", help_text="user:<id> for API calls, '' for code.")
    key = models.CharField(max_length=255, help_text="The producer's idempotency key.")
    request_hash = models.CharField(max_length=64, blank=True, default="",
                                    help_text="SHA-256 of the task name, arguments and queue it was used for.")
    task_id = models.CharField(max_length=255, help_text="The task id published for it.")
    task_name = models.CharField(max_length=255, help_text="The task it was for.")
    created_at = models.DateTimeField(help_text="When the key was first used.")
    expires_at = models.DateTimeField(help_text="After this the key may be used again.")

    class Meta:
        db_table = "dlq_idempotencykey"  # made by the dlq app, before the runtime had its own models
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["expires_at"], name="dlq_idem_expires_idx")]
        constraints = [models.UniqueConstraint(fields=["scope", "key"], name="dlq_idem_scope_key_uniq")]

    def __str__(self) -> str:
        return f"{self.scope}/{self.key} -> {self.task_id}"


class EffectKey(models.Model):
    """The ``tasks.idempotency.idempotent`` helper: a side effect done under this key."""

    key = models.CharField(max_length=255, unique=True, help_text="Unique key of a task's side effect.")
    created_at = models.DateTimeField(auto_now_add=True, help_text="When the effect was committed.")

    class Meta:
        db_table = "dlq_effectkey"  # made by the dlq app, before the runtime had its own models
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["created_at"], name="dlq_effect_created_idx")]

    def __str__(self) -> str:
        return self.key
