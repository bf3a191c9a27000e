"""Services of our own for fault tests: a Postgres (or Redis) on a free port that a test can
stop, kill and start again."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from devtools.embedded import EmbeddedPostgres, EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parent.parent


def migrate(database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)


@contextmanager
def own_postgres(tmp_path: Path, *, migrated: bool = True) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(tmp_path / "pg", free_port(), database="fault")
    pg.start()
    try:
        if migrated:
            migrate(pg.url)
        yield pg
    finally:
        pg.stop()


@contextmanager
def own_redis(tmp_path: Path, *, appendonly: bool = True) -> Iterator[EmbeddedRedis]:
    rd = EmbeddedRedis(tmp_path / "redis", free_port(), appendonly=appendonly)
    rd.start()
    try:
        yield rd
    finally:
        rd.stop()


def query(pg: EmbeddedPostgres, sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(pg.url.replace("postgres://", "postgresql://")) as conn:
        return conn.execute(sql, params).fetchall()
