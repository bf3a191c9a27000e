"""``CapturingConsumer``: the worker consumer (``worker_consumer`` setting) that records the
messages Celery drops before any task code runs.

Celery rejects or acks these messages itself, and for an undecodable body it fires no
signal at all (``Consumer.on_decode_error`` only logs and acks); ``task_unknown`` and
``task_rejected`` fire only *after* the message is gone. Here the dead letter is written
(or spooled) first, then Celery's own handling runs. If it can be neither written nor
spooled, the message is left unacked so that the broker delivers it again.

- an undecodable body, or a content type we do not accept (pickle: never deserialised)
  → ``decode_error``, with the raw body (base64 when it is not text);
- a task name this worker does not know → ``unregistered_task``.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
from typing import Any

from celery.app.task import Context
from celery.worker.consumer import Consumer
from kombu.message import Message

from dlq.spool import capture_or_spool
from tasks.failures import (
    CapturedFailure,
    DeathReason,
    attempt_record,
    delivery_queue,
    qualified_name,
    request_headers,
    request_options,
    workflow_ids,
)

logger = logging.getLogger("dlq.consumer")


def raw_body_text(body: Any) -> tuple[str, str]:
    """(text, how): the body as text when it is valid UTF-8 without NUL, else base64."""
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    body = bytes(body or b"")
    try:
        text = body.decode("utf-8")
        if "\x00" not in text:
            return text, "utf-8"
    except UnicodeDecodeError:
        pass
    return base64.b64encode(body).decode("ascii"), "base64"


def _json_safe(value: Any) -> Any:
    """Header values a transport may hand over in types JSON lacks (bytes, dates), as text."""
    try:
        return json.loads(json.dumps(value, default=str))
    except (ValueError, RecursionError):
        return {}


def failure_from_message(message: Message, exc: BaseException | None, reason: str,
                         hostname: str | None) -> CapturedFailure:
    headers = dict(message.headers) if isinstance(message.headers, dict) else {}
    body = message.body
    raw, how = raw_body_text(body)
    digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]
    task_id = str(headers.get("id") or f"body-{digest}")
    task_name = str(headers.get("task") or "")
    args = kwargs = None
    embed: dict[str, Any] = {}
    if reason == DeathReason.UNREGISTERED_TASK and message.content_type == "application/json":
        try:
            decoded = json.loads(raw if how == "utf-8" else "")
            if isinstance(decoded, list) and len(decoded) >= 2 and isinstance(decoded[0], list) \
                    and isinstance(decoded[1], dict):
                args, kwargs = decoded[0], decoded[1]
                if len(decoded) > 2 and isinstance(decoded[2], dict):
                    embed = {k: decoded[2].get(k) for k in ("callbacks", "errbacks", "chain", "chord")}
        except (ValueError, RecursionError):
            pass
    delivery = message.delivery_info if isinstance(message.delivery_info, dict) else {}
    # The request a worker would have run, as Celery builds it: its custom headers, workflow
    # ids and options are read the same way as for a task that ran.
    try:
        request = Context({**headers, **embed, "delivery_info": delivery})
    except Exception:  # headers Celery itself cannot read (a timelimit of the wrong shape, ...)
        request = Context({"delivery_info": delivery})
    queue, routing_key = delivery_queue(delivery)
    root_id, parent_id, group_id = workflow_ids(request)
    exc_type = qualified_name(type(exc)) if exc is not None else "UnknownMessage"
    exc_message = str(exc) if exc is not None else "message without a task header"
    return CapturedFailure(
        task_id=task_id,
        task_name=task_name,
        reason=reason,
        exception_type=exc_type,
        exception_message=exc_message,
        queue=queue,
        routing_key=routing_key,
        args=args,
        kwargs=kwargs,
        headers=_json_safe(request_headers(request)),
        options=_json_safe({**request_options(request), "raw_body_encoding": how}),
        attempts=[attempt_record(1, exc, hostname, exception_type=exc_type, message=exc_message)],
        raw_body=raw,
        content_type=str(message.content_type or ""),
        content_encoding=str(message.content_encoding or ""),
        root_id=root_id,
        parent_id=parent_id,
        group_id=group_id,
    )


class CapturingConsumer(Consumer):
    def _capture(self, message: Message, exc: BaseException | None, reason: str) -> bool:
        try:
            failure = failure_from_message(message, exc, reason, self.hostname)
            capture_or_spool(failure)
            return True
        except Exception:
            logger.critical("dead_letter.capture_impossible; leaving the message unacked", exc_info=True)
            return False

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        if self._capture(message, exc, DeathReason.DECODE_ERROR):
            super().on_decode_error(message, exc)

    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        # ContentDisallowed (e.g. pickle) and malformed task messages: never executed.
        if self._capture(message, exc, DeathReason.DECODE_ERROR):
            super().on_invalid_task(body, message, exc)

    def on_unknown_message(self, body: Any, message: Message) -> None:
        if self._capture(message, None, DeathReason.DECODE_ERROR):
            super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Message, exc: Exception) -> None:
        if self._capture(message, exc, DeathReason.UNREGISTERED_TASK):
            super().on_unknown_task(body, message, exc)
