"""How many messages wait in a queue: the one reader, for backpressure, ``/metrics`` and the
dashboard's broker panel.

A passive declare: RabbitMQ answers with the queue's message count; kombu's Redis channel
answers with the summed length of the queue's lists (one per priority step), and with "not
found" for a queue whose lists are empty (Redis deletes an empty list), which is 0 there.
"""
from __future__ import annotations

from typing import Protocol, cast

from celery import Celery
from kombu import Connection
from kombu.exceptions import ChannelError

#: How long a depth read may wait for the broker (it runs inside web requests).
READ_TIMEOUT = 0.5


class _DeclareOk(Protocol):
    message_count: int


class _DeclaringChannel(Protocol):
    """What every transport's channel has (kombu's virtual channel, py-amqp's), and kombu's
    ``StdChannel`` stub in celery-types leaves out."""

    def queue_declare(self, queue: str, passive: bool = ...) -> _DeclareOk: ...

    def close(self) -> None: ...


def queue_depth(conn: Connection, name: str) -> int | None:
    """Messages waiting in ``name`` on an open connection (``None``: the broker does not know
    the queue and is not Redis)."""
    channel = cast(_DeclaringChannel, conn.channel())
    try:
        return int(channel.queue_declare(queue=name, passive=True).message_count)
    except ChannelError:
        return 0 if conn.transport.driver_type == "redis" else None
    finally:
        try:
            channel.close()
        except Exception:  # the connection broke meanwhile; nothing to clean up
            pass


def fail_fast_connection(app: Celery, url: str | None = None, timeout: float = READ_TIMEOUT) -> Connection:
    """A connection that gives up at once when the broker is unreachable (no retries), so a
    depth read never holds a request up."""
    return app.connection_for_read(url=url, connect_timeout=timeout,
                                   transport_options={**(app.conf.broker_transport_options or {}), "max_retries": 0})
