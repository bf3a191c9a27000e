"""Page-only reads from the broker: worker status and queue depths.

Both go through one short-lived broker connection that gives up at once (``max_retries=0``,
``connect_timeout``), and a broadcast ``inspect`` with a timeout of at most a second, so a
dead or slow broker costs the page at most about a second and never raises: the page shows
"broker unreachable" instead. Nothing here writes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from celery import Celery, current_app
from kombu import Connection

from tasks.broker.depth import fail_fast_connection, queue_depth

logger = logging.getLogger("dashboard")

MAX_TIMEOUT = 1.0
DEFAULT_QUEUES = ("celery",)


@dataclass
class WorkerInfo:
    name: str
    queues: list[str] = field(default_factory=list)
    active: int | None = None


@dataclass
class BrokerStatus:
    reachable: bool
    workers: list[WorkerInfo] = field(default_factory=list)
    queues: dict[str, int | None] = field(default_factory=dict)
    error: str = ""


def broker_status(*, timeout: float = 0.8, app: Celery | None = None, broker_url: str | None = None) -> BrokerStatus:
    """Workers that answer within ``timeout`` (with the queues they consume) and the depth
    of those queues plus ``celery``. ``broker_url`` overrides the app's (tests point it at a
    dead port)."""
    app = app or current_app
    timeout = max(0.05, min(float(timeout), MAX_TIMEOUT))
    try:
        conn = fail_fast_connection(app, url=broker_url, timeout=min(timeout, 0.5))
    except Exception as exc:  # an unparsable URL, an unknown transport
        return BrokerStatus(reachable=False, error=str(exc)[:300])
    try:
        with conn:
            conn.ensure_connection(max_retries=0)
            replies = app.control.inspect(timeout=timeout, connection=conn).active_queues() or {}
            workers = [WorkerInfo(name=name, queues=sorted({q.get("name", "") for q in queues or []} - {""}))
                       for name, queues in sorted(replies.items())]
            names = sorted({*DEFAULT_QUEUES, *(q for w in workers for q in w.queues)})
            return BrokerStatus(reachable=True, workers=workers, queues=queue_depths(conn, names))
    except Exception as exc:  # broker down, refused, timed out: the page renders anyway
        logger.warning("dashboard.broker_unreachable error=%s", exc, extra={"error": str(exc)[:300]})
        return BrokerStatus(reachable=False, error=str(exc)[:300] or exc.__class__.__name__)


def queue_depths(conn: Connection, names: list[str]) -> dict[str, int | None]:
    """Messages waiting in each queue (``None``: unknown)."""
    depths: dict[str, int | None] = {}
    for name in names:
        try:
            depths[name] = queue_depth(conn, name)
        except Exception:
            depths[name] = None
    return depths
