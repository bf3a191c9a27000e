"""The example tasks' application data."""
from __future__ import annotations

from django.db import models


class LedgerEntry(models.Model):
    """A side effect that must happen once: written by ``tasks.examples.charge_order``."""

    order_id = models.CharField(max_length=64, help_text="The order charged.")
    amount_cents = models.PositiveIntegerField(help_text="Amount charged.")
    created_at = models.DateTimeField(auto_now_add=True, help_text="When.")

    class Meta:
        db_table = "tasks_ledgerentry"  # created when this model lived in the tasks app
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["order_id"], name="tasks_ledger_order_idx")]

    def __str__(self) -> str:
        return f"{self.order_id}: {self.amount_cents}"
