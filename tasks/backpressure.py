"""Backpressure: each queue has a high-water mark; above it producers are told to wait.

``QUEUE_HIGH_WATER_MARK`` (default 10,000 messages) applies to every queue;
``QUEUE_HIGH_WATER_MARKS`` (``queue=N,other=M``) overrides it per queue, 0 turns it off.
Depth is read from the broker at most once a second per process and queue (Redis ``LLEN``
of the queue and its priority lists; RabbitMQ a passive declare), so ``enqueue()`` costs no
broker round trip per call.
"""
from __future__ import annotations

import math
import threading
import time

from django.conf import settings

CACHE_SECONDS = 1.0
_cache: dict[str, tuple[float, int]] = {}
_lock = threading.Lock()


class QueueFull(Exception):
    """The target queue is above its high-water mark: try again after ``retry_after`` s."""

    def __init__(self, queue: str, depth: int, mark: int, retry_after: int) -> None:
        super().__init__(f"queue {queue!r} holds {depth} messages, over its high-water mark of {mark}; "
                         f"retry in {retry_after}s")
        self.queue, self.depth, self.mark, self.retry_after = queue, depth, mark, retry_after


def high_water_mark(queue: str) -> int:
    return int(settings.QUEUE_HIGH_WATER_MARKS.get(queue, settings.QUEUE_HIGH_WATER_MARK))


def _read_depth(queue: str) -> int:
    from taskplatform.celery import app

    with app.connection_for_read() as conn:
        if conn.transport_cls in ("redis", "rediss") or str(conn.transport_cls).startswith("redis"):
            client = conn.default_channel.client
            sep = "\x06\x16"  # kombu's priority queue naming: celery, celery\x06\x163, ...
            pipe = client.pipeline()
            for suffix in ["", *(f"{sep}{p}" for p in range(1, 10))]:
                pipe.llen(queue + suffix)
            return int(sum(pipe.execute()))
        try:
            _, count, _ = conn.default_channel.queue_declare(queue=queue, passive=True)
            return int(count)
        except Exception:  # the queue does not exist yet: it is empty
            return 0


def queue_depth(queue: str, *, fresh: bool = False) -> int:
    now = time.monotonic()
    with _lock:
        cached = _cache.get(queue)
    if cached and not fresh and now - cached[0] < CACHE_SECONDS:
        return cached[1]
    depth = _read_depth(queue)
    with _lock:
        _cache[queue] = (now, depth)
    return depth


def check_capacity(queue: str, incoming: int = 1, *, fresh: bool = False) -> None:
    """Raise ``QueueFull`` when ``incoming`` more messages would take ``queue`` over its mark.
    ``fresh`` skips the one-second cache (a bulk job checks once per batch)."""
    mark = high_water_mark(queue)
    if mark <= 0:
        return
    depth = queue_depth(queue, fresh=fresh)
    if depth + incoming > mark:
        # A rough drain estimate: the excess at ~100 messages/s, between 1 s and 60 s.
        retry_after = max(1, min(60, math.ceil((depth + incoming - mark) / 100)))
        raise QueueFull(queue, depth, mark, retry_after)
