"""Backpressure: each queue has a high-water mark; above it producers are told to wait.

``QUEUE_HIGH_WATER_MARK`` (default 10,000 messages) applies to every queue;
``QUEUE_HIGH_WATER_MARKS`` (``queue=N,other=M``) overrides it per queue, 0 turns it off.
A queue's depth is what waits in the broker (Redis ``LLEN`` of the queue and its priority
lists; RabbitMQ a passive declare) plus what waits in the outbox for it (rows ``enqueue()``
committed that the relay has not published yet: while the broker is down they pile up there).
It is read at most once a second per process and queue, so ``enqueue()`` pays no round trip
per call. The broker read never holds up a request: it gives up after
``BROKER_READ_TIMEOUT`` seconds, and after a failure the last known broker depth is used for
``BROKER_RETRY_SECONDS`` (the outbox count is still read), so an unreachable broker does not
stop ``enqueue()``: that is when the outbox matters.
"""
from __future__ import annotations

import logging
import math
import threading
import time

from celery import current_app
from django.conf import settings

from tasks.broker.depth import fail_fast_connection
from tasks.broker.depth import queue_depth as broker_queue_depth
from tasks.outbox import outbox_depth

logger = logging.getLogger("tasks.backpressure")

CACHE_SECONDS = 1.0
BROKER_READ_TIMEOUT = 0.5
BROKER_RETRY_SECONDS = 5.0
_cache: dict[str, tuple[float, int]] = {}
_broker_depths: dict[str, int] = {}  # the last depth read from the broker, per queue
_broker_down_until = 0.0
_lock = threading.Lock()


class QueueFull(Exception):
    """The target queue is above its high-water mark: try again after ``retry_after`` s."""

    def __init__(self, queue: str, depth: int, mark: int, retry_after: int) -> None:
        super().__init__(f"queue {queue!r} holds {depth} messages, over its high-water mark of {mark}; "
                         f"retry in {retry_after}s")
        self.queue, self.depth, self.mark, self.retry_after = queue, depth, mark, retry_after


def high_water_mark(queue: str) -> int:
    return int(settings.QUEUE_HIGH_WATER_MARKS.get(queue, settings.QUEUE_HIGH_WATER_MARK))


def broker_depth(queue: str) -> int:
    """Messages waiting in the broker's ``queue``; raises when the broker cannot be read
    within ``BROKER_READ_TIMEOUT``."""
    with fail_fast_connection(current_app, timeout=BROKER_READ_TIMEOUT) as conn:
        conn.ensure_connection(max_retries=0)
        return broker_queue_depth(conn, queue) or 0


def _broker_depth_or_last(queue: str) -> int:
    global _broker_down_until
    if time.monotonic() < _broker_down_until:
        return _broker_depths.get(queue, 0)
    try:
        depth = broker_depth(queue)
    except Exception as exc:
        logger.warning("backpressure.broker_unreadable queue=%s error=%r; using the last depth for %ss",
                       queue, exc, BROKER_RETRY_SECONDS)
        _broker_down_until = time.monotonic() + BROKER_RETRY_SECONDS
        return _broker_depths.get(queue, 0)
    _broker_depths[queue] = depth
    return depth


def queue_depth(queue: str, *, fresh: bool = False) -> int:
    """Broker plus outbox (see the module docstring), cached ``CACHE_SECONDS``."""
    now = time.monotonic()
    with _lock:
        cached = _cache.get(queue)
    if cached and not fresh and now - cached[0] < CACHE_SECONDS:
        return cached[1]
    depth = _broker_depth_or_last(queue) + outbox_depth(queue)
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
