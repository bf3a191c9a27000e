"""The task layer's tables: the outbox of enqueue(), and the example tasks' application data."""
from django.db import models
from django.db.models.functions import Now


class LedgerEntry(models.Model):
    """A side effect that must happen once: written by ``tasks.examples.charge_order``."""

    order_id = models.CharField(max_length=64, help_text="The order charged.")
    amount_cents = models.PositiveIntegerField(help_text="Amount charged.")
    created_at = models.DateTimeField(auto_now_add=True, help_text="When.")

    class Meta:
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["order_id"], name="tasks_ledger_order_idx")]

    def __str__(self) -> str:
        return f"{self.order_id}: {self.amount_cents}"


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
