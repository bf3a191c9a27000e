"""Turning a failed Celery request into the values of a dead letter.

Pure functions of the task request and the exception: no database here (see
``dlq.services.dead_letter_capture`` for the write).

Attempt history travels in a message header across retries (``ATTEMPTS_HEADER``), so a retry
costs no database write. The list is bounded: the first ``KEEP_FIRST`` and the last
``KEEP_LAST`` attempts are kept; each entry carries its exact ``number``.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

ATTEMPTS_HEADER = "dlq_attempts"
# Set on a requeued run: the id of the dead letter it came from.
DEAD_LETTER_HEADER = "dlq_dead_letter_id"
KEEP_FIRST = 3
KEEP_LAST = 10
MESSAGE_LIMIT = 2000

_QUOTED = re.compile(r"(['\"]).*?\1")
_UUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_HEX = re.compile(r"\b(?:0x)?[0-9a-fA-F]*\d[0-9a-fA-F]*\b")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def qualified_name(exc_type: type[BaseException]) -> str:
    module = exc_type.__module__
    return exc_type.__qualname__ if module in ("builtins", "__main__") else f"{module}.{exc_type.__qualname__}"


def normalise_message(message: str) -> str:
    """The message with quoted values, uuids, hex ids and numbers replaced by placeholders."""
    text = _QUOTED.sub("'?'", message)
    text = _UUID.sub("<id>", text)
    text = _HEX.sub("<n>", text)
    text = _NUMBER.sub("<n>", text)
    return " ".join(text.split())[:500]


def fingerprint(task_name: str, exception_type: str, message: str) -> str:
    """Groups dead letters with the same cause (task + exception type + normalised message)."""
    key = "\x1f".join((task_name, exception_type, normalise_message(message)))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def attempt_record(number: int, exc: BaseException | None, worker: str | None, *, exception_type: str | None = None, message: str | None = None) -> dict[str, Any]:
    return {
        "number": number,
        "at": now_iso(),
        "exception_type": exception_type if exception_type is not None else (qualified_name(type(exc)) if exc else ""),
        "message": (message if message is not None else (str(exc) if exc else ""))[:MESSAGE_LIMIT],
        "worker": worker or "",
    }


def bounded(attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(attempts) <= KEEP_FIRST + KEEP_LAST:
        return attempts
    return attempts[:KEEP_FIRST] + attempts[-KEEP_LAST:]


def previous_attempts(request: Any) -> list[dict[str, Any]]:
    value = getattr(request, ATTEMPTS_HEADER, None)
    return list(value) if isinstance(value, list) else []


def attempts_with(request: Any, exc: BaseException | None, **overrides: Any) -> list[dict[str, Any]]:
    """The attempt list carried by ``request`` plus this attempt, bounded."""
    retries = int(getattr(request, "retries", 0) or 0)
    record = attempt_record(retries + 1, exc, getattr(request, "hostname", None), **overrides)
    return bounded([*previous_attempts(request), record])


def delivery_queue(delivery_info: Mapping[str, Any] | None) -> tuple[str, str]:
    """(queue, routing_key) of a delivery: the routing key on the default exchange is the queue."""
    info = delivery_info or {}
    routing_key = str(info.get("routing_key") or "")
    return routing_key, routing_key


def request_options(request: Any) -> dict[str, Any]:
    delivery_info = getattr(request, "delivery_info", None) or {}
    options = {
        "eta": getattr(request, "eta", None),
        "expires": getattr(request, "expires", None),
        "priority": delivery_info.get("priority"),
        "exchange": delivery_info.get("exchange"),
    }
    return {k: v for k, v in options.items() if v is not None}


def request_headers(request: Any) -> dict[str, Any]:
    headers = {
        "parent_id": getattr(request, "parent_id", None),
        "root_id": getattr(request, "root_id", None),
        "group_id": getattr(request, "group", None),
        "origin": getattr(request, "origin", None),
    }
    return {k: v for k, v in headers.items() if v}
