"""The embedded services that `./dev` starts when no URLs are set."""
from __future__ import annotations

from pathlib import Path

import psycopg
import redis

from devtools.embedded import EmbeddedPostgres, EmbeddedRedis, discovered_urls, free_port


def test_embedded_postgres_keeps_its_data_across_restarts(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg", free_port(), database="smoke")
    pg.start()
    try:
        with psycopg.connect(pg.url.replace("postgres://", "postgresql://"), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v int)")
            conn.execute("INSERT INTO kept VALUES (42)")
    finally:
        pg.stop()
    assert pg.proc is None
    pg.start()
    try:
        with psycopg.connect(pg.url.replace("postgres://", "postgresql://")) as conn:
            assert conn.execute("SELECT v FROM kept").fetchone() == (42,)
    finally:
        pg.stop()


def test_embedded_redis_persists_with_aof(tmp_path: Path) -> None:
    rd = EmbeddedRedis(tmp_path / "redis", free_port())
    rd.start()
    try:
        redis.Redis.from_url(rd.url).set("kept", "yes")
    finally:
        rd.stop()
    rd.start()
    try:
        assert redis.Redis.from_url(rd.url).get("kept") == b"yes"
    finally:
        rd.stop()


def test_discovered_urls_ignores_dead_services(tmp_path: Path) -> None:
    (tmp_path / ".data").mkdir()
    (tmp_path / ".data" / "services.json").write_text(
        '{"services": {"postgres": {"pid": 999999999, "urls": {"database_url": "postgres://x"}}}}'
    )
    assert discovered_urls(tmp_path) == {}
    assert discovered_urls(tmp_path / "missing") == {}
