"""Idempotent side effects for task authors.

A task may run more than once: a worker killed after the effect but before the ack
(late acks redeliver the message), a retry after a partial failure, an operator's requeue.
``idempotent(key)`` commits a unique *effect key* in the same database transaction as the
effect, so the effect happens at most once per key however often the task runs::

    from tasks.idempotency import idempotent

    @shared_task(base=PlatformTask, name="billing.charge")
    def charge(order_id: int, amount_cents: int) -> str:
        with idempotent(f"charge:{order_id}") as first_time:
            if first_time:
                Payment.objects.create(order_id=order_id, amount_cents=amount_cents)
        return "charged"

The effect must be a write to the same Postgres database (it commits or rolls back with the
key). For an effect outside the database (an e-mail, a call to a payment provider), pass the
key to the provider as *its* idempotency key (Stripe, Adyen and most payment APIs accept
one); when the outside system accepts none, the task cannot be made idempotent: give it a
low ``max_retries`` and let it dead-letter early so a person decides.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection, transaction

from tasks.models import EffectKey


@contextmanager
def idempotent(key: str) -> Iterator[bool]:
    """Open a transaction and claim ``key``: yields True the first time (do the effect inside
    the ``with`` block), False when a previous run already committed it (skip it)."""
    if not isinstance(key, str) or not key or len(key) > 255:
        raise ValueError("an effect key is a non-empty string of at most 255 characters")
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {EffectKey._meta.db_table} (key, created_at) VALUES (%s, now()) "
                "ON CONFLICT (key) DO NOTHING RETURNING id",
                [key],
            )
            first_time = cursor.fetchone() is not None
        yield first_time
