"""F17's relay process: ``python -m tests.chaos.relay`` runs the product's ``outbox_relay``
command (``call_command``, as ``manage.py outbox_relay`` does) with two additions, in this
process only:

- a **probe** on ``SIGUSR2``, so that the harness can aim its SIGKILLs at a relay that holds
  a batch rather than at one asleep on its LISTEN socket (the F1 idea: a kill that lands in an
  idle process proves nothing, and the control would miss). The handler looks at the Python
  stack it interrupted: when a batch function (``Relay.relay_batch``, or the control's below)
  is on it and has claimed its rows (its ``rows`` local is a non-empty list), the relay is in
  the middle of a batch: between the claim and the end of the batch, whatever it is doing
  there (committing, building, sending, waiting for the broker). The handler then writes
  ``holding`` to the probe file and stops the process (``SIGSTOP``) right there, and the
  harness SIGKILLs it. Otherwise it writes ``idle`` and the relay goes on. The handler
  changes nothing else: an interrupted system call is retried (PEP 475).
- with ``CHAOS_CONTROL=delete_first`` (the negative control), ``Relay.relay_batch`` is
  replaced by a relay that **deletes first**: it commits the ``DELETE ... RETURNING`` of its
  batch and only then publishes. A relay killed between that commit and the moment the
  broker has the messages has removed rows that never reached the broker: the loss that the
  product's order (publish, then commit the delete) prevents.
"""
from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Any

PROBE_SIGNAL = signal.SIGUSR2
HOLDING, IDLE = "holding", "idle"
#: The batch functions: the product's, and the control's below.
BATCH_FUNCTIONS = {"relay_batch", "delete_first_relay_batch"}


def batch_in_hand(frame: FrameType | None) -> int:
    """How many rows the interrupted relay holds: those of a batch function on the stack that
    has claimed its rows (its ``rows`` local) and not returned yet; 0 when there is none."""
    while frame is not None:
        if frame.f_code.co_name in BATCH_FUNCTIONS:
            rows = frame.f_locals.get("rows")
            return len(rows) if isinstance(rows, list) else 0
        frame = frame.f_back
    return 0


def where(frame: FrameType | None) -> str:
    """The interrupted frame, for the probe file (``file:function:line``)."""
    if frame is None:
        return "?"
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_code.co_name}:{frame.f_lineno}"


def install_probe(path: str) -> None:
    def on_probe(signum: int, frame: FrameType | None) -> None:
        rows = batch_in_hand(frame)
        with open(path, "a") as out:
            out.write(f"{HOLDING if rows else IDLE} rows={rows} {where(frame)}\n")
        if rows:
            os.kill(os.getpid(), signal.SIGSTOP)  # held right here until the harness SIGKILLs us

    signal.signal(PROBE_SIGNAL, on_probe)


def delete_first_relay_batch(self: Any) -> int:
    from django.db import connection, transaction

    from tasks.base import BROKER_UNREACHABLE
    from tasks.relay import _claim_sql, outgoing

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
            cursor.execute(_claim_sql(self.table), [self.batch_size])
            rows = sorted(cursor.fetchall())
    # Committed: the rows are gone from the outbox before anything reached the broker.
    if not rows:
        return 0
    try:
        self.publisher().publish([outgoing(row) for row in rows])
    except BROKER_UNREACHABLE:
        self.close_publisher()
        raise
    self.published += len(rows)
    self._count(len(rows))
    return len(rows)


def main() -> None:
    probe = os.environ.get("CHAOS_RELAY_PROBE_FILE")
    if probe:
        install_probe(probe)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskplatform.settings")
    import django

    django.setup()
    from django.core.management import call_command

    if os.environ.get("CHAOS_CONTROL") == "delete_first":
        from tasks.relay import Relay

        Relay.relay_batch = delete_first_relay_batch  # type: ignore[method-assign]
    call_command("outbox_relay")


if __name__ == "__main__":
    main()
