"""Event counters summed across every process on every host (one Redis hash,
``metrics:counters``): captures, requeues, capture errors, task outcomes, relayed messages.
Counted in-process and flushed to Redis once a second by a thread, so neither the success
path nor a capture pays a network round trip for them; ``dlq.metrics`` exports them.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from typing import Any

from tasks.redis import redis_client

logger = logging.getLogger("tasks.counters")

COUNTERS_KEY = "metrics:counters"
FLUSH_SECONDS = 1.0
SEP = "\x1f"


def incr(*parts: str, amount: int = 1) -> None:
    """Count an event (buffered; best effort: metrics never break the path they measure)."""
    counters.add(SEP.join(parts), amount)


class CounterBuffer:
    """Counters of this process, flushed to Redis in one pipeline per second."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.last_flush = time.monotonic()
        self.lock = threading.Lock()
        self.flusher_pid: int | None = None

    def add(self, field: str, amount: int = 1) -> None:
        with self.lock:
            self.counts[field] += amount
        if self.flusher_pid != os.getpid():
            # One flusher thread per (pool child) process, so an idle worker still reports.
            self.flusher_pid = os.getpid()
            threading.Thread(target=self._flush_forever, name="metrics-flush", daemon=True).start()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush()

    def flush(self) -> None:
        with self.lock:
            counts, self.counts = self.counts, Counter()
            self.last_flush = time.monotonic()
        if not counts:
            return
        try:
            pipe = redis_client().pipeline(transaction=False)
            for field, n in counts.items():
                pipe.hincrby(COUNTERS_KEY, field, n)
            pipe.execute()
        except Exception:
            logger.debug("metrics.flush_failed", exc_info=True)


counters = CounterBuffer()


def on_task_postrun(sender: Any = None, task: Any = None, state: str | None = None, **kwargs: Any) -> None:
    if task is not None and state:
        incr("task", task.name, state)


def on_process_shutdown(**kwargs: Any) -> None:
    counters.flush()
