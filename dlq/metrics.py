"""Prometheus metrics at ``/metrics`` (the counters are ``tasks.counters``).

Gauges are read at scrape time from Postgres and Redis (dead letters by status/reason/task,
spool size, redrive progress, open alerts, queue depths). Counters happen in worker
processes on many hosts, so they are summed in one Redis hash (``metrics:counters``) rather
than kept per process: captures, requeues, capture errors and task outcomes (a
``task_postrun`` receiver) are counted in-process and flushed to Redis once a second by a
thread, so neither the success path nor a capture pays a network round trip for them.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

from django.conf import settings
from django.db.models import Count
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from dlq import spool
from dlq.models import Alert, AlertStatus, DeadLetter, QuarantinedEntry, RedriveJob, RedriveJobStatus
from tasks.backpressure import high_water_mark, queue_depth
from tasks.counters import COUNTERS_KEY, SEP
from tasks.outbox import outbox_stats
from tasks.redis import redis_client

logger = logging.getLogger("dlq.metrics")


class PlatformCollector(Collector):
    def collect(self) -> Iterator[Metric]:
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
        yield GaugeMetricFamily("taskplatform_spool_quarantined", "Spooled operations Postgres refused for their "
                                "content, waiting for a person.", value=QuarantinedEntry.objects.count())

        jobs = GaugeMetricFamily("taskplatform_redrive_job_rows", "Rows of running redrive jobs.", labels=["job", "action", "kind"])
        for job in RedriveJob.objects.filter(status__in=[RedriveJobStatus.PENDING, RedriveJobStatus.RUNNING]):
            for kind in ("total", "done", "failed"):
                jobs.add_metric([str(job.pk), job.action, kind], getattr(job, kind))
        yield jobs

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
            raw = redis_client().hgetall(COUNTERS_KEY)
        except Exception:
            raw = {}
        for field, value in raw.items():
            # bytes from our client; redis-py's types allow str (a client with decode_responses).
            parts = (field.decode("utf-8", "replace") if isinstance(field, bytes) else field).split(SEP)
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
