"""Prometheus metrics at ``/metrics``.

Gauges are read at scrape time from Postgres and Redis (dead letters by status/reason/task,
spool size, redrive progress, open alerts, queue depths). Counters happen in worker
processes on many hosts, so they are summed in one Redis hash (``metrics:counters``) rather
than kept per process: captures, requeues, capture errors and task outcomes (a
``task_postrun`` receiver) are counted in-process and flushed to Redis once a second by a
thread, so neither the success path nor a capture pays a network round trip for them.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger("dlq.metrics")

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
            from tasks.redis import redis_client

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


class PlatformCollector(Collector):
    def collect(self) -> Iterator[Any]:
        from django.db.models import Count

        from dlq import spool
        from dlq.models import Alert, AlertStatus, DeadLetter, RedriveJob, RedriveJobStatus

        by = GaugeMetricFamily("taskplatform_dead_letters", "Dead letters by status, reason and task.",
                               labels=["status", "reason", "task"])
        for status, reason, task, n in (DeadLetter.objects.values_list("status", "reason", "task_name")
                                        .annotate(n=Count("id")).order_by()):
            by.add_metric([status, reason, task], n)
        yield by

        sizes = spool.size()
        spooled = GaugeMetricFamily("taskplatform_spool_entries", "Dead letters waiting in the capture spool.", labels=["where"])
        for where, n in sizes.items():
            spooled.add_metric([where], max(n, 0))
        yield spooled
        from dlq.models import QuarantinedEntry

        yield GaugeMetricFamily("taskplatform_spool_quarantined", "Spooled operations Postgres refused for their "
                                "content, waiting for a person.", value=QuarantinedEntry.objects.count())

        jobs = GaugeMetricFamily("taskplatform_redrive_job_rows", "Rows of running redrive jobs.", labels=["job", "action", "kind"])
        for job in RedriveJob.objects.filter(status__in=[RedriveJobStatus.PENDING, RedriveJobStatus.RUNNING]):
            for kind in ("total", "done", "failed"):
                jobs.add_metric([str(job.pk), job.action, kind], getattr(job, kind))
        yield jobs

        from django.conf import settings

        from tasks.backpressure import high_water_mark, queue_depth

        depth = GaugeMetricFamily("taskplatform_queue_depth", "Messages waiting in a queue (read at most once a second).",
                                  labels=["queue"])
        mark = GaugeMetricFamily("taskplatform_queue_high_water_mark", "Backpressure threshold of a queue.", labels=["queue"])
        for queue in sorted({settings.CELERY_TASK_DEFAULT_QUEUE, *settings.QUEUE_HIGH_WATER_MARKS}):
            try:
                depth.add_metric([queue], queue_depth(queue))
            except Exception:
                logger.debug("metrics.queue_depth_failed queue=%s", queue, exc_info=True)
            mark.add_metric([queue], high_water_mark(queue))
        yield depth
        yield mark

        from tasks.outbox import outbox_stats

        waiting = outbox_stats()
        yield GaugeMetricFamily("taskplatform_outbox_rows", "Messages enqueue() committed that the relay has not "
                                "published yet.", value=waiting.rows)
        yield GaugeMetricFamily("taskplatform_outbox_oldest_age_seconds", "Age of the oldest message waiting in the "
                                "outbox (0 when it is empty).", value=waiting.oldest_age_seconds)

        alerts = GaugeMetricFamily("taskplatform_alerts_open", "Open alerts by kind.", labels=["kind"])
        for kind, n in Alert.objects.filter(status=AlertStatus.OPEN).values_list("kind").annotate(n=Count("id")).order_by():
            alerts.add_metric([kind], n)
        yield alerts

        captured = CounterMetricFamily("taskplatform_dead_letters_captured", "Dead letters captured.", labels=["task", "reason"])
        requeued = CounterMetricFamily("taskplatform_dead_letters_requeued", "Dead letters requeued.", labels=["via"])
        errors = CounterMetricFamily("taskplatform_capture_errors", "Captures that could not be written and were spooled.",
                                     labels=["where"])
        tasks = CounterMetricFamily("taskplatform_task_outcomes", "Task runs by task name and final state.",
                                    labels=["task", "state"])
        relayed = CounterMetricFamily("taskplatform_outbox_published", "Messages the outbox relays published.")
        relayed_total = 0
        try:
            from tasks.redis import redis_client

            raw = redis_client().hgetall(COUNTERS_KEY)
        except Exception:
            raw = {}
        for field, value in raw.items():
            parts = field.decode("utf-8", "replace").split(SEP)
            n = int(value)
            if parts[0] == "captured" and len(parts) == 3:
                captured.add_metric(parts[1:], n)
            elif parts[0] == "requeued" and len(parts) == 2:
                requeued.add_metric(parts[1:], n)
            elif parts[0] == "capture_errors" and len(parts) == 2:
                errors.add_metric(parts[1:], n)
            elif parts[0] == "task" and len(parts) == 3:
                tasks.add_metric(parts[1:], n)
            elif parts == ["outbox", "published"]:
                relayed_total = n
        relayed.add_metric([], relayed_total)
        yield from (captured, requeued, errors, tasks, relayed)
