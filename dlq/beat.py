"""``LeaderDatabaseScheduler``: django-celery-beat's ``DatabaseScheduler`` that runs in only
one beat process at a time.

- **Leader lock**: a Redis key with a TTL (``DLQ_BEAT_LOCK_TTL`` seconds) holds the leader's
  token; the leader renews it on every tick, a follower ticks without sending anything and
  takes over once the key expires (the leader died or froze). The new leader re-reads the
  schedule (``last_run_at``) from the database, which the leader syncs after every send
  (``beat_sync_every = 1``), and sends each overdue entry once.
- **Scheduled time**: every message carries ``dlq_schedule`` (the entry name) and
  ``dlq_scheduled_at`` (the slot, named by the persisted ``last_run_at``). A takeover
  racing a frozen leader that wakes up can still send one tick twice; the two messages
  carry the same scheduled time, and ``PlatformTask.before_start`` runs only the first
  (a Redis ``SET NX`` on schedule + scheduled time).
"""
from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import datetime, timedelta
from typing import Any

from celery.beat import (  # type: ignore[attr-defined]  # _evaluate_entry_*: private, not in celery-types
    SchedulingError,
    _evaluate_entry_args,
    _evaluate_entry_kwargs,
)
from django.conf import settings
from django_celery_beat.schedulers import SCHEDULE_SYNC_MAX_INTERVAL, DatabaseScheduler, ModelEntry
from kombu import Producer

from tasks.redis import redis_client

logger = logging.getLogger("dlq.beat")

LOCK_KEY = "beat:leader"
SCHEDULE_HEADER = "dlq_schedule"
SCHEDULED_AT_HEADER = "dlq_scheduled_at"
# Renew only our own lock; take it when free.
_ACQUIRE_OR_RENEW = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


def scheduled_time(entry: ModelEntry) -> int:
    """The slot ``entry`` is sent for, named by its persisted ``last_run_at`` (the run
    before this one; 0 before the first run). Two beats that read the same row name the
    same slot; the leader advances ``last_run_at`` and syncs it after every send."""
    last = entry.last_run_at
    return int(last.timestamp()) if last is not None else 0


class LeaderDatabaseScheduler(DatabaseScheduler):  # type: ignore[misc]  # django-celery-beat has no type hints
    # DatabaseScheduler's state used here (set by its __init__, which reads the schedule).
    _last_full_sync: datetime
    _schedule: dict[str, ModelEntry] | None
    max_interval: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lock_ttl = float(settings.DLQ_BEAT_LOCK_TTL)
        self.is_leader = False
        super().__init__(*args, **kwargs)

    def _hold_lock(self) -> bool:
        try:
            held = bool(redis_client().eval(_ACQUIRE_OR_RENEW, 1, LOCK_KEY, self.token, int(self.lock_ttl * 1000)))
        except Exception:
            logger.exception("beat.lock_error: acting as follower")
            held = False
        if held and not self.is_leader:
            logger.info("beat.leader token=%s", self.token, extra={"token": self.token})
            # Re-read every entry's last_run_at: the previous leader ran them.
            self._last_full_sync = self._last_full_sync - timedelta(seconds=SCHEDULE_SYNC_MAX_INTERVAL + 1)
        elif not held and self.is_leader:
            logger.warning("beat.lost_leadership token=%s", self.token, extra={"token": self.token})
        self.is_leader = held
        return held

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self._hold_lock():
            return min(self.lock_ttl / 3, self.max_interval)
        interval: float = super().tick(*args, **kwargs)
        return min(interval, self.lock_ttl / 3)

    def reserve(self, entry: ModelEntry) -> ModelEntry:
        """django-celery-beat's ``reserve`` returns the advanced entry but leaves the old one
        in ``_schedule``; any later heap rebuild from ``_schedule`` (a takeover's re-read, or
        a schedule change seen while the heap is being rebuilt: its ``_heap_invalidated``
        flag then survives into the next tick) found the entry due again at the slot just
        sent, and sent it twice. The advanced entry replaces the old one."""
        new_entry: ModelEntry = super().reserve(entry)
        if self._schedule is not None and new_entry.name in self._schedule:
            self._schedule[new_entry.name] = new_entry
        return new_entry

    def apply_async(self, entry: ModelEntry, producer: Producer | None = None, advance: bool = True,
                    **kwargs: Any) -> Any:
        # celery.beat.Scheduler.apply_async, plus the schedule headers (computed before
        # reserve() moves last_run_at).
        slot = scheduled_time(entry)
        entry = self.reserve(entry) if advance else entry
        task = self.app.tasks.get(entry.task)
        try:
            entry_args = _evaluate_entry_args(entry.args)
            entry_kwargs = _evaluate_entry_kwargs(entry.kwargs)
            options = entry.options.copy()
            headers = options.setdefault("headers", {})
            headers.update({"celery_beat_task": True, SCHEDULE_HEADER: entry.name, SCHEDULED_AT_HEADER: slot})
            if task:
                return task.apply_async(entry_args, entry_kwargs, producer=producer, **options)
            return self.send_task(entry.task, entry_args, entry_kwargs, producer=producer, **options)
        except Exception as exc:
            raise SchedulingError(f"Couldn't apply scheduled task {entry.name}: {exc}") from exc
        finally:
            self._tasks_since_sync += 1
            if self.should_sync():
                self._do_sync()

    def close(self) -> None:
        if self.is_leader:
            try:
                if redis_client().get(LOCK_KEY) == self.token.encode():
                    redis_client().delete(LOCK_KEY)
            except Exception:
                pass
        super().close()
