"""One task message built exactly as ``send_task`` builds it, for the batched publisher
(``tasks.broker.publish``).

1. ``app.amqp.as_task_v2(...)`` gives the protocol-2 headers, properties and body, with the
   same arguments ``Task.apply_async`` passes (routing via ``app.amqp.router``, the task's
   own execution options such as time limits and ``ignore_result``, ``reply_to =
   app.thread_oid``, parent/root ids when called from inside a task);
2. the body is serialized with kombu's serializer registry (``task_serializer``, JSON here);
3. the channel itself wraps it (``prepare_message``) and augments it the way
   ``basic_publish`` does (base64 body, ``delivery_info``, a fresh ``delivery_tag``);
4. the result is the JSON envelope kombu's Redis transport writes, and the key it is
   ``LPUSH``-ed to (``queue`` or ``queue\\x06\\x16<priority>``).

What ``send_task`` derives from the task name and queue alone is a :class:`Plan`, computed
once per (task, queue); :func:`plan_for` returns None when the fast path cannot reproduce
the routing exactly (the message then goes through ``send_task``). Argument reprs of flat
JSON values are built directly (:func:`flat_repr`, checked against ``saferepr`` in the
tests).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from celery import Celery, Task
from celery.utils.saferepr import saferepr
from kombu import Producer
from kombu.common import Broadcast
from kombu.entity import maybe_delivery_mode
from kombu.serialization import dumps as serialize
from redis import Redis

# Task execution options that the fast path reproduces; any other non-None option sends
# the message through ``send_task`` instead.
FAST_OPTIONS = {"queue", "serializer", "time_limit", "soft_time_limit"}


@dataclass(frozen=True)
class OutgoingTask:
    """One message to publish: what ``send_task(name, args, kwargs, task_id=..., queue=...,
    headers=..., root_id=..., parent_id=..., retries=0, **options)`` would send.

    ``root_id``/``parent_id`` default to the publishing task's (as ``send_task`` does inside a
    task); ``options`` (``eta``, ``expires``, ``priority``, ...) send the message through
    ``send_task`` rather than the fast path."""

    name: str
    args: Sequence[Any]
    kwargs: dict[str, Any]
    task_id: str
    queue: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    root_id: str | None = None
    parent_id: str | None = None


class RedisChannel(Protocol):
    """What the fast path uses of kombu's Redis channel (``kombu.transport.redis.Channel``;
    celery-types' stub of it lacks ``_q_for_pri``)."""

    def prepare_message(self, body: Any, priority: int | None = ..., content_type: str | None = ...,
                        content_encoding: str | None = ..., headers: dict[str, Any] | None = ...,
                        properties: dict[str, Any] | None = ...) -> dict[str, Any]: ...

    def _inplace_augment_message(self, message: dict[str, Any], exchange: str | None, routing_key: str) -> None: ...

    def _get_message_priority(self, message: dict[str, Any], reverse: bool = ...) -> int: ...

    def _q_for_pri(self, queue: str, pri: int) -> str: ...

    def conn_or_acquire(self, client: Redis | None = ...) -> AbstractContextManager[Redis]: ...


Links = tuple[str, str]  # (root_id, parent_id)


def worker_links(app: Celery) -> Links | None:
    """(root_id, parent_id) that ``send_task`` gives a message sent from inside a task (a
    redrive job); None outside one."""
    parent = app.current_worker_task
    if parent is None:
        return None
    task_id = cast(str, parent.request.id)  # a task being run always has its message's id
    return parent.request.root_id or task_id, task_id


def links_of(item: OutgoingTask, parent: Links | None) -> Links | None:
    """(root_id, parent_id) of ``item``: its own when it has them, else the publishing task's."""
    if item.parent_id:
        return item.root_id or item.parent_id, item.parent_id
    return parent


def ignore_result_of(app: Celery, name: str) -> bool | None:
    """The ``ignore_result`` header ``Task.apply_async`` writes (``send_task`` alone writes None)."""
    # What send_task reads (not `app.tasks`, which finalizes); `_tasks` is not in celery-types.
    task_type: Task[Any, Any] | None = app._tasks.get(name)  # type: ignore[attr-defined]
    return None if task_type is None else task_type.ignore_result


@dataclass(frozen=True)
class Plan:
    """What ``send_task`` derives from the task name and queue alone, computed once."""

    qname: str
    delivery_mode: int | None
    serializer: str
    time_limit: int | None
    soft_time_limit: int | None
    ignore_result: bool | None


def plan_for(app: Celery, producer: Producer, item: OutgoingTask) -> Plan | None:
    """The routing and options ``send_task`` would use for ``item``, or None when the fast
    path cannot reproduce them exactly."""
    # What send_task reads (not `app.tasks`, which finalizes); `_tasks` is not in celery-types.
    task_type: Task[Any, Any] | None = app._tasks.get(item.name)  # type: ignore[attr-defined]
    options: dict[str, Any] = {}
    if task_type is not None and hasattr(task_type, "_get_exec_options"):
        options = {k: v for k, v in task_type._get_exec_options().items() if v is not None}
    if item.queue:
        options["queue"] = item.queue
    if set(options) - FAST_OPTIONS:
        return None
    time_limit, soft_time_limit = options.pop("time_limit", None), options.pop("soft_time_limit", None)
    # As send_task: the args list it was given and the task instance (celery-types expects a
    # tuple and the task class).
    routed = app.amqp.router.route(options, item.name, list(item.args), dict(item.kwargs),  # type: ignore[arg-type]
                                   task_type)  # type: ignore[arg-type]
    queue = routed.get("queue")
    if set(routed) - {"queue", "serializer"} or queue is None or isinstance(queue, (str, Broadcast)):
        return None
    if queue.exchange is not None and queue.exchange.type != "direct":
        return None
    if queue.routing_key and queue.routing_key != queue.name:
        # send_task_message would publish to the anonymous exchange with routing key = the
        # queue name only for direct exchanges; keep the general case on the slow path.
        return None
    serializer = routed.get("serializer") or app.conf.task_serializer
    if app.conf.task_compression:
        return None
    delivery_mode = (queue.exchange.delivery_mode if queue.exchange is not None else None) \
        or app.conf.task_default_delivery_mode
    producer.maybe_declare(queue)  # what send_task's `declare=[queue]` does (cached per connection)
    return Plan(qname=queue.name, delivery_mode=maybe_delivery_mode(delivery_mode), serializer=serializer,
                time_limit=time_limit, soft_time_limit=soft_time_limit,
                ignore_result=None if task_type is None else task_type.ignore_result)


#: ``as_task_v2``'s headers, properties and embed for a plan, and ``task_repr_maxlevels``.
MessageTemplate = tuple[dict[str, Any], dict[str, Any], dict[str, Any], int]
_TEMPLATES: dict[Plan, MessageTemplate] = {}


def _template(app: Celery, plan: Plan) -> MessageTemplate:
    """``as_task_v2``'s headers, properties and embed for this plan, computed once; what
    varies per message (ids, argument reprs, body) is filled in by ``build_message``."""
    cached = _TEMPLATES.get(plan)
    if cached is None:
        headers, properties, body, _ = app.amqp.as_task_v2(
            "template", "template", (), {}, retries=0, reply_to=app.thread_oid,
            time_limit=plan.time_limit, soft_time_limit=plan.soft_time_limit,
            # None for a task this process does not know, as send_task writes it (celery-types: bool).
            ignore_result=plan.ignore_result,  # type: ignore[arg-type]
        )
        cached = _TEMPLATES[plan] = (headers, properties, body[2], app.conf.task_repr_maxlevels)
    return cached


def build_message(app: Celery, channel: RedisChannel, plan: Plan, item: OutgoingTask) -> tuple[str, dict[str, Any]]:
    """The Redis list key and the message dict kombu's Redis channel would JSON-encode, built
    the way ``send_task`` builds it (``as_task_v2``'s fields, kombu's serializer, the channel's
    ``prepare_message`` and ``basic_publish`` augmentation)."""
    template_headers, template_properties, embed, maxlevels = _template(app, plan)
    # As as_task_v2: empty args become (), the root id defaults to the task id.
    args, kwargs = list(item.args) or (), dict(item.kwargs)
    headers = dict(template_headers)
    headers.update(
        task=item.name, id=item.task_id, root_id=item.task_id,
        argsrepr=saferepr(args, app.amqp.argsrepr_maxsize, maxlevels=maxlevels),
        kwargsrepr=saferepr(kwargs, app.amqp.kwargsrepr_maxsize, maxlevels=maxlevels),
    )
    links = links_of(item, worker_links(app))
    if links:
        headers["root_id"], headers["parent_id"] = links
    headers.update(item.headers)
    properties = dict(template_properties, correlation_id=item.task_id)
    content_type, content_encoding, payload = serialize((args, kwargs, dict(embed)), serializer=plan.serializer)
    properties["delivery_mode"] = plan.delivery_mode
    message = channel.prepare_message(payload, 0, content_type, content_encoding, headers, properties)
    channel._inplace_augment_message(message, "", plan.qname)
    redis_key = channel._q_for_pri(plan.qname, channel._get_message_priority(message, reverse=False))
    return redis_key, message


_SCALAR_REPR: dict[type, Callable[[Any], str]] = {
    # What celery.utils.saferepr writes for each JSON scalar when nothing is truncated:
    # numbers (bool included) as str(), None as repr(), text quoted with only ' escaped.
    str: lambda v: "'" + v.replace("'", "\\'") + "'",
    int: str, float: str, bool: str, type(None): repr,
}


def flat_repr(value: Any, maxsize: int) -> str | None:
    """``saferepr(value, maxsize)`` for a list, tuple or str-keyed dict of JSON scalars, built
    directly; None when ``value`` is anything else or its repr would reach ``maxsize`` (where
    saferepr starts truncating). ``tests/tasks/broker/test_publish.py`` checks it against saferepr on
    generated values."""
    try:
        kind = type(value)
        if kind is dict:
            if not all(type(k) is str for k in value):
                return None
            text = "{" + ", ".join(f"{_SCALAR_REPR[str](k)}: {_SCALAR_REPR[type(v)](v)}"
                                   for k, v in value.items()) + "}"
        elif kind is list:
            text = "[" + ", ".join([_SCALAR_REPR[type(v)](v) for v in value]) + "]"
        elif kind is tuple:
            inner = ", ".join([_SCALAR_REPR[type(v)](v) for v in value])
            text = "(" + inner + (",)" if len(value) == 1 else ")")
        else:
            return None
    except (KeyError, ValueError):  # a nested container or another type; an int too long for str()
        return None
    return text if len(text) < maxsize else None


def uuid4_batch(n: int) -> list[str]:
    """``n`` random (version 4) UUIDs as strings, from one ``os.urandom`` call: what
    ``str(uuid.uuid4())`` gives, at a fraction of the cost per id (the delivery tags)."""
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = bytes((b & 0x0F) | 0x40 for b in raw[6::16])  # version 4
    raw[8::16] = bytes((b & 0x3F) | 0x80 for b in raw[8::16])  # RFC 4122 variant
    h = raw.hex()
    return [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-{h[i + 12:i + 16]}-{h[i + 16:i + 20]}-{h[i + 20:i + 32]}"
            for i in range(0, 32 * n, 32)]
