"""kombu's Redis transport with an atomic fetch: no message is lost between fetch and ``unacked``.

kombu's Redis channel fetches with ``BRPOP`` and only then, in a second round trip
(``QoS.append``), writes the message to the ``unacked`` hash and ``unacked_index`` sorted set
that ack emulation and the visibility timeout restore from. A message popped by ``BRPOP`` is
in neither place until that write lands, so when the worker's main process is SIGKILLed, is
cold-stopped, or loses its connection (a Redis restart) in between, the message is gone with
no hook able to run (celery#7950, kombu#305; the chaos harness lost 1-2 in 2,000 this way in
F2-F5, and plain Celery loses them too: docs/reliability.md).

:class:`Channel` closes that window the way Sidekiq Pro's ``super_fetch`` does, by moving the
message in one server-side step:

- **fetch**: a Lua script (:data:`FETCH_SCRIPT`) pops the first message from the same keys in
  the same order as kombu's ``BRPOP`` (priority steps across the consumed queues, fair queue
  cycle), and in the same script writes ``[payload, exchange, routing_key]`` to ``unacked``
  and the tag to ``unacked_index``, exactly what ``QoS.append`` would write. A message is
  therefore always in a queue or in ``unacked``; if the consumer dies before it sees the
  reply, kombu's own ``restore_visible`` puts it back after the visibility timeout, like any
  unacked message of a dead worker. ``QoS.append`` then skips its now redundant write.
  Messages of queues consumed with ``no_ack`` (pidbox replies) are popped without the
  ``unacked`` record, as kombu does.
- **idle wait**: Lua cannot block, so when the script finds nothing the channel waits with
  ``BLMOVE key key LEFT LEFT timeout`` on the base key of the next queue in the cycle. Moving
  a list's head to its own head is a documented no-op that returns as soon as the list has an
  element, so the wait consumes nothing: a consumer killed while waiting loses nothing. When
  it returns (or times out) the channel runs the fetch script again. Messages sent with a
  priority (other keys), or to another queue than the one waited on, are picked up at the
  latest when the wait times out (``brpop_timeout``, 1 s; 0.1 s when several queues are
  consumed). Needs Redis 6.2 or newer (``BLMOVE``).

Both commands are sent and read on the channel's poll connection, exactly where kombu sends
``BRPOP`` and reads its reply (``_brpop_start``/``_brpop_read``), so the worker's event loop,
credit pausing, health checks and reconnects work unchanged.

When Redis answers the fetch or the wait with an error other than a missing script
(``NOSCRIPT``: the script is loaded and the fetch retried), for example an ACL without
``@scripting`` or a server without ``BLMOVE``, the channel logs ``redis_atomic_fetch_refused``
and falls back to kombu's ``BRPOP`` for :data:`FALLBACK_SECONDS`, so that workers keep
consuming rather than stall.

Selected in settings (``CELERY_BROKER_TRANSPORT``) for ``redis://`` brokers unless
``CELERY_REDIS_ATOMIC_FETCH=0``.
"""
from __future__ import annotations

import hashlib
import logging
from time import monotonic, time
from typing import TYPE_CHECKING, Any, Protocol

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from redis.exceptions import NoScriptError

logger = logging.getLogger(__name__)

#: Seconds a channel uses kombu's BRPOP after Redis refused the fetch script.
FALLBACK_SECONDS = 30.0
#: Idle wait when more than one queue is consumed (the wait watches one queue at a time).
MULTI_QUEUE_WAIT_SECONDS = 0.1

# KEYS[1] unacked hash, KEYS[2] unacked_index zset, KEYS[3..] queue lists in fetch order.
# ARGV[1] the score (the consumer's clock, as QoS.append uses), ARGV[i - 1] for KEYS[i]:
# "1" when the queue is consumed with acks. The stored value is concatenated from the raw
# payload rather than re-encoded: cjson would turn an empty JSON array into an object.
FETCH_SCRIPT = """
for i = 3, #KEYS do
  local item = redis.call('RPOP', KEYS[i])
  if item then
    if ARGV[i - 1] == '1' then
      local ok, m = pcall(cjson.decode, item)
      if ok and type(m) == 'table' and type(m['properties']) == 'table' then
        local p = m['properties']
        local tag, info = p['delivery_tag'], p['delivery_info']
        if type(tag) == 'string' and type(info) == 'table' then
          redis.call('HSET', KEYS[1], tag, '[' .. item .. ', ' .. cjson.encode(info['exchange'])
                     .. ', ' .. cjson.encode(info['routing_key']) .. ']')
          redis.call('ZADD', KEYS[2], ARGV[1], tag)
          return {KEYS[i], item, tag}
        end
      end
    end
    return {KEYS[i], item}
  end
end
return false
"""

FETCH_SHA = hashlib.sha1(FETCH_SCRIPT.encode()).hexdigest()

_FETCH, _WAIT, _BRPOP = "fetch", "wait", "brpop"


class _QueueCycle(Protocol):
    """kombu's round-robin cycle of the consumed queues (its ``consume`` returns a list)."""

    def consume(self, n: int) -> list[str]: ...

    def rotate(self, last_used: str) -> None: ...


class QoS(kombu_redis.QoS):
    """kombu's QoS, minus the ``unacked`` write for messages the fetch script recorded."""

    channel: Channel

    def append(self, message: Any, delivery_tag: str) -> None:
        if delivery_tag == self.channel._recorded_tag:
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)


class Channel(kombu_redis.Channel):
    """A Redis channel whose fetch moves the message into ``unacked`` atomically."""

    QoS = QoS

    if TYPE_CHECKING:  # kombu's private Redis channel API used here, which celery-types' stub leaves out
        _queue_cycle: _QueueCycle
        connection_errors: tuple[type[BaseException], ...]

        def _q_for_pri(self, queue: str, pri: int) -> str: ...

        def _flush_brpop_reauth(self) -> None: ...

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The tag of the message being delivered when the script recorded it (delivery, and
        # QoS.append within it, is synchronous: one message at a time).
        self._recorded_tag: str | None = None
        self._no_ack_queues: set[str] = set()
        self._pending: str | None = None
        self._fetch_next = True
        self._fallback_until = 0.0
        self._wait_turn = 0
        super().__init__(*args, **kwargs)

    # -- which queues need the unacked record -------------------------------------------
    def basic_consume(self, queue: str, no_ack: bool = False, *args: Any, **kwargs: Any) -> Any:
        (self._no_ack_queues.add if no_ack else self._no_ack_queues.discard)(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def _basic_cancel(self, consumer_tag: str) -> Any:
        queue = self._tag_to_queue.get(consumer_tag)
        ret = super()._basic_cancel(consumer_tag)  # type: ignore[misc]  # private kombu method, not in celery-types
        if queue is not None and queue not in self._active_queues:
            self._no_ack_queues.discard(queue)
        return ret

    # -- fetch ------------------------------------------------------------------------------
    def _brpop_start(self, timeout: float | None = None) -> None:
        if not self.ack_emulation or monotonic() < self._fallback_until:
            self._pending = _BRPOP
            super()._brpop_start(timeout)  # type: ignore[misc]  # private kombu method, not in celery-types
            return
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        prefix = self.global_keyprefix or ""
        if self._fetch_next:
            keys, flags = [], []
            for pri in self.priority_steps:
                for queue in queues:
                    keys.append(prefix + self._q_for_pri(queue, pri))
                    flags.append("0" if queue in self._no_ack_queues else "1")
            command: list[Any] = ["EVALSHA", FETCH_SHA, 2 + len(keys),
                                  prefix + self.unacked_key, prefix + self.unacked_index_key,
                                  *keys, repr(time()), *flags]
            self._pending = _FETCH
        else:
            if timeout is None:
                timeout = self.brpop_timeout
            if len(queues) > 1:
                timeout = min(timeout or MULTI_QUEUE_WAIT_SECONDS, MULTI_QUEUE_WAIT_SECONDS)
            self._wait_turn = (self._wait_turn + 1) % len(queues)
            key = prefix + self._q_for_pri(queues[self._wait_turn], 0)
            command = ["BLMOVE", key, key, "LEFT", "LEFT", timeout or 0]
            self._pending = _WAIT
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        self.client.connection.send_command(*command)

    def _brpop_read(self, **options: Any) -> bool:
        pending, self._pending = self._pending, None
        if pending not in (_FETCH, _WAIT):
            delivered: bool = super()._brpop_read(**options)  # type: ignore[misc]  # private kombu method, not in celery-types
            return delivered
        try:
            try:
                reply = self.client.parse_response(
                    self.client.connection, "EVALSHA" if pending == _FETCH else "BLMOVE", **options)
            except self.connection_errors:
                # As kombu: disconnect so the next poll reconnects.
                self.client.connection.disconnect()
                raise
            except NoScriptError:
                # First use on this server, a restart or SCRIPT FLUSH: load it, fetch on the next poll.
                try:
                    self.client.script_load(FETCH_SCRIPT)
                except self.ResponseError as exc:
                    self._fall_back(exc)
                raise virtual.Empty() from None
            except self.ResponseError as exc:
                self._fall_back(exc)
                raise virtual.Empty() from None
            if pending == _WAIT:
                # A message arrived, or the wait timed out and other keys may hold one.
                self._fetch_next = True
                raise virtual.Empty()
            if not reply:
                self._fetch_next = False
                raise virtual.Empty()
            self._fetch_next = True
            dest, item, *recorded = reply
            dest = bytes_to_str(dest)[len(self.global_keyprefix or ""):].rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            self._recorded_tag = bytes_to_str(recorded[0]) if recorded else None
            try:
                self.connection._deliver(loads(bytes_to_str(item)), dest)
            finally:
                self._recorded_tag = None
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _fall_back(self, exc: Exception) -> None:
        """Redis refused the script or the wait (ACL, an old server): use kombu's fetch a while."""
        self._fallback_until = monotonic() + FALLBACK_SECONDS
        logger.warning("redis_atomic_fetch_refused", exc_info=exc,
                       extra={"error": str(exc), "fallback_seconds": FALLBACK_SECONDS})


class Transport(kombu_redis.Transport):
    """kombu's Redis transport using :class:`Channel`."""

    Channel = Channel
