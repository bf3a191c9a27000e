"""The outbox relay: publishes what ``enqueue()`` committed to the outbox table, then deletes it.

``enqueue()`` writes each message as a row of ``tasks.OutboxMessage`` in the caller's
transaction; a statement trigger sends ``NOTIFY taskplatform_outbox`` in that transaction,
so the notification arrives when (and only when) the rows are committed. A relay process
(``manage.py outbox_relay``) listens on that channel and, woken by a notification or by its
poll interval (the fallback when a notification is missed), runs batches:

1. ``DELETE ... WHERE id IN (SELECT id ... ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED)
   RETURNING ...`` in one transaction: the rows of the batch are locked and, for every other
   relay, already gone (``SKIP LOCKED``), so several relays on several hosts share the work and
   never take the same row in the normal path;
2. the messages are published (``tasks.broker.publish``: pipelined ``LPUSH`` batches on Redis, exactly
   the messages ``apply_async`` builds; ``send_task`` one by one elsewhere, with publisher
   confirms on RabbitMQ, see the settings);
3. the transaction commits: the delete becomes final only after the broker took the batch.

A relay killed between 2 and 3 leaves the rows in place (the delete rolls back), so the next
batch publishes them again under the same task ids: delivery is *at least once*, and a task
whose effect must happen once uses ``tasks.idempotency.idempotent`` (the chaos run F17 counts
such duplicates). A broker that refuses the batch rolls it back too; the relay then waits
(0.5 s doubling to ``OUTBOX_RELAY_BACKOFF_MAX``) and the rows wait with it. A row that fails
on its own (it cannot be published, whatever the broker's state) is set aside with a growing
``available_at`` and its error, never dropped; the outbox age alert tells an operator.
"""
from __future__ import annotations

import json
import logging
import os
import select
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from django.conf import settings
from django.db import DatabaseError, InterfaceError, connection, transaction
from kombu.utils.json import loads as kombu_loads

from tasks.base import BROKER_UNREACHABLE
from tasks.broker.message import OutgoingTask
from tasks.broker.publish import Publisher, publish_context
from tasks.counters import incr
from tasks.models import OutboxMessage

logger = logging.getLogger("tasks.relay")

CHANNEL = "taskplatform_outbox"
IDLE_IN_BATCH_TIMEOUT_MS = 60_000
DB_ERRORS = (DatabaseError, InterfaceError)
_COLUMNS = "o.id, o.task_id, o.task_name, o.queue, o.payload, o.headers, o.options, o.attempts"


def _claim_sql(table: str, where: str = "") -> str:
    return (f"DELETE FROM {table} AS o USING (SELECT id FROM {table} WHERE available_at <= now(){where} "
            f"ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) AS b WHERE o.id = b.id RETURNING {_COLUMNS}")


def outgoing(row: Sequence[Any]) -> OutgoingTask:
    """The ``OutgoingTask`` of one claimed row (what ``apply_async`` would have sent)."""
    _pk, task_id, task_name, queue, payload, headers, options, _attempts = row
    # kombu's decoder only for payloads holding its tagged types (dates, UUIDs, decimals);
    # plain JSON decodes the same, several times faster.
    args, kwargs = kombu_loads(payload) if '"__type__"' in payload else json.loads(payload)
    options = _json_object(options)
    headers = _json_object(headers)
    root_id, parent_id = options.pop("root_id", None), options.pop("parent_id", None)
    if "eta" in options:
        options["eta"] = datetime.fromisoformat(options["eta"])
    return OutgoingTask(task_name, args, kwargs, task_id, queue or None, headers, options=options,
                        root_id=root_id, parent_id=parent_id)


def _json_object(value: Any) -> dict[str, Any]:
    if not value or value == "{}":
        return {}
    return dict(json.loads(value) if isinstance(value, str) else value)


class Relay:
    """One relay loop. ``run()`` until ``stop`` is set; ``relay_batch()`` is one batch."""

    def __init__(self, *, batch_size: int | None = None, poll_interval: float | None = None,
                 backoff_max: float | None = None, heartbeat_path: str | Path | None = None) -> None:
        self.batch_size = batch_size or settings.OUTBOX_RELAY_BATCH_SIZE
        self.poll_interval = poll_interval if poll_interval is not None else settings.OUTBOX_RELAY_POLL_SECONDS
        self.backoff_max = backoff_max if backoff_max is not None else settings.OUTBOX_RELAY_BACKOFF_MAX
        self.heartbeat_path = Path(heartbeat_path or settings.OUTBOX_RELAY_HEARTBEAT_FILE)
        self.table = OutboxMessage._meta.db_table
        self.published = 0
        self._listener: psycopg.Connection[Any] | None = None
        self._publisher: Publisher | None = None
        self._publisher_cm: AbstractContextManager[Publisher] | None = None
        self._last_beat = 0.0
        self._failing_since: float | None = None

    # --- one batch -------------------------------------------------------------------------
    def relay_batch(self) -> int:
        """Claim, publish and delete one batch; returns how many messages it published.
        Raises what the broker or the database raised (the batch is then rolled back)."""
        with transaction.atomic():
            with connection.cursor() as cursor:
                # Losing this commit in a Postgres crash only brings the rows back, to be
                # published again (at least once either way): no need to wait for the WAL flush.
                # A publish stuck on a frozen broker must not hold the rows locked for good:
                # Postgres ends the transaction after a minute and the rows are free again.
                cursor.execute("SELECT set_config('synchronous_commit', 'off', true), "
                               "set_config('idle_in_transaction_session_timeout', %s, true)",
                               [str(IDLE_IN_BATCH_TIMEOUT_MS)])
                cursor.execute(_claim_sql(self.table), [self.batch_size])
                rows = sorted(cursor.fetchall())
            if not rows:
                return 0
            try:
                items = [outgoing(row) for row in rows]
                self.publisher().publish(items)
            except BROKER_UNREACHABLE:
                self.close_publisher()
                raise
            except Exception as exc:
                # Not the broker: one of the rows cannot be published. Undo the batch and
                # publish its rows one at a time, so the others go and that one waits.
                raise _RowError(exc, [row[0] for row in rows]) from exc
        self.published += len(rows)
        self._count(len(rows))
        return len(rows)

    def _one_by_one(self, ids: list[int], error: BaseException) -> int:
        """After a batch failed for a reason of its own: each row in its own transaction; a
        row that fails again waits (``attempts`` + 1, ``available_at`` later, its error)."""
        logger.warning("outbox_relay.batch_failed rows=%s error=%r; publishing them one by one", len(ids), error)
        done = 0
        for pk in ids:
            try:
                with transaction.atomic():
                    with connection.cursor() as cursor:
                        cursor.execute(_claim_sql(self.table, " AND id = %s"), [pk, 1])
                        row = cursor.fetchone()
                    if row is None:
                        continue  # another relay has it
                    self.publisher().publish([outgoing(row)])
                done += 1
            except BROKER_UNREACHABLE:
                self.close_publisher()
                raise
            except Exception as exc:
                attempts = self._set_aside(pk, exc)
                logger.error("outbox_relay.row_failed outbox_id=%s attempts=%s error=%r", pk, attempts, exc,
                             extra={"outbox_id": pk})
        self.published += done
        self._count(done)
        return done

    def publisher(self) -> Publisher:
        """One producer (and on Redis one client, and the message templates) for every batch;
        replaced after a broker error."""
        if self._publisher is None:
            self._publisher_cm = publish_context()
            self._publisher = self._publisher_cm.__enter__()
        return self._publisher

    def close_publisher(self) -> None:
        cm, self._publisher, self._publisher_cm = self._publisher_cm, None, None
        if cm is not None:
            try:
                cm.__exit__(None, None, None)
            except Exception:
                logger.debug("outbox_relay.publisher_close_failed", exc_info=True)

    def _set_aside(self, pk: int, exc: BaseException) -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {self.table} SET attempts = attempts + 1, last_error = %s, "
                "available_at = now() + least(%s, power(2, attempts)) * interval '1 second' "
                "WHERE id = %s RETURNING attempts",
                [repr(exc)[:2000], self.backoff_max, pk])
            row = cursor.fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _count(n: int) -> None:
        if n:
            incr("outbox", "published", amount=n)

    def drain(self) -> int:
        """Publish everything that is due now; returns how many messages."""
        total = 0
        while True:
            try:
                n = self.relay_batch()
            except _RowError as failed:
                n = self._one_by_one(failed.ids, failed.error)
                total += n
                continue
            total += n
            if n < self.batch_size:
                return total

    # --- the loop --------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        logger.info("outbox_relay.started batch_size=%s poll_interval=%s pid=%s", self.batch_size,
                    self.poll_interval, os.getpid())
        try:
            self.publisher()  # opened now, not on the first message (its first batch would wait for it)
        except Exception as exc:  # the broker is down: the first batch opens it again
            self.close_publisher()
            logger.warning("outbox_relay.publisher_not_opened error=%r", exc)
        backoff = 0.0
        while not stop.is_set():
            self.heartbeat()
            try:
                self.drain()
            except BROKER_UNREACHABLE as exc:
                backoff = self._failed("broker", exc, backoff)
                stop.wait(backoff)
                continue
            except DB_ERRORS as exc:
                connection.close()
                self._close_listener()
                backoff = self._failed("database", exc, backoff)
                stop.wait(backoff)
                continue
            if self._failing_since is not None:
                logger.warning("outbox_relay.recovered after=%.1fs", time.monotonic() - self._failing_since)
                self._failing_since = None
            backoff = 0.0
            self.wait(stop)
        self.close()
        logger.info("outbox_relay.stopped published=%s", self.published)

    def close(self) -> None:
        self._close_listener()
        self.close_publisher()

    def _failed(self, what: str, exc: BaseException, backoff: float) -> float:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            logger.error("outbox_relay.%s_unreachable error=%r; the messages wait in the outbox", what, exc)
        else:
            logger.debug("outbox_relay.%s_still_unreachable error=%r", what, exc)
        return min(self.backoff_max, max(0.5, backoff * 2))

    def wait(self, stop: threading.Event) -> None:
        """Until a notification arrives, the poll interval passes, or ``stop`` is set."""
        deadline = time.monotonic() + self.poll_interval
        listener = self._listen()
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if listener is None:
                stop.wait(min(left, 0.2))
                continue
            try:
                ready, _, _ = select.select([listener.fileno()], [], [], min(left, 0.2))
                if not ready:
                    continue
                got = False
                for _ in listener.notifies(timeout=0):
                    got = True
                if got:
                    return
            except Exception as exc:  # the listening connection broke: poll until it is back
                logger.warning("outbox_relay.listen_failed error=%r", exc)
                self._close_listener()
                listener = None

    def _listen(self) -> psycopg.Connection[Any] | None:
        if self._listener is not None:
            return self._listener
        params = connection.get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        params.pop("server_side_binding", None)
        params.pop("prepare_threshold", None)
        try:
            listener = psycopg.connect(**params, autocommit=True)
            listener.execute(f"LISTEN {CHANNEL}")
        except Exception as exc:
            logger.warning("outbox_relay.listen_unavailable error=%r; polling every %ss", exc, self.poll_interval)
            return None
        self._listener = listener
        return listener

    def _close_listener(self) -> None:
        if self._listener is not None:
            try:
                self._listener.close()
            except Exception:
                pass
            self._listener = None

    def heartbeat(self) -> None:
        """Touch the heartbeat file (at most once a second): ``outbox_relay --check`` reads it."""
        now = time.monotonic()
        if now - self._last_beat < 1.0:
            return
        self._last_beat = now
        try:
            self.heartbeat_path.parent.mkdir(parents=True, exist_ok=True)
            self.heartbeat_path.write_text(str(time.time()))
        except OSError:
            logger.debug("outbox_relay.heartbeat_failed path=%s", self.heartbeat_path, exc_info=True)


class _RowError(Exception):
    def __init__(self, error: BaseException, ids: list[int]) -> None:
        super().__init__(str(error))
        self.error, self.ids = error, ids


def heartbeat_age(path: str | Path | None = None) -> float | None:
    """Seconds since the relay's last heartbeat, or None when it never beat."""
    try:
        return max(0.0, time.time() - float(Path(path or settings.OUTBOX_RELAY_HEARTBEAT_FILE).read_text()))
    except (OSError, ValueError):
        return None
