"""The harness' own Postgres and Redis (embedded, on free ports), the environment that points
this process and every process it starts at them, and the plain clients it observes them with.

``configure()`` runs *before* Django is set up in the harness process: its settings point at
the harness' services, never at the developer's or the test suite's.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import django
import psycopg
import redis

from devtools.embedded import EmbeddedPostgres, EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))
QUEUE = "celery"
# kombu's Redis transport keeps priorities in separate lists named queue + "\x06\x16" + step.
QUEUE_LISTS = [QUEUE] + [f"{QUEUE}\x06\x16{p}" for p in (3, 6, 9)]
VISIBILITY_TIMEOUT = 20

SCHEMA = """
CREATE TABLE IF NOT EXISTS chaos_effect (id bigserial PRIMARY KEY, key text NOT NULL, idempotent boolean NOT NULL,
                                         pid integer, at timestamptz NOT NULL DEFAULT now());
CREATE INDEX IF NOT EXISTS chaos_effect_key ON chaos_effect (key);
CREATE TABLE IF NOT EXISTS chaos_done (key text PRIMARY KEY);
CREATE TABLE IF NOT EXISTS chaos_tick (id bigserial PRIMARY KEY, name text NOT NULL, pid integer,
                                       at timestamptz NOT NULL DEFAULT now());
-- The scheduled time a beat tick carried (dlq_scheduled_at); NULL when it carried none.
ALTER TABLE chaos_tick ADD COLUMN IF NOT EXISTS scheduled_at bigint;
-- F15-F17: the business row the chaos view commits with its task (tests/chaos/web.py), and one
-- row per execution of chaos.work when CHAOS_COUNT_RUNS=1 (duplicate deliveries).
CREATE TABLE IF NOT EXISTS chaos_order (key text PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS chaos_run (id bigserial PRIMARY KEY, key text NOT NULL, pid integer,
                                      at timestamptz NOT NULL DEFAULT now());
CREATE INDEX IF NOT EXISTS chaos_run_key ON chaos_run (key);
"""
# tasks_outboxmessage: a variant that timed out must not leave messages for the next one's relays.
RESET = ("TRUNCATE chaos_effect, chaos_done, chaos_tick, chaos_order, chaos_run, tasks_outboxmessage, dlq_effectkey, "
         "dlq_deadletterevent, dlq_deadletter, django_celery_results_taskresult RESTART IDENTITY CASCADE")


def configure(workdir: Path) -> tuple[EmbeddedPostgres, EmbeddedRedis]:
    """Start our own Postgres and Redis, point this process' environment at them, migrate."""
    workdir.mkdir(parents=True, exist_ok=True)
    pg = EmbeddedPostgres(workdir / "pg", free_port(), database="chaos")
    rd = EmbeddedRedis(workdir / "redis", free_port(), appendonly=True)
    pg.start()
    try:
        rd.start()
        _configure(pg, rd, workdir)
    except BaseException:
        rd.stop()
        pg.stop()
        raise
    return pg, rd


def _configure(pg: EmbeddedPostgres, rd: EmbeddedRedis, workdir: Path) -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="taskplatform.settings",
        DATABASE_URL=pg.url,
        CELERY_BROKER_URL=rd.url,
        REDIS_URL=rd.url,
        CELERY_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT),
        # kombu restores unacked messages only every ~100 s by default; F9/F10 need it within a run.
        CELERY_UNACKED_RESTORE_SECONDS="2",
        TASK_RETRY_BACKOFF="1",
        TASK_RETRY_BACKOFF_MAX="2",
        TASK_DEFAULT_MAX_RETRIES="3",
        DLQ_SPOOL_DIR=str(workdir / "spool"),
        DB_CONNECT_TIMEOUT="2",
        LOG_LEVEL="WARNING",
        # Time limits below the visibility timeout (the dlq.E002 check); F10 raises them per message.
        TASK_DEFAULT_SOFT_TIME_LIMIT="10",
        TASK_DEFAULT_TIME_LIMIT="15",
    )
    # --skip-checks: dlq.E002 refuses time limits above our deliberately short visibility timeout.
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0", "--skip-checks"], cwd=ROOT,
                   env=dict(os.environ), check=True)
    django.setup()
    sql(pg, SCHEMA)


def sql(pg: EmbeddedPostgres, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname=pg.database, autocommit=True,
                         connect_timeout=3) as conn:
        cur = conn.execute(statement, params or None)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def redis_client(rd: EmbeddedRedis) -> Any:
    return redis.Redis(host="127.0.0.1", port=rd.port, socket_timeout=2, socket_connect_timeout=2)
