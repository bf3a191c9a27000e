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

The first message of each (task, queue, extra header names) is built exactly that way; the
rest are rendered from a JSON template cut out of it (``_Template``), used only when
rendering the first message's own values reproduces its envelope byte for byte. Argument
reprs of flat JSON values are built directly (``flat_repr``, checked against ``saferepr`` in
the tests), anything else goes through ``saferepr``. Each chunk is one multi-value ``LPUSH``
per queue in one pipeline; ``publish_context()`` keeps the producer and Redis client open
across chunks (a redrive job's whole run).

A stock worker cannot tell these messages from ``apply_async``'s: ``tests/dlq/test_publish.py``
compares the two field by field (only ``delivery_tag`` and the per-message ids differ) and
runs one through a real worker.

Differences from ``send_task``, on purpose:
- no ``task-sent`` event and no ``before_task_publish``/``after_task_publish`` signals per
  message (nothing in this project listens to them; workers still send ``task-received``
  and the following events, so Flower sees the tasks once they are consumed);
- a pipeline is not retried by redis-py: a failed batch raises, and the caller's resume
  logic (``dlq.services.already_published``) decides what reached the broker.

Anything unusual (a non-Redis broker, a message with options of its own such as an ETA, a
task with a priority, exchange, routing key, expiry, compression or another serializer in
its options) takes the ordinary ``send_task`` path, message by message.
"""
from __future__ import annotations

import base64
import copy
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CHUNK = 1000
# Task execution options that the fast path reproduces; any other non-None option sends
# the message through ``send_task`` instead.
_FAST_OPTIONS = {"queue", "serializer", "time_limit", "soft_time_limit"}


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


def broker_is_redis(app: Any = None) -> bool:
    if app is None:
        from taskplatform.celery import app
    return str(app.conf.broker_url or "").startswith(("redis://", "rediss://"))


def publish_tasks(tasks: Sequence[OutgoingTask], *, app: Any = None, chunk: int = DEFAULT_CHUNK,
                  fast: bool | None = None, context: Publisher | None = None) -> int:
    """Publish ``tasks``; returns how many were published. ``fast=None`` picks the pipelined
    path on a Redis broker and ``send_task`` otherwise. ``context`` (from
    :func:`publish_context`) reuses an open producer and connection across calls."""
    if not tasks:
        return 0
    if context is not None:
        return context.publish(tasks, chunk=chunk)
    with publish_context(app=app, fast=fast) as publisher:
        return publisher.publish(tasks, chunk=chunk)


@contextmanager
def publish_context(*, app: Any = None, fast: bool | None = None) -> Iterator[Publisher]:
    """One producer (and, on the fast path, one Redis client) held for several
    :func:`publish_tasks` calls: a redrive job publishes batch after batch on it."""
    if app is None:
        from taskplatform.celery import app
    if fast is None:
        fast = broker_is_redis(app)
    with app.producer_or_acquire() as producer:
        if not fast:
            yield Publisher(app, producer, None)
            return
        with producer.channel.conn_or_acquire() as client:
            yield Publisher(app, producer, client)


class Publisher:
    """Publishes on one producer; ``client`` is the Redis client of the fast path (None: ``send_task``)."""

    def __init__(self, app: Any, producer: Any, client: Any) -> None:
        self.app, self.producer, self.client = app, producer, client
        self.plans: dict[tuple[str, str | None], _Plan | None] = {}
        self.templates: dict[tuple[Any, ...], _Template | None] = {}

    def publish(self, tasks: Sequence[OutgoingTask], *, chunk: int = DEFAULT_CHUNK) -> int:
        app, producer = self.app, self.producer
        if self.client is None:
            for item in tasks:
                _send_task(app, producer, item)
            return len(tasks)
        channel = producer.channel
        parent = app.current_worker_task  # inside a task (a redrive job), send_task links to it
        links = (parent.request.root_id or parent.request.id, parent.request.id) if parent else None
        templates = self.templates
        batch: dict[str, list[str]] = {}
        buffered = 0
        tags: list[str] = []
        for index, item in enumerate(tasks):
            key = (item.name, item.queue)
            if key not in self.plans:
                self.plans[key] = _plan(app, producer, item)
            plan = self.plans[key]
            if plan is None or item.options:
                if buffered:
                    self._flush(batch)
                    buffered = 0
                _send_task(app, producer, item)
                continue
            if not tags:  # as many delivery tags as this call can still use (a relay batch is often 1 row)
                tags = uuid4_batch(min(chunk, len(tasks) - index))
            # The task name is part of the template (a literal in it): two tasks with the same
            # routing plan must not share one.
            tkey = (item.name, plan, tuple(item.headers))
            template = templates.get(tkey, _UNSET)
            if template is _UNSET or template is None:  # the first of its kind, or no usable template
                redis_key, message = build_message(app, channel, plan, item)
                if template is _UNSET:
                    templates[tkey] = _Template.verified(app, plan, item, message, redis_key, _links(item, links))
                envelope = _json_dumps(message)
            else:
                redis_key, envelope = template.key, template.render(item, _links(item, links), tags.pop())
            batch.setdefault(redis_key, []).append(envelope)
            buffered += 1
            if buffered >= chunk:
                self._flush(batch)
                buffered = 0
        if buffered:
            self._flush(batch)
        return len(tasks)

    def _flush(self, batch: dict[str, list[str]]) -> None:
        """One multi-value ``LPUSH`` per queue: ``LPUSH k a b`` leaves the list as two
        ``LPUSH``es would (``b`` at the head), so workers (``BRPOP``) still see ``a`` first."""
        pipe = self.client.pipeline(transaction=False)
        for redis_key, envelopes in batch.items():
            pipe.lpush(redis_key, *envelopes)
        pipe.execute()
        batch.clear()


def uuid4_batch(n: int) -> list[str]:
    """``n`` random (version 4) UUIDs as strings, from one ``os.urandom`` call: what
    ``str(uuid.uuid4())`` gives, at a fraction of the cost per id."""
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = bytes((b & 0x0F) | 0x40 for b in raw[6::16])  # version 4
    raw[8::16] = bytes((b & 0x3F) | 0x80 for b in raw[8::16])  # RFC 4122 variant
    h = raw.hex()
    return [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-{h[i + 12:i + 16]}-{h[i + 16:i + 20]}-{h[i + 20:i + 32]}"
            for i in range(0, 32 * n, 32)]


def _ignore_result(app: Any, name: str) -> bool | None:
    """The ``ignore_result`` header ``Task.apply_async`` writes (``send_task`` alone writes None)."""
    task_type = app._tasks.get(name)
    return None if task_type is None else task_type.ignore_result


def _links(item: OutgoingTask, parent: tuple[str, str] | None) -> tuple[str, str] | None:
    """(root_id, parent_id) of ``item``: its own when it has them, else the publishing task's."""
    if item.parent_id:
        return item.root_id or item.parent_id, item.parent_id
    return parent


def _send_task(app: Any, producer: Any, item: OutgoingTask) -> None:
    options = {"ignore_result": _ignore_result(app, item.name), **item.options}
    app.send_task(item.name, args=list(item.args), kwargs=dict(item.kwargs), task_id=item.task_id,
                  queue=item.queue or None, headers=dict(item.headers), retries=0, producer=producer,
                  root_id=item.root_id, parent_id=item.parent_id, **options)


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
    varies per message (ids, argument reprs, body) is filled in by ``build_message``."""
    cached = _TEMPLATES.get(plan)
    if cached is None:
        headers, properties, body, _ = app.amqp.as_task_v2(
            "template", "template", [], {}, retries=0, reply_to=app.thread_oid, time_limit=plan.time_limit,
            soft_time_limit=plan.soft_time_limit, ignore_result=plan.ignore_result,
        )
        cached = _TEMPLATES[plan] = (headers, properties, body[2], app.conf.task_repr_maxlevels)
    return cached


_TEMPLATES: dict[_Plan, tuple[dict[str, Any], dict[str, Any], dict[str, Any], int]] = {}


def build_message(app: Any, channel: Any, plan: _Plan, item: OutgoingTask) -> tuple[str, dict[str, Any]]:
    """The Redis list key and the message dict kombu's Redis channel would JSON-encode, built
    the way ``send_task`` builds it (``as_task_v2``'s fields, kombu's serializer, the channel's
    ``prepare_message`` and ``basic_publish`` augmentation)."""
    from celery.utils.saferepr import saferepr
    from kombu.serialization import dumps as serialize

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
    links = _links(item, (parent.request.root_id or parent.request.id, parent.request.id) if parent else None)
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


def _json_dumps(value: Any) -> str:
    from kombu.utils.json import dumps

    return dumps(value)


_UNSET: Any = object()
_SENTINEL = re.compile(r'"\\u0001(\d+)\\u0001"')
_SCALAR_REPR: dict[type, Any] = {
    # What celery.utils.saferepr writes for each JSON scalar when nothing is truncated:
    # numbers (bool included) as str(), None as repr(), text quoted with only ' escaped.
    str: lambda v: "'" + v.replace("'", "\\'") + "'",
    int: str, float: str, bool: str, type(None): repr,
}


def flat_repr(value: Any, maxsize: int) -> str | None:
    """``saferepr(value, maxsize)`` for a list, tuple or str-keyed dict of JSON scalars, built
    directly; None when ``value`` is anything else or its repr would reach ``maxsize`` (where
    saferepr starts truncating). ``tests/dlq/test_publish.py`` checks it against saferepr on
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


class _Template:
    """The JSON envelope of one (plan, extra header names) with slots for what differs per
    message (body, ids, argument reprs, extra header values, delivery tag). It is cut out of a
    message built the normal way and used only if rendering that same message's values gives
    back the normal envelope byte for byte (``verified``); otherwise every message of the
    kind is built the normal way."""

    SLOTS = ("body", "id", "root_id", "parent_id", "argsrepr", "kwargsrepr", "correlation_id", "delivery_tag")

    def __init__(self, app: Any, plan: _Plan, key: str, pieces: list[str | None], order: list[int],
                 header_names: tuple[str, ...], embed: dict[str, Any]) -> None:
        from kombu.utils.json import JSONEncoder

        self.key, self.pieces, self.order, self.header_names, self.embed = key, pieces, order, header_names, embed
        self.encode_body = JSONEncoder().encode  # what kombu's json.dumps(value) does, minus building an encoder per call
        self.argsrepr_maxsize, self.kwargsrepr_maxsize = app.amqp.argsrepr_maxsize, app.amqp.kwargsrepr_maxsize
        maxlevels = app.conf.task_repr_maxlevels
        self.maxlevels = maxlevels
        self.flat_ok = not maxlevels or maxlevels >= 1

    @classmethod
    def verified(cls, app: Any, plan: _Plan, item: OutgoingTask, message: dict[str, Any], key: str,
                 links: tuple[str, str] | None) -> _Template | None:
        properties = message["properties"]
        names = tuple(item.headers)
        if (plan.serializer != "json" or message["content-type"] != "application/json"
                or message["content-encoding"] != "utf-8" or properties.get("body_encoding") != "base64"
                or set(names) & {*cls.SLOTS, "task", "lang"} or "delivery_tag" not in properties):
            return None
        marked = copy.deepcopy(message)
        slots = [*cls.SLOTS, *names]
        mark = {name: f"\x01{i}\x01" for i, name in enumerate(slots)}
        marked["body"] = mark["body"]
        for name in ("id", "root_id", "parent_id", "argsrepr", "kwargsrepr", *names):
            marked["headers"][name] = mark[name]
        marked["properties"]["correlation_id"] = mark["correlation_id"]
        marked["properties"]["delivery_tag"] = mark["delivery_tag"]
        split = _SENTINEL.split(_json_dumps(marked))
        order = [int(i) for i in split[1::2]]
        if sorted(order) != list(range(len(slots))):
            return None
        pieces: list[str | None] = []
        for i, literal in enumerate(split[0::2]):
            pieces.append(literal)
            if i < len(order):
                pieces.append(None)
        from kombu.serialization import loads

        embed = loads(base64.b64decode(message["body"]), message["content-type"], message["content-encoding"])[2]
        template = cls(app, plan, key, pieces, order, names, embed)
        rendered = template.render(item, links, properties["delivery_tag"])
        return template if rendered == _json_dumps(message) else None

    def render(self, item: OutgoingTask, links: tuple[str, str] | None, delivery_tag: str) -> str:
        from json.encoder import encode_basestring_ascii as quote

        from celery.utils.saferepr import saferepr

        args, kwargs = list(item.args) or (), dict(item.kwargs)
        argsrepr = flat_repr(args, self.argsrepr_maxsize) if self.flat_ok else None
        if argsrepr is None:
            argsrepr = saferepr(args, self.argsrepr_maxsize, maxlevels=self.maxlevels)
        kwargsrepr = flat_repr(kwargs, self.kwargsrepr_maxsize) if self.flat_ok else None
        if kwargsrepr is None:
            kwargsrepr = saferepr(kwargs, self.kwargsrepr_maxsize, maxlevels=self.maxlevels)
        body = base64.b64encode(self.encode_body((args, kwargs, self.embed)).encode()).decode()
        task_id = quote(item.task_id)
        root_id, parent_id = (quote(links[0]), quote(links[1])) if links else (task_id, "null")
        values = [f'"{body}"', task_id, root_id, parent_id, quote(argsrepr), quote(kwargsrepr), task_id,
                  f'"{delivery_tag}"']
        values += [_json_value(item.headers[name]) for name in self.header_names]
        pieces = self.pieces[:]
        for n, slot in enumerate(self.order):
            pieces[2 * n + 1] = values[slot]
        return "".join(pieces)  # type: ignore[arg-type]


def _json_value(value: Any) -> str:
    if type(value) is int:
        return int.__repr__(value)
    return _json_dumps(value)
