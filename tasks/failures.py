"""A task's death, as the runtime sees it: why it died (``DeathReason``), and the values of a
failed Celery request (``CapturedFailure``) that the failure hook hands over.

Pure functions of the task request and the exception: no database here. The runtime reaches
the domain only through the callables the settings name (``TASK_FAILURE_HANDLER``: the
dead-letter capture, ``dlq.spool.capture_or_spool``).

Attempt history travels in a message header across retries (``ATTEMPTS_HEADER``), so a retry
costs no database write. The list is bounded: the first ``KEEP_FIRST`` and the last
``KEEP_LAST`` attempts are kept; each entry carries its exact ``number``.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any, Protocol

from billiard.einfo import ExceptionInfo
from celery import Task
from django.conf import settings
from django.db import models
from django.utils.module_loading import import_string


class DeathReason(models.TextChoices):
    MAX_RETRIES_EXCEEDED = "max_retries_exceeded", "Retries exhausted"
    NON_RETRYABLE = "non_retryable", "Non-retryable error"
    TIME_LIMIT = "time_limit", "Time limit"
    WORKER_LOST = "worker_lost", "Worker lost (poison pill)"
    REJECTED = "rejected", "Rejected"
    UNREGISTERED_TASK = "unregistered_task", "Unregistered task"
    DECODE_ERROR = "decode_error", "Decode error"
    INVALID_ARGUMENTS = "invalid_arguments", "Arguments do not fit the task"


@dataclass
class CapturedFailure:
    """Everything the capture service needs; built by ``tasks.base`` from a Celery request."""

    task_id: str
    task_name: str
    reason: str
    exception_type: str
    exception_message: str
    traceback: str = ""
    queue: str = ""
    routing_key: str = ""
    args: Any = None
    kwargs: Any = None
    headers: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    retries: int = 0
    raw_body: str | None = None
    content_type: str = ""
    content_encoding: str = ""
    dead_letter_id: int | None = None
    root_id: str = ""
    parent_id: str = ""
    group_id: str = ""
    #: Set when the arguments could only be kept as text (``dlq.spool.write_capture``).
    raw_arguments: str | None = None


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
    return clean_attempts(getattr(request, ATTEMPTS_HEADER, None))


def attempts_with(request: Any, exc: BaseException | None, **overrides: Any) -> list[dict[str, Any]]:
    """The attempt list carried by ``request`` plus this attempt, bounded."""
    retries = int(getattr(request, "retries", 0) or 0)
    record = attempt_record(retries + 1, exc, getattr(request, "hostname", None), **overrides)
    return bounded([*previous_attempts(request), record])


def delivery_queue(delivery_info: Mapping[str, Any] | None) -> tuple[str, str]:
    """(queue, routing_key) of a delivery: the routing key on the default exchange is the queue."""
    info = delivery_info if isinstance(delivery_info, Mapping) else {}
    routing_key = clean_text(info.get("routing_key") or "", FIELD_LIMIT)
    return routing_key, routing_key


#: Headers of our own: the attempt history and the dead-letter link (kept in columns of
#: their own), the beat schedule marks (a requeue is not a scheduled tick). A requeue sends
#: every other custom header again.
INTERNAL_HEADER_PREFIX = "dlq_"


def request_headers(request: Any) -> dict[str, Any]:
    """The message's custom headers (what ``apply_async(headers=...)`` and other producers
    added), as Celery carries them to a retry; ours (``dlq_*``) aside."""
    headers = getattr(request, "headers", None)
    if not isinstance(headers, Mapping):
        return {}
    return {str(k): v for k, v in headers.items() if k not in (ATTEMPTS_HEADER, DEAD_LETTER_HEADER)}


def request_options(request: Any, task: Any = None) -> dict[str, Any]:
    """What a requeue needs to send the same message again, beyond name, arguments and
    headers: its priority, its own time limits (when they differ from the task's), and its
    place in a workflow (links, errbacks, chain, chord, group); plus eta/expires/exchange and
    the origin, kept for the record (a requeue does not reuse a past eta or expiry)."""
    delivery_info = getattr(request, "delivery_info", None)
    delivery_info = delivery_info if isinstance(delivery_info, Mapping) else {}
    options: dict[str, Any] = {
        "eta": getattr(request, "eta", None),
        "expires": getattr(request, "expires", None),
        "exchange": delivery_info.get("exchange"),
        "origin": getattr(request, "origin", None),
        "priority": delivery_info.get("priority") or None,  # 0 is the default: nothing to keep
        "link": getattr(request, "callbacks", None),
        "link_error": getattr(request, "errbacks", None),
        "chain": getattr(request, "chain", None),
        "chord": getattr(request, "chord", None),
        "group_index": getattr(request, "group_index", None),
        "shadow": getattr(request, "shadow", None),
    }
    timelimit = getattr(request, "timelimit", None)
    if isinstance(timelimit, (list, tuple)) and len(timelimit) == 2:
        hard, soft = timelimit
        if task is None or hard != getattr(task, "time_limit", None):
            options["time_limit"] = hard
        if task is None or soft != getattr(task, "soft_time_limit", None):
            options["soft_time_limit"] = soft
    return {k: v for k, v in options.items() if v not in (None, [], {}, "")}


def workflow_ids(request: Any) -> tuple[str, str, str]:
    """(root_id, parent_id, group_id) of the request, cleaned."""
    return tuple(clean_text(getattr(request, name, None) or "", FIELD_LIMIT)  # type: ignore[return-value]
                 for name in ("root_id", "parent_id", "group"))


FIELD_LIMIT = 255
_UNSAFE_CHARS = re.compile(r"[\x00\ud800-\udfff]")


def clean_text(value: Any, limit: int | None = None) -> str:
    """A value made fit for a Postgres text column, which refuses NUL and lone surrogates:
    a string, those characters written as visible ``\\uXXXX``, at most ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    if "\x00" in text or (not text.isascii() and _UNSAFE_CHARS.search(text)):
        text = _UNSAFE_CHARS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text if limit is None else text[:limit]


def text_is_unsafe(text: str) -> bool:
    return "\x00" in text or (not text.isascii() and _UNSAFE_CHARS.search(text) is not None)


def clean_attempts(value: Any) -> list[dict[str, Any]]:
    """An attempt history as a foreign producer may send it (any JSON in the header), made
    into the shape we store: dicts with a number, a parseable time, and bounded strings.
    Entries that are not objects are dropped."""
    if not isinstance(value, list):
        return []
    cleaned = []
    for item in value[-(KEEP_FIRST + KEEP_LAST) * 2:]:
        if not isinstance(item, Mapping):
            continue
        number = item.get("number")
        at = item.get("at")
        cleaned.append({
            "number": number if isinstance(number, int) and not isinstance(number, bool) and 0 <= number < 2**31 else 0,
            "at": at if isinstance(at, str) and parse_time(at) is not None else now_iso(),
            "exception_type": clean_text(item.get("exception_type") or "", FIELD_LIMIT),
            "message": clean_text(item.get("message") or "", MESSAGE_LIMIT),
            "worker": clean_text(item.get("worker") or "", FIELD_LIMIT),
        })
    return bounded(cleaned)


def parse_time(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text[:64])
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None and 1970 <= parsed.year <= 9999 else None


# --- The hand-over to the domain (named by settings) -----------------------------------------

class FailureHandler(Protocol):
    """Records a failure for good (the dead-letter capture); returns where it went."""

    def __call__(self, failure: CapturedFailure, /) -> str: ...


class RequeuedSuccessHandler(Protocol):
    """Resolves the dead letter whose requeued run succeeded; returns where the change went."""

    def __call__(self, *, dead_letter_id: int, task_id: str) -> str: ...


@cache
def _handler(path: str) -> object:
    return import_string(path)


def failure_handler() -> FailureHandler:
    """The callable ``TASK_FAILURE_HANDLER`` names (default ``dlq.spool.capture_or_spool``).

    The runtime sits below the domain: it names the domain's entry point in a setting, as
    Celery's ``worker_consumer`` and ``result_backend`` settings do, instead of importing it.
    """
    handler: FailureHandler = _handler(settings.TASK_FAILURE_HANDLER)  # type: ignore[assignment]
    return handler


def requeued_run_succeeded(*, dead_letter_id: int, task_id: str) -> str:
    """Hand a requeued run's success to ``TASK_REQUEUED_SUCCESS_HANDLER``
    (default ``dlq.spool.resolve_or_spool``)."""
    handler: RequeuedSuccessHandler = _handler(settings.TASK_REQUEUED_SUCCESS_HANDLER)  # type: ignore[assignment]
    return handler(dead_letter_id=dead_letter_id, task_id=task_id)


def capture_failure(task: Task[Any, Any], exc: BaseException, task_id: str, args: Any, kwargs: Any,
                    einfo: ExceptionInfo | None, *, reason: str, request: Any = None,
                    attempts: list[dict[str, Any]] | None = None) -> str:
    """Build the dead letter of ``task``'s request (default: the current one) and write it,
    or spool it when Postgres is down. Returns where it went (``db``, ``redis``, ``file``)."""
    request = task.request if request is None else request
    queue, routing_key = delivery_queue(getattr(request, "delivery_info", None))
    dead_letter_id = getattr(request, DEAD_LETTER_HEADER, None)
    root_id, parent_id, group_id = workflow_ids(request)
    failure = CapturedFailure(
        task_id=task_id,
        task_name=task.name,
        reason=reason,
        exception_type=qualified_name(type(exc)),
        exception_message=str(exc),
        traceback=str(einfo.traceback) if einfo is not None else "",
        queue=queue,
        routing_key=routing_key,
        args=list(args) if isinstance(args, (list, tuple)) else None,
        kwargs=dict(kwargs) if isinstance(kwargs, dict) else None,
        headers=request_headers(request),
        options=request_options(request, task),
        attempts=attempts if attempts is not None else attempts_with(request, exc),
        retries=int(getattr(request, "retries", 0) or 0),
        dead_letter_id=int_or_none(dead_letter_id),
        root_id=root_id,
        parent_id=parent_id,
        group_id=group_id,
    )
    return failure_handler()(failure)


def int_or_none(value: Any) -> int | None:
    """The dead-letter link of a requeued run (a header any producer could set)."""
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
