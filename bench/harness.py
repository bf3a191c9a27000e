"""Services, workers, timing and statistics for the benchmarks.

``configure()`` runs before Django is imported: it points this process (and the workers it
starts) at a database and a Redis database of the benchmark's own, on the servers given by
``DATABASE_URL`` / ``CELERY_BROKER_URL`` (a database ``<name>_bench`` and Redis db 5, or ``BENCH_REDIS_DB``), or on
an embedded Postgres/Redis started here on free ports when no URLs are set.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Redis database of the bench; BENCH_REDIS_DB lets two benches share one server side by side.
BENCH_REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "5"))


@dataclass
class Row:
    """One line of the report: our figure, the baseline's, the ratio and the goal."""

    scenario: str
    metric: str
    unit: str
    ours: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    goal: str = ""
    met: bool | None = None
    notes: str = ""
    higher_is_better: bool = True

    @property
    def ours_median(self) -> float | None:
        return statistics.median(self.ours) if self.ours else None

    @property
    def baseline_median(self) -> float | None:
        return statistics.median(self.baseline) if self.baseline else None

    @property
    def ratio(self) -> float | None:
        o, b = self.ours_median, self.baseline_median
        if o is None or b is None or b == 0:
            return None
        return o / b

    def as_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "metric": self.metric, "unit": self.unit, "ours": self.ours,
                "baseline": self.baseline, "ours_median": self.ours_median, "baseline_median": self.baseline_median,
                "ratio": self.ratio, "goal": self.goal, "met": self.met, "notes": self.notes}


def spread(values: list[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def p95(samples: list[float]) -> float:
    return percentile(samples, 0.95)


def percentile(samples: list[float], q: float) -> float:
    """The sample at rank ``q`` of the sorted samples (nearest rank, no interpolation)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Services:
    """The benchmark's own database and Redis database (see module docstring)."""

    def __init__(self) -> None:
        self.owned: list[Any] = []
        self.tmp: tempfile.TemporaryDirectory[str] | None = None
        self.spool_dir = tempfile.mkdtemp(prefix="bench-spool-")

    def start(self) -> dict[str, str]:
        db_url, broker = os.environ.get("DATABASE_URL"), os.environ.get("CELERY_BROKER_URL")
        if not db_url or not broker or not broker.startswith("redis"):
            from devtools.embedded import EmbeddedPostgres, EmbeddedRedis, free_port

            self.tmp = tempfile.TemporaryDirectory(prefix="bench-")
            pg = EmbeddedPostgres(Path(self.tmp.name) / "pg", free_port(), database="bench",
                                  extra_options={"fsync": "off", "synchronous_commit": "off"})
            rd = EmbeddedRedis(Path(self.tmp.name) / "redis", free_port(), appendonly=False)
            pg.start()
            self.owned.append(pg)
            rd.start()
            self.owned.append(rd)
            db_url, broker = pg.url, rd.url
            print(f"[bench] own Postgres on :{pg.port}, Redis on :{rd.port}", file=sys.stderr)
        db_url = _with_database(db_url, _database_name(db_url) + "_bench")
        broker = _with_redis_db(broker, BENCH_REDIS_DB)
        _recreate_database(db_url)
        env = {"DATABASE_URL": db_url, "CELERY_BROKER_URL": broker, "REDIS_URL": broker,
               "DJANGO_SETTINGS_MODULE": "taskplatform.settings", "LOG_LEVEL": "WARNING",
               "DLQ_SPOOL_DIR": self.spool_dir,
               # Benchmarks fill queues nobody consumes (S1, S4, S8): backpressure would pause them
               # (S1 turns it back on with a mark no run reaches, so that enqueue() pays its read).
               "QUEUE_HIGH_WATER_MARK": "0"}
        os.environ.update(env)
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT,
                       env=dict(os.environ), check=True)
        import django

        django.setup()
        import bench.tasks  # noqa: F401  (registers the bench tasks in this process too)

        flush_redis()
        return env

    def close(self) -> None:
        for service in reversed(self.owned):
            service.stop()
        self.owned.clear()
        if self.tmp is not None:
            self.tmp.cleanup()
        shutil.rmtree(self.spool_dir, ignore_errors=True)


def _database_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or "taskplatform"


def _with_database(url: str, name: str) -> str:
    base, _, rest = url.rstrip("/").rpartition("/")
    query = rest.split("?", 1)[1] if "?" in rest else ""
    return f"{base}/{name}" + (f"?{query}" if query else "")


def _with_redis_db(url: str, db: int) -> str:
    base, _, last = url.rstrip("/").rpartition("/")
    return f"{base}/{db}" if last.isdigit() else f"{url.rstrip('/')}/{db}"


def _recreate_database(url: str) -> None:
    import psycopg

    name = _database_name(url)
    admin_url = _with_database(url, "postgres").replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def redis() -> Any:
    import redis as redis_lib

    return redis_lib.Redis.from_url(os.environ["CELERY_BROKER_URL"])


def flush_redis() -> None:
    redis().flushdb()


def queue_depth(queue: str) -> int:
    client = redis()
    return int(client.llen(queue)) + int(client.hlen("unacked"))


def message_task_id(raw: bytes) -> str:
    """The task id of a message as Redis holds it (kombu's JSON envelope)."""
    return str(json.loads(raw)["headers"]["id"])


def broker_task_ids(queue: str) -> list[str]:
    """The task id of every message waiting in ``queue`` (a Redis list)."""
    return [message_task_id(m) for m in redis().lrange(queue, 0, -1)]


def sql(statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(statement, params)
        return list(cur.fetchall()) if cur.description else []


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.02, what: str = "") -> float:
    """Poll until ``predicate()`` is truthy; returns the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


@contextmanager
def worker(queue: str, *, concurrency: int | None = None, env: dict[str, str] | None = None) -> Iterator[Any]:
    """A real ``celery worker -P prefork -c <cores>`` with the bench tasks, consuming ``queue``."""
    from tests.workers import Worker

    w = Worker(queues=queue, concurrency=concurrency or os.cpu_count() or 2, env=env,
               extra_args=["-I", "bench.tasks", "-l", "warning"]).start()
    try:
        yield w
    finally:
        w.stop()


def worker_rss(w: Any) -> int:
    """Resident memory of the worker's pool processes (the children that run tasks), bytes."""
    import psutil

    children = psutil.Process(w.proc.pid).children(recursive=True)
    return sum(c.memory_info().rss for c in children)
