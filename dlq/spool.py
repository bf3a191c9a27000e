"""The capture spool: where a dead letter waits when Postgres cannot take it.

A failure that cannot be written is pushed to a Redis list (``REDIS_URL``); when Redis is
unreachable too, to a file in ``DLQ_SPOOL_DIR`` on the worker's disk. The reconciler
(``drain``) writes spooled entries once Postgres is back; it runs at worker start and from
beat. Every spooled operation is idempotent (capture is an upsert by task id, resolution and
"failed again" check the row's status and requeued task id), so an entry that is written
twice, after a crash between the write and its removal from the spool, changes nothing.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError

logger = logging.getLogger("dlq.spool")

SPOOL_KEY = "dlq:spool"
# Pop the head only if it is still the entry we wrote: a second drainer (after a lock
# expiry) can then never remove an entry that was not written.
_POP_IF_HEAD = "if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then return redis.call('LPOP', KEYS[1]) end return false"
LOCK_KEY = "dlq:spool:lock"
DB_ERRORS = (DatabaseError, InterfaceError)


def spool_dir() -> Path:
    return Path(settings.DLQ_SPOOL_DIR)


def _encode(kind: str, payload: dict[str, Any]) -> str:
    return json.dumps({"kind": kind, "payload": payload, "spooled_at": time.time()}, default=str)


def push(kind: str, payload: dict[str, Any]) -> str:
    """Keep an operation for later. Returns where it went: ``redis`` or ``file``."""
    from dlq.metrics import incr

    entry = _encode(kind, payload)
    try:
        from tasks.redis import redis_client

        redis_client().rpush(SPOOL_KEY, entry)
        incr("capture_errors", "redis")
        logger.warning("dead_letter.spooled kind=%s where=redis", kind, extra={"kind": kind})
        return "redis"
    except Exception:  # Redis is down too: the worker's disk is the last resort
        directory = spool_dir()
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}-{uuid.uuid4().hex}.json"
        tmp = directory / f".{name}.tmp"
        tmp.write_text(entry)
        os.replace(tmp, directory / name)
        logger.warning("dead_letter.spooled kind=%s where=file path=%s", kind, name, extra={"kind": kind})
        return "file"


def capture_or_spool(failure: Any) -> str:
    """Write a dead letter, or spool it when Postgres cannot take it. Returns ``db`` or the spool."""
    from dlq.services import dead_letter_capture

    try:
        dead_letter_capture(failure=failure)
        return "db"
    except DB_ERRORS:
        logger.exception("dead_letter.capture_failed task_id=%s; spooling", failure.task_id,
                         extra={"task_id": failure.task_id})
        _reset_connection()
        return push("capture", dataclasses.asdict(failure))


def resolve_or_spool(*, dead_letter_id: int, task_id: str) -> str:
    from dlq.services import dead_letter_requeued_run_succeeded

    try:
        dead_letter_requeued_run_succeeded(dead_letter_id=dead_letter_id, task_id=task_id)
        return "db"
    except DB_ERRORS:
        logger.exception("dead_letter.resolve_failed dead_letter_id=%s; spooling", dead_letter_id,
                         extra={"dead_letter_id": dead_letter_id, "task_id": task_id})
        _reset_connection()
        return push("resolve", {"dead_letter_id": dead_letter_id, "task_id": task_id})


def _reset_connection() -> None:
    from django.db import connection

    try:
        connection.close()
    except Exception:  # the connection is already broken; closing it is best effort
        pass


def _apply(entry: dict[str, Any]) -> None:
    from dlq.services import CapturedFailure, dead_letter_capture, dead_letter_requeued_run_succeeded

    kind, payload = entry["kind"], entry["payload"]
    if kind == "capture":
        dead_letter_capture(failure=CapturedFailure(**payload))
    elif kind == "resolve":
        dead_letter_requeued_run_succeeded(**payload)
    else:
        logger.error("dead_letter.spool_unknown_kind kind=%s", kind)


def size() -> dict[str, int]:
    from tasks.redis import redis_client

    files = len(list(spool_dir().glob("*.json"))) if spool_dir().exists() else 0
    try:
        in_redis = int(redis_client().llen(SPOOL_KEY))
    except Exception:
        in_redis = -1
    return {"redis": in_redis, "file": files}


def drain(limit: int = 10_000) -> int:
    """Write spooled entries to Postgres; returns how many were written.

    One drainer at a time (a Redis lock); an entry leaves the spool only after its write
    committed. Stops at the first database error (Postgres still down) and leaves the rest.
    """
    done = 0
    for path in sorted(spool_dir().glob("*.json")) if spool_dir().exists() else []:
        if done >= limit:
            return done
        try:
            _apply(json.loads(path.read_text()))
        except DB_ERRORS:
            _reset_connection()
            return done
        path.unlink(missing_ok=True)
        done += 1

    from tasks.redis import redis_client

    client = redis_client()
    token = uuid.uuid4().hex
    if not client.set(LOCK_KEY, token, nx=True, ex=300):
        return done
    try:
        deadline = time.monotonic() + 240
        while done < limit and time.monotonic() < deadline:
            raw = client.lindex(SPOOL_KEY, 0)
            if raw is None:
                break
            try:
                _apply(json.loads(raw))
            except DB_ERRORS:
                _reset_connection()
                break
            except (ValueError, TypeError, KeyError):
                logger.exception("dead_letter.spool_bad_entry; moved to %s:bad", SPOOL_KEY)
                client.rpush(f"{SPOOL_KEY}:bad", raw)
            client.eval(_POP_IF_HEAD, 1, SPOOL_KEY, raw)
            done += 1
    finally:
        if client.get(LOCK_KEY) == token.encode():
            client.delete(LOCK_KEY)
    if done:
        logger.info("dead_letter.spool_drained count=%s", done, extra={"count": done})
    return done
