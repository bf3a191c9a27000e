"""The capture spool: where a dead letter waits when Postgres cannot take it.

A failure that cannot be written is pushed to a Redis list (``REDIS_URL``); when Redis is
unreachable too, to a file in ``DLQ_SPOOL_DIR`` on the worker's disk. The reconciler
(``drain``) writes spooled entries once Postgres is back; it runs at worker start and from
beat. Every spooled operation is idempotent (capture is an upsert by task id, resolution and
"failed again" check the row's status and requeued task id), so an entry that is written
twice, after a crash between the write and its removal from the spool, changes nothing.

Only an unavailable Postgres spools. When Postgres answers but refuses the write for its
*content* (SQLSTATE classes 22 data exception, 23 integrity, 54 program limit: a value it
cannot hold, a nesting it cannot parse), the failure is written again with its arguments as
text only (``raw_arguments``; the row says so); if even that is refused, the operation goes
to the quarantine (``QuarantinedEntry``), with an alert, and the next one is written. So no
value, from any producer, can keep a dead letter from being recorded or stop the drain.
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
from django.db import DatabaseError, InterfaceError, transaction

from dlq.db import close_broken_connection
from dlq.jsonsafe import raw_text
from dlq.models import QuarantinedEntry
from dlq.services import dead_letter_capture, dead_letter_requeued_run_succeeded
from tasks.counters import incr
from tasks.errors import NotFound
from tasks.failures import CapturedFailure
from tasks.redis import redis_client

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
    entry = _encode(kind, payload)
    try:
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


#: SQLSTATE classes of a write refused for what it holds (Postgres itself is fine).
CONTENT_ERROR_CLASSES = ("22", "23", "54")


def refused_for_content(exc: BaseException) -> bool:
    """True when Postgres answered and refused the statement for its content (as opposed to
    being unreachable, which spooling waits out)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        state = getattr(seen, "sqlstate", None)
        if isinstance(state, str) and state:
            return state[:2] in CONTENT_ERROR_CLASSES
        seen = seen.__cause__ or seen.__context__
    return False


def capture_or_spool(failure: Any) -> str:
    """Write a dead letter, or spool it when Postgres cannot take it. Returns ``db`` (written,
    possibly with its arguments as text only), ``quarantine``, or where it was spooled."""
    try:
        return write_capture(failure)
    except DB_ERRORS:
        logger.exception("dead_letter.capture_failed task_id=%s; spooling", failure.task_id,
                         extra={"task_id": failure.task_id})
        close_broken_connection()
        return push("capture", dataclasses.asdict(failure))


def write_capture(failure: Any) -> str:
    """Write a dead letter whatever its values (``db``, or ``quarantine`` when Postgres refuses
    even its text form). Raises DB_ERRORS only when Postgres is unavailable."""
    try:
        _write(failure)
        return "db"
    except DB_ERRORS as exc:
        if not refused_for_content(exc):
            raise
        error: BaseException = exc
    except (ValueError, TypeError, RecursionError) as exc:  # values our own code could not make storable
        error = exc
    # Written again with the refused values kept only as text: arguments in
    # ``raw_arguments``, no headers or options, the attempts reduced to the last.
    logger.error("dead_letter.capture_refused task_id=%s error=%r; storing its arguments as text", failure.task_id,
                 error, extra={"task_id": failure.task_id})
    reduced = dataclasses.replace(failure, args=None, kwargs=None, headers={}, options={},
                                  attempts=failure.attempts[-1:] if isinstance(failure.attempts, list) else [],
                                  raw_arguments=raw_text([failure.args, failure.kwargs]))
    try:
        _write(reduced)
        return "db"
    except DB_ERRORS as exc:
        if not refused_for_content(exc):
            raise
        return quarantine({"kind": "capture", "payload": _asdict(failure)}, exc)


def _write(failure: Any) -> None:
    if transaction.get_connection().in_atomic_block:
        with transaction.atomic():  # a savepoint: a refused write leaves the caller's transaction usable
            dead_letter_capture(failure=failure)
    else:  # the worker's case: one statement, no BEGIN/COMMIT around it
        dead_letter_capture(failure=failure)


def resolve_or_spool(*, dead_letter_id: int, task_id: str) -> str:
    try:
        dead_letter_requeued_run_succeeded(dead_letter_id=dead_letter_id, task_id=task_id)
        return "db"
    except DB_ERRORS:
        logger.exception("dead_letter.resolve_failed dead_letter_id=%s; spooling", dead_letter_id,
                         extra={"dead_letter_id": dead_letter_id, "task_id": task_id})
        close_broken_connection()
        return push("resolve", {"dead_letter_id": dead_letter_id, "task_id": task_id})


def _asdict(failure: Any) -> dict[str, Any]:
    try:
        return dataclasses.asdict(failure)
    except Exception:
        return {"task_id": getattr(failure, "task_id", "")}


def _apply(entry: dict[str, Any]) -> None:
    """Write one spooled operation. Raises DB_ERRORS when Postgres is unreachable (the drain
    stops and retries later); anything it cannot write for its content goes to the
    quarantine instead of raising."""
    kind, payload = entry["kind"], entry["payload"]
    if kind == "capture":
        write_capture(CapturedFailure(**payload))
    elif kind == "resolve":
        try:
            dead_letter_requeued_run_succeeded(**payload)
        except DB_ERRORS as exc:
            if not refused_for_content(exc):
                raise
            quarantine(entry, exc)
    else:
        raise ValueError(f"unknown spool entry kind {kind!r}")


def quarantine(entry: dict[str, Any], error: BaseException) -> str:
    """Keep an operation Postgres refuses for its content out of the spool's way."""
    payload = entry.get("payload") if isinstance(entry, dict) else None
    task_id = payload.get("task_id") if isinstance(payload, dict) else ""
    text = json.dumps(entry, default=str)  # ensure_ascii: NUL and lone surrogates escaped
    QuarantinedEntry.objects.create(kind=str(entry.get("kind", ""))[:32] if isinstance(entry, dict) else "",
                                    task_id=str(task_id or "")[:255].replace("\x00", ""), entry=text,
                                    error=repr(error)[:4000].replace("\x00", ""))
    incr("spool_quarantined")
    logger.error("dead_letter.quarantined task_id=%s error=%r", task_id, error, extra={"task_id": task_id})
    return "quarantine"


def quarantine_retry(*, entry_id: int) -> str:
    """Write a quarantined operation again (after a fix); it leaves the quarantine once written."""
    row = QuarantinedEntry.objects.filter(pk=entry_id).first()
    if row is None:
        raise NotFound(f"quarantined entry {entry_id} does not exist")
    before = QuarantinedEntry.objects.count()
    _apply(json.loads(row.entry))
    if QuarantinedEntry.objects.count() > before:  # refused again: keep the original, drop the copy
        QuarantinedEntry.objects.filter(pk__gt=row.pk, entry=row.entry).delete()
        QuarantinedEntry.objects.filter(pk=row.pk).update(attempts=row.attempts + 1)
        return "quarantine"
    row.delete()
    return "db"


def _apply_or_quarantine(raw: str | bytes) -> None:
    """One entry of the spool: written, or quarantined when it cannot be (its content, or an
    entry that is not one of ours). Raises DB_ERRORS only when Postgres is unreachable."""
    entry: Any = None
    try:
        entry = json.loads(raw)
        if not isinstance(entry, dict) or not isinstance(entry.get("payload"), dict):
            raise ValueError("not a spool entry")
        _apply(entry)
    except DB_ERRORS:
        raise
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        logger.exception("dead_letter.spool_bad_entry; quarantined")
        if not isinstance(entry, dict) or not isinstance(entry.get("payload"), dict):
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            entry = {"kind": "unreadable", "payload": {"raw": text}}
        quarantine(entry, exc)


def size() -> dict[str, int]:
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
            _apply_or_quarantine(path.read_text())
        except DB_ERRORS:
            close_broken_connection()
            return done
        path.unlink(missing_ok=True)
        done += 1

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
                _apply_or_quarantine(raw)
            except DB_ERRORS:
                close_broken_connection()
                break
            client.eval(_POP_IF_HEAD, 1, SPOOL_KEY, raw)
            done += 1
    finally:
        if client.get(LOCK_KEY) == token.encode():
            client.delete(LOCK_KEY)
    if done:
        logger.info("dead_letter.spool_drained count=%s", done, extra={"count": done})
    return done
