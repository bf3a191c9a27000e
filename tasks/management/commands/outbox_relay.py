"""``manage.py outbox_relay``: publish what ``enqueue()`` committed to the outbox (see
``tasks.relay``). Run one or more, on any hosts: they share the rows (``SKIP LOCKED``).

- ``--once``: publish what is due now and exit (status 0);
- ``--check``: exit 0 when a relay on this host beat within ``--max-age`` seconds (a
  container health check), 1 otherwise.

SIGTERM or SIGINT finish the batch in hand and exit.
"""
from __future__ import annotations

import signal
import threading
from typing import Any

from celery import current_app
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tasks.relay import Relay, heartbeat_age


class Command(BaseCommand):
    help = "Publish the messages enqueue() committed to the outbox (runs until stopped)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=None, help="rows per batch (OUTBOX_RELAY_BATCH_SIZE)")
        parser.add_argument("--poll-interval", type=float, default=None,
                            help="seconds between looks without a notification (OUTBOX_RELAY_POLL_MS / 1000)")
        parser.add_argument("--once", action="store_true", help="publish what is due now, then exit")
        parser.add_argument("--check", action="store_true", help="health check: exit 0 if the relay beat recently")
        parser.add_argument("--max-age", type=float, default=30.0, help="with --check: the oldest acceptable beat (s)")

    def handle(self, *args: Any, batch_size: int | None, poll_interval: float | None, once: bool, check: bool,
               max_age: float, **options: Any) -> None:
        if check:
            age = heartbeat_age()
            if age is None or age > max_age:
                raise CommandError(f"no outbox relay heartbeat within {max_age}s (last: {age})")
            self.stdout.write(f"outbox relay alive ({age:.1f}s ago)")
            return
        # Import every task module, as a worker does, so that send_task applies each task's
        # own options (queue, time limits, ...) exactly as apply_async would have.
        current_app.loader.import_default_modules()
        relay = Relay(batch_size=batch_size, poll_interval=poll_interval)
        if once:
            try:
                self.stdout.write(f"published {relay.drain()}")
            finally:
                relay.close()
            return
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        relay.run(stop)
