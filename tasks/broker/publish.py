"""Batched publishing of ready-made Celery messages (the bulk redrive fast path).

``apply_async``/``send_task`` costs one broker round trip per message plus a ``task-sent``
event (another round trip), routing and signal dispatch: about 1,000 messages/s from one
process against a local Redis. A bulk redrive of 100k dead letters needs an order of
magnitude more, so on a Redis broker :func:`publish_tasks` builds each message exactly as
Celery and kombu would and sends them in pipelined ``LPUSH`` batches:

1. the first message of each kind is built exactly as Celery and kombu would
   (``tasks.broker.message``: ``as_task_v2``, kombu's serializer, the channel's own
   ``prepare_message`` and ``basic_publish`` augmentation);
2. the JSON envelope kombu's Redis transport writes is ``LPUSH``-ed to the same key
   (``queue`` or ``queue\\x06\\x16<priority>``), in a non-transactional pipeline.

The first message of each (task, queue, extra header names) is built exactly that way; the
rest are rendered from a JSON template cut out of it (``_Template``), used only when
rendering the first message's own values reproduces its envelope byte for byte. Argument
reprs of flat JSON values are built directly (``flat_repr``, checked against ``saferepr`` in
the tests), anything else goes through ``saferepr``. Each chunk is one multi-value ``LPUSH``
per queue in one pipeline; ``publish_context()`` keeps the producer and Redis client open
across chunks (a redrive job's whole run).

A stock worker cannot tell these messages from ``apply_async``'s: ``tests/tasks/broker/test_publish.py``
compares the two field by field (only ``delivery_tag`` and the per-message ids differ) and
runs one through a real worker.

Differences from ``send_task``, on purpose:
- no ``task-sent`` event and no ``before_task_publish``/``after_task_publish`` signals per
  message (nothing in this project listens to them; workers still send ``task-received``
  and the following events, so Flower sees the tasks once they are consumed);
- a pipeline is not retried by redis-py: a failed batch raises, and the caller's resume
  logic (``dlq.services.redrive_engine.already_published``) decides what reached the broker.

Anything unusual (a non-Redis broker, a message with options of its own such as an ETA, a
task with a priority, exchange, routing key, expiry, compression or another serializer in
its options) takes the ordinary ``send_task`` path, message by message.
"""
from __future__ import annotations

import base64
import copy
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from json.encoder import encode_basestring_ascii as quote
from typing import Any, Final, cast

from celery import Celery, current_app
from celery.utils.saferepr import saferepr
from kombu import Producer
from kombu.serialization import loads
from kombu.utils.json import JSONEncoder
from kombu.utils.json import dumps as json_dumps
from redis import Redis

from tasks.broker.message import (
    Links,
    OutgoingTask,
    Plan,
    RedisChannel,
    build_message,
    flat_repr,
    ignore_result_of,
    links_of,
    plan_for,
    uuid4_batch,
    worker_links,
)

# OutgoingTask is part of this module's API (callers build the messages they publish).
__all__ = ["DEFAULT_CHUNK", "OutgoingTask", "Publisher", "broker_is_redis", "publish_context", "publish_tasks"]

DEFAULT_CHUNK = 1000


def broker_is_redis(app: Celery | None = None) -> bool:
    return str((current_app if app is None else app).conf.broker_url or "").startswith(("redis://", "rediss://"))


def publish_tasks(tasks: Sequence[OutgoingTask], *, app: Celery | None = None, chunk: int = DEFAULT_CHUNK,
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
def publish_context(*, app: Celery | None = None, fast: bool | None = None) -> Iterator[Publisher]:
    """One producer (and, on the fast path, one Redis client) held for several
    :func:`publish_tasks` calls: a redrive job publishes batch after batch on it."""
    app = current_app if app is None else app
    if fast is None:
        fast = broker_is_redis(app)
    with app.producer_or_acquire() as producer:
        if not fast:
            yield Publisher(app, producer, None)
            return
        with cast(RedisChannel, producer.channel).conn_or_acquire() as client:
            yield Publisher(app, producer, client)


_UNSET: Final = object()  # a kind of message not seen yet (None: seen, no usable template)


class Publisher:
    """Publishes on one producer; ``client`` is the Redis client of the fast path (None: ``send_task``)."""

    def __init__(self, app: Celery, producer: Producer, client: Redis | None) -> None:
        self.app, self.producer, self.client = app, producer, client
        self.plans: dict[tuple[str, str | None], Plan | None] = {}
        self.templates: dict[tuple[str, Plan, tuple[str, ...]], _Template | None] = {}

    def publish(self, tasks: Sequence[OutgoingTask], *, chunk: int = DEFAULT_CHUNK) -> int:
        app, producer, client = self.app, self.producer, self.client
        if client is None:
            for item in tasks:
                _send_task(app, producer, item)
            return len(tasks)
        channel = cast(RedisChannel, producer.channel)
        links = worker_links(app)  # inside a task (a redrive job), send_task links to it
        templates = self.templates
        batch: dict[str, list[str]] = {}
        buffered = 0
        tags: list[str] = []
        for index, item in enumerate(tasks):
            key = (item.name, item.queue)
            if key not in self.plans:
                self.plans[key] = plan_for(app, producer, item)
            plan = self.plans[key]
            if plan is None or item.options:
                if buffered:
                    _flush(client, batch)
                    buffered = 0
                _send_task(app, producer, item)
                continue
            if not tags:  # as many delivery tags as this call can still use (a relay batch is often 1 row)
                tags = uuid4_batch(min(chunk, len(tasks) - index))
            # The task name is part of the template (a literal in it): two tasks with the same
            # routing plan must not share one.
            tkey = (item.name, plan, tuple(item.headers))
            template = templates.get(tkey, _UNSET)
            if isinstance(template, _Template):
                redis_key, envelope = template.key, template.render(item, links_of(item, links), tags.pop())
            else:  # the first of its kind, or no usable template
                redis_key, message = build_message(app, channel, plan, item)
                if template is _UNSET:
                    templates[tkey] = _Template.verified(app, plan, item, message, redis_key, links_of(item, links))
                envelope = json_dumps(message)
            batch.setdefault(redis_key, []).append(envelope)
            buffered += 1
            if buffered >= chunk:
                _flush(client, batch)
                buffered = 0
        if buffered:
            _flush(client, batch)
        return len(tasks)


def _flush(client: Redis, batch: dict[str, list[str]]) -> None:
    """One multi-value ``LPUSH`` per queue: ``LPUSH k a b`` leaves the list as two
    ``LPUSH``es would (``b`` at the head), so workers (``BRPOP``) still see ``a`` first."""
    pipe = client.pipeline(transaction=False)
    for redis_key, envelopes in batch.items():
        pipe.lpush(redis_key, *envelopes)
    pipe.execute()
    batch.clear()


def _send_task(app: Celery, producer: Producer, item: OutgoingTask) -> None:
    options = {"ignore_result": ignore_result_of(app, item.name), **item.options}
    app.send_task(item.name, args=list(item.args), kwargs=dict(item.kwargs), task_id=item.task_id,
                  queue=item.queue or None, headers=dict(item.headers), retries=0, producer=producer,
                  root_id=item.root_id, parent_id=item.parent_id, **options)


_SENTINEL = re.compile(r'"\\u0001(\d+)\\u0001"')


class _Template:
    """The JSON envelope of one (plan, extra header names) with slots for what differs per
    message (body, ids, argument reprs, extra header values, delivery tag). It is cut out of a
    message built the normal way and used only if rendering that same message's values gives
    back the normal envelope byte for byte (``verified``); otherwise every message of the
    kind is built the normal way."""

    SLOTS = ("body", "id", "root_id", "parent_id", "argsrepr", "kwargsrepr", "correlation_id", "delivery_tag")

    def __init__(self, app: Celery, plan: Plan, key: str, pieces: list[str], order: list[int],
                 header_names: tuple[str, ...], embed: dict[str, Any]) -> None:
        # ``pieces``: the literal text around the slots, with "" where slot ``order[n]`` goes (2n + 1).
        self.key, self.pieces, self.order, self.header_names, self.embed = key, pieces, order, header_names, embed
        self.encode_body = JSONEncoder().encode  # what kombu's json.dumps(value) does, minus building an encoder per call
        self.argsrepr_maxsize, self.kwargsrepr_maxsize = app.amqp.argsrepr_maxsize, app.amqp.kwargsrepr_maxsize
        maxlevels: int = app.conf.task_repr_maxlevels
        self.maxlevels = maxlevels
        self.flat_ok = not maxlevels or maxlevels >= 1

    @classmethod
    def verified(cls, app: Celery, plan: Plan, item: OutgoingTask, message: dict[str, Any], key: str,
                 links: Links | None) -> _Template | None:
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
        split = _SENTINEL.split(json_dumps(marked))
        order = [int(i) for i in split[1::2]]
        if sorted(order) != list(range(len(slots))):
            return None
        pieces: list[str] = []
        for i, literal in enumerate(split[0::2]):
            pieces.append(literal)
            if i < len(order):
                pieces.append("")
        embed = loads(base64.b64decode(message["body"]), message["content-type"], message["content-encoding"])[2]
        template = cls(app, plan, key, pieces, order, names, embed)
        rendered = template.render(item, links, properties["delivery_tag"])
        return template if rendered == json_dumps(message) else None

    def render(self, item: OutgoingTask, links: Links | None, delivery_tag: str) -> str:
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
        return "".join(pieces)


def _json_value(value: Any) -> str:
    if type(value) is int:
        return int.__repr__(value)
    return json_dumps(value)
