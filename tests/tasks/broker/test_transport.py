"""The Redis transport's atomic fetch (``tasks/broker/transport.py``), against a real Redis of
the test's own (the tests flush scripts and create ACL users).

The window it closes: kombu's ``BRPOP`` removes the message from the queue, and only the
consumer's next round trip records it in ``unacked``. A consumer that dies in between (SIGKILL,
cold shutdown, a broken connection) loses the message. ``test_a_consumer_gone_after_the_fetch``
reproduces that death deterministically: the fetch is sent, Redis answers, and the connection
is dropped before the reply is read. kombu's own transport loses the message there (the
control case); ours must leave it in ``unacked``, from where the visibility timeout restores it.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue
from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import Empty

from devtools.embedded import EmbeddedRedis
from tasks.broker import transport
from tests.faults import own_redis


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with own_redis(tmp_path_factory.mktemp("transport")) as rd:
        yield rd


@pytest.fixture
def r(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


def queue(name: str = "q") -> Queue:
    return Queue(name, Exchange(name), routing_key=name)


def connection(url: str, cls: type = transport.Transport, **options: Any) -> Connection:
    return Connection(url, transport=cls, transport_options={"visibility_timeout": 1, **options})


def publish(url: str, q: Queue, body: Any, **kwargs: Any) -> None:
    with Connection(url) as conn:
        conn.Producer().publish(body, exchange=q.exchange, routing_key=q.routing_key, declare=[q], **kwargs)


def drain_until(conn: Connection, done: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        try:
            conn.drain_events(timeout=0.5)
        except TimeoutError:
            pass


def test_fetch_records_the_message_in_unacked_exactly_as_kombu_does(r: redis.Redis,
                                                                     redis_server: EmbeddedRedis) -> None:
    q = queue()
    bodies = [{"n": 1, "empty_list": [], "empty_dict": {}, "text": "héllo \"quoted\" / \\ \u2603"},
              {"n": 2, "nested": [[[]]], "big": 2**53 + 1}]
    for body in bodies:
        publish(redis_server.url, q, body)
    seen: list[tuple[Any, Any]] = []
    with connection(redis_server.url) as conn:
        def on_message(body: Any, message: Any) -> None:
            stored = r.hget("unacked", message.delivery_tag)
            assert stored is not None, "the message reached the consumer before its unacked record"
            # What kombu's QoS.append writes: dumps([message._raw, exchange, routing_key]).
            assert json.loads(stored) == [message._raw, "q", "q"]
            assert r.zscore("unacked_index", message.delivery_tag) is not None
            seen.append((body, message))

        with conn.Consumer([q], callbacks=[on_message]):
            while len(seen) < 2:
                conn.drain_events(timeout=5)
            assert [body for body, _ in seen] == bodies
            assert r.llen("q") == 0
            assert r.hlen("unacked") == 2
            seen[0][1].ack()
            assert r.hlen("unacked") == 1 and r.zcard("unacked_index") == 1
            # A reject with requeue restores from our record, as from kombu's.
            seen[1][1].reject(requeue=True)
            assert r.hlen("unacked") == 0
            restored = json.loads(r.lindex("q", 0))
            assert restored["properties"]["delivery_tag"] == seen[1][1].delivery_tag
            assert restored["properties"]["delivery_info"]["redelivered"] is True


@pytest.mark.parametrize("cls, loses", [(transport.Transport, False), (kombu_redis.Transport, True)],
                         ids=["atomic", "kombu-control"])
def test_a_consumer_gone_after_the_fetch(r: redis.Redis, redis_server: EmbeddedRedis, cls: type,
                                         loses: bool) -> None:
    q = queue()
    publish(redis_server.url, q, {"n": 1})
    with connection(redis_server.url, cls) as conn:
        with conn.Consumer([q], callbacks=[lambda body, message: None]):
            channel = conn.default_channel
            r.script_load(transport.FETCH_SCRIPT)
            conn.transport.cycle._register_BRPOP(channel)  # what the worker's event loop sends
            deadline = time.monotonic() + 5
            while r.llen("q") and time.monotonic() < deadline:
                time.sleep(0.01)
            assert r.llen("q") == 0, "Redis did not run the fetch"
            # The consumer dies here: the reply is never read.
            channel.client.connection.disconnect()
            channel._pending = channel._in_poll = None
    if loses:
        assert r.hlen("unacked") == 0 and r.llen("q") == 0, "the control must show kombu's loss"
        return
    assert r.hlen("unacked") == 1 and r.zcard("unacked_index") == 1
    # Another worker's visibility sweep brings it back, like any unacked message of a dead worker.
    time.sleep(1.1)
    with connection(redis_server.url) as conn:
        conn.default_channel.qos.restore_visible(num=10, interval=1)
    assert r.llen("q") == 1 and r.hlen("unacked") == 0


def test_the_idle_wait_consumes_nothing_and_wakes_on_publish(r: redis.Redis,
                                                             redis_server: EmbeddedRedis) -> None:
    q = queue()
    got: list[Any] = []
    with connection(redis_server.url) as conn:
        with conn.Consumer([q], callbacks=[lambda body, message: got.append(body)]):
            channel = conn.default_channel
            with pytest.raises(TimeoutError):
                conn.drain_events(timeout=1.5)  # nothing there: the fetch found nothing
            if channel._in_poll:
                with pytest.raises(Empty):
                    channel._brpop_read()
            channel._fetch_next = False
            conn.transport.cycle._register_BRPOP(channel)
            assert channel._pending == "wait"
            publish(redis_server.url, q, {"n": 1})
            with pytest.raises(Empty):
                channel._brpop_read()  # the wait returns at once and takes nothing
            assert r.llen("q") == 1 and r.hlen("unacked") == 0
            # A consumer that dies in the wait loses nothing either.
            channel._fetch_next = False
            conn.transport.cycle._register_BRPOP(channel)
            assert channel._pending == "wait"
            time.sleep(0.1)
            channel.client.connection.disconnect()
            channel._pending = channel._in_poll = None
            assert r.llen("q") == 1
            conn.drain_events(timeout=5)
    assert got == [{"n": 1}]


def test_every_queue_and_priority_is_fetched_while_idle(r: redis.Redis, redis_server: EmbeddedRedis) -> None:
    a, b = queue("a"), queue("b")
    got: list[Any] = []
    with connection(redis_server.url) as conn:
        with conn.Consumer([a, b], callbacks=[lambda body, message: (got.append(body), message.ack())]):
            with pytest.raises(TimeoutError):
                conn.drain_events(timeout=1.5)
            publish(redis_server.url, b, {"q": "b", "priority": 9}, priority=9)
            publish(redis_server.url, a, {"q": "a"})
            drain_until(conn, lambda: len(got) >= 2)
    assert sorted(body["q"] for body in got) == ["a", "b"]
    assert r.hlen("unacked") == 0


def test_a_no_ack_consumer_gets_no_unacked_record(r: redis.Redis, redis_server: EmbeddedRedis) -> None:
    q = queue()
    publish(redis_server.url, q, {"n": 1})
    got: list[Any] = []
    with connection(redis_server.url) as conn:
        with conn.Consumer([q], callbacks=[lambda body, message: got.append(body)], no_ack=True):
            conn.drain_events(timeout=5)
    assert got == [{"n": 1}]
    assert r.hlen("unacked") == 0 and r.zcard("unacked_index") == 0 and r.llen("q") == 0


def test_a_flushed_script_cache_is_reloaded(r: redis.Redis, redis_server: EmbeddedRedis) -> None:
    q = queue()
    got: list[Any] = []
    with connection(redis_server.url) as conn:
        with conn.Consumer([q], callbacks=[lambda body, message: (got.append(body), message.ack())]):
            publish(redis_server.url, q, {"n": 1})
            conn.drain_events(timeout=5)
            r.script_flush()
            publish(redis_server.url, q, {"n": 2})
            drain_until(conn, lambda: len(got) >= 2)
    assert got == [{"n": 1}, {"n": 2}]
    assert r.hlen("unacked") == 0


def test_the_global_key_prefix_applies_to_every_key(r: redis.Redis, redis_server: EmbeddedRedis) -> None:
    q = queue()
    seen: list[Any] = []
    with connection(redis_server.url, global_keyprefix="tp:") as conn:
        conn.Producer().publish({"n": 1}, exchange=q.exchange, routing_key="q", declare=[q])
        assert r.llen("tp:q") == 1

        def on_message(body: Any, message: Any) -> None:
            assert r.hexists("tp:unacked", message.delivery_tag)
            assert not r.exists("unacked")
            seen.append(body)
            message.ack()

        with conn.Consumer([q], callbacks=[on_message]):
            conn.drain_events(timeout=5)
    assert seen == [{"n": 1}]
    assert r.hlen("tp:unacked") == 0 and r.llen("tp:q") == 0


@pytest.mark.parametrize("denied", ["-@scripting", "-blmove"], ids=["no-scripts", "no-blmove"])
def test_redis_refusing_the_fetch_falls_back_to_kombus_fetch(r: redis.Redis, redis_server: EmbeddedRedis,
                                                             caplog: pytest.LogCaptureFixture, denied: str) -> None:
    """An ACL without scripting, or a server without BLMOVE (Redis < 6.2): kombu's BRPOP takes over."""
    r.acl_setuser("limited", reset=True, enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                  commands=["+@all", denied])
    url = redis_server.url.replace("redis://", "redis://limited:pw@")
    q = queue()
    publish(redis_server.url, q, {"n": 1})
    got: list[Any] = []
    with connection(url) as conn:
        with conn.Consumer([q], callbacks=[lambda body, message: (got.append(body), message.ack())]):
            drain_until(conn, lambda: bool(got))
            with pytest.raises(TimeoutError):
                conn.drain_events(timeout=1.5)  # idle: the wait is refused too, or refused only now
            publish(redis_server.url, q, {"n": 2})
            drain_until(conn, lambda: len(got) >= 2)
    assert got == [{"n": 1}, {"n": 2}]
    assert "redis_atomic_fetch_refused" in caplog.text
    assert r.hlen("unacked") == 0 and r.llen("q") == 0


def test_settings_select_the_transport_for_redis_brokers() -> None:
    from taskplatform.celery import app

    with app.connection_for_write() as conn:
        assert isinstance(conn.transport, transport.Transport)
        assert conn.transport.driver_type == "redis"
