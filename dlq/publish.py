"""Batched publishing of ready-made Celery messages (the bulk redrive fast path).

``apply_async``/``send_task`` costs one broker round trip per message plus a ``task-sent``
event (another round trip), routing and signal dispatch: about 1,000 messages/s from one
process against a local Redis. A bulk redrive of 100k dead letters needs an order of
magnitude more, so on a Redis broker :func:`publish_tasks` builds each message exactly as
Celery and kombu would and sends them in pipelined ``LPUSH`` batches:

1. ``app.amqp.as_task_v2(...)`` gives the protocol-2 headers, properties and body, with the
   same arguments ``Task.apply_async`` passes (routing via ``app.amqp.router``, the task's
   own execution options such as time limits and ``ignore_result``, ``reply_to =
   app.thread_oid``, parent/root ids when called from inside a task);
2. the body is serialized with kombu's serializer registry (``task_serializer``, JSON here);
3. the channel itself wraps it (``prepare_message``) and augments it the way
   ``basic_publish`` does (base64 body, ``delivery_info``, a fresh ``delivery_tag``);
4. the JSON envelope kombu's Redis transport writes is ``LPUSH``-ed to the same key
   (``queue`` or ``queue\\x06\\x16<priority>``), in a non-transactional pipeline.

A stock worker cannot tell these messages from ``apply_async``'s: ``tests/dlq/test_publish.py``
compares the two field by field (only ``delivery_tag`` and the per-message ids differ) and
runs one through a real worker.

Differences from ``send_task``, on purpose:
- no ``task-sent`` event and no ``before_task_publish``/``after_task_publish`` signals per
  message (nothing in this project listens to them; workers still send ``task-received``
  and the following events, so Flower sees the tasks once they are consumed);
- a pipeline is not retried by redis-py: a failed batch raises, and the caller's resume
  logic (``dlq.services.already_published``) decides what reached the broker.

Anything unusual (a non-Redis broker, a task with a priority, exchange, routing key,
expiry, compression or another serializer in its options) takes the ordinary ``send_task``
path, message by message.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CHUNK = 1000
# Task execution options that the fast path reproduces; any other non-None option sends
# the message through ``send_task`` instead.
_FAST_OPTIONS = {"queue", "serializer", "time_limit", "soft_time_limit"}


@dataclass(frozen=True)
class OutgoingTask:
    """One message to publish: what ``send_task(name, args, kwargs, task_id=..., queue=...,
    headers=..., retries=0)`` would send."""

    name: str
    args: Sequence[Any]
    kwargs: dict[str, Any]
    task_id: str
    queue: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)


def broker_is_redis(app: Any = None) -> bool:
    if app is None:
        from taskplatform.celery import app
    return str(app.conf.broker_url or "").startswith(("redis://", "rediss://"))


def publish_tasks(tasks: Sequence[OutgoingTask], *, app: Any = None, chunk: int = DEFAULT_CHUNK,
                  fast: bool | None = None) -> int:
    """Publish ``tasks``; returns how many were published. ``fast=None`` picks the pipelined
    path on a Redis broker and ``send_task`` otherwise."""
    if app is None:
        from taskplatform.celery import app
    if not tasks:
        return 0
    if fast is None:
        fast = broker_is_redis(app)
    with app.producer_or_acquire() as producer:
        if not fast:
            for item in tasks:
                _send_task(app, producer, item)
            return len(tasks)
        channel = producer.channel
        plans: dict[tuple[str, str | None], _Plan | None] = {}
        sent = 0
        with channel.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            buffered = 0
            for item in tasks:
                key = (item.name, item.queue)
                if key not in plans:
                    plans[key] = _plan(app, producer, item)
                plan = plans[key]
                if plan is None:
                    if buffered:
                        pipe.execute()
                        buffered = 0
                    _send_task(app, producer, item)
                else:
                    redis_key, envelope = build_envelope(app, channel, plan, item)
                    pipe.lpush(redis_key, envelope)
                    buffered += 1
                    if buffered >= chunk:
                        pipe.execute()
                        buffered = 0
                sent += 1
            if buffered:
                pipe.execute()
        return sent


def _ignore_result(app: Any, name: str) -> bool | None:
    """The ``ignore_result`` header ``Task.apply_async`` writes (``send_task`` alone writes None)."""
    task_type = app._tasks.get(name)
    return None if task_type is None else task_type.ignore_result


def _send_task(app: Any, producer: Any, item: OutgoingTask) -> None:
    app.send_task(item.name, args=list(item.args), kwargs=dict(item.kwargs), task_id=item.task_id,
                  queue=item.queue or None, headers=dict(item.headers), retries=0, producer=producer,
                  ignore_result=_ignore_result(app, item.name))


@dataclass(frozen=True)
class _Plan:
    """What ``send_task`` derives from the task name and queue alone, computed once."""

    qname: str
    delivery_mode: int
    serializer: str
    time_limit: Any
    soft_time_limit: Any
    ignore_result: bool | None


def _plan(app: Any, producer: Any, item: OutgoingTask) -> _Plan | None:
    """The routing and options ``send_task`` would use for ``item``, or None when the fast
    path cannot reproduce them exactly."""
    from kombu.common import Broadcast

    task_type = app._tasks.get(item.name)  # what send_task reads (not `app.tasks`, which finalizes)
    options: dict[str, Any] = {}
    if task_type is not None and hasattr(task_type, "_get_exec_options"):
        options = {k: v for k, v in task_type._get_exec_options().items() if v is not None}
    if item.queue:
        options["queue"] = item.queue
    if set(options) - _FAST_OPTIONS:
        return None
    time_limit, soft_time_limit = options.pop("time_limit", None), options.pop("soft_time_limit", None)
    routed = app.amqp.router.route(options, item.name, list(item.args), dict(item.kwargs), task_type)
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
    from kombu.entity import maybe_delivery_mode

    producer.maybe_declare(queue)  # what send_task's `declare=[queue]` does (cached per connection)
    return _Plan(qname=queue.name, delivery_mode=maybe_delivery_mode(delivery_mode), serializer=serializer,
                 time_limit=time_limit, soft_time_limit=soft_time_limit,
                 ignore_result=None if task_type is None else task_type.ignore_result)


def _template(app: Any, plan: _Plan) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], int]:
    """``as_task_v2``'s headers, properties and embed for this plan, computed once; what
    varies per message (ids, argument reprs, body) is filled in by ``build_envelope``."""
    cached = _TEMPLATES.get(plan)
    if cached is None:
        headers, properties, body, _ = app.amqp.as_task_v2(
            "template", "template", [], {}, retries=0, reply_to=app.thread_oid, time_limit=plan.time_limit,
            soft_time_limit=plan.soft_time_limit, ignore_result=plan.ignore_result,
        )
        cached = _TEMPLATES[plan] = (headers, properties, body[2], app.conf.task_repr_maxlevels)
    return cached


_TEMPLATES: dict[_Plan, tuple[dict[str, Any], dict[str, Any], dict[str, Any], int]] = {}


def build_envelope(app: Any, channel: Any, plan: _Plan, item: OutgoingTask) -> tuple[str, str]:
    """The Redis list key and the JSON envelope that ``send_task`` + kombu would LPUSH
    (``tests/dlq/test_publish.py`` compares the two field by field)."""
    from celery.utils.saferepr import saferepr
    from kombu.serialization import dumps as serialize
    from kombu.utils.json import dumps as json_dumps

    template_headers, template_properties, embed, maxlevels = _template(app, plan)
    # As as_task_v2: empty args become (), the root id defaults to the task id.
    args, kwargs = list(item.args) or (), dict(item.kwargs)
    headers = dict(template_headers)
    headers.update(
        task=item.name, id=item.task_id, root_id=item.task_id,
        argsrepr=saferepr(args, app.amqp.argsrepr_maxsize, maxlevels=maxlevels),
        kwargsrepr=saferepr(kwargs, app.amqp.kwargsrepr_maxsize, maxlevels=maxlevels),
    )
    parent = app.current_worker_task  # inside a task (a redrive job), send_task links to it
    if parent:
        headers["root_id"] = parent.request.root_id or parent.request.id
        headers["parent_id"] = parent.request.id
    headers.update(item.headers)
    properties = dict(template_properties, correlation_id=item.task_id)
    content_type, content_encoding, payload = serialize((args, kwargs, dict(embed)), serializer=plan.serializer)
    properties["delivery_mode"] = plan.delivery_mode
    message = channel.prepare_message(payload, 0, content_type, content_encoding, headers, properties)
    channel._inplace_augment_message(message, "", plan.qname)
    redis_key = channel._q_for_pri(plan.qname, channel._get_message_priority(message, reverse=False))
    return redis_key, json_dumps(message)
